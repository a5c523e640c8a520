"""Plots of the functional roles (paper, Section 6 and Appendix E): the entropy scores of the last layer.

The paper chose its two entropy neurons by looking at a box plot of these scores; this draws it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from gated_core.neurons import NeuronId
from wcos_casestudies.plotting import save_figure

LABELLED_EXTRA = 3  # neurons after the chosen ones that are named too, so the gap to them can be read
LABEL_GAP = 0.035  # least vertical distance between two labels, in score units


def spread_labels(heights: list[float], gap: float = LABEL_GAP) -> list[float]:
    """Label heights for points at `heights` (descending), pushed down so that no two are closer than `gap`."""
    placed: list[float] = []
    for height in heights:
        placed.append(min(height, placed[-1] - gap) if placed else height)
    return placed


def plot_entropy_scores(scores: torch.Tensor, layer: int, n_chosen: int, null_space_dim: int, stem: Path,
                        caption: str) -> list[Path]:
    """Box plot of every last-layer neuron's entropy score, each neuron a point; the chosen ones in red and named."""
    values = scores.detach().double().cpu().numpy()
    order = np.argsort(-values, kind="stable")
    x = 1 + np.random.default_rng(0).uniform(-0.2, 0.2, len(values))
    chosen = np.zeros(len(values), dtype=bool)
    chosen[order[:n_chosen]] = True
    fig = Figure(figsize=(5.0, 5.2))
    ax = fig.subplots()
    ax.scatter(x[~chosen], values[~chosen], s=4, color="0.55", alpha=0.5, linewidths=0, zorder=1, label="last-layer neuron")
    ax.scatter(x[chosen], values[chosen], s=24, color="tab:red", zorder=3, label=f"chosen (top {n_chosen}, --n_entropy)")
    ax.boxplot(values, widths=0.55, showfliers=False, zorder=2, medianprops={"color": "black"},
               boxprops={"linewidth": 1.2}, whiskerprops={"linewidth": 1.2})
    named = order[:n_chosen + LABELLED_EXTRA]
    for rank, (index, height) in enumerate(zip(named, spread_labels([float(values[i]) for i in named]))):
        color = "tab:red" if rank < n_chosen else "0.3"
        ax.annotate(f"{NeuronId(layer, index)}  {values[index]:.3f}", (x[index], values[index]), xytext=(1.42, height), fontsize=7,
                    va="center", color=color, arrowprops={"arrowstyle": "-", "color": color, "lw": 0.5})
    ax.set_xticks([1], [f"layer {layer}\n({len(values)} neurons)"])
    ax.set_xlim(0.6, 1.95)
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"entropy score: share of w_out in W_U's {null_space_dim}\nsmallest singular directions (‖P w_out‖ / ‖w_out‖)")
    ax.set_title(f"Entropy neuron candidates (box: quartiles, whiskers 1.5 IQR)\n{caption}", fontsize=7)
    ax.legend(loc="lower right", fontsize=7, frameon=False)
    ax.grid(axis="y", lw=0.3, alpha=0.5)
    return save_figure(fig, stem)
