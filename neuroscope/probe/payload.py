"""What probe.json holds and probe.html draws (`write_payload`): the tokens, the chosen neurons' values, each token's
top list, the whole-text table of the neurons that fire most, the links to the neurons' pages and the run's meta,
written as JSON a piece of tokens at a time (its memory stays that of a piece).

JSON has no inf or NaN: each non-finite value is written null with its kind beside it (NON_FINITE_ENCODING), and
the meta lists the tokens and neurons where the pass met one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import torch

from gated_core.neurons import NeuronId, neuron_name
from neuroscope.activation_pass.activations import SIGN_COMBINATIONS
from neuroscope.classes.neuron_sets import parse_class
from neuroscope.probe.forward import ProbeValues, histogram_percentiles
from neuroscope.probe.request import ProbeRun
from neuroscope.recompute.examples import neuron_folder
from neuroscope.view.neuron_view import token_texts
from neuroscope.view.pages import neuroscope_folder
from neuroscope.view.viewer_copy import viewer_layers, viewer_neurons
from wcos_casestudies.constants import CLASS_WORDS

JSON_SEPARATORS = (",", ":")
LISTED_NON_FINITE = 1000  # neurons named in meta's non_finite (all are counted)
NON_FINITE_ENCODING = ("JSON has no inf or NaN: a non-finite value is written null, with its kind (\"inf\", \"-inf\" or "
                       "\"nan\") beside it: in a chosen neuron's \"non_finite\" ({g|u|a: {token: kind}}), as a third item "
                       "of a top-list entry ([name, null, kind]), in a whole-text row's \"non_finite\"; a combination of "
                       "a NaN g or u is -1, a percentile of a NaN a null")


def neuron_links(run: ProbeRun, names: set[str]) -> dict[str, str]:
    """Relative links from probe.html to each neuron: its own page where it has one, else the viewer with the fewest
    layers that holds that very neuron (by the viewer's own index, `viewer_copy.viewer_neurons`; a viewer of a few layers,
    which may be shared, is preferred to the whole one), else none."""
    pages = neuroscope_folder(run.results)
    folders = sorted(folder for folder in pages.glob("*/") if not folder.name.startswith(".")  # not a swap's leftover
                     and (folder / "viewer.html").is_file()) if names else []
    viewers = sorted((len(viewer_layers(folder)), folder.name, viewer_neurons(folder)) for folder in folders)
    links = {}
    for name in sorted(names):
        layer, neuron = NeuronId.from_name(name)
        if (neuron_folder(pages, (layer, neuron)) / "vis.html").is_file():
            links[name] = f"../../neuroscope/L{layer}/N{neuron}/vis.html"
            continue
        holder = next((folder for _, folder, held in viewers if (layer, neuron) in held), None)
        if holder is not None:
            links[name] = f"../../neuroscope/{holder}/viewer.html#{name}"
    return links


def non_finite_kind(value: float) -> str:
    """How a non-finite value is written beside its null: "nan", "inf" or "-inf"."""
    return "nan" if math.isnan(value) else "inf" if value > 0 else "-inf"


def json_number(value: float) -> float | None:
    """A value as a JSON number, None (null) when it is inf or NaN."""
    return value if math.isfinite(value) else None


def json_numbers(values: torch.Tensor) -> list[float | None]:
    """A tensor's values as JSON numbers, None (null) for inf and NaN."""
    if bool(torch.isfinite(values).all()):
        return values.tolist()
    return [json_number(value) for value in values.tolist()]


def whole_text_top(run: ProbeRun, values: ProbeValues) -> list[dict[str, Any]]:
    """The allowed neurons that fire most on the text: with a histogram, by the percentile of their largest a among
    the dataset's activations (then by how far it passes the dataset's largest a); without, by their largest a.
    NaN never ranks (each neuron's largest a leaves it out, and a neuron with no other a has no row); +inf ranks
    first, and a row of a non-finite a says so ("non_finite")."""
    d_mlp = run.allowed.shape[1]
    best = values.max_values.masked_fill(~run.allowed, -torch.inf)
    ranked = min(run.request.top, int((best > -torch.inf).sum()))
    stats = run.stats
    if stats is None or stats.histogram is None:
        order = best.flatten().topk(ranked).indices
        percentiles = torch.full((len(order),), torch.nan, dtype=torch.float64)
    else:
        percentile = histogram_percentiles(stats.histogram, best.clamp_min(-3e38)[..., None])[..., 0]
        over = best / stats.top_values[..., 0].float().abs().clamp_min(1e-12)
        key = torch.stack([percentile.masked_fill(best == -torch.inf, -1.0).flatten(), over.double().flatten()], dim=1)
        order = torch.tensor(top_by_keys(key, ranked), dtype=torch.long)
        percentiles = percentile.flatten()[order]
    rows = []
    for flat, percentile in zip(order.tolist(), json_numbers(percentiles)):
        layer, neuron = NeuronId.from_flat(flat, d_mlp)
        a = float(values.max_values[layer, neuron])
        row = {"neuron": neuron_name(layer, neuron), "a": json_number(a), "token": int(values.max_tokens[layer, neuron]),
               "percentile": percentile}
        if not math.isfinite(a):
            row["non_finite"] = non_finite_kind(a)
        if stats is not None:
            row["dataset_max"] = json_number(float(stats.top_values[layer, neuron, 0]))
        rows.append(row)
    return rows


def top_by_keys(key: torch.Tensor, k: int) -> list[int]:
    """The rows of `key` [n 2] with the largest first key, ties broken by the largest second key: the first k."""
    import numpy as np

    keys = key.numpy()
    return np.lexsort((-keys[:, 1], -keys[:, 0]))[:k].tolist()


def chosen_arrays(run: ProbeRun, values: ProbeValues) -> dict[str, dict[str, torch.Tensor]]:
    """Per chosen neuron, [token] each: g, u and a, the sign combination of (g, u) (an index into
    SIGN_COMBINATIONS; -1 where g or u is NaN) and, with a histogram, the percentile of a on the dataset (NaN where
    a is NaN)."""
    arrays = {}
    for (layer, neuron), found in values.chosen.items():
        g, u, a = found["g"], found["u"], found["a"]
        entry = {"g": g, "u": u, "a": a,
                 "combination": (2 * (g <= 0).long() + (u <= 0).long()).masked_fill(g.isnan() | u.isnan(), -1)}
        if run.stats is not None and run.stats.histogram is not None:
            entry["percentile"] = histogram_percentiles(run.stats.histogram[layer, neuron], a).masked_fill(a.isnan(), torch.nan)
        arrays[neuron_name(layer, neuron)] = entry
    return arrays


Piece = slice | torch.Tensor  # tokens of the text: a range, or their indices (ascending)


@dataclass
class ProbeData:
    """The probe's per-token data, turned into JSON a piece of tokens at a time: for probe.json every token, for
    the page those it shows. Indices are of the text's tokens."""

    ids: torch.Tensor  # [token] int64: the token ids
    texts: dict[int, str]  # the text of each token id of the text
    names: list[str]  # [layer * d_mlp + neuron]: the neurons' names
    neurons: dict[str, dict[str, torch.Tensor]]  # chosen neuron -> chosen_arrays' [token] arrays
    top_values: torch.Tensor  # [token top], as ProbeValues'
    top_ids: torch.Tensor
    top_strengths: torch.Tensor | None = None  # [token top] |a| / the neuron's largest |a| on the dataset

    def tokens(self, piece: Piece) -> list[str]:
        return [self.texts[i] for i in self.ids[piece].tolist()]

    def top(self, piece: Piece) -> list[list[list[Any]]]:
        """Each token's top list: [name, a] ([name, a, strength] with the statistics), or [name, null, kind] for
        ±inf; NaN left out."""
        values, ids = self.top_values[piece].tolist(), self.top_ids[piece].tolist()
        strengths = self.top_strengths[piece].tolist() if self.top_strengths is not None else [[None] * len(r) for r in ids]
        return [[([self.names[i], a] if strength is None else [self.names[i], a, strength]) if math.isfinite(a)
                 else [self.names[i], None, non_finite_kind(a)]
                 for a, i, strength in zip(row_a, row_i, row_s) if not math.isnan(a)]
                for row_a, row_i, row_s in zip(values, ids, strengths)]

    def values(self, name: str, key: str, piece: Piece) -> list[Any]:
        found = self.neurons[name][key][piece]
        return found.tolist() if key == "combination" else json_numbers(found)

    def non_finite(self, name: str, pieces: list[Piece]) -> dict[str, dict[str, str]]:
        """{g|u|a: {token: kind}} of the non-finite values of a chosen neuron at the tokens of `pieces`."""
        found: dict[str, dict[str, str]] = {}
        for key in ("g", "u", "a"):
            for piece in pieces:
                where = piece if isinstance(piece, torch.Tensor) else torch.arange(piece.start, piece.stop)
                part = self.neurons[name][key][where]
                bad = ~torch.isfinite(part)
                for token, value in zip(where[bad].tolist(), part[bad].tolist()):
                    found.setdefault(key, {})[str(token)] = non_finite_kind(value)
        return found


def probe_data(run: ProbeRun, values: ProbeValues) -> ProbeData:
    """The per-token data of a finished pass, ready to be written."""
    ids = torch.tensor(run.token_ids, dtype=torch.long)
    known = torch.unique(ids).tolist()
    n_layers, d_mlp = run.allowed.shape
    names = [neuron_name(layer, neuron) for layer in range(n_layers) for neuron in range(d_mlp)]
    return ProbeData(ids, dict(zip(known, token_texts(run.tokenizer, known))), names, chosen_arrays(run, values),
                     values.top_values, values.top_ids, values.top_strengths)


def dumps(value: Any) -> str:
    """Compact JSON, never with NaN or inf."""
    return json.dumps(value, separators=JSON_SEPARATORS, allow_nan=False)


def write_list(handle: TextIO, pieces: Iterable[list[Any]]) -> None:
    """One JSON array written a piece (a list of its items) at a time."""
    handle.write("[")
    first = True
    for items in pieces:
        if items:
            handle.write(("" if first else ",") + dumps(items)[1:-1])
            first = False
    handle.write("]")


def write_payload(handle: TextIO, data: ProbeData, head: dict[str, Any], pieces: list[Piece]) -> None:
    """What probe.json holds and probe.html draws, {"tokens", "neurons", "top", "text_top", "links", "meta"}, for
    the tokens of `pieces`, written a piece at a time: the tokens' texts, each chosen neuron's arrays
    (`chosen_arrays`, and "non_finite"), each token's top list by |a| ([[name, a], ...]), then `head` (the whole-text
    table, the neurons' links, the run)."""
    handle.write('{"tokens":')
    write_list(handle, (data.tokens(piece) for piece in pieces))
    handle.write(',"neurons":{')
    for number, name in enumerate(data.neurons):
        handle.write(("," if number else "") + dumps(name) + ":{")
        for key in data.neurons[name]:
            handle.write(dumps(key) + ":")
            write_list(handle, (data.values(name, key, piece) for piece in pieces))
            handle.write(",")
        handle.write('"non_finite":' + dumps(data.non_finite(name, pieces)) + "}")
    handle.write('},"top":')
    write_list(handle, (data.top(piece) for piece in pieces))
    handle.write("," + dumps(head)[1:])


def non_finite_meta(values: ProbeValues) -> dict[str, Any]:
    """Meta's account of the non-finite values: how they are written, how many, at which tokens, in which neurons
    (the first LISTED_NON_FINITE named)."""
    found = values.non_finite
    neurons = torch.nonzero(found.neurons).tolist()
    return {"encoding": NON_FINITE_ENCODING, "count": found.count, "tokens": torch.nonzero(found.tokens).flatten().tolist(),
            "neurons": [neuron_name(layer, neuron) for layer, neuron in neurons[:LISTED_NON_FINITE]],
            "neuron_count": len(neurons)}


def probe_head(run: ProbeRun, values: ProbeValues) -> dict[str, Any]:
    """The parts of the payload that are not per token: the whole text's top neurons, the neurons' links, the run."""
    text_top = whole_text_top(run, values)
    d_mlp = run.allowed.shape[1]
    names = ({neuron_name(*n) for n in run.neurons} | {row["neuron"] for row in text_top} |
             {NeuronId.from_flat(i, d_mlp).name for i in torch.unique(values.top_ids).tolist()})
    stats = run.stats
    meta = {"model": run.source.name, "name": run.folder.name, "tokens": len(run.token_ids), "documents": run.doc_starts,
            "windows": [list(w) for w in values.windows], "window_tokens": values.window_tokens,
            "bos": token_texts(run.tokenizer, [run.bos_id])[0] if run.bos_id is not None else None,
            "dtype": str(run.dtype).removeprefix("torch."), "top": run.request.top, "caption": run.results.caption,
            "filters": {"layers": run.request.layers, "classes": [CLASS_WORDS[parse_class(word)] for word in run.request.classes],
                        "roles": run.request.roles},
            "dataset": Path(stats.meta.dataset).name if stats is not None else None,
            "dataset_tokens": int(stats.meta.tokens) if stats is not None else None,
            "sign_combinations": list(SIGN_COMBINATIONS), "notes": run.notes, "non_finite": non_finite_meta(values)}
    return {"text_top": text_top, "links": neuron_links(run, names), "meta": meta}
