"""One batch's reduction into the running statistics (`NeuronStats`): the hooks hand every layer's g, u and
a [batch pos neuron] to `BatchReducer`, which reduces them to candidates for the example lists (with their
positions), sums, counts and histogram counts, and folds them into the statistics once the whole batch has run.

Speed: per layer it reduces with value-only reductions (amax / amin, several times faster on CPUs than max with
indices) and looks up positions only for the candidates that can still enter a list (at or above its current k-th
value), which after the first batches are few. Every value gets one cell (its neuron, the signs of g and u, its
histogram bin: one table lookup); a single count per cell gives the histogram and the sign counts at once, and
the typical examples look their slot's limit up by the same cell.

Non-finite values (a float16 run that overflows): one sum per layer of a, g and u tells whether any value is ±inf or
NaN; only then (`BatchReducer._finite_only`) are the tokens whose a, g or u is not finite counted per neuron and left
out of everything else: a is set to 0 there, their cell is padding's, and they are no examples (eligibility per
neuron, [batch pos neuron]). Without them the layer takes the usual path, at the cost of the three sums.

Typical examples (`TypicalSampler`): the batch's tokens are ranked once by their hash; a value is a candidate only
when its token's rank is below the number of the batch's hashes under its slot's current k-th smallest hash (one
table lookup per value, no sort); a slot (sign combination and band of |a|) is a set of cells, since every band
edge is a bin edge. After the first batches only a few tokens per slot can enter; in the first ones, when the
candidates outnumber a layer's sample entries (`TypicalSampler.budget`), they are merged in chunks of tokens in hash
order, which fills the slots that the next chunks then mostly cannot enter.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from gated_core.errors import UserError
from neuroscope.activation_pass.activations import FIXED_POINT_BITS, LIST_SIGNS, LISTS, SIGN_COMBINATIONS, NeuronStats
from neuroscope.core.histogram import (
    CODE_BITS,
    histogram_bins,
    histogram_codes,
    histogram_lookup,
    typical_band_of_bins,
    typical_bands,
)
from neuroscope.core.ranked import EMPTY_HASH, POSITION_BITS, merge_smallest_rows, pack_tokens, token_hash

DENSE_FRACTION = 3 / 4  # above this share of candidates, positions come from max / min with indices
MIN_TYPICAL_CANDIDATES = 1 << 16  # (token, neuron) candidates for the typical examples merged at once: at least
# this many, and at least as many as a layer's samples hold (`TypicalSampler.budget`)


def joint_lookup(device: torch.device | str = "cpu") -> torch.Tensor:
    """The cell of each value within its neuron, from signs << CODE_BITS | code (signs = 2 (g > 0) + (u > 0), code:
    `histogram_codes`): [len(SIGN_COMBINATIONS) << CODE_BITS] int32, signs * bins + histogram bin."""
    lookup = histogram_lookup()
    bins = histogram_bins()
    signs = torch.arange(len(SIGN_COMBINATIONS), dtype=torch.int32)[:, None]
    return (signs * bins + lookup[None, :]).reshape(-1).to(device)


@dataclass
class BatchLayout:
    """Which positions of a batch count: every real token for the sums, counts and histogram; for the
    example lists, the real tokens from `offset` on, less a leading BOS (`eligible`)."""

    valid: torch.Tensor  # [batch pos] bool: real tokens
    padded: bool
    offset: int  # 1 when every document starts with a BOS that is left out, else 0
    eligible: torch.Tensor | None  # [batch pos-offset 1] bool, or per neuron [batch pos-offset neuron] (a layer with
    # non-finite values, `BatchReducer._finite_only`); None: every position from offset on
    examples: torch.Tensor  # [batch pos] bool: the tokens that may be examples (real, not a leading BOS)
    spans: list[tuple[int, int]] | None = None  # with `eligible`: each row's eligible positions [first, stop) from
    # offset on, where they are one run (right padding); None: they are not

    @classmethod
    def of(cls, input_ids: torch.Tensor, attention_mask: torch.Tensor, bos_id: int | None) -> BatchLayout:
        valid = attention_mask.bool()
        bos_first = valid[:, 0] & (input_ids[:, 0] == bos_id) if bos_id is not None else torch.zeros_like(valid[:, 0])
        offset = 1 if bool(bos_first.all()) and valid.shape[1] > 1 else 0
        examples = valid.clone()
        examples[:, 0] &= ~bos_first
        eligible = examples[:, offset:]
        if bool(eligible.all()):
            return cls(valid, not bool(valid.all()), offset, None, examples)
        return cls(valid, not bool(valid.all()), offset, eligible[..., None], examples, runs(eligible))

    def bias(self, dtype: torch.dtype) -> torch.Tensor:
        """[batch pos-offset 1]: 0 at eligible positions, -inf elsewhere (a + bias leaves them out of a max)."""
        return torch.zeros((), dtype=dtype, device=self.valid.device).masked_fill(~self.eligible, -torch.inf)


def runs(mask: torch.Tensor) -> list[tuple[int, int]] | None:
    """Each row's True positions of `mask` [batch pos] as one run [first, stop), or None where a row's are not one."""
    counts = mask.sum(dim=1)
    firsts = torch.where(counts > 0, mask.to(torch.uint8).argmax(dim=1), 0)
    positions = torch.arange(mask.shape[1], device=mask.device)
    if not torch.equal((positions >= firsts[:, None]) & (positions < (firsts + counts)[:, None]), mask):
        return None
    return [(first, first + count) for first, count in zip(firsts.tolist(), counts.tolist())]


GATED, CLOSED = 2, 4  # the lists whose sources the sign-combination lists share
SOURCE_OF_LIST = (0, 1, GATED, GATED, CLOSED, CLOSED)  # list -> the list whose source it uses


class ExampleSources:
    """The tensors whose max or min over positions give each list's keys, per list (LISTS' order): a, with -inf or
    +inf where it is no example (lists 0, 1); a where the gate is open, else 0 (2, 3); a where it is closed, else 0
    (4, 5). Over [batch pos-offset neuron] (`whole`); or, where each row's examples are one run (`spans`, right
    padding), over a row's run (`row`), which needs no masks; made only when asked for. `read` gives a, gate_open
    and eligible at some (row, neuron) pairs, where `first_hits` finds a candidate's position."""

    def __init__(self, a: torch.Tensor, gate_open: torch.Tensor, eligible: torch.Tensor | None,
                 spans: list[tuple[int, int]] | None = None):
        self.a, self.gate_open, self.eligible = a, gate_open, eligible  # [batch pos-offset neuron], eligible [... 1]
        self.spans = spans  # each row's run of examples [first, stop) from offset on
        self.made: dict[int, torch.Tensor] = {}
        self.rows_made: dict[tuple[int, int], torch.Tensor] = {}

    @staticmethod
    def formula(index: int, a: torch.Tensor, gate_open: torch.Tensor, eligible: torch.Tensor | None) -> torch.Tensor:
        """List `index`'s source (0, 1, GATED or CLOSED) from a, gate_open and eligible of the same shape (or None)."""
        if index < 2:
            if eligible is None:
                return a
            bias = torch.zeros((), dtype=a.dtype, device=a.device).masked_fill(~eligible, -torch.inf)
            return a + bias if index == 0 else a - bias
        gated = a * (gate_open if eligible is None else gate_open & eligible)
        return gated if index < 4 else (a if eligible is None else a * eligible) - gated

    def whole(self, index: int) -> torch.Tensor:
        """List `index`'s source [batch pos-offset neuron]."""
        kind = SOURCE_OF_LIST[index]
        if kind not in self.made:
            self.made[kind] = self.formula(kind, self.a, self.gate_open, self.eligible)
        return self.made[kind]

    def keep(self, index: int, source: torch.Tensor) -> torch.Tensor:
        """Keep `source` as list `index`'s whole source (one made otherwise, equal to `formula`'s); returns it."""
        self.made[SOURCE_OF_LIST[index]] = source
        return source

    def row(self, index: int, row: int) -> torch.Tensor:
        """List `index`'s source over row `row`'s run of examples [run neuron] (with `spans`); closed = a - gated."""
        kind = SOURCE_OF_LIST[index]
        first, stop = self.spans[row]
        if kind < GATED:
            return self.a[row, first:stop]
        if (kind, row) not in self.rows_made:
            a = self.a[row, first:stop]
            self.rows_made[(kind, row)] = a * self.gate_open[row, first:stop] if kind == GATED else a - self.row(GATED, row)
        return self.rows_made[(kind, row)]

    def extreme_positions(self, index: int) -> torch.Tensor:
        """The first position (from offset) of the max (or min, by LIST_SIGNS) of list `index`'s source, per row and
        neuron [batch neuron] (-1 in a row without examples)."""
        if self.spans is None:
            source = self.whole(index)
            return (source.max(dim=1) if LIST_SIGNS[index] > 0 else source.min(dim=1)).indices
        positions = torch.full(self.a[:, 0].shape, -1, dtype=torch.long, device=self.a.device)
        for row, (first, stop) in enumerate(self.spans):
            if first < stop:
                source = self.row(index, row)
                extreme = source.max(dim=0) if LIST_SIGNS[index] > 0 else source.min(dim=0)
                positions[row] = extreme.indices + first
        return positions

    def read(self, rows: torch.Tensor, neurons: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """a, gate_open and eligible at the pairs (rows [m], neurons [m]), over positions [m pos-offset] (eligible
        None where every position is)."""
        eligible = None if self.eligible is None else self.eligible[rows, :, neurons if self.eligible.shape[-1] > 1 else 0]
        return self.a[rows, :, neurons], self.gate_open[rows, :, neurons], eligible

    @staticmethod
    def first_hits(index: int, values: torch.Tensor, read: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]) -> torch.Tensor:
        """Per pair of `read`, the first position where list `index`'s source (`formula`) equals `values` [m] (NaN:
        none; then 0). Lists 2 to 5 have values other than 0, which their source holds exactly where a does, the
        gate is open (2, 3) or closed (4, 5) and the token is eligible; lists 0 and 1 where a does and it is."""
        a, gate_open, eligible = read
        hits = a == values[:, None]
        if index >= GATED:
            hits &= gate_open if SOURCE_OF_LIST[index] == GATED else ~gate_open
        if eligible is not None:
            hits &= eligible
        return hits.view(torch.uint8).argmax(dim=1)


class TypicalSampler:
    """The typical examples' part of one batch's reduction (`NeuronStats.sample_tokens`): per layer, the batch's
    tokens merged into the bottom-k sample of their slot (sign combination of (g, u), band of |a|), kept aside
    until `apply`."""

    def __init__(self, stats: NeuronStats):
        _, d_mlp, slots, self.k = stats.sample_tokens.shape
        device = stats.sample_tokens.device
        self.stats = stats
        self.budget = max(MIN_TYPICAL_CANDIDATES, d_mlp * slots * self.k)  # candidates merged at once
        # a cell's slot within its neuron: cell = signs * bins + bin, where signs = 2 * (g > 0) + (u > 0), so that the
        # combination (in SIGN_COMBINATIONS' order) is 3 - signs
        signs = torch.arange(len(SIGN_COMBINATIONS), device=device)[:, None]
        self.slot_of_cell = ((len(SIGN_COMBINATIONS) - 1 - signs) * typical_bands() + typical_band_of_bins().to(device)).view(-1)
        self.cells, self.slots = self.slot_of_cell.numel(), slots
        self.limits = torch.zeros(d_mlp * self.cells + 1, dtype=torch.int32, device=device)  # `_cell_limits`' table
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

    def _cell_limits(self, tokens: torch.Tensor) -> torch.Tensor:
        """Per cell [neuron * cells + 1] int32 (the last: padding's, 0): how many of the batch's hashes lie below its
        slot's k-th smallest (all of them while the slot is not full); a token of a lower rank can enter the slot."""
        limits = torch.searchsorted(self.sorted_hashes, token_hash(tokens[:, -1])).to(torch.int32)  # [neuron * slots]
        n_neurons = limits.numel() // self.slots
        torch.index_select(limits.view(n_neurons, self.slots), 1, self.slot_of_cell, out=self.limits[:-1].view(n_neurons, -1))
        return self.limits

    def _chunk_end(self, mask: torch.Tensor, start: int) -> int:
        """The rank up to which the candidates `mask` [batch pos neuron] (none below rank `start`) stay within the
        budget, at least one token past `start`."""
        per_token = mask.sum(dim=-1, dtype=torch.int32).view(-1)[self.order[:self.n_examples]]  # by rank
        end = int(torch.searchsorted(per_token.long().cumsum(0), self.budget, right=True))
        return max(end, start + 1)

    def __call__(self, layer: int, cells: torch.Tensor, a: torch.Tensor) -> None:
        """Merge the layer's tokens into a copy of its samples (every value's cell and a [batch pos neuron])."""
        tokens = self.stats.sample_tokens[layer].reshape(-1, self.k).clone()  # [neuron * slots k]
        values = self.stats.sample_values[layer].reshape(-1, self.k).clone()
        touched, start = [], 0
        while start < self.n_examples:
            mask = self.rank < self._cell_limits(tokens).index_select(0, cells.view(-1)).view(cells.shape)
            if start:
                mask &= self.rank >= start
            end = self.n_examples
            if int(torch.count_nonzero(mask)) > self.budget:
                end = self._chunk_end(mask, start)
                mask &= self.rank < end
            batch, position, neuron = mask.nonzero(as_tuple=True)
            if len(batch):
                cell = cells[batch, position, neuron].long() - neuron * self.cells
                rows = neuron * self.slots + self.slot_of_cell[cell]
                touched.append(merge_smallest_rows(tokens, values, rows, self.tokens[batch, position],
                                                   a[batch, position, neuron].float()))
            start = end
        rows = torch.unique(torch.cat(touched)) if touched else torch.zeros(0, dtype=torch.long, device=tokens.device)
        self.pending[layer] = (rows, tokens[rows], values[rows])

    def apply(self) -> None:
        """Write every layer's merged slots into the statistics."""
        for layer, (rows, tokens, values) in self.pending.items():
            self.stats.sample_tokens[layer].view(-1, self.k)[rows] = tokens
            self.stats.sample_values[layer].view(-1, self.k)[rows] = values
        self.pending.clear()


def reduced_keys(high: torch.Tensor, gated: torch.Tensor, closed: torch.Tensor, low: torch.Tensor | None = None) -> torch.Tensor:
    """The keys of every list [list batch neuron] float32 from the sources [batch pos neuron] (`low`: the ranked
    lists' source for the min, `high`'s where it is None)."""
    low = high if low is None else low
    return torch.stack([high.amax(dim=1), -low.amin(dim=1), gated.amax(dim=1), -gated.amin(dim=1), -closed.amin(dim=1),
                        closed.amax(dim=1)]).float()


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
        n_layers, d_mlp, bins = stats.histogram.shape
        device = stats.histogram.device
        self.typical = TypicalSampler(stats) if stats.typical_per_band else None
        self.lookup = joint_lookup(device)
        self.cells = len(SIGN_COMBINATIONS) * bins  # cells per neuron: (signs, bin)
        self.cell_offsets = torch.arange(d_mlp, dtype=torch.int32, device=device) * self.cells  # [neuron]
        self.counted = torch.zeros(d_mlp * self.cells + 1, dtype=torch.int32, device=device)  # one layer's; last: padding
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

    def _cells(self, a: torch.Tensor, gate_open: torch.Tensor, lin_positive: torch.Tensor,
               finite: torch.Tensor | None = None) -> torch.Tensor:
        """Every value's cell [batch pos neuron] int32: neuron * cells + signs * bins + its histogram bin, where
        signs = 2 * (g > 0) + (u > 0); a padding token's values, and those that are not `finite` [batch pos neuron]
        (None: all are), all in the one cell after the last neuron's."""
        signs = gate_open.view(torch.uint8) * 2 + lin_positive.view(torch.uint8)
        keys = histogram_codes(a).add_(signs, alpha=1 << CODE_BITS)
        cells = self.lookup.index_select(0, keys.view(-1)).view(keys.shape).add_(self.cell_offsets)
        if self.layout.padded:
            cells.masked_fill_(~self.layout.valid[..., None], self.counted.numel() - 1)
        if finite is not None:
            cells.masked_fill_(~finite, self.counted.numel() - 1)
        return cells

    def _total(self, a: torch.Tensor) -> torch.Tensor:
        """The sum of a over the batch's real tokens [neuron] float32."""
        if self.layout.padded:
            return (a * self.layout.valid[..., None]).sum(dim=(0, 1), dtype=torch.float32)
        return a.sum(dim=(0, 1), dtype=torch.float32)

    def _finite_only(self, g: torch.Tensor, u: torch.Tensor,
                     a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, BatchLayout]:
        """For a layer with a non-finite value among g, u, a [batch pos neuron]: which values are finite (a, g and
        u all are) [batch pos neuron]; a with 0 elsewhere; the real tokens left out [neuron] int64; and the layout
        whose examples leave them out too (eligible per neuron, no spans)."""
        finite = torch.isfinite(a) & torch.isfinite(g) & torch.isfinite(u)
        layout = self.layout
        left_out = (~finite & layout.valid[..., None]).sum(dim=(0, 1))
        eligible = finite[:, layout.offset:] if layout.eligible is None else finite[:, layout.offset:] & layout.eligible
        return finite, a.masked_fill(~finite, 0), left_out, replace(layout, eligible=eligible, spans=None)

    def _count(self, layer: int, cells: torch.Tensor) -> torch.Tensor:
        """Count the values of every cell: this batch's histogram of `layer`, and returned [3 neuron] int64 the
        tokens with g > 0, with u > 0 and with both."""
        self.counted.zero_()
        self.counted.index_add_(0, cells.view(-1), torch.ones((), dtype=torch.int32, device=cells.device).expand(cells.numel()))
        by_cell = self.counted[:-1].view(self.cell_offsets.numel(), len(SIGN_COMBINATIONS), -1)  # [neuron signs bin]
        self.histogram[layer] = by_cell.sum(dim=1)
        by_signs = by_cell.sum(dim=2, dtype=torch.int64)  # [neuron signs]
        return torch.stack([by_signs[:, 2] + by_signs[:, 3], by_signs[:, 1] + by_signs[:, 3], by_signs[:, 3]])

    def _example_keys(self, a: torch.Tensor, gate_open: torch.Tensor, layout: BatchLayout) -> tuple[torch.Tensor, ExampleSources]:
        """Each document's best key in every list [list batch neuron] float32 (-inf: none), and the sources whose
        max or min over positions gave them (the tokens that may be examples: `layout`). A padded batch is reduced
        row by row over each row's run of examples (`BatchLayout.spans`), which needs no masks; the rest as a whole."""
        sources = ExampleSources(a[:, layout.offset:], gate_open[:, layout.offset:], layout.eligible, layout.spans)
        if layout.eligible is None:
            gated = sources.whole(GATED)
            closed = sources.keep(CLOSED, sources.a - gated)  # as `formula`, with one product fewer
            keys = reduced_keys(sources.a, gated, closed)
        elif layout.spans is not None:
            empty = torch.full((len(LISTS), a.shape[-1]), -torch.inf, dtype=torch.float32, device=a.device)
            keys = torch.stack([empty if first == stop else reduced_keys(*(sources.row(i, row)[None] for i in (0, GATED, CLOSED)))[:, 0]
                                for row, (first, stop) in enumerate(layout.spans)], dim=1)
        else:
            keys = reduced_keys(sources.whole(0), sources.whole(GATED), sources.whole(CLOSED), sources.whole(1))
        keys[2:] = torch.where(keys[2:] > 0, keys[2:], -torch.inf)  # a = 0 is no example of a sign combination
        return keys, sources

    def _positions(self, layer: int, keys: torch.Tensor, sources: ExampleSources) -> torch.Tensor:
        """Positions [list batch neuron] of the candidates that can still enter a list (-1 for the others): the
        first position where the list's source holds the candidate's value. Few candidates: looked up in their
        (document, neuron) pairs, each pair's values read once for all lists; many (the first batches): max / min
        with indices over the source."""
        candidates = (keys >= self.stats.thresholds(layer)[:, None, :]) & (keys > -torch.inf)
        positions = torch.full(keys.shape, -1, dtype=torch.long, device=keys.device)
        counts = candidates.sum(dim=(1, 2)).tolist()
        dense = [count > DENSE_FRACTION * keys[0].numel() for count in counts]
        for index in (i for i in range(len(LISTS)) if dense[i]):
            positions[index] = sources.extreme_positions(index) + self.layout.offset
        sparse = candidates & torch.tensor([not d for d in dense], device=keys.device)[:, None, None]
        pairs = sparse.any(dim=0).view(-1).nonzero()[:, 0]  # row * neurons + neuron
        if len(pairs):
            n_neurons = keys.shape[-1]
            read = sources.read(pairs // n_neurons, pairs % n_neurons)  # each pair's values [pairs pos-offset]
            for index in (i for i in range(len(LISTS)) if counts[i] and not dense[i]):
                at = sparse[index].view(-1)[pairs]
                values = torch.where(at, LIST_SIGNS[index] * keys[index].view(-1)[pairs], torch.nan)
                found = ExampleSources.first_hits(index, values, read) + self.layout.offset
                positions[index].view(-1)[pairs] = torch.where(at, found, -1)
        return positions

    def __call__(self, layer: int, g: torch.Tensor, u: torch.Tensor, a: torch.Tensor) -> None:
        """Reduce one layer's g, u and a [batch pos neuron] of the batch (kept aside until `apply`)."""
        layout, finite = self.layout, None
        total = self._total(a)
        left_out = torch.zeros_like(self.cell_offsets, dtype=torch.long)
        sums = torch.stack([total.sum(), g.sum(dtype=torch.float32), u.sum(dtype=torch.float32)])
        if not bool(torch.isfinite(sums).all()):  # an inf or NaN somewhere (or finite values too large to add up)
            finite, a, left_out, layout = self._finite_only(g, u, a)
            total = self._total(a)
        gate_open = g > 0
        cells = self._cells(a, gate_open, u > 0, finite)
        counts = self._count(layer, cells)
        if self.typical is not None:
            self.typical(layer, cells, a)
        keys, sources = self._example_keys(a, gate_open, layout)
        positions = self._positions(layer, keys, sources)
        fixed = torch.round(total.double() * 2 ** FIXED_POINT_BITS).long()
        self.pending[layer] = (keys, positions, fixed, counts, left_out)

    def apply(self, doc_ids: torch.Tensor) -> None:
        """Fold the batch (documents `doc_ids`, one per row) into the statistics."""
        stats = self.stats
        if len(self.pending) != stats.keys.shape[0]:
            raise RuntimeError(f"hooks saw {len(self.pending)} of {stats.keys.shape[0]} layers")
        layers = sorted(self.pending)
        keys, positions, fixed, counts, left_out = (torch.stack([self.pending[layer][i] for layer in layers]) for i in range(5))
        keys, positions = keys.permute(0, 3, 1, 2), positions.permute(0, 3, 1, 2)  # [layer neuron list batch]
        valid = keys > -torch.inf  # not NaN either
        stats.merge_candidates(torch.where(valid, keys, -torch.inf), torch.where(valid, doc_ids.to(keys.device), -1), torch.where(valid, positions, -1))
        stats.post_sum += fixed
        stats.gate_positive += counts[:, 0]
        stats.lin_positive += counts[:, 1]
        stats.both_positive += counts[:, 2]
        stats.histogram += self.histogram
        stats.nonfinite += left_out
        stats.n_tokens += self.layout.valid.sum()
        if self.typical is not None:
            self.typical.apply()
        self.pending.clear()
