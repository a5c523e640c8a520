"""One batch's reduction into the running statistics (`NeuronStats`): the hooks hand every layer's g, u and
a [batch pos neuron] to `BatchReducer`, which reduces them to candidates for the example lists (with their
positions), sums, counts and histogram counts, and folds them into the statistics once the whole batch has run.

Speed: per layer it reduces with value-only reductions (amax / amin, several times faster on CPUs than max with
indices) and looks up positions only for the candidates that can still enter a list (at or above its current k-th
value), which after the first batches are few.

Typical examples (`TypicalSampler`): the batch's tokens are ranked once by their hash; per layer every (token,
neuron) gets its slot (sign combination and band of |a|, from the histogram's codes) and is a candidate only when
its rank is below the number of the batch's hashes under its slot's current k-th smallest hash (one table lookup
per value, no sort). After the first batches only a few tokens per slot can enter; in the first ones, when the
candidates outnumber a layer's sample entries (`TypicalSampler.budget`), they are merged in chunks of tokens in hash
order, which fills the slots that the next chunks then mostly cannot enter.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gated_core.errors import UserError
from neuroscope.activations import FIXED_POINT_BITS, LIST_SIGNS, LISTS, SIGN_COMBINATIONS, NeuronStats
from neuroscope.histogram import CODE_BITS, histogram_codes, histogram_lookup, typical_band_lookup, typical_bands
from neuroscope.ranked import EMPTY_HASH, POSITION_BITS, merge_smallest_rows, pack_tokens, token_hash

DENSE_FRACTION = 1 / 2  # above this share of candidates, positions come from max / min with indices
MIN_TYPICAL_CANDIDATES = 1 << 16  # (token, neuron) candidates for the typical examples merged at once: at least
# this many, and at least as many as a layer's samples hold (`TypicalSampler.budget`)


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
    examples: torch.Tensor  # [batch pos] bool: the tokens that may be examples (real, not a leading BOS)

    @classmethod
    def of(cls, input_ids: torch.Tensor, attention_mask: torch.Tensor, bos_id: int | None) -> BatchLayout:
        valid = attention_mask.bool()
        bos_first = valid[:, 0] & (input_ids[:, 0] == bos_id) if bos_id is not None else torch.zeros_like(valid[:, 0])
        offset = 1 if bool(bos_first.all()) and valid.shape[1] > 1 else 0
        examples = valid.clone()
        examples[:, 0] &= ~bos_first
        eligible = examples[:, offset:]
        return cls(valid, not bool(valid.all()), offset, None if bool(eligible.all()) else eligible[..., None], examples)

    def bias(self, dtype: torch.dtype) -> torch.Tensor:
        """[batch pos-offset 1]: 0 at eligible positions, -inf elsewhere (a + bias leaves them out of a max)."""
        return torch.zeros((), dtype=dtype, device=self.valid.device).masked_fill(~self.eligible, -torch.inf)


class TypicalSampler:
    """The typical examples' part of one batch's reduction (`NeuronStats.sample_tokens`): per layer, the batch's
    tokens merged into the bottom-k sample of their slot (sign combination of (g, u), band of |a|), kept aside
    until `apply`."""

    def __init__(self, stats: NeuronStats):
        _, d_mlp, slots, self.k = stats.sample_tokens.shape
        device = stats.sample_tokens.device
        self.stats = stats
        self.budget = max(MIN_TYPICAL_CANDIDATES, d_mlp * slots * self.k)  # candidates merged at once
        # signs * 2^CODE_BITS + code -> combination * bands + band, where signs = 2 * (g > 0) + (u > 0), so that
        # the combination (in SIGN_COMBINATIONS' order) is 3 - signs
        combinations = torch.arange(len(SIGN_COMBINATIONS) - 1, -1, -1, dtype=torch.int32, device=device)
        self.cell_lookup = (combinations[:, None] * typical_bands() + typical_band_lookup(device)[None, :]).view(-1)
        self.slot_offsets = torch.arange(d_mlp, dtype=torch.int32, device=device) * slots  # [neuron]
        self.pending: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def start(self, examples: torch.Tensor, doc_ids: torch.Tensor) -> None:
        """A batch of documents `doc_ids` [batch] whose tokens `examples` [batch pos] may be examples: their packed
        tokens, hashes, and ranks by hash (tokens that are no examples rank last)."""
        rows, width = examples.shape
        if width > 1 << POSITION_BITS:
            raise UserError(f"documents of {width} tokens: typical examples need fewer than 2^{POSITION_BITS} "
                            "(--typical_per_band 0 leaves them out)")
        positions = torch.arange(width, device=examples.device)
        self.tokens = pack_tokens(doc_ids.to(examples.device)[:, None].expand(rows, width), positions[None, :])
        hashes = torch.where(examples, token_hash(self.tokens), EMPTY_HASH).view(-1)
        sorted_hashes, self.order = torch.sort(hashes)
        self.n_examples = int(examples.sum())
        self.sorted_hashes = sorted_hashes[:self.n_examples]
        rank = torch.empty(rows * width, dtype=torch.int32, device=examples.device)
        rank[self.order] = torch.arange(rows * width, dtype=torch.int32, device=examples.device)
        self.rank = torch.where(examples, rank.view(rows, width), torch.iinfo(torch.int32).max)[..., None]
        self.pending.clear()

    def _slots(self, codes: torch.Tensor, gate_open: torch.Tensor, lin_positive: torch.Tensor) -> torch.Tensor:
        """The slot row of every value [batch pos neuron] int32: neuron * slots + combination * bands + band."""
        signs = gate_open.view(torch.uint8) * 2 + lin_positive.view(torch.uint8)
        slots = self.cell_lookup.index_select(0, codes.add(signs, alpha=1 << CODE_BITS).view(-1)).view(codes.shape)
        return slots.add_(self.slot_offsets)

    def _rank_limits(self, tokens: torch.Tensor) -> torch.Tensor:
        """Per slot row [row] int32: how many of the batch's hashes lie below the row's k-th smallest (all of them
        while the row is not full); a token of a lower rank can enter the row."""
        return torch.searchsorted(self.sorted_hashes, token_hash(tokens[:, -1])).to(torch.int32)

    def _chunk_end(self, mask: torch.Tensor, start: int) -> int:
        """The rank up to which the candidates `mask` [batch pos neuron] (none below rank `start`) stay within the
        budget, at least one token past `start`."""
        per_token = mask.sum(dim=-1, dtype=torch.int32).view(-1)[self.order[:self.n_examples]]  # by rank
        end = int(torch.searchsorted(per_token.long().cumsum(0), self.budget, right=True))
        return max(end, start + 1)

    def __call__(self, layer: int, codes: torch.Tensor, gate_open: torch.Tensor, lin_positive: torch.Tensor,
                 a: torch.Tensor) -> None:
        """Merge the layer's tokens into a copy of its samples ([batch pos neuron] codes, signs and a)."""
        slots = self._slots(codes, gate_open, lin_positive)
        tokens = self.stats.sample_tokens[layer].reshape(-1, self.k).clone()  # [row k]
        values = self.stats.sample_values[layer].reshape(-1, self.k).clone()
        touched, start = [], 0
        while start < self.n_examples:
            mask = self.rank < self._rank_limits(tokens).index_select(0, slots.view(-1)).view(slots.shape)
            if start:
                mask &= self.rank >= start
            end = self.n_examples
            if int(torch.count_nonzero(mask)) > self.budget:
                end = self._chunk_end(mask, start)
                mask &= self.rank < end
            batch, position, neuron = mask.nonzero(as_tuple=True)
            if len(batch):
                touched.append(merge_smallest_rows(tokens, values, slots[batch, position, neuron].long(),
                                                   self.tokens[batch, position], a[batch, position, neuron].float()))
            start = end
        rows = torch.unique(torch.cat(touched)) if touched else torch.zeros(0, dtype=torch.long, device=tokens.device)
        self.pending[layer] = (rows, tokens[rows], values[rows])

    def apply(self) -> None:
        """Write every layer's merged slots into the statistics."""
        for layer, (rows, tokens, values) in self.pending.items():
            self.stats.sample_tokens[layer].view(-1, self.k)[rows] = tokens
            self.stats.sample_values[layer].view(-1, self.k)[rows] = values
        self.pending.clear()


class BatchReducer:
    """Collects one batch's per-layer reductions from the hooks, then applies them all at once,
    so that an interrupted forward pass never leaves half-updated statistics.

    `bos_id`: a document's first token, when it is this one, is no example (None: every token is). With typical
    examples (`stats.typical_per_band` > 0), `start` needs the batch's documents.
    """

    def __init__(self, stats: NeuronStats, bos_id: int | None = None):
        self.stats = stats
        self.bos_id = bos_id
        self.pending: dict[int, tuple[torch.Tensor, ...]] = {}
        self.typical = TypicalSampler(stats) if stats.typical_per_band else None
        n_layers, d_mlp, bins = stats.histogram.shape
        device = stats.histogram.device
        self.lookup = histogram_lookup(device)
        self.bin_offsets = torch.arange(d_mlp, dtype=torch.int32, device=device) * bins  # [neuron]
        self.histogram = torch.zeros((n_layers, d_mlp, bins), dtype=torch.int32, device=device)  # this batch's counts
        self.layout: BatchLayout | None = None

    def start(self, attention_mask: torch.Tensor, input_ids: torch.Tensor | None = None,
              doc_ids: torch.Tensor | None = None) -> None:
        """A new batch: its mask and tokens [batch pos] and its documents [batch] (needed for typical examples)."""
        ids = input_ids if input_ids is not None else torch.full_like(attention_mask, -1)
        self.layout = BatchLayout.of(ids, attention_mask, self.bos_id)
        self.pending.clear()
        self.histogram.zero_()
        if self.typical is not None:
            if doc_ids is None:
                raise RuntimeError("typical examples need the batch's documents at its start")
            self.typical.start(self.layout.examples, doc_ids)

    def _count_histogram(self, layer: int, codes: torch.Tensor) -> None:
        """Add the bins of every value's code (`histogram_codes`) of `codes` [... neuron] to this batch's histogram
        of `layer`."""
        bins = self.lookup.index_select(0, codes.reshape(-1)).view(-1, self.bin_offsets.numel())
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
        codes = histogram_codes(a)
        if layout.padded:
            real = layout.valid[..., None]
            total = (a * real).sum(dim=(0, 1), dtype=torch.float32)
            gate_open_real, lin_positive_real = gate_open & real, lin_positive & real
            self._count_histogram(layer, codes[layout.valid])
        else:
            total = a.sum(dim=(0, 1), dtype=torch.float32)
            gate_open_real, lin_positive_real = gate_open, lin_positive
            self._count_histogram(layer, codes)
        if self.typical is not None:
            self.typical(layer, codes, gate_open, lin_positive, a)
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
        if self.typical is not None:
            self.typical.apply()
        self.pending.clear()
