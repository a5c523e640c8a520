"""The histogram of activations that the pass keeps per neuron: bin edges shared by every neuron (4 bins per octave
of |a| from 2^-10 to 2^10 on each side of 0, one bin per sign below and above), and the bin of a value read from
its float bits (sign, exponent, top mantissa bits), so that counting is exact and shards merge by addition.

The bands of |a| of the typical examples (`TYPICAL_BAND_EXPONENTS`) are made of these bins: fixed edges at powers of 4
(|a| < 1/4, 1/4 to 1, 1 to 4, 4 and up), read from the same codes. Fixed edges keep the typical sample exact and
mergeable in one pass; edges relative to each neuron (say its quartiles) would need its whole distribution first."""

from __future__ import annotations

import torch

# Histogram of a: the bins follow the float's sign, exponent and top HISTOGRAM_OCTAVE_BITS mantissa bits,
# i.e. 4 bins per octave of |a| between 2^HISTOGRAM_EXPONENTS[0] and 2^HISTOGRAM_EXPONENTS[1], one bin per
# sign below (down to 0) and one above (up to infinity).
HISTOGRAM_OCTAVE_BITS = 2
HISTOGRAM_EXPONENTS = (-10, 10)
FLOAT32_MANTISSA_BITS, BFLOAT16_MANTISSA_BITS, FLOAT_EXPONENT_BIAS = 23, 7, 127
CODE_BITS = 1 + 8 + HISTOGRAM_OCTAVE_BITS  # sign, exponent, top mantissa bits
# Bands of |a| for the typical examples: band i holds 2^e_(i-1) <= |a| < 2^e_i (e_-1 = -inf, e_last = inf); every
# edge is a histogram bin edge. SmolLM2 (pydoc): the median neuron has 88% of its tokens below 1/4, 11% from 1/4
# to 1, 0.3% from 1 to 4, and its largest |a| near 2.6.
TYPICAL_BAND_EXPONENTS = (-2, 0, 2)


def _octave_bins() -> int:
    """Bins of |a| between the two histogram exponents."""
    return (HISTOGRAM_EXPONENTS[1] - HISTOGRAM_EXPONENTS[0]) << HISTOGRAM_OCTAVE_BITS


def histogram_bins() -> int:
    """Number of histogram bins: per sign, one below 2^low, the octave bins, one from 2^high up."""
    return 2 * (_octave_bins() + 2)


def histogram_edges() -> torch.Tensor:
    """The bin edges [bins + 1] float64, ascending: -inf, -2^high, ..., -2^low, 0, 2^low, ..., 2^high, inf.

    A value v >= 0 (sign bit clear) falls in [edge_i, edge_i+1); a negative one (sign bit set, -0.0
    included) in (edge_i, edge_i+1]: bins go by |v| rounded down, as the float's bits give them.
    """
    low = HISTOGRAM_EXPONENTS[0]
    per_octave = 1 << HISTOGRAM_OCTAVE_BITS
    magnitudes = [2.0 ** (low + i // per_octave) * (1 + (i % per_octave) / per_octave) for i in range(_octave_bins() + 1)]
    positive = torch.tensor(magnitudes + [torch.inf], dtype=torch.float64)
    return torch.cat([-positive.flip(0), torch.zeros(1, dtype=torch.float64), positive])


def histogram_lookup(device: torch.device | str = "cpu") -> torch.Tensor:
    """The bin of each CODE_BITS-bit code (sign, exponent, top mantissa bits): [2^CODE_BITS] int32."""
    codes = torch.arange(1 << CODE_BITS)
    negative = codes >> (CODE_BITS - 1)
    magnitude = codes & ((1 << (CODE_BITS - 1)) - 1)
    lowest = (FLOAT_EXPONENT_BIAS + HISTOGRAM_EXPONENTS[0]) << HISTOGRAM_OCTAVE_BITS
    step = (magnitude - lowest + 1).clamp(0, _octave_bins() + 1)  # 0: below 2^low, last: 2^high and up
    middle = _octave_bins() + 2  # first bin of v >= 0
    return torch.where(negative.bool(), middle - 1 - step, middle + step).to(torch.int32).to(device)


def histogram_codes(a: torch.Tensor) -> torch.Tensor:
    """The CODE_BITS-bit code of every value (int32, same shape), read from its bits."""
    mask = (1 << CODE_BITS) - 1
    if a.dtype == torch.float32:
        return (a.view(torch.int32) >> (FLOAT32_MANTISSA_BITS - HISTOGRAM_OCTAVE_BITS)) & mask
    if a.dtype == torch.bfloat16:
        return ((a.view(torch.int16) >> (BFLOAT16_MANTISSA_BITS - HISTOGRAM_OCTAVE_BITS)) & mask).int()
    return histogram_codes(a.float())


def typical_bands() -> int:
    """Number of bands of |a| of the typical examples."""
    return len(TYPICAL_BAND_EXPONENTS) + 1


def typical_band_edges() -> torch.Tensor:
    """The band edges of |a| [bands + 1] float64, ascending: 0, 2^e for each of TYPICAL_BAND_EXPONENTS, inf."""
    return torch.tensor([0.0, *(2.0 ** e for e in TYPICAL_BAND_EXPONENTS), torch.inf], dtype=torch.float64)


def typical_band_lookup(device: torch.device | str = "cpu") -> torch.Tensor:
    """The band of |a| of each CODE_BITS-bit code (`histogram_codes`): [2^CODE_BITS] int32. Zeros and subnormals
    fall in band 0, infinities and NaN in the last band."""
    exponent = (torch.arange(1 << CODE_BITS) & ((1 << (CODE_BITS - 1)) - 1)) >> HISTOGRAM_OCTAVE_BITS  # biased
    band = sum((exponent >= FLOAT_EXPONENT_BIAS + e).long() for e in TYPICAL_BAND_EXPONENTS)
    return band.to(torch.int32).to(device)


def typical_band_of_bins() -> torch.Tensor:
    """The band of |a| of every histogram bin [bins] int64 (every band edge is a bin edge, so a bin lies in one band)."""
    bins, bands = histogram_lookup().long(), typical_band_lookup().long()
    out = torch.full((histogram_bins(),), -1, dtype=torch.long)
    out[bins] = bands
    if bool((out < 0).any()) or not bool((out[bins] == bands).all()):
        raise ValueError("a typical band's edge is no histogram bin edge")
    return out
