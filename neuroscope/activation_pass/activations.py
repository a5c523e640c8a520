"""The running per-neuron statistics of the activation pass (`NeuronStats`); one batch is reduced into them by
`reducer.py`, the pass over the batches is `collect.run_pass`, the histogram's bins are in `histogram.py`.

For every neuron the pass keeps, on the device and independent of the number of tokens:
- the top-k documents by their maximum of the activation a = act(g) * u over positions
  (value, document, position) and the bottom-k by their minimum;
- for each of the four sign combinations of (g, u), the top-k documents by their largest |a|
  among the tokens in that combination (tokens with a = 0 are no examples);
- the sum of a over real tokens (for the mean), accumulated exactly in 64-bit fixed point,
  so that any split into shards or resumptions gives bit-identical results;
- counts of g > 0 (gate open), u > 0 and both, from which the four sign combinations follow;
- a histogram of a with fixed bin edges shared by every neuron (`histogram_edges`), in int64
  counts, so that shards merge by addition;
- the count of the tokens whose a, g or u is not finite (±inf or NaN: a float16 run that overflows), which are left
  out of every other statistic of that neuron: its sums, counts, histogram and examples. So its mean and frequencies
  are over its finite tokens (n_tokens - nonfinite), and shards and resumptions still add up exactly;
- typical examples: for each sign combination of (g, u) and each band of |a| (`histogram.TYPICAL_BAND_EXPONENTS`:
  below 1/4, 1/4 to 1, 1 to 4, 4 and up), the `typical_per_band` tokens (document, position, a) of smallest
  `ranked.token_hash` among the tokens of that combination and band: a uniform sample without replacement that
  merges exactly (the k smallest hashes of a union), so shards and resumptions give the same sample. Tokens with
  a = 0 are typical examples too (band 0); BOS and padding are not. Memory: 12 bytes per slot (the packed token
  int64 and a float32), 16 slots of k per neuron: 768 bytes per neuron at k = 4.

Example lists leave out position 0 when it is the BOS token (`bos_id`): BOS has the same
activation in every document and would fill the lists with k copies of itself. It still counts
in the mean, the frequencies and the histogram.

Ties are broken by the lower document index (`ranked.merge_ranked` ranks by value, then by
document), and within a document by the first position. Documents are batched by length (`batches.batch_plan`:
a fixed plan that depends only on the dataset and the batch size), so little is padded and
every split of the plan into shards or resumptions runs exactly the same batches. Shapes:
statistics are [layer neuron], [layer neuron k], [layer neuron combination k] or [layer neuron bin]; the typical
examples [layer neuron slot k] (slot = combination * bands + band), in files [layer neuron combination band k].
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from neuroscope.core.histogram import histogram_bins, typical_bands
from neuroscope.core.ranked import merge_ranked, merge_smallest, unpack_tokens

FIXED_POINT_BITS = 28  # resolution 2^-28 per batch sum; |sum| up to 3.4e10 fits in int64
SIGN_COMBINATIONS = ("gate+ lin+", "gate+ lin-", "gate- lin+", "gate- lin-")  # + means > 0
COMBINATION_SIGNS = (1, -1, -1, 1)  # the sign of a = act(g) * u in each combination (act keeps the sign of g)
STATISTICS_VERSION = 4  # 2: histogram, sign-combination examples, BOS left out of the example lists; 3: typical examples;
# 4: non-finite tokens counted (`nonfinite`) and left out of the other statistics

LISTS = ("top", "bottom", *SIGN_COMBINATIONS)  # the ranked example lists, in the order of NeuronStats.keys[:, :, list]
LIST_SIGNS = (1, -1, *COMBINATION_SIGNS)  # value = sign * key: keys are a, -a and |a|


@dataclass
class NeuronStats:
    """Running statistics of every neuron; every tensor lives on one device.

    The example lists are kept together, ranked by a key that is a (top), -a (bottom) or |a| (the
    four sign combinations), in the order of LISTS; the files store them under their own names
    (`neuroscope.activation_pass.store`): top_*, bottom_* ([layer neuron k]) and combo_* ([layer neuron combination k]).
    The typical examples are kept per slot (combination * bands + band), sorted by `ranked.token_hash`; the files
    store them as typical_* [layer neuron combination band k] (`typical_values`, `typical_docs`, ...).
    """

    keys: torch.Tensor  # [layer neuron list k] float32, descending; -inf: empty slot
    docs: torch.Tensor  # [layer neuron list k] int64; -1: empty slot
    positions: torch.Tensor  # [layer neuron list k] int64
    post_sum: torch.Tensor  # [layer neuron] int64, fixed point 2^-28
    gate_positive: torch.Tensor  # [layer neuron] int64
    lin_positive: torch.Tensor
    both_positive: torch.Tensor
    histogram: torch.Tensor  # [layer neuron bin] int64, bins of histogram_edges()
    nonfinite: torch.Tensor  # [layer neuron] int64: real tokens whose a, g or u is not finite (left out of the rest)
    n_tokens: torch.Tensor  # [] int64: real tokens
    sample_tokens: torch.Tensor  # [layer neuron slot k_typical] int64, `ranked.pack_tokens`, by hash; -1: empty slot
    sample_values: torch.Tensor  # [layer neuron slot k_typical] float32 a; 0 in empty slots

    COUNTS = ("post_sum", "gate_positive", "lin_positive", "both_positive", "histogram", "nonfinite", "n_tokens")

    @classmethod
    def empty(cls, n_layers: int, d_mlp: int, k: int, device: torch.device | str = "cpu",
              typical_per_band: int = 0) -> NeuronStats:
        """Statistics of no tokens; `typical_per_band` typical examples per sign combination and band (0: none)."""
        lists, pairs = (n_layers, d_mlp, len(LISTS), k), (n_layers, d_mlp)
        samples = (n_layers, d_mlp, len(SIGN_COMBINATIONS) * typical_bands(), typical_per_band)

        def full(value, dtype, size=pairs):
            return torch.full(size, value, dtype=dtype, device=device)

        return cls(keys=full(-torch.inf, torch.float32, lists), docs=full(-1, torch.long, lists),
                   positions=full(-1, torch.long, lists), post_sum=full(0, torch.long), gate_positive=full(0, torch.long),
                   lin_positive=full(0, torch.long), both_positive=full(0, torch.long),
                   histogram=full(0, torch.long, (*pairs, histogram_bins())), nonfinite=full(0, torch.long),
                   n_tokens=torch.zeros((), dtype=torch.long, device=device),
                   sample_tokens=full(-1, torch.long, samples), sample_values=full(0, torch.float32, samples))

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

    @property
    def typical_per_band(self) -> int:
        return self.sample_tokens.shape[-1]

    def _by_band(self, tensor: torch.Tensor) -> torch.Tensor:
        """[layer neuron slot k] as [layer neuron combination band k]."""
        return tensor.view(*tensor.shape[:2], len(SIGN_COMBINATIONS), typical_bands(), tensor.shape[-1])

    typical_values = property(lambda self: self._by_band(self.sample_values))  # [layer neuron combination band k]
    typical_docs = property(lambda self: self._by_band(unpack_tokens(self.sample_tokens)[0]))  # -1: empty slot
    typical_positions = property(lambda self: self._by_band(unpack_tokens(self.sample_tokens)[1]))

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
        if other.typical_per_band != self.typical_per_band:
            raise RuntimeError(f"typical examples per band: {self.typical_per_band} here, {other.typical_per_band} there")
        for layer in range(self.sample_tokens.shape[0]):  # a layer at a time: the merge sorts 2k entries per slot
            self.sample_tokens[layer], self.sample_values[layer] = merge_smallest(
                self.sample_tokens[layer], self.sample_values[layer], other.sample_tokens[layer], other.sample_values[layer])
        for name in self.COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def summary(self) -> dict[str, torch.Tensor]:
        """Mean activation, gate-open frequency and the four sign-combination frequencies ([layer neuron (4)]), each
        over the neuron's finite tokens (n_tokens - nonfinite: every count and sum leaves the others out)."""
        finite = (self.n_tokens - self.nonfinite).double()  # [layer neuron]
        n = finite.clamp_min(1)
        both = self.both_positive.double()
        gate, lin = self.gate_positive.double(), self.lin_positive.double()
        combos = torch.stack([both, gate - both, lin - both, finite - gate - lin + both], dim=-1) / n[..., None]
        return {"mean": self.post_sum.double() / 2 ** FIXED_POINT_BITS / n, "gate_open": gate / n, "sign_frequencies": combos}
