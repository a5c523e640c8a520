"""Summaries of ablations: mean and median of the per-token differences (baseline − ablated) with
bootstrap intervals, tables (CSV / Markdown) and a plot with each set next to its random baselines.

The bootstrap resamples whole documents (tokens of one document are not independent), with a fixed
seed, so that every set is summarised over the same resamples (paired across sets). The median of
a resample is the lower weighted median, computed exactly from one sort of the values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from gated_core.artifacts import atomic_write_text, markdown_table
from gated_core.naming import shown
from neuroscope.classes.ablation import METRICS
from wcos_casestudies.constants import CLASS_NAMES
from wcos_casestudies.plotting import save_figure
from wcos_casestudies.utils import CLASS_COLORS

MAX_MEDIAN_BINS = 1024  # bins of the sorted values for the bootstrap medians (exact for any number)
METRIC_TITLES = {"loss": "Δ loss", "entropy": "Δ entropy", "rank": "Δ rank of the correct token",
                 "norm_scale": "Δ final-norm scale 1/RMS"}


@dataclass
class Bootstrap:
    """Document resamples shared by every set of one evaluation."""

    groups: torch.Tensor  # [token] int64: index of the token's document among the evaluated documents
    weights: torch.Tensor  # [resample document] int32: how often each document is drawn
    level: float  # e.g. 0.95 for a central 95 % interval

    @classmethod
    def of(cls, documents: torch.Tensor, n_resamples: int, seed: int, level: float) -> Bootstrap:
        """Resamples of the documents of per-token `documents` [token] (dataset rows)."""
        _, groups = torch.unique(documents, return_inverse=True)
        n_groups = int(groups.max()) + 1 if groups.numel() else 0
        generator = torch.Generator().manual_seed(seed)
        draws = torch.randint(n_groups, (n_resamples, n_groups), generator=generator)
        weights = torch.zeros(n_resamples, n_groups, dtype=torch.int32)
        weights.scatter_add_(1, draws, torch.ones_like(draws, dtype=torch.int32))
        return cls(groups, weights, level)

    def interval(self, samples: torch.Tensor) -> tuple[float, float]:
        """Central `level` percentile interval of per-resample values [resample]."""
        tail = (1 - self.level) / 2
        low, high = torch.quantile(samples.double(), torch.tensor([tail, 1 - tail], dtype=torch.float64))
        return float(low), float(high)

    def means(self, values: torch.Tensor) -> torch.Tensor:
        """Mean of `values` [token] in every resample: [resample]."""
        n_groups = self.weights.shape[1]
        sums = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, self.groups, values.double())
        counts = torch.bincount(self.groups, minlength=n_groups).double()
        weights = self.weights.double()
        return (weights @ sums) / (weights @ counts)

    def medians(self, values: torch.Tensor) -> torch.Tensor:
        """Lower median of `values` [token] in every resample: [resample], exactly.

        Two steps: the sorted values are cut into equal-count bins; a matrix product of the
        resample weights with the documents' bin counts finds each resample's median bin; then
        only that bin's tokens are weighted and counted.
        """
        n = values.numel()
        order = values.argsort()
        sorted_values, sorted_groups = values[order], self.groups[order]
        n_bins = max(1, min(MAX_MEDIAN_BINS, math.isqrt(n)))
        starts = (torch.arange(n_bins + 1) * n + n_bins - 1) // n_bins  # bin k holds sorted tokens [starts[k], starts[k+1])
        bin_of = torch.arange(n) * n_bins // n
        counts = torch.zeros(self.weights.shape[1], n_bins, dtype=torch.float64)
        counts.index_put_((sorted_groups, bin_of), torch.ones(n, dtype=torch.float64), accumulate=True)
        cumulative = (self.weights.double() @ counts).cumsum(dim=1)  # [resample bin]: tokens up to each bin's end
        half = torch.floor((cumulative[:, -1:] + 1) / 2)  # the lower median is the ceil(n/2)-th value
        median_bin = torch.searchsorted(cumulative, half)[:, 0]  # [resample]
        before = torch.where(median_bin > 0, cumulative.gather(1, (median_bin - 1).clamp_min(0)[:, None])[:, 0], 0)
        width = int((starts[1:] - starts[:-1]).max())
        tokens = starts[median_bin][:, None] + torch.arange(width)  # [resample width] sorted positions
        inside = tokens < starts[median_bin + 1][:, None]
        tokens = tokens.clamp_max(n - 1)
        token_weights = self.weights.gather(1, sorted_groups[tokens]).double() * inside
        position = torch.searchsorted(token_weights.cumsum(dim=1), (half[:, 0] - before)[:, None])[:, 0]
        return sorted_values[tokens.gather(1, position[:, None])[:, 0]]


def lower_median(values: torch.Tensor) -> float:
    """The lower median (torch.median's convention)."""
    return float(values.median())


def summarize(differences: torch.Tensor, bootstrap: Bootstrap) -> dict[str, dict[str, float]]:
    """Per metric: mean and median of differences [token 4] with their bootstrap intervals."""
    summary = {}
    for column, metric in enumerate(METRICS):
        values = differences[:, column].contiguous()
        mean_low, mean_high = bootstrap.interval(bootstrap.means(values))
        median_low, median_high = bootstrap.interval(bootstrap.medians(values))
        summary[metric] = {"mean": float(values.double().mean()), "mean_low": mean_low, "mean_high": mean_high,
                           "median": lower_median(values), "median_low": median_low, "median_high": median_high}
    return summary


def results_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per ablation: what was ablated and every summary number (the CSV)."""
    rows = []
    for record in records:
        row = {key: record[key] for key in ("set", "kind", "stands_for", "mode", "condition", "neurons")}
        row["tokens_touched"] = record["touched"] / max(1, record["tokens"])
        for metric, numbers in record["summary"].items():
            row.update({f"{metric}_{key}": value for key, value in numbers.items()})
        rows.append(row)
    return pd.DataFrame(rows)


def markdown_frame(frame: pd.DataFrame, baseline: dict[str, float]) -> pd.DataFrame:
    """A readable table: per metric 'mean [low, high]' and 'median [low, high]'."""
    def cell(row: pd.Series, metric: str, stat: str) -> str:
        return f"{row[f'{metric}_{stat}']:+.4f} [{row[f'{metric}_{stat}_low']:+.4f}, {row[f'{metric}_{stat}_high']:+.4f}]"

    rows = []
    for _, row in frame.iterrows():
        shown = {"set": row["set"], "mode": row["mode"], "condition": row["condition"], "neurons": int(row["neurons"]),
                 "tokens touched": f"{row['tokens_touched']:.1%}"}
        for metric in METRICS:
            shown[f"{METRIC_TITLES[metric]} mean (baseline {baseline[metric]:.3g})"] = cell(row, metric, "mean")
            shown[f"{METRIC_TITLES[metric]} median"] = cell(row, metric, "median")
        rows.append(shown)
    return pd.DataFrame(rows)


def write_tables(records: list[dict[str, Any]], baseline: dict[str, float], stem: Path, title: str) -> pd.DataFrame:
    """`stem.csv` (every number) and `stem.md` (readable), atomically; returns the CSV's frame."""
    frame = results_frame(records)
    atomic_write_text(Path(f"{stem}.csv"), frame.to_csv(index=False))
    note = ("Differences are baseline − ablated, per predicted token; [low, high] is a bootstrap interval "
            "over documents. A negative Δ loss means the ablation made the model worse.")
    atomic_write_text(Path(f"{stem}.md"), shown(f"# {title}\n\n{note}\n\n" + markdown_table(markdown_frame(frame, baseline))))
    return frame


ROLE_COLOR = (0.55, 0.35, 0.65, 1.0)
RANDOM_COLOR = (0.65, 0.65, 0.65, 1.0)
EDGE_COLOR = "0.25"
GROUP_GAP = 0.6  # extra space between a set's group of bars and the next
X_TICKS = 5  # at most this many tick intervals per panel


def display_order(frame: pd.DataFrame) -> list[int]:
    """Row indices: each ablated set followed by the random baselines drawn for it (same mode and condition)."""
    order = []
    randoms = frame[frame["kind"] == "random"]
    for index, row in frame[frame["kind"] != "random"].iterrows():
        order.append(index)
        partners = randoms[(randoms["stands_for"] == row["set"]) & (randoms["mode"] == row["mode"])
                           & (randoms["condition"] == row["condition"])]
        order.extend(partners.index)
    order.extend(i for i in randoms.index if i not in order)  # baselines whose set is not in the table
    return order


def bar_color(row: pd.Series) -> tuple[float, float, float, float]:
    """Class colour for a class or a sample of one, purple for roles, grey for random baselines."""
    if row["kind"] == "random":
        return RANDOM_COLOR
    base = row["stands_for"] if row["kind"] == "sample" else row["set"]
    return CLASS_COLORS[CLASS_NAMES.index(base)] if base in CLASS_NAMES else ROLE_COLOR


def row_label(row: pd.Series) -> str:
    condition = "" if row["condition"] == "all tokens" else f" | {row['condition']}"
    if row["kind"] == "random":
        return f"random, seed {row['set'].rsplit(' ', 1)[-1]}"
    return f"{row['set']} (n={int(row['neurons'])}, {row['mode']}){condition}"


def plot_ablations(frame: pd.DataFrame, stem: Path, title: str) -> list[Path]:
    """Per metric a panel of horizontal bars: mean difference with its interval, the median as a diamond;
    each set's same-layer random baselines in grey right below it."""
    order = display_order(frame)
    positions, y = [], 0.0
    for previous, index in zip([None, *order], order):
        if previous is not None and frame.loc[index, "kind"] != "random":
            y += GROUP_GAP
        positions.append(y)
        y += 1
    fig = Figure(figsize=(14, 1.2 + 0.28 * y), layout="constrained")
    axes = fig.subplots(1, len(METRICS), sharey=True)
    rows = frame.loc[order]
    colors = [bar_color(row) for _, row in rows.iterrows()]
    for ax, metric in zip(axes, METRICS):
        mean = rows[f"{metric}_mean"].to_numpy()
        errors = [mean - rows[f"{metric}_mean_low"].to_numpy(), rows[f"{metric}_mean_high"].to_numpy() - mean]
        ax.barh(positions, mean, xerr=errors, color=colors, edgecolor=EDGE_COLOR, linewidth=0.5, capsize=1.5,
                error_kw={"linewidth": 0.7})
        ax.scatter(rows[f"{metric}_median"].to_numpy(), positions, marker="D", s=10, color="black", zorder=3,
                   label="median")
        ax.axvline(0, color="black", linewidth=0.6)
        ax.set_title(METRIC_TITLES[metric], fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=X_TICKS, symmetric=False))
        ax.tick_params(labelsize=7)
        ax.tick_params(axis="x", labelrotation=30)
        ax.grid(axis="x", linewidth=0.3, alpha=0.5)
    axes[0].set_yticks(positions)
    axes[0].set_yticklabels([row_label(row) for _, row in rows.iterrows()], fontsize=7)
    axes[0].invert_yaxis()
    axes[0].legend(fontsize=6, loc="lower left", frameon=False)
    fig.suptitle(f"{title}\nbaseline − ablated per token: bar = mean with bootstrap interval, ◆ = median; "
                 "grey = same-layer random sets", fontsize=8)
    return save_figure(fig, stem)


def write_report(records: list[dict[str, Any]], baseline: dict[str, float], stem: Path, title: str) -> pd.DataFrame:
    """Tables and plot of every finished ablation; returns the CSV's frame."""
    frame = write_tables(records, baseline, stem, title)
    if len(frame):
        plot_ablations(frame, stem, title)
    return frame
