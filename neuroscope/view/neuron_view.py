"""What one neuron's view shows, as data: the one model that a single page (`vis.html`) and the viewer
both carry, and that one renderer (`assets/viewer.js`) draws.

A view is made of five parts, each the JSON argument of one `neuroscope.<part>(...)` call:
- `meta`: the run (model, dataset, sizes, the names the codes stand for, histogram edges, notes; `shown`:
  the coloured tokens around an example's extreme token, or null for its whole window; `page`: on a single
  page, its neuron and the links to the other pages);
- `index`: one row per neuron (id = layer * d_mlp + neuron, IO class, roles as bits, kurtosis, skew, max,
  min, mean, gate-open frequency);
- `vocab`: token strings, a list by id or (single page) an object of only the ids it shows;
- `docs`: the documents' tokens, each once (`ids`: which documents, where only some are carried);
- `layer`: per chosen neuron of a layer, its windows (document, start, length) with their activations a
  (and, on single pages, the gate g and linear input u), its example lists (with each example's next token, direct
  effect and rank, and on pages made with --ablation_effect its ablation effect), its histograms, its cosines
  and sign frequencies, and what its weights do to the logits.

The Python types behind it: `LayerExamples` (the examples and windows), `LayerLogitEffects` (the weights'
token effects), `Statistics` and `ModelFacts`; `ViewRun` holds what every part shares. Numbers travel as
base64 of little-endian arrays ({"dtype", "b64"}; in the viewer's neuron data files all of a file's arrays in one
DEFLATE stream, `deflated`); text as JSON with <, > and & escaped, so that no data can close a script or open
markup.
"""

from __future__ import annotations

import base64
import json
import zlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gated_core.artifacts import made_from
from neuroscope.activation_pass.activations import SIGN_COMBINATIONS
from neuroscope.activation_pass.store import Statistics
from neuroscope.core.histogram import histogram_edges, typical_band_edges
from neuroscope.recompute.examples import LIST_KINDS
from neuroscope.recompute.windows import LayerExamples, WindowHasher
from neuroscope.view.facts import INPUT_TABLES, LOGIT_BINS, LayerLogitEffects, ModelFacts
from wcos_casestudies.connections import EMBED_KINDS, INPUT_KINDS
from wcos_casestudies.constants import CLASS_NAMES
from wcos_casestudies.roles import ROLE_NAMES

JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
Moments = dict[str, dict[int, np.ndarray]]  # "kurtosis", "skew" -> layer -> [chosen] of cos(w_out, W_U)


def token_texts(tokenizer: Any, ids: list[int]) -> list[str]:
    """The text of each token id: the tokenizer's, or `<id N>` for rows of the model beyond the tokenizer's."""
    known = [i for i in ids if i < len(tokenizer)]
    texts = dict(zip(known, tokenizer.batch_decode([[i] for i in known])))
    return [texts.get(i, f"<id {i}>") for i in ids]


def to_json(value: Any) -> str:
    """JSON that is safe inside any script: no <, > or & (so no </script> or <!--), ASCII only."""
    text = json.dumps(value, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    for raw, escaped in JSON_ESCAPES.items():
        text = text.replace(raw, escaped)
    return text


def js_call(part: str, *args: Any) -> str:
    """One part of a view: a call of neuroscope.<part> with JSON arguments (a data file's whole text)."""
    return f"neuroscope.{part}({','.join(to_json(a) for a in args)});\n"


CONNECTIONS_SHOWN = 10  # entries of each connection list that a view shows
# zlib's level for the viewer's neuron data (`deflated`): 4 packs a chunk of 128 SmolLM2 neurons to 0.758 of its
# bytes in 20 ms, 9 to 0.753 in 78 ms
DEFLATE_LEVEL = 4
ACT_CODE_MAX = 127  # 8-bit activations: codes -127..127 times a per-window scale (`act_codes`)


def packed(values: Any, dtype: str | None = None) -> dict[str, str]:
    """An array as {"dtype", "b64"}: little-endian bytes in base64. Integer arrays take the smallest of
    uint8, uint16, int32 that holds them unless `dtype` is given."""
    array = np.asarray(values.numpy() if isinstance(values, torch.Tensor) else values)
    if dtype is None:
        if np.issubdtype(array.dtype, np.integer):
            low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
            dtype = "u1" if 0 <= low and high < 1 << 8 else "u2" if 0 <= low and high < 1 << 16 else "i4"
        else:
            dtype = "f4"
    return {"dtype": dtype, "b64": base64.b64encode(np.ascontiguousarray(array.astype("<" + dtype)).tobytes()).decode("ascii")}


def deflated(payload: dict[str, Any]) -> dict[str, Any]:
    """`payload` with every array (`packed`, in objects at any depth) moved into one raw DEFLATE stream: each becomes
    {"dtype", "z": [start, length]}, its bytes in the stream's unpacked bytes, and "deflate": {"b64", "bytes"} holds
    the stream in base64 and its unpacked size. The viewer's neuron data files are written so (about 3/4 of the
    bytes at full precision, 2/3 with --compact); `assets/inflate.js` unpacks them in the page, `inflated` here."""
    parts: list[bytes] = []
    start = 0

    def moved(value: Any) -> Any:
        nonlocal start
        if not isinstance(value, dict):
            return value
        if "b64" not in value:
            return {key: moved(item) for key, item in value.items()}
        raw = base64.b64decode(value["b64"])
        parts.append(raw)
        start += len(raw)
        return {"dtype": value["dtype"], "z": [start - len(raw), len(raw)]}

    out = moved(payload)
    stream = zlib.compressobj(DEFLATE_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    packed_stream = stream.compress(b"".join(parts)) + stream.flush()
    return {**out, "deflate": {"b64": base64.b64encode(packed_stream).decode("ascii"), "bytes": start}}


def inflated(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload that `deflated` was given (a payload without "deflate" as it is)."""
    if "deflate" not in payload:
        return payload
    raw = zlib.decompress(base64.b64decode(payload["deflate"]["b64"], validate=True), -zlib.MAX_WBITS)
    if len(raw) != payload["deflate"]["bytes"]:
        raise ValueError(f"deflated arrays of {len(raw)} bytes, not the {payload['deflate']['bytes']} said")

    def restored(value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        if "z" not in value:
            return {key: restored(item) for key, item in value.items()}
        start, length = value["z"]
        return {"dtype": value["dtype"], "b64": base64.b64encode(raw[start:start + length]).decode("ascii")}

    return restored({key: value for key, value in payload.items() if key != "deflate"})


def offsets(counts: np.ndarray) -> np.ndarray:
    """[n + 1] starts of n consecutive groups of the given sizes."""
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


@dataclass(frozen=True)
class Documents:
    """The documents a view carries: their tokens concatenated [token] and where each starts [document + 1];
    `ids` [document] says which documents of the dataset they are (None: all of them, in order)."""

    tokens: np.ndarray
    starts: np.ndarray
    ids: np.ndarray | None = None

    def local(self, docs: np.ndarray) -> np.ndarray:
        """The rows of dataset documents `docs` here."""
        return docs if self.ids is None else np.searchsorted(self.ids, docs)

    @cached_property
    def hasher(self) -> WindowHasher:
        return WindowHasher(self.tokens, self.starts)


@dataclass(frozen=True)
class ViewRun:
    """What every part of a view shares: the run, the chosen neurons, the statistics, the weight facts and the
    documents. `shown`: the coloured tokens (before, after) around an example's extreme token within its window,
    None for the whole window; `context`: grey tokens (text only) shown before and after those."""

    folder: Path
    model: str
    dataset: str
    stats: Statistics
    facts: ModelFacts
    neurons: dict[int, np.ndarray]  # layer -> chosen neurons, ascending
    vocab: list[str] | dict[int, str]
    documents: Documents
    context: tuple[int, int]
    notes: list[str]
    shown: tuple[int, int] | None = None
    compact: bool = False  # activations in 8 bits (`act_codes`), the examples' values and effects in float16

    @property
    def data(self) -> Path:
        return self.folder / "data"


def shown_spans(examples: LayerExamples, shown: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray]:
    """The coloured tokens of each example: (start, length) [example]: its window, or with `shown` = (before,
    after) the `before + after + 1` tokens from `before` before the extreme token (or the window's start), cut
    at the window's end. The renderer's `shownSpan` does the same."""
    start, length = examples.window_start[examples.window], examples.window_length[examples.window]
    if shown is None:
        return start, length
    first = np.maximum(examples.position - shown[0], start)
    return first, np.minimum(sum(shown) + 1, start + length - first)


def deduplicated(examples: LayerExamples, hashes: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Examples to show [kept] (indices, best rank first within each list) and how many examples of the same
    list have the same shown text (`hashes` [example]) and peak [kept]: an example whose text an earlier one of
    its list has is dropped."""
    key = np.stack([examples.column, examples.kind, hashes.view(np.int64), examples.position - starts], axis=1)
    _, first, inverse, counts = np.unique(key, axis=0, return_index=True, return_inverse=True, return_counts=True)
    kept = np.sort(first)  # examples are sorted by (column, kind, rank): the first of each text is the best
    return kept, counts[inverse.reshape(-1)[kept]]


def example_payload(run: ViewRun, examples: LayerExamples) -> dict[str, Any]:
    """The windows (with their values) and example lists of the chosen neurons of one layer."""
    starts, lengths = shown_spans(examples, run.shown)
    hashes = run.documents.hasher(run.documents.local(examples.doc), starts, lengths)
    kept, duplicates = deduplicated(examples, hashes, starts)
    chosen = len(examples.neurons)
    list_sizes = np.bincount(examples.column[kept] * len(LIST_KINDS) + examples.kind[kept], minlength=chosen * len(LIST_KINDS))
    window_counts = np.bincount(examples.window_column, minlength=chosen)
    payload = {
        "neurons": packed(examples.neurons, "i4"),
        "window_offsets": packed(offsets(window_counts), "i4"),
        "window_doc": packed(examples.window_doc), "window_start": packed(examples.window_start),
        "window_length": packed(examples.window_length), "width": examples.width,
        **(act_codes(examples.acts) if run.compact else {"acts": packed(examples.acts.reshape(-1), "f2")}),
        "list_offsets": packed(offsets(list_sizes), "i4"),
        "example_window": packed(examples.window[kept] - offsets(window_counts)[examples.column[kept]]),
        "example_peak": packed(examples.position[kept] - examples.window_start[examples.window[kept]]),
        "example_value": packed(examples.stored[kept], "f2" if run.compact else "f4"), "example_duplicates": packed(duplicates),
        "bos_value": packed(np.nan_to_num(examples.bos_value, nan=0.0), "f4"),
    }
    if examples.gates is not None:
        payload["gates"], payload["lins"] = packed(examples.gates.reshape(-1), "f2"), packed(examples.lins.reshape(-1), "f2")
    return {**payload, **next_token_payload(examples, kept, "f2" if run.compact else "f4")}


def act_codes(acts: np.ndarray) -> dict[str, Any]:
    """Activations [window width] in 8 bits: a signed code per token (`act_codes`, int8, -ACT_CODE_MAX..ACT_CODE_MAX)
    and a float16 scale per window (`act_scales`): a = code * scale, off by at most scale / 2 = the window's largest
    |a| / (2 ACT_CODE_MAX); the renderer decodes them into `acts`."""
    values = acts.astype(np.float32)
    scales = (np.abs(values).max(axis=1, initial=0.0) / ACT_CODE_MAX).astype(np.float16)
    divisor = np.where(scales > 0, scales.astype(np.float32), 1.0)[:, None]
    codes = np.clip(np.rint(values / divisor), -ACT_CODE_MAX, ACT_CODE_MAX).astype(np.int8)
    return {"act_codes": packed(codes.reshape(-1), "i1"), "act_scales": packed(scales, "f2")}


def next_token_payload(examples: LayerExamples, kept: np.ndarray, floats: str = "f4") -> dict[str, Any]:
    """What the shown examples `kept` do to their next token (those of `neuroscope.recompute.next_token` that were computed):
    `example_next` (token id, -1: none), `example_effect` (direct effect, nan: none; `floats`: its dtype), `example_rank`
    (0: none), `example_ablation` (loss change with the neuron zeroed there)."""
    columns = {"example_next": (examples.next_token, "i4"), "example_effect": (examples.direct_effect, floats),
               "example_rank": (examples.next_rank, None), "example_ablation": (examples.ablation_effect, "f4")}
    return {name: packed(values[kept], dtype) for name, (values, dtype) in columns.items() if values is not None}


def layer_payload(run: ViewRun, examples: LayerExamples, effects: LayerLogitEffects) -> dict[str, Any]:
    """Everything the view shows of the chosen neurons of one layer."""
    layer, chosen = examples.layer, examples.neurons
    payload = {
        **example_payload(run, examples),
        "sign_frequencies": packed(run.stats.sign_frequencies[layer, chosen].float(), "f4"),
        **({} if run.stats.nonfinite is None else {"nonfinite": packed(run.stats.nonfinite[layer, chosen], "i4")}),
        "cosines": {name: packed(values[layer, chosen].float(), "f4") for name, values in run.facts.cosines.items()},
        "promoted": packed(effects.promoted), "promoted_values": packed(effects.promoted_values, "f4"),
        "suppressed": packed(effects.suppressed), "suppressed_values": packed(effects.suppressed_values, "f4"),
        "logit_low": packed(effects.low, "f4"), "logit_high": packed(effects.high, "f4"),
        "logit_histogram": packed(effects.histogram),  # token ids and counts of the vocabulary: uint16 where it fits
        "inputs": {name: packed(ids) for name, ids in effects.input_tokens.items()},
        "reasons": {str(n): reason for (lay, n), reason in run.facts.reasons.items() if lay == layer and n in set(chosen.tolist())},
    }
    if run.stats.histogram is not None:
        payload["histogram"] = trimmed_histograms(run.stats.histogram[layer, chosen].numpy())
    if run.facts.connections is not None:
        payload["connections"] = connections_payload(run.facts, layer, chosen)
    return payload


def connections_payload(facts: ModelFacts, layer: int, chosen: np.ndarray) -> dict[str, Any]:
    """The first CONNECTIONS_SHOWN entries (or top_k) of each connection list of the chosen neurons, per kind [chosen shown]:
    `other` (neuron id layer * d_mlp + neuron, or token id; -1: none), `other_class` (IO class of a neuron),
    `virtual_weight`, `cosine` and `expected` (float16). Inputs are ranked by expected contribution where the
    lists have it, else (and the other kinds) by |virtual weight|."""
    connections = facts.connections
    inputs_by = "expected_contribution" if "expected_contribution" in connections.rankings else "virtual_weight"
    neurons, kinds = torch.from_numpy(np.asarray(chosen, dtype=np.int64)), {}
    shown = min(CONNECTIONS_SHOWN, *(int(part["other"].shape[-1]) for part in connections.lists.values()))  # top_k or fewer
    for kind in connections.kinds:
        found = connections.layer_lists(layer, neurons, kind, inputs_by if kind in INPUT_KINDS else "virtual_weight", shown)
        other = found["other"]
        part = {"other": packed(other.reshape(-1), "i4"),
                **{name: packed(found[key].reshape(-1), "f2") for name, key in
                   (("virtual_weight", "virtual_weight"), ("cosine", "cosine"), ("expected", "expected_contribution"))
                   if key in found}}
        if kind not in EMBED_KINDS:
            part["other_class"] = packed(facts.categories.reshape(-1)[other.clamp(min=0)].reshape(-1), "u1")
        kinds[kind] = part
    return {"shown": shown, "inputs_by": inputs_by, "kinds": kinds}


def connection_tokens(facts: ModelFacts, layer: int, neurons: np.ndarray) -> set[int]:
    """The token ids of the embedding's connection lists of some neurons (a page's vocabulary needs them)."""
    if facts.connections is None:
        return set()
    chosen = torch.from_numpy(np.asarray(neurons, dtype=np.int64))
    return {token for kind in EMBED_KINDS if kind in facts.connections.kinds
            for token in facts.connections.layer_lists(layer, chosen, kind, "virtual_weight", CONNECTIONS_SHOWN)["other"].reshape(-1).tolist()
            if token >= 0}


def trimmed_histograms(histogram: np.ndarray) -> dict[str, Any]:
    """Histograms [chosen bin] without their empty ends: first bin, offsets and the counts in between."""
    nonzero = histogram > 0
    first = np.where(nonzero.any(axis=1), nonzero.argmax(axis=1), 0)
    last = np.where(nonzero.any(axis=1), histogram.shape[1] - nonzero[:, ::-1].argmax(axis=1), 0)
    counts = np.concatenate([row[a:b] for row, a, b in zip(histogram, first, last)])
    return {"first": packed(first, "u1"), "offsets": packed(offsets(last - first), "i4"), "counts": packed(counts, "i4")}


def index_payload(run: ViewRun, moments: Moments) -> dict[str, Any]:
    """One row per chosen neuron: id (layer * d_mlp + neuron), class, roles (a bit per role), kurtosis, skew,
    max, min, mean, gate-open frequency."""
    d_mlp = run.stats.d_mlp
    layers = sorted(run.neurons)
    ids = np.concatenate([layer * d_mlp + run.neurons[layer] for layer in layers])
    layer_of, neuron_of = ids // d_mlp, ids % d_mlp
    roles = np.zeros(len(ids), dtype=np.int64)
    for bit, name in enumerate(ROLE_NAMES):
        if name in run.facts.roles:
            roles |= run.facts.roles[name][layer_of, neuron_of].numpy().astype(np.int64) << bit

    def column(table: torch.Tensor) -> np.ndarray:
        return table[layer_of, neuron_of].float().numpy()

    return {
        "ids": packed(ids, "i4"), "io_class": packed(run.facts.categories[layer_of, neuron_of].numpy(), "u1"),
        "roles": packed(roles), "max": packed(column(run.stats.top_values[..., 0]), "f4"),
        "min": packed(column(run.stats.bottom_values[..., 0]), "f4"), "mean": packed(column(run.stats.mean), "f4"),
        "gate_open": packed(column(run.stats.gate_open), "f4"),
        **{name: packed(np.concatenate([moments[name][layer] for layer in layers]), "f4") for name in ("kurtosis", "skew")},
    }


def documents_payload(documents: Documents, first: int, stop: int) -> dict[str, Any]:
    """The tokens of documents [first, stop) of `documents` (rows, not dataset ids), each document once."""
    starts = documents.starts[first:stop + 1] - documents.starts[first]
    payload = {"first": first, "starts": packed(starts, "i4"),
               "tokens": packed(documents.tokens[documents.starts[first]:documents.starts[stop]])}
    if documents.ids is not None:
        payload["ids"] = packed(documents.ids[first:stop], "i4")
    return payload


def meta_payload(run: ViewRun, chunks: list[tuple[int, int]], k: int) -> dict[str, Any]:
    """The run: model, dataset, layers, the names the data's codes stand for, the histogram edges."""
    meta = run.stats.meta
    return {"model": run.model, "dataset": run.dataset, "tokens": int(meta.tokens), "k": k,
            "n_layers": run.stats.n_layers, "d_mlp": run.stats.d_mlp,
            "layers": sorted(run.neurons), "doc_chunks": chunks, "context": list(run.context),
            "shown": list(run.shown) if run.shown is not None else None,
            "list_kinds": list(LIST_KINDS), "sign_combinations": list(SIGN_COMBINATIONS),
            "class_names": list(CLASS_NAMES), "role_names": list(ROLE_NAMES), "input_tables": list(INPUT_TABLES),
            "histogram_edges": [float(e) if np.isfinite(e) else None for e in histogram_edges().tolist()],
            "typical_band_edges": [float(e) if np.isfinite(e) else None for e in typical_band_edges().tolist()],
            "typical_per_band": run.stats.typical_per_band, "typical_off": run.stats.typical_docs is not None and run.stats.typical_per_band == 0,
            "dtype": meta.dtype, "logit_bins": LOGIT_BINS, "bos_left_out": bool(meta.examples_without_bos), "notes": run.notes,
            "compact": run.compact, **made_from(statistics=run.stats.fingerprint)}


def layer_moments(facts: ModelFacts, effects: LayerLogitEffects, layer: int, neurons: np.ndarray) -> dict[str, np.ndarray]:
    """Kurtosis and skew of cos(w_out, W_U) of the chosen neurons of a layer: those of roles.pt where it exists,
    else those computed with the logit effects."""
    return {name: facts.moments[name][layer, neurons].numpy() if facts.moments else getattr(effects, name).numpy()
            for name in ("kurtosis", "skew")}
