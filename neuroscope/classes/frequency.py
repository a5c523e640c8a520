"""Activation frequency by IO class against a same-layer random baseline (the "Weakening Neurons"
follow-up of Gerstner & Schütze: depletion neurons fire far more often than random neurons of their
layers).

From the statistics of b_activations.py (gate-open frequency, i.e. how often g > 0 over real tokens,
and the four sign combinations of (g, u), all [layer neuron]) and the IO classes of main.py: per
class, the mean over its neurons, and the same mean over same-layer random sets with the class's
per-layer counts, one per seed (mean, standard deviation, min and max over seeds).

Because act(g) has the sign of g for SiLU and GELU, the sign of a = act(g) * u is that of g * u:
the (g, u) combinations are the (g, a) combinations of the conditional ablations, relabelled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from neuroscope.activation_pass.activations import SIGN_COMBINATIONS
from neuroscope.classes.neuron_sets import class_set, random_baselines
from wcos_casestudies.constants import CLASS_NAMES
from wcos_casestudies.plotting import save_figure
from wcos_casestudies.utils import CLASS_COLORS

# (g, u) combination -> the (g, a) combination it is (a = act(g) * u, act(g) has the sign of g)
POST_SIGN_OF = {"gate+ lin+": "gate+ post+", "gate+ lin-": "gate+ post-", "gate- lin+": "gate- post-",
                "gate- lin-": "gate- post+"}
RANDOM_COLOR = (0.6, 0.6, 0.6, 1.0)
EDGE_COLOR = "0.25"
SIGN_COLORS = ((0.84, 0.19, 0.15, 1), (0.99, 0.68, 0.38, 1), (0.67, 0.85, 0.91, 1), (0.27, 0.46, 0.71, 1))


def sign_labels() -> list[str]:
    """Column labels of the four combinations, e.g. 'gate- lin- (gate- post+)'."""
    return [f"{combo} ({POST_SIGN_OF[combo]})" for combo in SIGN_COMBINATIONS]


def _spread(values: torch.Tensor) -> dict[str, float]:
    """Mean, standard deviation (0 for one seed), min and max of per-seed values [seed]."""
    std = float(values.std()) if values.numel() > 1 else 0.0
    return {"mean": float(values.mean()), "std": std, "min": float(values.min()), "max": float(values.max())}


@dataclass
class FrequencyTables:
    """The results of `class_frequencies`."""

    gate_open: pd.DataFrame  # one row per class with neurons, then `all neurons`
    signs: pd.DataFrame  # the four sign combinations, class and random columns
    per_seed: dict[str, torch.Tensor]  # class -> mean gate-open frequency of each seed's random set [seed]


def _mean_over(values: torch.Tensor, neurons: torch.Tensor) -> torch.Tensor:
    """Mean of [layer neuron (...)] values over (layer, neuron) pairs [k 2], in float64."""
    return values[neurons[:, 0], neurons[:, 1]].double().mean(0)


def class_frequencies(gate_open: torch.Tensor, sign_frequencies: torch.Tensor, categories: torch.Tensor,
                      seeds: Sequence[int]) -> FrequencyTables:
    """Per class with neurons: gate-open frequency against same-layer random sets, and the four sign combinations.

    gate_open [layer neuron], sign_frequencies [layer neuron 4], categories [layer neuron] class codes.
    """
    gate_rows, sign_rows, per_seed = [], [], {}
    labels = sign_labels()
    for code in range(len(CLASS_NAMES)):
        members = class_set(categories, code)
        if len(members) == 0:
            continue
        randoms = random_baselines(members, categories.shape[1], seeds)
        random_gate = torch.stack([_mean_over(gate_open, r.neurons) for r in randoms])
        random_signs = torch.stack([_mean_over(sign_frequencies, r.neurons) for r in randoms]).mean(0)
        per_seed[members.name] = random_gate
        spread = _spread(random_gate)
        class_gate = float(_mean_over(gate_open, members.neurons))
        gate_rows.append({"class": members.name, "neurons": len(members), "gate_open": class_gate,
                          **{f"random_{key}": value for key, value in spread.items()},
                          "ratio": class_gate / spread["mean"] if spread["mean"] > 0 else float("nan")})
        sign_rows.append({"class": members.name, "neurons": len(members),
                          **{label: float(v) for label, v in zip(labels, _mean_over(sign_frequencies, members.neurons))},
                          **{f"random {label}": float(v) for label, v in zip(labels, random_signs)}})
    everything = {"class": "all neurons", "neurons": gate_open.numel()}
    gate_rows.append({**everything, "gate_open": float(gate_open.double().mean())})
    sign_rows.append({**everything, **{label: float(v) for label, v in zip(labels, sign_frequencies.double().mean((0, 1)))}})
    return FrequencyTables(pd.DataFrame(gate_rows), pd.DataFrame(sign_rows), per_seed)


def plot_frequencies(tables: FrequencyTables, stem: Path, title: str) -> list[Path]:
    """Two panels: gate-open frequency per class (class bar, random bar with ±1 std and each seed as a dot),
    and the four sign combinations per class as stacked bars (class | random)."""
    classes = [c for c in tables.gate_open["class"] if c != "all neurons"]
    rows = tables.gate_open.set_index("class")
    fig = Figure(figsize=(max(6.0, 1.1 * len(classes) + 2), 7.5), layout="constrained")
    top, bottom = fig.subplots(2, 1)
    width = 0.38
    for i, name in enumerate(classes):
        color = CLASS_COLORS[CLASS_NAMES.index(name)]
        row = rows.loc[name]
        top.bar(i - width / 2, row["gate_open"], width, color=color, edgecolor=EDGE_COLOR, linewidth=0.6)
        top.bar(i + width / 2, row["random_mean"], width, yerr=row["random_std"], color=RANDOM_COLOR,
                edgecolor=EDGE_COLOR, linewidth=0.6, capsize=2)
        seeds = tables.per_seed[name].numpy()
        top.scatter([i + width / 2] * len(seeds), seeds, s=4, color="black", zorder=3)
        top.text(i - width / 2, row["gate_open"] + 0.01, f"{row['gate_open']:.2f}", ha="center", va="bottom", fontsize=6)
    everything = top.axhline(float(rows.loc["all neurons", "gate_open"]), color="0.4", linestyle=":", linewidth=0.8)
    handles = [Patch(facecolor="white", edgecolor=EDGE_COLOR), Patch(facecolor=RANDOM_COLOR, edgecolor=EDGE_COLOR),
               everything]
    labels = ["class (left bar, its colour)", "same-layer random (mean ± std;\ndots: one per seed)", "all neurons"]
    _class_axis(top, classes, rows["neurons"])
    top.set_ylabel("gate-open frequency P(g > 0)")
    top.set_ylim(0, 1)
    top.legend(handles, labels, fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    top.set_title(title, fontsize=9)
    _plot_sign_panel(bottom, tables.signs.set_index("class"), classes, width)
    return save_figure(fig, stem)


def _class_axis(ax, classes: Sequence[str], counts: pd.Series) -> None:
    ax.set_xticks(range(len(classes)))
    ax.set_xticklabels([f"{name}\n(n={int(counts[name])})" for name in classes], fontsize=6, rotation=30, ha="right")


def _plot_sign_panel(ax, rows: pd.DataFrame, classes: Sequence[str], width: float) -> None:
    """Stacked bars of the four (g, u) combinations: class at the left, its random baseline at the right."""
    labels = sign_labels()
    for i, name in enumerate(classes):
        for offset, prefix in ((-width / 2, ""), (width / 2, "random ")):
            bottom = 0.0
            for label, color in zip(labels, SIGN_COLORS):
                value = float(rows.loc[name, prefix + label])
                ax.bar(i + offset, value, width, bottom=bottom, color=color, edgecolor="white", linewidth=0.4,
                       hatch="//" if prefix else None, label=label if i == 0 and not prefix else None)
                bottom += value
    handles, names = ax.get_legend_handles_labels()
    handles.append(Patch(facecolor="white", edgecolor=EDGE_COLOR, hatch="//"))
    names.append("right bar: same-layer random")
    _class_axis(ax, classes, rows["neurons"])
    ax.set_ylabel("fraction of tokens")
    ax.set_ylim(0, 1)
    ax.legend(handles, names, fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
