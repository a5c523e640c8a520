"""Cosines between a gated neuron's weights, IO classes, per-layer statistics (paper, Section 3).

Shapes: per-layer weights are [neuron d_model]; per-model results are [layer neuron].
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch
from tqdm import tqdm

from .constants import CLASS_NAMES, COSINE_NAMES, DEFAULT_THRESHOLD, QUANTILES, RANDOM_INTERVAL_MASS, RULES
from .models.glu import refactor_glu
from .models.readers import LayerMLP

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
    from .errors import UserError

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
