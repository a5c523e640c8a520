"""The activation pass: running per-neuron statistics over a dataset, reduced batch by batch (the hooks that
feed it are in `hooks.py`, the histogram's bins in `histogram.py`).

For every neuron the pass keeps, on the device and independent of the number of tokens:
- the top-k documents by their maximum of the activation a = act(g) * u over positions
  (value, document, position) and the bottom-k by their minimum;
- for each of the four sign combinations of (g, u), the top-k documents by their largest |a|
  among the tokens in that combination (tokens with a = 0 are no examples);
- the sum of a over real tokens (for the mean), accumulated exactly in 64-bit fixed point,
  so that any split into shards or resumptions gives bit-identical results;
- counts of g > 0 (gate open), u > 0 and both, from which the four sign combinations follow;
- a histogram of a with fixed bin edges shared by every neuron (`histogram_edges`), in int64
  counts, so that shards merge by addition.

Example lists leave out position 0 when it is the BOS token (`bos_id`): BOS has the same
activation in every document and would fill the lists with k copies of itself. It still counts
in the mean, the frequencies and the histogram.

Ties are broken by the lower document index (the merge sorts by document, then stably by
value), and within a document by the first position. Documents are batched by length (a
fixed plan that depends only on the dataset and the batch size), so little is padded and
every split of the plan into shards or resumptions runs exactly the same batches. Shapes:
per-layer activations are [batch pos neuron]; statistics are [layer neuron], [layer neuron k],
[layer neuron combination k] or [layer neuron bin].

Speed: per layer the pass reduces with value-only reductions (amax / amin, several times faster
on CPUs than max with indices) and looks up positions only for the candidates that can still
enter a list (at or above its current k-th value), which after the first batches are few.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch

from neuroscope.histogram import histogram_bins, histogram_codes, histogram_lookup
from neuroscope.hooks import mlp_hooks, pad_batch, run_model

FIXED_POINT_BITS = 28  # resolution 2^-28 per batch sum; |sum| up to 3.4e10 fits in int64
SIGN_COMBINATIONS = ("gate+ lin+", "gate+ lin-", "gate- lin+", "gate- lin-")  # + means > 0
COMBINATION_SIGNS = (1, -1, -1, 1)  # the sign of a = act(g) * u in each combination (act keeps the sign of g)
STATISTICS_VERSION = 2  # 2: histogram, sign-combination examples, BOS left out of the example lists

DENSE_FRACTION = 1 / 2  # above this share of candidates, positions come from max / min with indices


LISTS = ("top", "bottom", *SIGN_COMBINATIONS)  # the ranked example lists, in the order of NeuronStats.keys[:, :, list]
LIST_SIGNS = (1, -1, *COMBINATION_SIGNS)  # value = sign * key: keys are a, -a and |a|


def merge_ranked(keys: torch.Tensor, docs: torch.Tensor, positions: torch.Tensor, new_keys: torch.Tensor,
                 new_docs: torch.Tensor, new_positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Merge candidates [... m] into ranked lists [... k] (keys descending): ties go to the lower document.

    Empty slots and invalid candidates have key -inf and document -1; a list keeps its length k.
    """
    k = keys.shape[-1]
    all_keys = torch.cat([keys, new_keys], dim=-1)
    all_docs = torch.cat([docs, new_docs], dim=-1)
    all_positions = torch.cat([positions, new_positions], dim=-1)
    by_doc = torch.sort(torch.where(all_docs < 0, torch.iinfo(torch.long).max, all_docs), dim=-1, stable=True).indices
    all_keys, all_docs, all_positions = (t.gather(-1, by_doc) for t in (all_keys, all_docs, all_positions))
    order = torch.sort(all_keys, dim=-1, descending=True, stable=True).indices[..., :k]
    return all_keys.gather(-1, order), all_docs.gather(-1, order), all_positions.gather(-1, order)


@dataclass
class NeuronStats:
    """Running statistics of every neuron; every tensor lives on one device.

    The example lists are kept together, ranked by a key that is a (top), -a (bottom) or |a| (the
    four sign combinations), in the order of LISTS; the files store them under their own names
    (`neuroscope.store`): top_*, bottom_* ([layer neuron k]) and combo_* ([layer neuron combination k]).
    """

    keys: torch.Tensor  # [layer neuron list k] float32, descending; -inf: empty slot
    docs: torch.Tensor  # [layer neuron list k] int64; -1: empty slot
    positions: torch.Tensor  # [layer neuron list k] int64
    post_sum: torch.Tensor  # [layer neuron] int64, fixed point 2^-28
    gate_positive: torch.Tensor  # [layer neuron] int64
    lin_positive: torch.Tensor
    both_positive: torch.Tensor
    histogram: torch.Tensor  # [layer neuron bin] int64, bins of histogram_edges()
    n_tokens: torch.Tensor  # [] int64

    COUNTS = ("post_sum", "gate_positive", "lin_positive", "both_positive", "histogram", "n_tokens")

    @classmethod
    def empty(cls, n_layers: int, d_mlp: int, k: int, device: torch.device | str = "cpu") -> NeuronStats:
        lists, pairs = (n_layers, d_mlp, len(LISTS), k), (n_layers, d_mlp)

        def full(value, dtype, size=pairs):
            return torch.full(size, value, dtype=dtype, device=device)

        return cls(keys=full(-torch.inf, torch.float32, lists), docs=full(-1, torch.long, lists),
                   positions=full(-1, torch.long, lists), post_sum=full(0, torch.long), gate_positive=full(0, torch.long),
                   lin_positive=full(0, torch.long), both_positive=full(0, torch.long),
                   histogram=full(0, torch.long, (*pairs, histogram_bins())),
                   n_tokens=torch.zeros((), dtype=torch.long, device=device))

    @property
    def k(self) -> int:
        return self.keys.shape[-1]

    top_values = property(lambda self: self.keys[:, :, 0])  # [layer neuron k] float32, descending
    top_docs = property(lambda self: self.docs[:, :, 0])
    top_positions = property(lambda self: self.positions[:, :, 0])
    bottom_values = property(lambda self: -self.keys[:, :, 1])  # ascending
    bottom_docs = property(lambda self: self.docs[:, :, 1])
    bottom_positions = property(lambda self: self.positions[:, :, 1])
    combo_values = property(lambda self: self.keys[:, :, 2:])  # [layer neuron combination k]: |a|, descending
    combo_docs = property(lambda self: self.docs[:, :, 2:])
    combo_positions = property(lambda self: self.positions[:, :, 2:])

    def to(self, device: torch.device | str) -> NeuronStats:
        return NeuronStats(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def thresholds(self, layer: int) -> torch.Tensor:
        """The k-th key of every list of one layer [list neuron]: a candidate below it cannot enter."""
        return self.keys[layer, :, :, -1].T

    def merge_candidates(self, keys: torch.Tensor, docs: torch.Tensor, positions: torch.Tensor) -> None:
        """Merge candidates [layer neuron list m] into every list; only the lists that one of them can
        enter (a key at or above the list's k-th) are touched."""
        reach = (keys >= self.keys[..., -1:]) & (keys > -torch.inf)
        rows = reach.any(dim=-1).nonzero(as_tuple=True)
        if not len(rows[0]):
            return
        merged = merge_ranked(self.keys[rows], self.docs[rows], self.positions[rows], keys[rows], docs[rows], positions[rows])
        if bool(((merged[1] >= 0) & (merged[2] < 0)).any()):
            raise RuntimeError("an example entered a list without its position")
        self.keys[rows], self.docs[rows], self.positions[rows] = merged

    def _merge_extremes(self, values: torch.Tensor, docs: torch.Tensor, positions: torch.Tensor, top: bool) -> None:
        """Merge candidates [layer neuron m] into the top (or bottom) k: by value, ties to the lower document."""
        index, sign = (0, 1) if top else (1, -1)
        merged = merge_ranked(self.keys[:, :, index], self.docs[:, :, index], self.positions[:, :, index],
                              sign * values, docs, positions)
        self.keys[:, :, index], self.docs[:, :, index], self.positions[:, :, index] = merged

    def merge(self, other: NeuronStats) -> None:
        """Add the statistics of a run over other batches (another shard), in place."""
        self.merge_candidates(other.keys, other.docs, other.positions)
        for name in self.COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def summary(self) -> dict[str, torch.Tensor]:
        """Mean activation, gate-open frequency and the four sign-combination frequencies ([layer neuron (4)])."""
        n = self.n_tokens.double().clamp_min(1)
        both = self.both_positive.double()
        gate, lin = self.gate_positive.double(), self.lin_positive.double()
        combos = torch.stack([both, gate - both, lin - both, n - gate - lin + both], dim=-1) / n
        return {"mean": self.post_sum.double() / 2 ** FIXED_POINT_BITS / n, "gate_open": gate / n, "sign_frequencies": combos}


def _count_true(masks: list[torch.Tensor]) -> torch.Tensor:
    """Number of True entries over (batch, pos) of each [batch pos neuron] mask: [len(masks) neuron] int64.

    Summed as int32 (exact: a batch has far fewer than 2^31 tokens), about 1.3x faster on GPUs
    than the default int64 sum. (A matrix product with a row of ones is faster still, but
    cuBLAS may reduce bf16 products in reduced precision, which is not exact.)
    """
    return torch.stack([m.sum(dim=(0, 1), dtype=torch.int32) for m in masks]).long()


@dataclass
class BatchLayout:
    """Which positions of a batch count: every real token for the sums, counts and histogram; for the
    example lists, the real tokens from `offset` on, less a leading BOS (`eligible`)."""

    valid: torch.Tensor  # [batch pos] bool: real tokens
    padded: bool
    offset: int  # 1 when every document starts with a BOS that is left out, else 0
    eligible: torch.Tensor | None  # [batch pos-offset 1] bool; None: every position from offset on

    @classmethod
    def of(cls, input_ids: torch.Tensor, attention_mask: torch.Tensor, bos_id: int | None) -> BatchLayout:
        valid = attention_mask.bool()
        bos_first = valid[:, 0] & (input_ids[:, 0] == bos_id) if bos_id is not None else torch.zeros_like(valid[:, 0])
        offset = 1 if bool(bos_first.all()) and valid.shape[1] > 1 else 0
        eligible = valid[:, offset:].clone()
        if offset == 0:
            eligible[:, 0] &= ~bos_first
        return cls(valid, not bool(valid.all()), offset, None if bool(eligible.all()) else eligible[..., None])

    def bias(self, dtype: torch.dtype) -> torch.Tensor:
        """[batch pos-offset 1]: 0 at eligible positions, -inf elsewhere (a + bias leaves them out of a max)."""
        return torch.zeros((), dtype=dtype, device=self.valid.device).masked_fill(~self.eligible, -torch.inf)


class BatchReducer:
    """Collects one batch's per-layer reductions from the hooks, then applies them all at once,
    so that an interrupted forward pass never leaves half-updated statistics.

    `bos_id`: a document's first token, when it is this one, is no example (None: every token is).
    """

    def __init__(self, stats: NeuronStats, bos_id: int | None = None):
        self.stats = stats
        self.bos_id = bos_id
        self.pending: dict[int, tuple[torch.Tensor, ...]] = {}
        n_layers, d_mlp, bins = stats.histogram.shape
        device = stats.histogram.device
        self.lookup = histogram_lookup(device)
        self.bin_offsets = torch.arange(d_mlp, dtype=torch.int32, device=device) * bins  # [neuron]
        self.histogram = torch.zeros((n_layers, d_mlp, bins), dtype=torch.int32, device=device)  # this batch's counts
        self.layout: BatchLayout | None = None

    def start(self, attention_mask: torch.Tensor, input_ids: torch.Tensor | None = None) -> None:
        ids = input_ids if input_ids is not None else torch.full_like(attention_mask, -1)
        self.layout = BatchLayout.of(ids, attention_mask, self.bos_id)
        self.pending.clear()
        self.histogram.zero_()

    def _count_histogram(self, layer: int, tokens: torch.Tensor) -> None:
        """Add the bins of every value of `tokens` [... neuron] to this batch's histogram of `layer`."""
        bins = self.lookup.index_select(0, histogram_codes(tokens).view(-1)).view(-1, self.bin_offsets.numel())
        index = (bins + self.bin_offsets).view(-1)
        self.histogram[layer].view(-1).index_add_(0, index, torch.ones((), dtype=torch.int32, device=index.device).expand(index.numel()))

    def _example_keys(self, a: torch.Tensor, gate_open: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Each document's best key in every list [list batch neuron] float32 (-inf: none), and the tensors
        [batch pos-offset neuron] whose max or min over positions gave each list's values (a, with -inf or +inf
        where it is no example; a where the gate is open, else 0; a where it is closed, else 0)."""
        layout = self.layout
        a_ex, open_ex = a[:, layout.offset:], gate_open[:, layout.offset:]
        if layout.eligible is None:
            ranked_high = ranked_low = a_ex
            gated = a_ex * open_ex
            closed = a_ex - gated
        else:
            bias = layout.bias(a.dtype)
            ranked_high, ranked_low = a_ex + bias, a_ex - bias
            gated = a_ex * (open_ex & layout.eligible)
            closed = a_ex * layout.eligible - gated
        keys = torch.stack([ranked_high.amax(dim=1), -ranked_low.amin(dim=1), gated.amax(dim=1), -gated.amin(dim=1),
                            -closed.amin(dim=1), closed.amax(dim=1)]).float()
        keys[2:] = torch.where(keys[2:] > 0, keys[2:], -torch.inf)  # a = 0 is no example of a sign combination
        return keys, (ranked_high, ranked_low, gated, gated, closed, closed)

    def _positions(self, layer: int, keys: torch.Tensor, sources: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Positions [list batch neuron] of the candidates that can still enter a list (-1 for the others): the
        first position where the list's source holds the candidate's value. Few candidates: looked up one by
        one; many (the first batches): max / min with indices over the whole source."""
        candidates = (keys >= self.stats.thresholds(layer)[:, None, :]) & (keys > -torch.inf)
        positions = torch.full(keys.shape, -1, dtype=torch.long, device=keys.device)
        found = candidates.nonzero()  # [m 3]: list, document row, neuron; sorted by list
        dense_above = DENSE_FRACTION * keys[0].numel()
        for index, part in enumerate(found.split(torch.bincount(found[:, 0], minlength=len(LISTS)).tolist())):
            if len(part) > dense_above:
                extreme = sources[index].max(dim=1) if LIST_SIGNS[index] > 0 else sources[index].min(dim=1)
                positions[index] = extreme.indices + self.layout.offset
            elif len(part):
                rows, neurons = part[:, 1], part[:, 2]
                values = LIST_SIGNS[index] * keys[index, rows, neurons]
                hits = sources[index][rows, :, neurons] == values[:, None]  # [m pos]
                positions[index, rows, neurons] = hits.to(torch.uint8).argmax(dim=1) + self.layout.offset
        return positions

    def __call__(self, layer: int, g: torch.Tensor, u: torch.Tensor, a: torch.Tensor) -> None:
        layout = self.layout
        gate_open, lin_positive = g > 0, u > 0
        if layout.padded:
            real = layout.valid[..., None]
            total = (a * real).sum(dim=(0, 1), dtype=torch.float32)
            gate_open_real, lin_positive_real = gate_open & real, lin_positive & real
            self._count_histogram(layer, a[layout.valid])
        else:
            total = a.sum(dim=(0, 1), dtype=torch.float32)
            gate_open_real, lin_positive_real = gate_open, lin_positive
            self._count_histogram(layer, a)
        counts = _count_true([gate_open_real, lin_positive_real, gate_open_real & lin_positive_real])
        keys, sources = self._example_keys(a, gate_open)
        positions = self._positions(layer, keys, sources)
        fixed = torch.round(total.double() * 2 ** FIXED_POINT_BITS).long()
        self.pending[layer] = (keys, positions, fixed, counts)

    def apply(self, doc_ids: torch.Tensor) -> None:
        """Fold the batch (documents `doc_ids`, one per row) into the statistics."""
        stats = self.stats
        if len(self.pending) != stats.keys.shape[0]:
            raise RuntimeError(f"hooks saw {len(self.pending)} of {stats.keys.shape[0]} layers")
        layers = sorted(self.pending)
        keys, positions, fixed, counts = (torch.stack([self.pending[layer][i] for layer in layers]) for i in range(4))
        keys, positions = keys.permute(0, 3, 1, 2), positions.permute(0, 3, 1, 2)  # [layer neuron list batch]
        valid = keys > -torch.inf
        stats.merge_candidates(keys, torch.where(valid, doc_ids.to(keys.device), -1), torch.where(valid, positions, -1))
        stats.post_sum += fixed
        stats.gate_positive += counts[:, 0]
        stats.lin_positive += counts[:, 1]
        stats.both_positive += counts[:, 2]
        stats.histogram += self.histogram
        stats.n_tokens += self.layout.valid.sum()
        self.pending.clear()


def batch_plan(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Documents grouped into batches of similar length, longest first (so memory peaks at once).

    Depends only on the lengths and the batch size: every run, resumption and shard of the
    same dataset sees the same batches.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def shard_range(n_batches: int, num_shards: int = 1, shard_index: int = 0) -> tuple[int, int]:
    """The batches [first, last) of the plan that one shard runs."""
    return shard_index * n_batches // num_shards, (shard_index + 1) * n_batches // num_shards


def run_pass(model: Any, dataset: Any, stats: NeuronStats, plan: list[list[int]], batches: range, pad_id: int,
             device: torch.device, on_checkpoint: Callable[[int], None] | None = None, checkpoint_every: int = 0,
             progress: Any = None, bos_id: int | None = None) -> int:
    """Run the batches `batches` of `plan` over `dataset` (rows with input_ids, attention_mask) into `stats`.

    A document's first token, when it is `bos_id`, is no example (None: every token may be one).

    After every `checkpoint_every` batches (and on KeyboardInterrupt, between batches)
    `on_checkpoint(next_batch)` is called. Returns the number of tokens processed.
    """
    reducer = BatchReducer(stats, bos_id)
    tokens = 0
    with mlp_hooks(model, reducer, range(stats.keys.shape[0])):
        for batch in batches:
            docs = plan[batch]
            rows = dataset[docs]
            input_ids, attention_mask = pad_batch(rows["input_ids"], rows["attention_mask"], pad_id, device)
            reducer.start(attention_mask, input_ids)
            try:
                run_model(model, input_ids, attention_mask)
            except KeyboardInterrupt:
                if on_checkpoint is not None:
                    on_checkpoint(batch)  # statistics are still those of the batches before this one
                raise
            reducer.apply(torch.tensor(docs, device=device))
            tokens += int(attention_mask.sum())
            if progress is not None:
                progress.update(1)
            if on_checkpoint is not None and checkpoint_every and (batch + 1 - batches.start) % checkpoint_every == 0 \
                    and batch + 1 < batches.stop:
                on_checkpoint(batch + 1)
    return tokens
