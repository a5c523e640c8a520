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

The parts' types and their JSON are `neuroscope.view.parts`' (`ViewMeta`, `IndexPart`, `DocumentsPart`, `LayerPart`);
the builders here make them from `LayerExamples` (the examples and windows), `LayerLogitEffects` (the weights' token
effects), `Statistics` and `ModelFacts`; `ViewRun` holds what every part shares. Numbers travel as base64 of
little-endian arrays (`parts.Packed`; in the viewer's neuron data files all of a file's arrays in one DEFLATE stream,
`parts.deflated`); text as JSON with <, > and & escaped, so that no data can close a script or open markup.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gated_core.artifacts import made_from
from gated_core.naming import NAMINGS, naming
from neuroscope.activation_pass.activations import SIGN_COMBINATIONS
from neuroscope.activation_pass.store import Statistics
from neuroscope.core.histogram import histogram_edges, typical_band_edges
from neuroscope.recompute.examples import LIST_KINDS
from neuroscope.recompute.windows import LayerExamples, WindowHasher
from neuroscope.view.facts import INPUT_TABLES, LOGIT_BINS, LayerLogitEffects, ModelFacts
from neuroscope.view.parts import (
    ConnectionKind,
    ConnectionLists,
    DocumentsPart,
    ExampleArrays,
    Histograms,
    IndexPart,
    LayerPart,
    Packed,
    ViewMeta,
    plain,
)
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
    """One part of a view: a call of neuroscope.<part> with JSON arguments (`parts.plain` of each: a data file's whole
    text)."""
    return f"neuroscope.{part}({','.join(to_json(plain(a)) for a in args)});\n"


CONNECTIONS_SHOWN = 10  # entries of each connection list that a view shows
ACT_CODE_MAX = 127  # 8-bit activations: codes -127..127 times a per-window scale (`act_codes`)


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


def example_payload(run: ViewRun, examples: LayerExamples) -> ExampleArrays:
    """The windows (with their values) and example lists of the chosen neurons of one layer."""
    starts, lengths = shown_spans(examples, run.shown)
    hashes = run.documents.hasher(run.documents.local(examples.doc), starts, lengths)
    kept, duplicates = deduplicated(examples, hashes, starts)
    chosen = len(examples.neurons)
    list_sizes = np.bincount(examples.column[kept] * len(LIST_KINDS) + examples.kind[kept], minlength=chosen * len(LIST_KINDS))
    window_counts = np.bincount(examples.window_column, minlength=chosen)
    floats = "f2" if run.compact else "f4"
    with_values = examples.gates is not None
    return ExampleArrays(
        neurons=Packed.of(examples.neurons, "i4"), window_offsets=Packed.of(offsets(window_counts), "i4"),
        window_doc=Packed.of(examples.window_doc), window_start=Packed.of(examples.window_start),
        window_length=Packed.of(examples.window_length), width=examples.width,
        **(act_codes(examples.acts) if run.compact else {"acts": Packed.of(examples.acts.reshape(-1), "f2")}),
        list_offsets=Packed.of(offsets(list_sizes), "i4"),
        example_window=Packed.of(examples.window[kept] - offsets(window_counts)[examples.column[kept]]),
        example_peak=Packed.of(examples.position[kept] - examples.window_start[examples.window[kept]]),
        example_value=Packed.of(examples.stored[kept], floats), example_duplicates=Packed.of(duplicates),
        bos_value=Packed.of(np.asarray(examples.bos_value, dtype=np.float32), "f4"),  # NaN: not known (the page shows –)
        gates=Packed.of(examples.gates.reshape(-1), "f2") if with_values else None,
        lins=Packed.of(examples.lins.reshape(-1), "f2") if with_values else None,
        **next_token_payload(examples, kept, floats))


def act_codes(acts: np.ndarray) -> dict[str, Packed]:
    """Activations [window width] in 8 bits: a signed code per token (`act_codes`, int8, -ACT_CODE_MAX..ACT_CODE_MAX)
    and a float16 scale per window (`act_scales`): a = code * scale, off by at most scale / 2 = the window's largest
    |a| / (2 ACT_CODE_MAX); the renderer decodes them into `acts`."""
    values = acts.astype(np.float32)
    scales = (np.abs(values).max(axis=1, initial=0.0) / ACT_CODE_MAX).astype(np.float16)
    divisor = np.where(scales > 0, scales.astype(np.float32), 1.0)[:, None]
    codes = np.clip(np.rint(values / divisor), -ACT_CODE_MAX, ACT_CODE_MAX).astype(np.int8)
    return {"act_codes": Packed.of(codes.reshape(-1), "i1"), "act_scales": Packed.of(scales, "f2")}


def next_token_payload(examples: LayerExamples, kept: np.ndarray, floats: str = "f4") -> dict[str, Packed | None]:
    """What the shown examples `kept` do to their next token (those of `neuroscope.recompute.next_token` that were computed,
    the others None): `example_next` (token id, -1: none), `example_effect` (direct effect, nan: none; `floats`: its
    dtype), `example_rank` (0: none), `example_ablation` (loss change with the neuron zeroed there)."""
    columns = {"example_next": (examples.next_token, "i4"), "example_effect": (examples.direct_effect, floats),
               "example_rank": (examples.next_rank, None), "example_ablation": (examples.ablation_effect, "f4")}
    return {name: None if values is None else Packed.of(values[kept], dtype) for name, (values, dtype) in columns.items()}


def layer_payload(run: ViewRun, examples: LayerExamples, effects: LayerLogitEffects) -> LayerPart:
    """Everything the view shows of the chosen neurons of one layer."""
    layer, chosen = examples.layer, examples.neurons
    stats, facts = run.stats, run.facts
    return LayerPart(
        examples=example_payload(run, examples),
        sign_frequencies=Packed.of(stats.sign_frequencies[layer, chosen].float(), "f4"),
        nonfinite=None if stats.nonfinite is None else Packed.of(stats.nonfinite[layer, chosen], "i4"),
        cosines={name: Packed.of(values[layer, chosen].float(), "f4") for name, values in facts.cosines.items()},
        promoted=Packed.of(effects.promoted), promoted_values=Packed.of(effects.promoted_values, "f4"),
        suppressed=Packed.of(effects.suppressed), suppressed_values=Packed.of(effects.suppressed_values, "f4"),
        logit_low=Packed.of(effects.low, "f4"), logit_high=Packed.of(effects.high, "f4"),
        logit_histogram=Packed.of(effects.histogram),  # token ids and counts of the vocabulary: uint16 where it fits
        inputs={name: Packed.of(ids) for name, ids in effects.input_tokens.items()},
        input_values={name: Packed.of(values, "f4") for name, values in effects.input_values.items()} or None,
        reasons={str(n): reason for (lay, n), reason in facts.reasons.items() if lay == layer and n in set(chosen.tolist())},
        histogram=None if stats.histogram is None else trimmed_histograms(stats.histogram[layer, chosen].numpy()),
        connections=None if facts.connections is None else connections_payload(facts, layer, chosen))


def connections_payload(facts: ModelFacts, layer: int, chosen: np.ndarray) -> ConnectionLists:
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
        half = {key: Packed.of(values.reshape(-1), "f2") for key, values in found.items() if key != "other"}
        classes = None if kind in EMBED_KINDS else Packed.of(facts.categories.reshape(-1)[other.clamp(min=0)].reshape(-1), "u1")
        kinds[kind] = ConnectionKind(other=Packed.of(other.reshape(-1), "i4"), virtual_weight=half.get("virtual_weight"),
                                     cosine=half.get("cosine"), expected=half.get("expected_contribution"), other_class=classes)
    return ConnectionLists(shown=shown, inputs_by=inputs_by, kinds=kinds)


def connection_tokens(facts: ModelFacts, layer: int, neurons: np.ndarray) -> set[int]:
    """The token ids of the embedding's connection lists of some neurons (a page's vocabulary needs them)."""
    if facts.connections is None:
        return set()
    chosen = torch.from_numpy(np.asarray(neurons, dtype=np.int64))
    return {token for kind in EMBED_KINDS if kind in facts.connections.kinds
            for token in facts.connections.layer_lists(layer, chosen, kind, "virtual_weight", CONNECTIONS_SHOWN)["other"].reshape(-1).tolist()
            if token >= 0}


def trimmed_histograms(histogram: np.ndarray) -> Histograms:
    """Histograms [chosen bin] without their empty ends: first bin, offsets and the counts in between."""
    nonzero = histogram > 0
    first = np.where(nonzero.any(axis=1), nonzero.argmax(axis=1), 0)
    last = np.where(nonzero.any(axis=1), histogram.shape[1] - nonzero[:, ::-1].argmax(axis=1), 0)
    counts = np.concatenate([row[a:b] for row, a, b in zip(histogram, first, last)])
    return Histograms(first=Packed.of(first, "u1"), offsets=Packed.of(offsets(last - first), "i4"), counts=Packed.of(counts, "i4"))


def index_payload(run: ViewRun, moments: Moments) -> IndexPart:
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

    def column(table: torch.Tensor) -> Packed:
        return Packed.of(table[layer_of, neuron_of].float().numpy(), "f4")

    def moment(name: str) -> Packed:
        return Packed.of(np.concatenate([moments[name][layer] for layer in layers]), "f4")

    return IndexPart(ids=Packed.of(ids, "i4"), io_class=Packed.of(run.facts.categories[layer_of, neuron_of].numpy(), "u1"),
                     roles=Packed.of(roles), max=column(run.stats.top_values[..., 0]), min=column(run.stats.bottom_values[..., 0]),
                     mean=column(run.stats.mean), gate_open=column(run.stats.gate_open), kurtosis=moment("kurtosis"),
                     skew=moment("skew"))


def documents_payload(documents: Documents, first: int, stop: int) -> DocumentsPart:
    """The tokens of documents [first, stop) of `documents` (rows, not dataset ids), each document once."""
    starts = documents.starts[first:stop + 1] - documents.starts[first]
    return DocumentsPart(first=first, starts=Packed.of(starts, "i4"),
                         tokens=Packed.of(documents.tokens[documents.starts[first]:documents.starts[stop]]),
                         ids=None if documents.ids is None else Packed.of(documents.ids[first:stop], "i4"))


def meta_payload(run: ViewRun, chunks: list[tuple[int, int]], k: int, **extra: Any) -> ViewMeta:
    """The run: model, dataset, layers, the names the data's codes stand for, the histogram edges; `extra`: the
    viewer's chunking or a page's neuron (`ViewMeta`'s optional fields)."""
    meta = run.stats.meta

    def edges(values: np.ndarray) -> list[float | None]:
        return [float(e) if np.isfinite(e) else None for e in values.tolist()]

    return ViewMeta(model=run.model, dataset=run.dataset, tokens=int(meta.tokens), k=k, n_layers=run.stats.n_layers,
                    d_mlp=run.stats.d_mlp, layers=sorted(run.neurons), doc_chunks=chunks, context=list(run.context),
                    shown=list(run.shown) if run.shown is not None else None, list_kinds=list(LIST_KINDS),
                    sign_combinations=list(SIGN_COMBINATIONS), class_names=list(CLASS_NAMES), role_names=list(ROLE_NAMES),
                    input_tables=list(INPUT_TABLES), histogram_edges=edges(histogram_edges()),
                    typical_band_edges=edges(typical_band_edges()), typical_per_band=run.stats.typical_per_band,
                    typical_off=run.stats.typical_docs is not None and run.stats.typical_per_band == 0, dtype=meta.dtype,
                    logit_bins=LOGIT_BINS, bos_left_out=bool(meta.examples_without_bos), notes=run.notes, compact=run.compact,
                    **made_from(statistics=run.stats.fingerprint), naming_words=NAMINGS[naming()] or None, **extra)


def layer_moments(facts: ModelFacts, effects: LayerLogitEffects, layer: int, neurons: np.ndarray) -> dict[str, np.ndarray]:
    """Kurtosis and skew of cos(w_out, W_U) of the chosen neurons of a layer: those of roles.pt where it exists,
    else those computed with the logit effects."""
    return {name: facts.moments[name][layer, neurons].numpy() if facts.moments else getattr(effects, name).numpy()
            for name in ("kurtosis", "skew")}
