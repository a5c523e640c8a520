"""One batch's reduction into the running statistics (`NeuronStats`): the hooks hand every layer's g, u and
a [batch pos neuron] to `BatchReducer`, which reduces them to candidates for the example lists (with their
positions), sums, counts and histogram counts, and folds them into the statistics once the whole batch has run.

Speed: per layer it reduces with value-only reductions (amax / amin, several times faster on CPUs than max with
indices) and looks up positions only for the candidates that can still enter a list (at or above its current k-th
value), which after the first batches are few.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from neuroscope.activations import FIXED_POINT_BITS, LIST_SIGNS, LISTS, NeuronStats
from neuroscope.histogram import histogram_codes, histogram_lookup

DENSE_FRACTION = 1 / 2  # above this share of candidates, positions come from max / min with indices


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
