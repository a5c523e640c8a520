"""Frequency against strength (the follow-up's `freq_vs_mean.py` and `freqs.py --log`): each neuron's gate-open
frequency P(g > 0) against its mean activation a and against its largest |a|, coloured by IO class, on linear and on
log axes; per class, the medians and Spearman's rank correlation of frequency and strength.

Inputs [layer neuron]: `gate_open` and `mean` of the activation pass's statistics, `peak` = max(max a, -min a) over the
dataset (its largest |a|), and the class codes of main.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from wcos_casestudies.constants import CLASS_NAMES
from wcos_casestudies.plotting import save_figure
from wcos_casestudies.utils import CLASS_COLORS

# scatter points of one neuron each: large and opaque for a small model, small and light for a 7B one (352,256 points)
POINT_AREA = 30_000  # points^2 shared by all points, each at least MIN_POINT and at most MAX_POINT
MIN_POINT, MAX_POINT = 1.5, 14.0


def ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of `values`, ties sharing their mean rank."""
    return pd.Series(values).rank(method="average").to_numpy()


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation of the pairs where both are finite (nan for fewer than 3 or a constant one)."""
    finite = np.isfinite(x) & np.isfinite(y)
    x, y = x[finite], y[finite]
    if len(x) < 3:
        return float("nan")
    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def strength_row(name: str, frequency: np.ndarray, mean: np.ndarray, peak: np.ndarray) -> dict:
    """One row of `strength_table`."""
    def median(values: np.ndarray) -> float:  # of the finite values (a neuron whose every token is non-finite has none)
        finite = values[np.isfinite(values)]
        return float(np.median(finite)) if len(finite) else float("nan")

    return {"class": name, "neurons": len(frequency), "median gate_open": median(frequency),
            "median mean": median(mean), "median abs(mean)": median(np.abs(mean)),
            "median max abs(a)": median(peak), "spearman gate_open mean": spearman(frequency, mean),
            "spearman gate_open abs(mean)": spearman(frequency, np.abs(mean)),
            "spearman gate_open max abs(a)": spearman(frequency, peak)}


def strength_table(gate_open: torch.Tensor, mean: torch.Tensor, peak: torch.Tensor, categories: torch.Tensor) -> pd.DataFrame:
    """Per class with neurons (then `all neurons`): medians of gate-open frequency, mean a, |mean a| and max |a|, and
    Spearman's correlation of the frequency with each strength."""
    frequency, mean, peak, codes = (t.double().flatten().numpy() for t in (gate_open, mean, peak, categories))
    rows = [strength_row(name, frequency[codes == code], mean[codes == code], peak[codes == code])
            for code, name in enumerate(CLASS_NAMES) if (codes == code).any()]
    rows.append(strength_row("all neurons", frequency, mean, peak))
    return pd.DataFrame(rows)


def plot_strength(gate_open: torch.Tensor, mean: torch.Tensor, peak: torch.Tensor, categories: torch.Tensor,
                  stem: Path, title: str) -> list[Path]:
    """Four panels of one point per neuron, coloured by class: frequency against mean a and against max |a|, each on
    linear axes and on log axes (|mean| there; neurons at 0 on a log axis are left out and counted)."""
    frequency, mean, peak, codes = (t.double().flatten().numpy() for t in (gate_open, mean, peak, categories))
    fig = Figure(figsize=(10, 8), layout="constrained")
    axes = fig.subplots(2, 2)
    panels = ((axes[0, 0], mean, "mean a", False), (axes[0, 1], np.abs(mean), "|mean a|", True),
              (axes[1, 0], peak, "max |a|", False), (axes[1, 1], peak, "max |a|", True))
    present = sorted((code for code in range(len(CLASS_NAMES)) if (codes == code).any()), key=lambda c: -(codes == c).sum())
    size = float(np.clip(POINT_AREA / len(codes), MIN_POINT, MAX_POINT))
    alpha = 0.9 if size >= MAX_POINT else 0.5
    for ax, strength, label, log in panels:
        finite = np.isfinite(frequency) & np.isfinite(strength)
        shown = finite & (frequency > 0) & (strength > 0) if log else finite
        for code in present:  # the most common class first, the rare ones drawn over it
            keep = shown & (codes == code)
            ax.scatter(frequency[keep], strength[keep], s=size, alpha=alpha, color=CLASS_COLORS[code],
                       edgecolors="0.35" if size >= MAX_POINT else "none", linewidths=0.3, rasterized=True)
        ax.set_xlabel("gate-open frequency P(g > 0)" + (" (log)" if log else ""))
        ax.set_ylabel(label + (" (log)" if log else ""))
        if log:
            ax.set_xscale("log")
            ax.set_yscale("log")
        if (~shown).any():
            ax.set_title(f"{int((~shown).sum()):,} neurons left out ({'at 0 or ' if log else ''}not finite)", fontsize=7)
    handles = [Line2D([], [], marker="o", linestyle="", color=CLASS_COLORS[code], markeredgecolor="0.35",
                      label=f"{CLASS_NAMES[code]} ({int((codes == code).sum()):,})") for code in sorted(present)]
    fig.legend(handles=handles, loc="outside right center", fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, stem)
