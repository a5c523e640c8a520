"""How the IO classes (and the functional roles) of one architecture change between two models of the same shapes:
two checkpoints of one training run (OLMo publishes hundreds), or a base and an instruct model (the authors' follow-up,
`first_to_last_checkpoint.py`, compares the first and the last checkpoint of OLMo).

Neuron (layer, n) of one model is compared with neuron (layer, n) of the other: fine-tuning and further training keep
each neuron in its place. Outputs (`write_comparison`, in `<results>/<model>/compare/<other>/`, from the model's point
of view: "before" is the model, "after" the other):
- `transitions.csv/.md`: counts over all layers, a row per class before, a column per class after, and the row shares;
- `transitions_by_layer.csv`: the same per layer (layer, before, after, count, share of the row);
- `changed.csv`: every neuron whose class changed, with both classes and the three cosines before and after;
- `transitions.pdf/.png`: the overall matrix as a heatmap (row shares, counts written in the cells);
- `roles.csv/.md` where casestudies.py ran for both: per role, its neurons before and after, kept, gained, lost.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from gated_core.artifacts import atomic_write_text, write_table
from gated_core.errors import UserError
from gated_core.models.arch import ArchInfo
from gated_core.results_layout import COMPARE_FOLDER
from wcos_casestudies.constants import CLASS_NAMES, COSINE_NAMES
from wcos_casestudies.plotting import save_figure, set_title

SHAPE_FIELDS = ("n_layers", "d_mlp", "d_model")  # what two models compared neuron by neuron must share


def check_same_shapes(name: str, arch: ArchInfo, other_name: str, other: ArchInfo) -> None:
    """Refuse two models whose neurons do not correspond one to one (another number of layers, neurons or width)."""
    differ = [f"{field} {getattr(arch, field)} against {getattr(other, field)}" for field in SHAPE_FIELDS
              if getattr(arch, field) != getattr(other, field)]
    if differ:
        raise UserError(f"{name} and {other_name} are of other shapes ({'; '.join(differ)}): only models of one "
                        "architecture compare neuron by neuron")
    if arch.gated != other.gated:
        raise UserError(f"{name} and {other_name}: one is gated and the other not; their classes do not compare")


def transition_counts(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """[layer class_before class_after] int64 counts of the class codes [layer neuron] of the two models."""
    n = len(CLASS_NAMES)
    pairs = before.long() * n + after.long()
    return torch.stack([torch.bincount(row, minlength=n * n).reshape(n, n) for row in pairs])


def matrix_frame(counts: torch.Tensor) -> pd.DataFrame:
    """Counts [class_before class_after] as a table: a row per class before (with its total) and a column per class
    after, then the same as shares of the row (`share <class>`)."""
    values = counts.numpy()
    totals = values.sum(1, keepdims=True)
    shares = np.divide(values, totals, out=np.zeros(values.shape, dtype=float), where=totals > 0)
    frame = pd.DataFrame(values, columns=list(CLASS_NAMES))
    frame.insert(0, "neurons", totals[:, 0])
    frame.insert(0, "before", list(CLASS_NAMES))
    for column, name in enumerate(CLASS_NAMES):
        frame[f"share {name}"] = shares[:, column].round(4)
    return frame


def layer_frame(counts: torch.Tensor) -> pd.DataFrame:
    """Counts [layer class_before class_after] as one row per (layer, before, after) that holds neurons."""
    rows = []
    for layer, matrix in enumerate(counts.tolist()):
        for b, row in enumerate(matrix):
            total = sum(row)
            rows.extend({"layer": layer, "before": CLASS_NAMES[b], "after": CLASS_NAMES[a], "count": count,
                         "share": round(count / total, 4)} for a, count in enumerate(row) if count)
    return pd.DataFrame(rows, columns=["layer", "before", "after", "count", "share"])


def changed_frame(before: torch.Tensor, after: torch.Tensor, cosines_before: dict[str, torch.Tensor],
                  cosines_after: dict[str, torch.Tensor]) -> pd.DataFrame:
    """Every neuron whose class changed: layer, neuron, both classes, the three cosines before and after."""
    layers, neurons = torch.nonzero(before != after, as_tuple=True)
    frame = pd.DataFrame({"layer": layers.numpy(), "neuron": neurons.numpy(),
                          "before": [CLASS_NAMES[c] for c in before[layers, neurons].tolist()],
                          "after": [CLASS_NAMES[c] for c in after[layers, neurons].tolist()]})
    for name in COSINE_NAMES:
        if cosines_before.get(name) is not None and cosines_after.get(name) is not None:
            frame[f"{name} before"] = cosines_before[name][layers, neurons].float().numpy().round(4)
            frame[f"{name} after"] = cosines_after[name][layers, neurons].float().numpy().round(4)
    return frame


def roles_frame(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> pd.DataFrame:
    """Per role of both models: its neurons before and after, those in both, those gained and those lost."""
    rows = []
    for role in [name for name in before if name in after]:
        b, a = before[role].bool(), after[role].bool()
        rows.append({"role": role, "before": int(b.sum()), "after": int(a.sum()), "kept": int((b & a).sum()),
                     "gained": int((a & ~b).sum()), "lost": int((b & ~a).sum())})
    return pd.DataFrame(rows, columns=["role", "before", "after", "kept", "gained", "lost"])


@dataclass(frozen=True)
class ModelClasses:
    """What a comparison needs of one model: its name and caption, class codes [layer neuron], the three cosines
    [layer neuron], its roles (role -> [layer neuron] bool; None where casestudies.py has not run)."""

    name: str
    caption: str
    categories: torch.Tensor
    cosines: dict[str, torch.Tensor]
    roles: dict[str, torch.Tensor] | None


def comparison_folder(results_folder: Path, other_name: str) -> Path:
    """Where the comparison of a model with `other_name` goes in the model's results folder."""
    return Path(results_folder) / COMPARE_FOLDER / re.sub(r"[^A-Za-z0-9._-]+", "_", other_name).strip("_.")


def plot_transitions(counts: torch.Tensor, stem: Path, title: str, caption: str) -> list[Path]:
    """The overall matrix: colour = share of the row, each cell its count (empty rows and columns left out)."""
    kept_rows = [i for i in range(len(CLASS_NAMES)) if counts[i].sum() > 0]
    kept_cols = [j for j in range(len(CLASS_NAMES)) if counts[:, j].sum() > 0]
    values = counts[kept_rows][:, kept_cols].numpy()
    shares = values / np.maximum(values.sum(1, keepdims=True), 1)
    fig = Figure(figsize=(1.2 + 0.62 * len(kept_cols), 1.6 + 0.45 * len(kept_rows)), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for i in range(len(kept_rows)):
        for j in range(len(kept_cols)):
            if values[i, j]:
                ax.text(j, i, f"{values[i, j]:,}", ha="center", va="center", fontsize=6,
                        color="white" if shares[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(kept_cols)), [CLASS_NAMES[j] for j in kept_cols], rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(kept_rows)), [CLASS_NAMES[i] for i in kept_rows], fontsize=7)
    ax.set_xlabel("class after")
    ax.set_ylabel("class before")
    fig.colorbar(image, ax=ax, label="share of the row", shrink=0.8)
    set_title(fig, title, caption)
    return save_figure(fig, stem)


def write_comparison(model: ModelClasses, other: ModelClasses, folder: Path) -> dict[str, pd.DataFrame]:
    """Every output of the comparison of `model` (before) with `other` (after) into `folder`; returns the tables."""
    counts = transition_counts(model.categories, other.categories)
    folder.mkdir(parents=True, exist_ok=True)
    title = f"IO classes of {model.name} (rows) and {other.name} (columns)"
    tables = {"transitions": matrix_frame(counts.sum(0)), "transitions_by_layer": layer_frame(counts),
              "changed": changed_frame(model.categories, other.categories, model.cosines, other.cosines)}
    write_table(tables["transitions"], folder / "transitions", title=title)
    for name in ("transitions_by_layer", "changed"):
        atomic_write_text(folder / f"{name}.csv", tables[name].to_csv(index=False))
    plot_transitions(counts.sum(0), folder / "transitions", title, f"before: {model.caption}; after: {other.caption}")
    if model.roles is not None and other.roles is not None:
        tables["roles"] = roles_frame(model.roles, other.roles)
        write_table(tables["roles"], folder / "roles", title=f"Functional roles of {model.name} and {other.name}")
    return tables
