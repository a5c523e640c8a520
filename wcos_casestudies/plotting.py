"""The paper's plots (SPEC 3 and 5): fine scatter, coarse bars, box plots, medians.

Every plot is built on a bare `matplotlib.figure.Figure` (no pyplot state, no backend
switch) and saved as PDF and PNG side by side, each written atomically.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import torch
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .artifacts import atomic_write_bytes
from .constants import CLASS_NAMES
from .utils import CLASS_COLORS

FORMATS = ("pdf", "png")


def save_figure(fig: Figure, stem: Path, formats: Sequence[str] = FORMATS, dpi: int = 150) -> list[Path]:
    """Write `stem.pdf` and `stem.png` atomically; returns the paths."""
    paths = []
    for fmt in formats:
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt, dpi=dpi, bbox_inches="tight")
        path = Path(f"{stem}.{fmt}")
        atomic_write_bytes(path, buffer.getvalue())
        paths.append(path)
    return paths


def draw_scatter_panel(ax, gateout: torch.Tensor, linout: torch.Tensor, gatelin: torch.Tensor,
                       title: str, baseline: float | None = None, threshold: float | None = None):
    """One (gateout, linout) scatter coloured by gatelin on [-1, 1]; returns the scatter artist."""
    if baseline is not None:
        band = dict(color="tab:blue", alpha=0.08, lw=0, zorder=0)
        ax.axvspan(-baseline, baseline, **band)
        ax.axhspan(-baseline, baseline, **band)
    if threshold is not None:
        for t in (-threshold, threshold):
            ax.axvline(t, color="0.6", lw=0.4, ls=":", zorder=0)
            ax.axhline(t, color="0.6", lw=0.4, ls=":", zorder=0)
    size = min(3.0, max(0.2, 3000.0 / len(linout)))  # tiny points for 10k+ neurons, visible for small models
    points = ax.scatter(gateout.numpy(), linout.numpy(), c=gatelin.numpy(), cmap="coolwarm",
                        norm=Normalize(-1, 1), s=size, linewidths=0, rasterized=True)
    ax.set_xlim(-1, 1)
    ax.set_ylim(-1, 1)
    ax.set_aspect(1)
    ax.set_title(title, fontsize=8)
    ax.tick_params(labelsize=6)
    return points


def plot_fine(cosines: dict[str, torch.Tensor], stem: Path, model: str, layers: Sequence[int] | None = None,
              ncols: int = 4, baseline: float | None = None, threshold: float | None = None) -> list[Path]:
    """Scatter of every (or the given) layer: x = gateout, y = linout, colour = gatelin."""
    layers = list(range(cosines["linout"].shape[0])) if layers is None else list(layers)
    ncols = min(ncols, len(layers))
    nrows = math.ceil(len(layers) / ncols)
    fig = Figure(figsize=(2.2 * ncols + 0.8, 2.3 * nrows + 0.4), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    points = None
    for ax, layer in zip(axes.flat, layers):
        points = draw_scatter_panel(ax, cosines["gateout"][layer], cosines["linout"][layer], cosines["gatelin"][layer],
                                    f"layer {layer}", baseline=baseline, threshold=threshold)
    for ax in list(axes.flat)[len(layers):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("cos(w_gate, w_out)", fontsize=7)
    for ax in axes[:, 0]:
        ax.set_ylabel("cos(w_in, w_out)", fontsize=7)
    cbar = fig.colorbar(points, ax=axes, shrink=min(0.6, 3.0 / nrows), fraction=0.03)
    cbar.set_label("cos(w_gate, w_in)")
    fig.suptitle(model + ("" if baseline is None else f"   (band: 95% of random cosines, ±{baseline:.3f})"), fontsize=9)
    return save_figure(fig, stem)


def plot_coarse(counts: torch.Tensor, stem: Path, model: str) -> list[Path]:
    """Horizontal stacked bars: one bar per layer, the 11 classes in code order."""
    n_layers = counts.shape[0]
    fig = Figure(figsize=(9, 0.25 * n_layers + 1.5), layout="constrained")
    ax = fig.subplots()
    left = torch.zeros(n_layers, dtype=torch.float64)
    total = counts.sum(dim=1).double()
    for code, (name, color) in enumerate(zip(CLASS_NAMES, CLASS_COLORS)):
        widths = counts[:, code].double()
        bars = ax.barh(range(n_layers), widths.numpy(), left=left.numpy(), color=color, label=name,
                       edgecolor="0.3", linewidth=0.2)
        for layer, bar in enumerate(bars):
            if widths[layer] >= 0.06 * total[layer]:
                text_color = "white" if sum(color[:3]) < 1.2 and color[3] > 0.6 else "black"
                ax.text(bar.get_x() + bar.get_width() / 2, bar.get_y() + bar.get_height() / 2,
                        str(int(widths[layer])), ha="center", va="center", fontsize=5, color=text_color)
        left += widths
    ax.set_yticks(range(n_layers))
    ax.set_yticklabels([str(i) for i in range(n_layers)], fontsize=6)
    ax.invert_yaxis()
    ax.set_xlim(0, float(total.max()))
    ax.set_ylabel("layer")
    ax.set_xlabel("neurons")
    ax.set_title(model, fontsize=9)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    return save_figure(fig, stem)


def _box_stats(values: torch.Tensor, label: str) -> dict:
    q = torch.quantile(values.double(), torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64)).tolist()
    return {"whislo": q[0], "q1": q[1], "med": q[2], "q3": q[3], "whishi": q[4], "fliers": [], "label": label}


def plot_quartiles(cosines: dict[str, torch.Tensor], stem: Path, model: str) -> list[Path]:
    """Three stacked panels of per-layer boxes (whiskers at min and max): |gatelin|, |gateout|, linout."""
    n_layers = cosines["linout"].shape[0]
    panels = [("|cos(w_gate, w_in)|", cosines["gatelin"].abs(), (0, 1)),
              ("|cos(w_gate, w_out)|", cosines["gateout"].abs(), (0, 1)),
              ("cos(w_in, w_out)", cosines["linout"], (-1, 1))]
    fig = Figure(figsize=(max(6.0, 0.25 * n_layers + 2), 7), layout="constrained")
    axes = fig.subplots(3, 1, sharex=True)
    for ax, (label, values, ylim) in zip(axes, panels):
        ax.bxp([_box_stats(values[layer], str(layer)) for layer in range(n_layers)], showfliers=False,
               widths=0.6, medianprops={"color": "tab:red"})
        ax.set_ylim(*ylim)
        ax.set_ylabel(label, fontsize=8)
        ax.axhline(0, color="0.7", lw=0.5, zorder=0)
        ax.tick_params(labelsize=6)
    axes[-1].set_xlabel("layer")
    axes[0].set_title(model, fontsize=9)
    return save_figure(fig, stem)


def plot_medians(medians: dict[str, torch.Tensor], stem: Path) -> list[Path]:
    """Median linout per layer against relative depth, one line per model, a line at 0."""
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    for model, values in medians.items():
        n = len(values)
        depth = torch.arange(n, dtype=torch.float64) / max(n - 1, 1)
        ax.plot(depth.numpy(), values.numpy(), marker=".", ms=3, lw=1, label=model)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("relative depth (layer / (layers - 1))")
    ax.set_ylabel("median cos(w_in, w_out)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return save_figure(fig, stem)


# Figure 2 prototypes: class -> list of (gateout, linout, gatelin)
PROTOTYPES: dict[str, list[tuple[float, float, float]]] = {
    "enrichment": [(-0.9, 0.9, -1.0), (0.9, 0.9, 1.0)],
    "conditional enrichment": [(0.0, 0.9, 0.0)],
    "proportional change": [(-0.9, 0.0, 0.0), (0.9, 0.0, 0.0)],
    "orthogonal output": [(0.0, 0.0, 0.0)],
    "depletion": [(-0.9, -0.9, 1.0), (0.9, -0.9, -1.0)],
    "conditional depletion": [(0.0, -0.9, 0.0)],
}
_MARKERS = {"enrichment": "^", "conditional enrichment": "P", "proportional change": "s",
            "orthogonal output": "o", "depletion": "v", "conditional depletion": "X"}


def plot_definition(stem: Path, threshold: float = 0.5) -> list[Path]:
    """Figure 2: the prototype of each typical class on the (gateout, linout) plane, coloured by gatelin."""
    fig = Figure(figsize=(5.2, 5.2), layout="constrained")
    ax = fig.subplots()
    for t in (-threshold, threshold):
        ax.axvline(t, color="0.6", lw=0.6, ls=":")
        ax.axhline(t, color="0.6", lw=0.6, ls=":")
    points = None
    for name, prototypes in PROTOTYPES.items():
        x, y, c = zip(*prototypes)
        points = ax.scatter(x, y, c=c, cmap="coolwarm", norm=Normalize(-1, 1), s=140, marker=_MARKERS[name],
                            edgecolors="black", linewidths=0.8, label=name)
    ax.set_xlim(-1, 1)
    ax.set_ylim(-1, 1)
    ax.set_aspect(1)
    ax.set_xlabel("cos(w_gate, w_out)")
    ax.set_ylabel("cos(w_in, w_out)")
    handles = [Line2D([], [], ls="", marker=_MARKERS[name], markersize=9, markerfacecolor="0.85",
                      markeredgecolor="black", label=name) for name in PROTOTYPES]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    fig.colorbar(points, ax=ax, shrink=0.9).set_label("cos(w_gate, w_in)")
    return save_figure(fig, stem)
