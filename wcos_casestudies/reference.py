"""The authors' published numbers (paper, Figures 3 and 4; the authors' later code) and side-by-side comparisons with ours."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from gated_core.models.registry import canonical_hub_id
from wcos_casestudies.constants import CLASS_NAMES

REFERENCE_DIR = Path(__file__).resolve().parent / "reference"
@cache
def _load(name: str) -> dict[str, Any]:
    return json.loads((REFERENCE_DIR / name).read_text())


def published_counts(hub_id: str) -> torch.Tensor | None:
    """Published per-layer class counts [layer 11] of a paper model, or None."""
    entry = _load("published_io_class_counts.json")["models"].get(hub_id)
    return None if entry is None else torch.tensor(entry["per_layer_counts"], dtype=torch.int64)


def published_medians(hub_id: str) -> torch.Tensor | None:
    """Published per-layer median linout (read off a plot, ±0.005) of a paper model, or None."""
    for key, value in _load("published_median_linout.json")["models"].items():  # keyed by paper names
        if canonical_hub_id(key) == hub_id:
            return torch.tensor(value, dtype=torch.float64)
    return None


def compare_counts(ours: torch.Tensor, published: torch.Tensor) -> pd.DataFrame:
    """Long table: layer, class, ours, published, difference (ours - published)."""
    if ours.shape != published.shape:
        raise ValueError(f"shape mismatch: ours {tuple(ours.shape)} vs published {tuple(published.shape)}")
    rows = []
    for layer in range(ours.shape[0]):
        for code, name in enumerate(CLASS_NAMES):
            ours_n, pub_n = int(ours[layer, code]), int(published[layer, code])
            rows.append({"layer": layer, "class": name, "ours": ours_n, "published": pub_n, "difference": ours_n - pub_n})
    return pd.DataFrame(rows)


def compare_medians(ours: torch.Tensor, published: torch.Tensor) -> pd.DataFrame:
    """Per layer: our median linout, the published one and the difference."""
    return pd.DataFrame({
        "layer": range(len(ours)),
        "ours": ours.tolist(),
        "published": published.tolist(),
        "difference": (ours - published).tolist(),
    })


def summarize_count_comparison(table: pd.DataFrame) -> str:
    """A few lines for the terminal: neurons classified differently, per class."""
    per_class = table.groupby("class", sort=False)[["ours", "published", "difference"]].sum()
    moved = int(table["difference"].abs().sum()) // 2
    total = int(table["published"].sum())
    lines = [f"  {moved} of {total} neurons in a different class than published ({100 * moved / max(total, 1):.2f}%)"]
    for name, row in per_class.iterrows():
        lines.append(f"  {name:32s} ours {int(row['ours']):8d}  published {int(row['published']):8d}  diff {int(row['difference']):+d}")
    return "\n".join(lines)
