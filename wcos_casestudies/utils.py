"""Cosines between a gated neuron's weights, IO classes, per-layer statistics (paper, Section 3).

Shapes: per-layer weights are [neuron d_model]; per-model results are [layer neuron].
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from gated_core.models.glu import refactor_glu
from gated_core.models.readers import LayerMLP
from wcos_casestudies.constants import CLASS_NAMES, COSINE_NAMES, DEFAULT_THRESHOLD, QUANTILES, RANDOM_INTERVAL_MASS, RULES

CLASS_COLORS: tuple[tuple[float, float, float, float], ...] = (
    (1, 1, 0, 1),
    (1, 1, 0, 0.5),
    (0.5, 0.5, 0, 1),
    (0.5, 0.5, 0, 0.5),
    (0, 0, 0, 1),
    (0.25, 0.25, 0.25, 0.5),
    (0.9, 0.9, 0.9, 1),
    (0, 0, 1, 1),
    (0, 0, 1, 0.5),
    (0, 0.5, 0.5, 1),
    (0, 0.5, 0.5, 0.5),
)
# Layer-specific random regions: central 95% of the cosines between mismatched neurons of a layer
RANDOM_REGION_QUANTILES = (0.025, 0.975)
RANDOM_REGION_COLUMNS = tuple(f"q{p:g}_random" for p in RANDOM_REGION_QUANTILES)
RANDOM_REGION_PAIRS = 20_000  # mismatched pairs sampled per layer (2.5% quantile to about ±0.002)
RANDOM_REGION_SEED = 0

# (approx(linout), |approx(gateout)|) -> (typical class, atypical class)
_CLASS_TABLE = {
    (1, 1): (0, 1),
    (1, 0): (2, 3),
    (0, 1): (4, 5),
    (0, 0): (6, 6),
    (-1, 1): (7, 8),
    (-1, 0): (9, 10),
}


def check_threshold(threshold: float) -> float:
    """A class threshold must lie strictly between 0 and 1."""
    from gated_core.errors import UserError

    if not (0.0 < threshold < 1.0) or math.isnan(threshold):
        raise UserError(f"--threshold {threshold}: must lie strictly between 0 and 1 (paper: 0.5)")
    return threshold


def cosine_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine of two [neuron d_model] matrices, computed in float64: [neuron]."""
    a, b = a.double(), b.double()
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(torch.finfo(torch.float64).tiny)


def layer_cosines(layer: LayerMLP) -> dict[str, torch.Tensor | None]:
    """gatelin, gateout, linout of one layer ([neuron] each; the gate ones None when not gated)."""
    gated = layer.gate is not None
    return {
        "gatelin": cosine_rows(layer.gate, layer.lin) if gated else None,
        "gateout": cosine_rows(layer.gate, layer.out) if gated else None,
        "linout": cosine_rows(layer.lin, layer.out),
    }


def model_cosines(layers: Iterable[LayerMLP], n_layers: int, device: str | torch.device = "cpu",
                  refactor: bool = False, desc: str = "cosines") -> dict[str, torch.Tensor | None]:
    """The three cosines of every neuron: each [layer neuron] float64 (gate ones None if not gated)."""
    rows: dict[str, list[torch.Tensor]] = {name: [] for name in COSINE_NAMES}
    for layer in tqdm(layers, total=n_layers, desc=desc, leave=False):
        if refactor:
            layer = refactor_glu(layer)
        layer = LayerMLP(
            gate=None if layer.gate is None else layer.gate.to(device),
            lin=layer.lin.to(device),
            out=layer.out.to(device),
        )
        for name, value in layer_cosines(layer).items():
            if value is not None:
                rows[name].append(value.cpu())
    return {name: torch.stack(values) if values else None for name, values in rows.items()}


def approx(cos: torch.Tensor, threshold: float = DEFAULT_THRESHOLD) -> torch.Tensor:
    """+1 where cos > t, -1 where cos < -t, else 0 (|cos| == t counts as 0): int8, same shape."""
    return ((cos > threshold).to(torch.int8) - (cos < -threshold).to(torch.int8))


def classify(gatelin: torch.Tensor | None, gateout: torch.Tensor | None, linout: torch.Tensor,
             threshold: float = DEFAULT_THRESHOLD, rule: str = "corrected") -> torch.Tensor:
    """IO class code (0..10, order of CLASS_NAMES) of every neuron: same shape as linout, int64.

    corrected: typical iff approx(gatelin) == approx(linout) * approx(gateout).
    legacy_copysign (first code release): for enrichment and depletion the typical test
    uses approx(copysign(gatelin, gateout)) == approx(linout), which calls the mirrored
    variant (gatelin and gateout both negative for enrichment) atypical.
    Without a gate (GPT-2 style) the class comes from approx(linout) alone.
    """
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; use one of {RULES}")
    a_lo = approx(linout, threshold).long()
    if gatelin is None or gateout is None:
        return torch.where(a_lo > 0, 0, torch.where(a_lo < 0, 7, 6))
    a_go = approx(gateout, threshold).long()
    a_gl = approx(gatelin, threshold).long()
    typical = a_gl == a_lo * a_go
    if rule == "legacy_copysign":
        legacy = approx(torch.copysign(gatelin, gateout), threshold).long() == a_lo
        typical = torch.where((a_lo != 0) & (a_go != 0), legacy, typical)
    codes = torch.full_like(a_lo, -1)
    for (lo, go), (typical_code, atypical_code) in _CLASS_TABLE.items():
        cell = (a_lo == lo) & (a_go.abs() == go)
        codes = torch.where(cell & typical, typical_code, codes)
        codes = torch.where(cell & ~typical, atypical_code, codes)
    return codes


def category_stats(categories: torch.Tensor) -> torch.Tensor:
    """Counts per layer in class-code order: [layer 11] int64."""
    n_classes = len(CLASS_NAMES)
    offsets = torch.arange(categories.shape[0])[:, None] * n_classes
    flat = (categories.long() + offsets).flatten()
    return torch.bincount(flat, minlength=categories.shape[0] * n_classes).view(-1, n_classes)


def quartiles(cos: torch.Tensor) -> torch.Tensor:
    """The 0, .25, .5, .75, 1 quantiles of each layer: [5 layer]."""
    q = torch.tensor(QUANTILES, dtype=cos.dtype)
    return torch.quantile(cos, q, dim=1)


def random_cosine_interval(d_model: int, mass: float = RANDOM_INTERVAL_MASS) -> float:
    """Half-width r of the central `mass` interval of the cosine of two random directions in d_model dims.

    The cosine c has density proportional to (1 - c^2)^((d-3)/2) on [-1, 1]
    (Beta((d-1)/2, (d-1)/2) rescaled); the CDF is integrated numerically in log space.
    """
    if d_model < 2:
        raise ValueError("d_model must be at least 2")
    if d_model == 2:
        return math.sin(math.pi * mass / 2)  # c = cos(theta), theta uniform
    exponent = (d_model - 3) / 2
    if exponent == 0:
        return mass  # d = 3: c is uniform on [-1, 1]
    # the density is negligible beyond ~12 standard deviations (std = 1/sqrt(d))
    upper = min(1.0, 12.0 / math.sqrt(d_model))
    grid = np.linspace(0.0, upper, 200_001)
    with np.errstate(divide="ignore"):
        log_density = exponent * np.log1p(-grid * grid)
    density = np.exp(log_density - log_density.max())
    cumulative = np.concatenate([[0.0], np.cumsum((density[1:] + density[:-1]) / 2)])
    cumulative /= cumulative[-1]
    return float(np.interp(mass, cumulative, grid))


def mismatched_sample(n_neurons: int, n_pairs: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Neurons (rows, columns) whose pairs (i in rows, j in columns, i != j) are the mismatched pairs of a layer.

    Every neuron on both sides (all n(n-1) ordered pairs, no randomness) when n^2 <= n_pairs; else two
    independent random subsets of ceil(sqrt(n_pairs)) neurons each, so that every ordered pair i != j
    is equally likely to be among the (about n_pairs) pairs.
    """
    if n_neurons < 2:
        raise ValueError("mismatched pairs need at least two neurons")
    size = math.ceil(math.sqrt(n_pairs))
    if size >= n_neurons:
        return torch.arange(n_neurons), torch.arange(n_neurons)
    rows = torch.randperm(n_neurons, generator=generator)[:size]
    columns = torch.randperm(n_neurons, generator=generator)[:size]
    return rows, columns


def _unit_rows(weights: torch.Tensor) -> torch.Tensor:
    weights = weights.double()
    return weights / weights.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)


def mismatched_cosine_quantiles(layer: LayerMLP, generator: torch.Generator, n_pairs: int = RANDOM_REGION_PAIRS,
                                levels: tuple[float, ...] = RANDOM_REGION_QUANTILES) -> dict[str, tuple[float, ...]]:
    """Quantiles (default 2.5% and 97.5%) of each cosine between mismatched neurons i != j of one layer.

    gatelin: cos(w_gate[i], w_in[j]), gateout: cos(w_gate[i], w_out[j]), linout: cos(w_in[i], w_out[j]),
    over the pairs of `mismatched_sample`; the gate ones are left out for a layer without gate.
    This is the layer's own chance level: what the cosines look like when nothing ties the two vectors.
    """
    rows, columns = mismatched_sample(layer.lin.shape[0], n_pairs, generator)
    mismatched = rows[:, None] != columns[None, :]
    operands = {"gatelin": (layer.gate, layer.lin), "gateout": (layer.gate, layer.out), "linout": (layer.lin, layer.out)}
    regions = {}
    for name, (first, second) in operands.items():
        if first is None:
            continue
        cosines = (_unit_rows(first[rows]) @ _unit_rows(second[columns]).T).cpu()
        regions[name] = tuple(torch.quantile(cosines[mismatched], torch.tensor(levels, dtype=torch.float64)).tolist())
    return regions


def model_random_regions(layers: Iterable[LayerMLP], n_layers: int, seed: int = RANDOM_REGION_SEED,
                         n_pairs: int = RANDOM_REGION_PAIRS, refactor: bool = False,
                         desc: str = "random regions") -> dict[str, torch.Tensor]:
    """Per cosine, the layer-specific random region of every layer: [2 layer] float64 (rows 2.5% and 97.5%).

    One generator seeded with `seed` serves the layers in order, so equal inputs give equal regions.
    """
    generator = torch.Generator().manual_seed(seed)
    rows: dict[str, list[tuple[float, ...]]] = {}
    for layer in tqdm(layers, total=n_layers, desc=desc, leave=False):
        if refactor:
            layer = refactor_glu(layer)
        for name, bounds in mismatched_cosine_quantiles(layer, generator, n_pairs).items():
            rows.setdefault(name, []).append(bounds)
    return {name: torch.tensor(bounds, dtype=torch.float64).T for name, bounds in rows.items()}


def random_regions_table(regions: dict[str, torch.Tensor]) -> pd.DataFrame:
    """Long table of `model_random_regions`: cosine, layer, q0.025_random, q0.975_random."""
    rows = [{"cosine": name, "layer": layer, **dict(zip(RANDOM_REGION_COLUMNS, values[:, layer].tolist()))}
            for name, values in regions.items() for layer in range(values.shape[1])]
    return pd.DataFrame(rows, columns=["cosine", "layer", *RANDOM_REGION_COLUMNS])
