"""A first look at the whole model's connections by IO class (paper, Section 5 classes): what the gates and the linear
inputs of each class's neurons read from the neurons of earlier layers, by the class of those neurons.

For every reading class A and upstream class B, over the top-k inputs by |cosine| of every neuron of class A (layers
1 and up: layer 0 has no upstream neurons): the share of those entries whose upstream neuron is of class B, and
their mean |cosine|. The baseline is the same for same-layer random neurons: for each seed, in every layer, as many
neurons drawn uniformly without replacement from all neurons of that layer as class A has there, their top-k inputs
by |cosine| pooled over the seeds. A ratio near 1 says class A reads from class B as any neuron of its layers does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from wcos_casestudies.connections import EMPTY, INPUT_KINDS, NORM_FLOOR
from wcos_casestudies.connections_store import READ_NORM, Connections
from wcos_casestudies.constants import CLASS_NAMES

BASELINE_SEEDS = 5  # same-layer random sets per reading class, pooled
MIN_CELL = 20  # connections a cell needs before its ratio is drawn
TABLE_COLUMNS = ("kind", "reader_class", "upstream_class", "readers", "connections", "share", "baseline_share",
                 "mean_abs_cosine", "baseline_mean_abs_cosine", "ratio", "share_ratio")
HEATMAP_SIZE_IN = (11.0, 10.5)
PANELS = {"ratio": "mean |cos| / same-layer random", "share_ratio": "share of the top inputs / same-layer random"}
RATIO_LIMIT = 4.0  # colour scale: ratios from 1/limit to limit (log scale)
COLORBAR_SHRINK = 0.8
CELL_FONT_SIZE = 6  # points: the ratio written in each cell


def input_cosines(connections: Connections, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """|cosine| [layer neuron k] (NaN in empty slots) and the packed upstream neuron [layer neuron k] (EMPTY) of the
    top inputs by |cosine| of kind `kind` (gate_input or linear_input)."""
    lists = connections.lists[f"{kind}/cosine"]
    other = lists["other"].long()
    valid = other != EMPTY
    out_norms = connections.norms["out"].reshape(-1)[other.clamp_min(0)]
    read_norms = connections.norms[READ_NORM[kind.split("_")[0]]][:, :, None]
    cosines = (lists["virtual_weight"] / (out_norms * read_norms).clamp_min(NORM_FLOOR)).abs()
    return torch.where(valid, cosines, torch.nan), other


def same_layer_random_mask(mask: torch.Tensor, seed: int) -> torch.Tensor:
    """A [layer neuron] mask with, in every layer, as many neurons drawn at random as `mask` has there."""
    generator = torch.Generator().manual_seed(seed)
    drawn = torch.zeros_like(mask)
    for layer, count in enumerate(mask.sum(dim=1).tolist()):
        drawn[layer, torch.randperm(mask.shape[1], generator=generator)[:count]] = True
    return drawn


def cell_sums(mask: torch.Tensor, cosines: torch.Tensor, upstream: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """For the reading neurons of `mask`: per upstream class, the number of entries and the sum of their |cosine|
    ([classes] each), and the number of entries in all."""
    chosen = cosines[mask].reshape(-1)
    classes = upstream[mask].reshape(-1)
    valid = ~torch.isnan(chosen)
    counts = torch.bincount(classes[valid], minlength=len(CLASS_NAMES))
    sums = torch.bincount(classes[valid], weights=chosen[valid].double(), minlength=len(CLASS_NAMES))
    return counts, sums, int(valid.sum())


def class_rows(kind: str, categories: torch.Tensor, cosines: torch.Tensor, other: torch.Tensor,
               seeds: range) -> list[dict[str, Any]]:
    """The table rows of one kind: every (reading class, upstream class) pair with any connection."""
    upstream = categories.reshape(-1)[other.clamp_min(0)]
    reading_layers = torch.arange(categories.shape[0])[:, None] > 0
    rows = []
    for code, name in enumerate(CLASS_NAMES):
        mask = (categories == code) & reading_layers
        if not bool(mask.any()):
            continue
        counts, sums, total = cell_sums(mask, cosines, upstream)
        base_counts, base_sums, base_total = torch.zeros_like(counts), torch.zeros_like(sums), 0
        for seed in seeds:
            c, s, t = cell_sums(same_layer_random_mask(mask, seed * len(CLASS_NAMES) + code), cosines, upstream)
            base_counts, base_sums, base_total = base_counts + c, base_sums + s, base_total + t
        for up_code, up_name in enumerate(CLASS_NAMES):
            n, base_n = int(counts[up_code]), int(base_counts[up_code])
            mean = float(sums[up_code]) / n if n else float("nan")
            base_mean = float(base_sums[up_code]) / base_n if base_n else float("nan")
            rows.append({"kind": kind, "reader_class": name, "upstream_class": up_name, "readers": int(mask.sum()),
                         "connections": n, "share": n / max(total, 1), "baseline_share": base_n / max(base_total, 1),
                         "mean_abs_cosine": mean, "baseline_mean_abs_cosine": base_mean,
                         "ratio": mean / base_mean if n and base_n else float("nan"),
                         "share_ratio": (n / max(total, 1)) / (base_n / base_total) if base_n else float("nan")})
    return rows


def class_table(connections: Connections, categories: torch.Tensor, seeds: int = BASELINE_SEEDS) -> Any:
    """The class x class table (a DataFrame of TABLE_COLUMNS) of both input kinds; `categories` [layer neuron]."""
    import pandas as pd

    rows = []
    for kind in INPUT_KINDS:
        cosines, other = input_cosines(connections, kind)
        rows += class_rows(kind, categories.long(), cosines, other, range(seeds))
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


def draw_panel(ax, table: Any, kind: str, column: str) -> Any:
    """One heat map: reading class x upstream class of `column` (a ratio), cells of >= MIN_CELL connections."""
    import numpy as np
    from matplotlib.colors import LogNorm

    grid = np.full((len(CLASS_NAMES), len(CLASS_NAMES)), np.nan)
    for row in table[(table.kind == kind) & (table.connections >= MIN_CELL)].itertuples():
        grid[CLASS_NAMES.index(row.reader_class), CLASS_NAMES.index(row.upstream_class)] = getattr(row, column)
    image = ax.imshow(grid, cmap="coolwarm", norm=LogNorm(1 / RATIO_LIMIT, RATIO_LIMIT))
    for (r, c), value in np.ndenumerate(grid):
        if not np.isnan(value):
            ax.text(c, r, f"{value:.2f}", ha="center", va="center", fontsize=CELL_FONT_SIZE)
    ax.set_xticks(range(len(CLASS_NAMES)), CLASS_NAMES, rotation=60, ha="right")
    ax.set_yticks(range(len(CLASS_NAMES)), CLASS_NAMES)
    ax.set(title=f"{kind.replace('_', ' ')}s: {PANELS[column]}", xlabel="upstream neuron's class",
           ylabel="reading neuron's class")
    return image


def plot_class_table(table: Any, stem: Path, title: str, provenance: str | None = None) -> list[Path]:
    """Heat maps (columns: gate inputs, linear inputs; rows: the mean |cosine| and the share of the top inputs, each
    as a ratio to the same-layer random baseline, log colour scale), the ratio written in cells of >= MIN_CELL
    connections; blank cells have fewer."""
    import matplotlib
    from matplotlib.figure import Figure

    from wcos_casestudies.plotting import PAPER_STYLE, save_figure, set_title

    with matplotlib.rc_context(PAPER_STYLE):
        fig = Figure(figsize=HEATMAP_SIZE_IN, layout="constrained")
        axes = fig.subplots(len(PANELS), len(INPUT_KINDS))
        image = None
        for row, column in enumerate(PANELS):
            for ax, kind in zip(axes[row], INPUT_KINDS):
                image = draw_panel(ax, table, kind, column)
        fig.colorbar(image, ax=axes, shrink=COLORBAR_SHRINK, label="ratio to same-layer random neurons")
        set_title(fig, title, provenance)
        return save_figure(fig, stem)
