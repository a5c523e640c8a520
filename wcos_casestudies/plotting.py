"""The paper's plots (section 5 and Figures 2 and 5): fine scatter, coarse bars, box plots, medians.

Every plot is built on a bare `matplotlib.figure.Figure` (no pyplot state, no backend
switch; seaborn draws into given axes) and saved as PDF and PNG side by side, each
written atomically. Figures are sized to print at about their natural size on a page,
with every text at least FONT_SIZE points; each plot function takes an optional
`provenance` line (weights, processing, threshold and rule) that goes into its title.
"""

from __future__ import annotations

import functools
import io
import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.category import StrCategoryFormatter
from matplotlib.colors import Normalize, to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.text import Text
from matplotlib.ticker import FixedFormatter, FuncFormatter

from gated_core.artifacts import atomic_write_bytes
from gated_core.constants import PLOT_FORMATS
from gated_core.naming import shown
from wcos_casestudies.constants import CLASS_NAMES, DEFAULT_THRESHOLD
from wcos_casestudies.utils import CLASS_COLORS

DPI = 150

FONT_SIZE = 8  # points: the smallest text anywhere (ticks, labels, legends, in-bar counts)
TITLE_SIZE = 9
CHAR_WIDTH_EM = 0.6  # average glyph width of the sans-serif font, in ems (for wrapping titles)
PAPER_STYLE = {
    "font.size": FONT_SIZE, "axes.titlesize": FONT_SIZE, "axes.labelsize": FONT_SIZE,
    "xtick.labelsize": FONT_SIZE, "ytick.labelsize": FONT_SIZE, "legend.fontsize": FONT_SIZE,
    "legend.title_fontsize": FONT_SIZE, "figure.titlesize": TITLE_SIZE,
    "pdf.fonttype": 42,  # TrueType in the PDF: text stays text
}

COSINE_LABELS = {"gatelin": "cos(w_gate, w_in)", "gateout": "cos(w_gate, w_out)", "linout": "cos(w_in, w_out)"}
THRESHOLD_STYLE = {"color": "0.3", "lw": 0.7, "ls": ":"}
BAND_STYLE = {"color": "tab:blue", "alpha": 0.15, "lw": 0}
REGION_STYLE = {"color": "tab:green", "lw": 0.8, "ls": "--"}
ZERO_STYLE = {"color": "0.5", "lw": 0.6}

# fine plot: inches per panel (labels included; larger for a single row, Figure 5), colour bar, title + legend
FINE_PANEL_WIDTH_IN, FINE_PANEL_HEIGHT_IN = 1.65, 1.75
FINE_ROW_PANEL_WIDTH_IN, FINE_ROW_PANEL_HEIGHT_IN = 2.2, 2.3
FINE_COLORBAR_IN, FINE_HEADER_IN = 0.75, 0.85
FINE_TICKS, FINE_MINOR_TICKS = (-1.0, 0.0, 1.0), (-0.5, 0.5)
FINE_COLORBAR_TICKS = (-1.0, -0.5, 0.0, 0.5, 1.0)
FINE_POINTS = 3000.0  # marker area (pt^2) shared by a panel's points: tiny for 10k neurons, visible for 100
FINE_POINT_SIZE_RANGE = (0.2, 3.0)
FINE_COLORBAR_ROWS = 3  # the colour bar spans about this many panel rows

# coarse plot: figure width, inches per layer row, title + legend + axis label
COARSE_WIDTH_IN, COARSE_ROW_IN, COARSE_EXTRA_IN = 7.0, 0.22, 1.9
COARSE_LEGEND_COLUMNS = 3
COUNT_PADDING_PX = 2  # a count is printed only where it fits inside its segment with this margin
DARK_LUMINANCE = 0.5  # segments darker than this get white counts
LUMA_WEIGHTS = (0.2126, 0.7152, 0.0722)  # Rec. 709 luminance of linear RGB
SEGMENT_EDGE = {"edgecolor": "0.3", "linewidth": 0.2}

# box plot: inches per layer, minimum width, height of each of the three panels
BOX_SLOT_IN, BOX_MIN_WIDTH_IN, BOX_PANEL_IN, BOX_EXTRA_IN = 0.2, 7.0, 1.9, 0.9
BOX_WIDTH = 0.6  # of a layer's slot
BOX_COLOR, MEDIAN_COLOR = "0.85", "tab:red"
BOX_LINE_WIDTH, MEDIAN_LINE_WIDTH = 0.7, 1.2
MIN_MAX_WHISKERS = (0, 100)  # percentiles: whiskers at min and max, as the stored quartiles

# medians plot
MEDIANS_SIZE_IN = (7.0, 4.2)
MEDIANS_LEGEND_COLUMNS = 3
MEDIANS_LINE = {"markersize": 4, "linewidth": 1}


def _paper_style(plot):
    """Build (and save) the figure under PAPER_STYLE, leaving the global rcParams as they were."""
    @functools.wraps(plot)
    def styled(*args, **kwargs):
        with matplotlib.rc_context(PAPER_STYLE):
            return plot(*args, **kwargs)
    return styled


def save_figure(fig: Figure, stem: Path, formats: Sequence[str] = PLOT_FORMATS, dpi: int = DPI) -> list[Path]:
    """Write `stem.pdf` and `stem.png` atomically, every text of the figure (titles, labels, ticks, legends) with the
    classes in the naming in use (`gated_core.naming`); returns the paths."""
    shown_in_naming(fig)
    paths = []
    for fmt in formats:
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt, dpi=dpi, bbox_inches="tight")
        path = Path(f"{stem}.{fmt}")
        atomic_write_bytes(path, buffer.getvalue())
        paths.append(path)
    return paths


def shown_in_naming(fig: Figure) -> None:
    """Every text of `fig` with its class words in the naming in use: titles, labels, legends, annotations, and the
    tick labels, which their formatters make anew at each drawing (fixed lists and categories: the texts a plot
    names classes with)."""
    for text in fig.findobj(Text):
        text.set_text(shown(text.get_text()))
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            for formatter, setter in ((axis.get_major_formatter(), axis.set_major_formatter),
                                      (axis.get_minor_formatter(), axis.set_minor_formatter)):
                if isinstance(formatter, (FixedFormatter, FuncFormatter, StrCategoryFormatter)):  # labels, not numbers
                    setter(FuncFormatter(lambda x, pos, named=formatter: shown(str(named(x, pos)))))


def set_title(fig: Figure, subject: str, provenance: str | None = None) -> None:
    """Figure title: the subject, then the provenance wrapped to the figure's width."""
    width_chars = int(fig.get_figwidth() * 72 / (CHAR_WIDTH_EM * TITLE_SIZE))
    lines = [subject] + (textwrap.wrap(provenance, width_chars) if provenance else [])
    fig.suptitle("\n".join(lines))


def provenance_line(weights: str | None, processing: bool, threshold: float, rule: str,
                    refactored: bool = False) -> str:
    """What a plot's numbers rest on, for its title: weights, processing, class threshold and rule."""
    parts = [weights] if weights else []
    parts.append("TransformerLens processing" if processing else "raw weights (no processing)")
    parts.append(f"t = {threshold:g}, {rule.replace('_', ' ')} rule")
    if refactored:
        parts.append("GLU signs refactored")
    return " · ".join(parts)


def reference_handles(threshold: float | None = None, baseline: float | None = None,
                      random_regions: bool = False) -> list:
    """Legend entries for the class thresholds, the random band and the layer-specific random region."""
    handles = []
    if threshold is not None:
        handles.append(Line2D([], [], **THRESHOLD_STYLE, label=f"class thresholds ±t, t = {threshold:g}"))
    if baseline is not None:
        handles.append(Patch(**BAND_STYLE, label=f"95% of cosines of random directions (±{baseline:.3f})"))
    if random_regions:
        handles.append(Line2D([], [], **REGION_STYLE, label="95% of cosines between different neurons of the layer"))
    return handles


def _region(random_regions: dict[str, torch.Tensor] | None, name: str, layer: int) -> tuple[float, float] | None:
    if random_regions is None or name not in random_regions:
        return None
    low, high = random_regions[name][:, layer].tolist()
    return low, high


def draw_scatter_panel(ax, gateout: torch.Tensor, linout: torch.Tensor, gatelin: torch.Tensor, title: str,
                       baseline: float | None = None, threshold: float | None = None,
                       region_gateout: tuple[float, float] | None = None,
                       region_linout: tuple[float, float] | None = None):
    """One (gateout, linout) scatter coloured by gatelin on [-1, 1], both axes labelled; returns the scatter."""
    if baseline is not None:
        ax.axvspan(-baseline, baseline, **BAND_STYLE, zorder=0)
        ax.axhspan(-baseline, baseline, **BAND_STYLE, zorder=0)
    for t in () if threshold is None else (-threshold, threshold):
        ax.axvline(t, **THRESHOLD_STYLE, zorder=0)
        ax.axhline(t, **THRESHOLD_STYLE, zorder=0)
    for bound in region_gateout or ():
        ax.axvline(bound, **REGION_STYLE, zorder=1)
    for bound in region_linout or ():
        ax.axhline(bound, **REGION_STYLE, zorder=1)
    size = min(FINE_POINT_SIZE_RANGE[1], max(FINE_POINT_SIZE_RANGE[0], FINE_POINTS / len(linout)))
    points = ax.scatter(gateout.numpy(), linout.numpy(), c=gatelin.numpy(), cmap="coolwarm",
                        norm=Normalize(-1, 1), s=size, linewidths=0, rasterized=True, zorder=2)
    ax.set(xlim=(-1, 1), ylim=(-1, 1), aspect=1, title=title,
           xlabel=COSINE_LABELS["gateout"], ylabel=COSINE_LABELS["linout"])
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_ticks(FINE_TICKS)
        axis.set_ticks(FINE_MINOR_TICKS, minor=True)
        axis.set_major_formatter("{x:g}")
    return points


@_paper_style
def plot_fine(cosines: dict[str, torch.Tensor], stem: Path, model: str, layers: Sequence[int] | None = None,
              ncols: int = 4, baseline: float | None = None, threshold: float | None = None,
              random_regions: dict[str, torch.Tensor] | None = None, provenance: str | None = None) -> list[Path]:
    """Scatter of every (or the given) layer: x = gateout, y = linout, colour = gatelin.

    baseline: half-width of the 95% interval of random cosines (faint band); threshold: class
    threshold t (dotted lines at ±t); random_regions: `utils.model_random_regions` output, whose
    gateout and linout bounds of each layer are drawn as dashed lines on that layer's panel.
    """
    layers = list(range(cosines["linout"].shape[0])) if layers is None else list(layers)
    ncols = min(ncols, len(layers))
    nrows = math.ceil(len(layers) / ncols)
    width, height = (FINE_PANEL_WIDTH_IN, FINE_PANEL_HEIGHT_IN) if nrows > 1 else (FINE_ROW_PANEL_WIDTH_IN,
                                                                                  FINE_ROW_PANEL_HEIGHT_IN)
    fig = Figure(figsize=(width * ncols + FINE_COLORBAR_IN, height * nrows + FINE_HEADER_IN), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    points = None
    for ax, layer in zip(axes.flat, layers):
        points = draw_scatter_panel(ax, cosines["gateout"][layer], cosines["linout"][layer], cosines["gatelin"][layer],
                                    f"layer {layer}", baseline=baseline, threshold=threshold,
                                    region_gateout=_region(random_regions, "gateout", layer),
                                    region_linout=_region(random_regions, "linout", layer))
    for ax in list(axes.flat)[len(layers):]:
        ax.set_visible(False)
    cbar = fig.colorbar(points, ax=axes, shrink=min(1.0, FINE_COLORBAR_ROWS / nrows))
    cbar.set_label(COSINE_LABELS["gatelin"])
    cbar.set_ticks(FINE_COLORBAR_TICKS)
    cbar.ax.yaxis.set_major_formatter("{x:g}")
    handles = reference_handles(threshold, baseline, random_regions is not None)
    if handles:
        fig.legend(handles=handles, loc="outside lower center", frameon=False)
    set_title(fig, f"{model}: weight cosines of each neuron, by layer", provenance)
    return save_figure(fig, stem)


def _count_color(rgba: tuple[float, float, float, float]) -> str:
    """White on dark segments, black on light ones (the colour as seen over a white page)."""
    red, green, blue, alpha = rgba
    luminance = sum(weight * (alpha * c + 1 - alpha) for weight, c in zip(LUMA_WEIGHTS, (red, green, blue)))
    return "white" if luminance < DARK_LUMINANCE else "black"


def _label_segments(fig: Figure, ax, containers: Sequence, counts: torch.Tensor) -> None:
    """Print each count inside its bar segment, then drop the counts that do not fit (after layout)."""
    labels = []
    for code, bars in enumerate(containers):
        color = _count_color(to_rgba(CLASS_COLORS[code]))
        for layer, bar in enumerate(bars):
            count = int(counts[layer, code])
            if count:
                x, y = bar.get_x() + bar.get_width() / 2, bar.get_y() + bar.get_height() / 2
                labels.append((ax.text(x, y, str(count), ha="center", va="center", color=color), bar))
    fig.draw_without_rendering()
    for text, bar in labels:
        inside, room = text.get_window_extent(), bar.get_window_extent()
        if inside.width + 2 * COUNT_PADDING_PX > room.width or inside.height > room.height:
            text.remove()


@_paper_style
def plot_coarse(counts: torch.Tensor, stem: Path, model: str, provenance: str | None = None) -> list[Path]:
    """Horizontal stacked bars: one bar per layer, the 11 classes in code order, counts where they fit."""
    n_layers = counts.shape[0]
    fig = Figure(figsize=(COARSE_WIDTH_IN, COARSE_ROW_IN * n_layers + COARSE_EXTRA_IN), layout="constrained")
    ax = fig.subplots()
    left = np.zeros(n_layers)
    containers = []
    for code, (name, color) in enumerate(zip(CLASS_NAMES, CLASS_COLORS)):
        widths = counts[:, code].double().numpy()
        containers.append(ax.barh(range(n_layers), widths, left=left, color=color, label=name, **SEGMENT_EDGE))
        left = left + widths
    ax.set_yticks(range(n_layers), [str(layer) for layer in range(n_layers)])
    ax.set_ylim(n_layers - 0.5, -0.5)  # layer 0 on top
    ax.set_xlim(0, float(left.max()))
    ax.set(ylabel="layer", xlabel="neurons")
    fig.legend(handles=containers, loc="outside lower center", ncols=COARSE_LEGEND_COLUMNS, frameon=False)
    set_title(fig, f"{model}: IO classes per layer", provenance)
    _label_segments(fig, ax, containers, counts)
    return save_figure(fig, stem)


def _box_panel(ax, values: torch.Tensor, label: str, signed: bool, baseline: float | None,
               threshold: float | None) -> None:
    """Per-layer boxes of one cosine ([layer neuron]) with the random band and the class thresholds."""
    n_layers, n_neurons = values.shape
    if baseline is not None:
        ax.axhspan(-baseline if signed else 0.0, baseline, **BAND_STYLE, zorder=0)
    for t in () if threshold is None else ((-threshold, threshold) if signed else (threshold,)):
        ax.axhline(t, **THRESHOLD_STYLE, zorder=0)
    if signed:
        ax.axhline(0, **ZERO_STYLE, zorder=0)
    layer_of_value = np.repeat(np.arange(n_layers), n_neurons)
    sns.boxplot(x=layer_of_value, y=values.flatten().numpy(), ax=ax, whis=MIN_MAX_WHISKERS, showfliers=False,
                width=BOX_WIDTH, color=BOX_COLOR, linecolor="black", linewidth=BOX_LINE_WIDTH,
                medianprops={"color": MEDIAN_COLOR, "linewidth": MEDIAN_LINE_WIDTH})
    ax.set(ylim=(-1, 1) if signed else (0, 1), ylabel=label, xlabel="layer")


@_paper_style
def plot_quartiles(cosines: dict[str, torch.Tensor], stem: Path, model: str, baseline: float | None = None,
                   threshold: float | None = None, provenance: str | None = None) -> list[Path]:
    """Three stacked panels of per-layer boxes: |gatelin|, |gateout|, linout.

    Box: quartiles; line: median; whiskers: min and max (the stored 0 and 1 quantiles, no fliers).
    baseline: half-width of the 95% interval of random cosines (band); threshold: class threshold t.
    """
    n_layers = cosines["linout"].shape[0]
    panels = [(f"|{COSINE_LABELS['gatelin']}|", cosines["gatelin"].abs(), False),
              (f"|{COSINE_LABELS['gateout']}|", cosines["gateout"].abs(), False),
              (COSINE_LABELS["linout"], cosines["linout"], True)]
    width = max(BOX_MIN_WIDTH_IN, BOX_SLOT_IN * n_layers + 1)
    fig = Figure(figsize=(width, BOX_PANEL_IN * len(panels) + BOX_EXTRA_IN), layout="constrained")
    for ax, (label, values, signed) in zip(fig.subplots(len(panels), 1), panels):
        _box_panel(ax, values, label, signed, baseline, threshold)
    handles = [Patch(facecolor=BOX_COLOR, edgecolor="black", lw=BOX_LINE_WIDTH, label="quartiles (box)"),
               Line2D([], [], color=MEDIAN_COLOR, lw=MEDIAN_LINE_WIDTH, label="median"),
               Line2D([], [], color="black", lw=BOX_LINE_WIDTH, label="whiskers: min and max"),
               *reference_handles(threshold, baseline)]
    fig.legend(handles=handles, loc="outside lower center", ncols=math.ceil(len(handles) / 2), frameon=False)
    set_title(fig, f"{model}: weight cosines per layer", provenance)
    return save_figure(fig, stem)


@_paper_style
def plot_medians(medians: dict[str, torch.Tensor], stem: Path, provenance: str | None = None) -> list[Path]:
    """Median linout per layer against relative depth, one line per model, a line at 0; legend below."""
    frame = pd.concat([pd.DataFrame({"model": model, "depth": np.arange(len(values)) / max(len(values) - 1, 1),
                                     "median": values.double().numpy()}) for model, values in medians.items()])
    fig = Figure(figsize=MEDIANS_SIZE_IN, layout="constrained")
    ax = fig.subplots()
    ax.axhline(0, **ZERO_STYLE)
    sns.lineplot(data=frame, x="depth", y="median", hue="model", style="model", markers=True, dashes=True,
                 estimator=None, sort=True, ax=ax, **MEDIANS_LINE)
    handles, labels = ax.get_legend_handles_labels()
    ax.get_legend().remove()
    ax.set(xlim=(0, 1), xlabel="relative depth: layer / (layers − 1)", ylabel=f"median {COSINE_LABELS['linout']}")
    fig.legend(handles, labels, loc="outside lower center", ncols=min(MEDIANS_LEGEND_COLUMNS, len(labels)),
               frameon=False)
    set_title(fig, f"Median {COSINE_LABELS['linout']} per layer", provenance)
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
DEFINITION_SIZE_IN = (5.2, 5.0)
DEFINITION_TICKS = (-1.0, -0.5, 0.0, 0.5, 1.0)
DEFINITION_COLORBAR_SHRINK = 0.75
PROTOTYPE_AREA, LEGEND_MARKER_SIZE = 140, 9


@_paper_style
def plot_definition(stem: Path, threshold: float = DEFAULT_THRESHOLD) -> list[Path]:
    """Figure 2: the prototype of each typical class on the (gateout, linout) plane, coloured by gatelin."""
    fig = Figure(figsize=DEFINITION_SIZE_IN, layout="constrained")
    ax = fig.subplots()
    for t in (-threshold, threshold):
        ax.axvline(t, **THRESHOLD_STYLE)
        ax.axhline(t, **THRESHOLD_STYLE)
    points = None
    for name, prototypes in PROTOTYPES.items():
        x, y, c = zip(*prototypes)
        points = ax.scatter(x, y, c=c, cmap="coolwarm", norm=Normalize(-1, 1), s=PROTOTYPE_AREA,
                            marker=_MARKERS[name], edgecolors="black", linewidths=0.8, label=name)
    ax.set(xlim=(-1, 1), ylim=(-1, 1), aspect=1, xticks=DEFINITION_TICKS, yticks=DEFINITION_TICKS,
           xlabel=COSINE_LABELS["gateout"], ylabel=COSINE_LABELS["linout"])
    handles = [Line2D([], [], ls="", marker=_MARKERS[name], markersize=LEGEND_MARKER_SIZE, markerfacecolor="0.85",
                      markeredgecolor="black", label=name) for name in PROTOTYPES]
    handles += reference_handles(threshold)
    fig.legend(handles=handles, loc="outside lower center", ncols=3, frameon=False)
    cbar = fig.colorbar(points, ax=ax, shrink=DEFINITION_COLORBAR_SHRINK, ticks=DEFINITION_TICKS)
    cbar.set_label(COSINE_LABELS["gatelin"])
    set_title(fig, "IO classes: prototypes of the typical classes")
    return save_figure(fig, stem)
