"""The examples of many neurons from one batched pass: every chosen document runs once, all layers
at once, and each example keeps only a window of activations around its extreme token (float16).

For each layer, `LayerExamples` flattens the chosen neurons' example lists into [example] arrays
and their windows into [window] arrays (a window is (document, start, length); examples of the same
neuron that share one are stored once). `recompute_windows` fills the windows' activations, checks
every recomputed extreme value against the statistics (`RecomputeMismatch` otherwise) and finds what each
firing does to the next token (`neuroscope.recompute.next_token`: the next token, the direct effect, its rank).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from gated_core.neurons import NeuronId
from neuroscope.activation_pass.store import Statistics
from neuroscope.core.batches import padded_batches, subset_plan
from neuroscope.core.hooks import final_norm_input, mlp_hooks, run_model
from neuroscope.recompute.examples import LIST_KINDS, RecomputeMismatch, stored_lists, tolerance
from neuroscope.recompute.next_token import Readout, direct_effects, next_token_ranks, output_weights

EFFECT_CHUNK = 1 << 13  # examples whose direct effects are computed at once (OLMo-7B: 2 x 128 MiB of float32 rows)
HASH_BASE = 1_000_003  # odd: the window hashes of `WindowHasher` are polynomials in it modulo 2^64


@dataclass
class LayerExamples:
    """The examples of the chosen neurons of one layer; numpy arrays, one row per example or window."""

    layer: int
    neurons: np.ndarray  # [chosen] int64, ascending
    column: np.ndarray  # [example] int64: index into `neurons`
    kind: np.ndarray  # [example] int64: index into LIST_KINDS
    rank: np.ndarray  # [example] int64: place in its list (0 best)
    doc: np.ndarray  # [example] int64
    position: np.ndarray  # [example] int64: the extreme token
    stored: np.ndarray  # [example] float32: a there, as the statistics keep it
    window: np.ndarray  # [example] int64: index into the windows
    window_column: np.ndarray  # [window] int64
    window_doc: np.ndarray  # [window] int64
    window_start: np.ndarray  # [window] int64
    window_length: np.ndarray  # [window] int64
    acts: np.ndarray = field(default=None)  # [window width] float16, filled by recompute_windows
    bos_value: np.ndarray = field(default=None)  # [chosen] float32: a at a document's BOS (nan: none seen)
    gates: np.ndarray | None = None  # [window width] float16: g, where a view shows it (single pages)
    lins: np.ndarray | None = None  # [window width] float16: u, likewise
    next_token: np.ndarray | None = None  # [example] int64: the token after the extreme one (-1: none)
    direct_effect: np.ndarray | None = None  # [example] float32: DE on that token's logit (nan: none)
    next_rank: np.ndarray | None = None  # [example] int64: its rank in w_out · W_U (1 = most promoted; 0: none)
    ablation_effect: np.ndarray | None = None  # [example] float32: loss change with the neuron zeroed there (pages)

    @property
    def width(self) -> int:
        return self.acts.shape[1]


def layer_examples(stats: Statistics, layer: int, neurons: np.ndarray, lengths: np.ndarray, before: int,
                   width: int) -> LayerExamples:
    """The examples of `neurons` of one layer from the statistics, with windows that start `before` tokens
    before the extreme token (or at 0) and hold `width` tokens (fewer at a document's end; never more than the
    longest document has)."""
    longest = int(lengths.max(initial=0))
    before, width = min(before, longest), max(min(width, longest), 1)
    parts = []
    for kind, (_, values, docs, positions) in enumerate(stored_lists(stats, layer)):
        docs_l = docs[neurons].numpy()  # [chosen k]
        column, rank = np.nonzero(docs_l >= 0)
        parts.append((column, np.full_like(column, kind), rank, docs_l[column, rank],
                      positions[neurons].numpy()[column, rank], values[neurons].numpy()[column, rank]))
    column, kind, rank, doc, position, stored = (np.concatenate(p) for p in zip(*parts))
    order = np.lexsort((rank, kind, column))
    column, kind, rank, doc, position, stored = (t[order] for t in (column, kind, rank, doc, position, stored))
    start = np.maximum(position - before, 0)
    key = (column * len(lengths) + doc) * int(lengths.max() + 1) + start
    unique, first, window = np.unique(key, return_index=True, return_inverse=True)
    return LayerExamples(layer, np.asarray(neurons, dtype=np.int64), column, kind, rank, doc, position,
                         stored.astype(np.float32), window, column[first], doc[first], start[first],
                         np.minimum(width, lengths[doc[first]] - start[first]),
                         acts=np.zeros((len(unique), width), dtype=np.float16),
                         bos_value=np.full(len(neurons), np.nan, dtype=np.float32))


@dataclass
class _ByDocument:
    """Rows of a [row] array grouped by document: rows of document d are order[bounds[d]:bounds[d + 1]]."""

    order: np.ndarray
    bounds: np.ndarray

    @classmethod
    def of(cls, docs: np.ndarray, n_docs: int) -> _ByDocument:
        order = np.argsort(docs, kind="stable")
        return cls(order, np.searchsorted(docs[order], np.arange(n_docs + 1)))

    def rows(self, docs: list[int]) -> np.ndarray:
        return np.concatenate([self.order[self.bounds[d]:self.bounds[d + 1]] for d in docs])


class WindowFiller:
    """The hook of the batched pass: per layer, copies each window's activations and checks each example."""

    def __init__(self, layers: dict[int, LayerExamples], n_docs: int, dtype: str):
        self.layers = layers
        self.windows = {layer: _ByDocument.of(ex.window_doc, n_docs) for layer, ex in layers.items()}
        self.examples = {layer: _ByDocument.of(ex.doc, n_docs) for layer, ex in layers.items()}
        self.neurons = {layer: torch.from_numpy(ex.neurons) for layer, ex in layers.items()}
        self.dtype = dtype
        self.batch_docs: list[int] = []
        self.bos_rows: list[int] = []  # rows of the batch whose document starts with BOS
        self.peaks: dict[int, tuple[np.ndarray, torch.Tensor, torch.Tensor, torch.Tensor]] = {}  # layer -> this batch's
        # examples, their rows, positions and recomputed a

    def __call__(self, layer: int, g: torch.Tensor, u: torch.Tensor, a: torch.Tensor) -> None:
        examples = self.layers[layer]
        row_of = {doc: row for row, doc in enumerate(self.batch_docs)}
        a = a.detach()
        neurons = self.neurons[layer].to(a.device)
        windows = self.windows[layer].rows(self.batch_docs)
        if len(windows):
            rows = torch.tensor([row_of[d] for d in examples.window_doc[windows]], device=a.device)
            offsets = torch.arange(examples.width, device=a.device)
            positions = (torch.from_numpy(examples.window_start[windows]).to(a.device)[:, None] + offsets).clamp_max(a.shape[1] - 1)
            columns = neurons[torch.from_numpy(examples.window_column[windows]).to(a.device)]
            examples.acts[windows] = a[rows[:, None], positions, columns[:, None]].to(torch.float16).cpu().numpy()
        self._check(layer, a, row_of)
        if self.bos_rows and np.isnan(examples.bos_value).any():
            examples.bos_value = a[self.bos_rows[0], 0, neurons].float().cpu().numpy()

    def _check(self, layer: int, a: torch.Tensor, row_of: dict[int, int]) -> None:
        """Every example of the batch's documents: the recomputed a at its position against the stored one."""
        examples = self.layers[layer]
        picked = self.examples[layer].rows(self.batch_docs)
        if not len(picked):
            return
        rows = torch.tensor([row_of[d] for d in examples.doc[picked]], device=a.device)
        columns = torch.from_numpy(examples.neurons[examples.column[picked]]).to(a.device)
        positions = torch.from_numpy(examples.position[picked]).to(a.device)
        peak = a[rows, positions, columns].float()
        self.peaks[layer] = (picked, rows, positions, peak)
        got = peak.cpu().numpy()
        stored = examples.stored[picked]
        bad = np.nonzero(np.abs(got - stored) > tolerance(stored, self.dtype))[0]
        if len(bad):
            i = picked[bad[0]]
            raise RecomputeMismatch(
                f"neuron {NeuronId(layer, examples.neurons[examples.column[i]])}, document {examples.doc[i]}, position "
                f"{examples.position[i]}: stored {LIST_KINDS[examples.kind[i]]} {examples.stored[i]:.6g}, recomputed "
                f"{got[bad[0]]:.6g}; the statistics were not made by this model on this dataset")

    def next_token_effects(self, model: Any, readout: Readout, residual: torch.Tensor, input_ids: torch.Tensor,
                           attention_mask: torch.Tensor) -> None:
        """After a batch's forward pass: the next token and direct effect of every example of its documents
        (`residual`: the final-norm input [batch pos d_model])."""
        for layer, (picked, rows, positions, peak) in self.peaks.items():
            examples = self.layers[layer]
            if examples.next_token is None:
                examples.next_token = np.full(len(examples.doc), -1, dtype=np.int64)
                examples.direct_effect = np.full(len(examples.doc), np.nan, dtype=np.float32)
            neurons = torch.from_numpy(examples.neurons[examples.column[picked]])
            for start in range(0, len(picked), EFFECT_CHUNK):  # each example's w_out and W_U column: [chunk d_model] at once
                part = slice(start, start + EFFECT_CHUNK)
                examples.next_token[picked[part]], examples.direct_effect[picked[part]] = direct_effects(
                    readout, residual, input_ids, attention_mask, rows[part], positions[part], peak[part],
                    output_weights(model, layer, neurons[part]))
        self.peaks = {}


def dataset_tokens(dataset: Any) -> tuple[np.ndarray, np.ndarray]:
    """Every document's real tokens, concatenated [token] int64, and where each starts [document + 1] int64
    (read from the Arrow column, without Python lists)."""
    column = dataset.data.column("input_ids").combine_chunks()
    flat, starts = column.values.to_numpy().astype(np.int64), column.offsets.to_numpy().astype(np.int64)
    lengths = np.asarray(dataset.data.column("length").to_numpy(), dtype=np.int64) if "length" in dataset.column_names \
        else np.diff(starts)
    keep = np.concatenate([np.arange(s, s + n) for s, n in zip(starts[:-1], lengths)]) if (lengths != np.diff(starts)).any() \
        else slice(None)
    return flat[keep], np.concatenate([[0], np.cumsum(lengths)])


def recompute_windows(model: Any, dataset: Any, layers: dict[int, LayerExamples], lengths: np.ndarray, batch_size: int,
                      pad_id: int, device: torch.device, dtype: str, bos_id: int | None, progress: Any = None,
                      rank_next_tokens: bool = True) -> int:
    """Run every document that a window needs once (batched by length, through the whole model: the direct
    effects need the final norm's input), fill the windows' activations and every example's next token, direct
    effect and (unless not `rank_next_tokens`: a part, ranked later with the others) its rank; returns the number
    of tokens run."""
    docs = np.unique(np.concatenate([ex.window_doc for ex in layers.values()]))
    filler = WindowFiller(layers, len(lengths), dtype)
    readout = Readout.of(model)
    tokens = 0
    with mlp_hooks(model, filler, sorted(layers)), final_norm_input(model) as captured:
        plan = subset_plan(docs.tolist(), lengths[docs].tolist(), batch_size)
        for batch in padded_batches(dataset, plan, pad_id, device, progress=progress):
            filler.batch_docs = batch.docs
            filler.bos_rows = [] if bos_id is None else torch.nonzero(batch.input_ids[:, 0] == bos_id)[:, 0].tolist()
            run_model(model, batch.input_ids, batch.attention_mask)
            filler.next_token_effects(model, readout, captured["x"], batch.input_ids, batch.attention_mask)
            tokens += batch.tokens
    for layer, examples in layers.items():
        if examples.next_token is None:  # a layer without examples
            examples.next_token = np.full(len(examples.doc), -1, dtype=np.int64)
            examples.direct_effect = np.full(len(examples.doc), np.nan, dtype=np.float32)
        if rank_next_tokens:
            examples.next_rank = next_token_ranks(readout, model, layer, examples.neurons[examples.column], examples.next_token)
    return tokens


class WindowHasher:
    """64-bit hashes of windows of the documents' tokens: equal texts give equal hashes (and different texts
    almost never do). A polynomial in HASH_BASE modulo 2^64 over the concatenated documents (`tokens`,
    `doc_starts` of `dataset_tokens`), shifted to one power so that windows compare anywhere; the prefix
    sums are made once, so that each window costs O(1)."""

    def __init__(self, tokens: np.ndarray, doc_starts: np.ndarray):
        with np.errstate(over="ignore"):
            powers = np.cumprod(np.full(len(tokens) + 1, HASH_BASE, dtype=np.uint64))
            self.powers = np.concatenate([np.ones(1, dtype=np.uint64), powers[:-1]])  # powers[i] = base^i
            terms = (tokens.astype(np.uint64) + np.uint64(1)) * self.powers[:-1]
            self.prefix = np.concatenate([np.zeros(1, dtype=np.uint64), np.cumsum(terms, dtype=np.uint64)])
        self.doc_starts = doc_starts

    def __call__(self, docs: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """The hash of each window (document, start, length) [window] uint64."""
        with np.errstate(over="ignore"):
            first = self.doc_starts[docs] + starts
            spans = self.prefix[first + lengths] - self.prefix[first]
            return spans * self.powers[len(self.prefix) - 1 - first] + lengths.astype(np.uint64)
