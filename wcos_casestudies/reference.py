"""The authors' published numbers (SPEC 9) and side-by-side comparisons with ours."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from .models import PAPER_MODELS
from .utils import CLASS_NAMES

REFERENCE_DIR = Path(__file__).resolve().parent / "reference"
# keys of published_median_linout.json -> Hugging Face ids
_MEDIAN_KEYS = {
    "OLMo-7B-0424": "allenai/OLMo-7B-0424-hf",
    "OLMo-1B": "allenai/OLMo-1B-hf",
    "gemma-2-2b": "google/gemma-2-2b",
    "gemma-2-9b": "google/gemma-2-9b",
    "Llama-2-7b": "meta-llama/Llama-2-7b-hf",
    "Llama-3.1-8B": "meta-llama/Llama-3.1-8B",
    "Llama-3.2-1B": "meta-llama/Llama-3.2-1B",
    "Llama-3.2-3B": "meta-llama/Llama-3.2-3B",
    "Mistral-7B": "mistralai/Mistral-7B-v0.1",
    "Qwen2.5-0.5B": "Qwen/Qwen2.5-0.5B",
    "Qwen2.5-7B": "Qwen/Qwen2.5-7B",
    "Yi-6B": "01-ai/Yi-6B",
}


@lru_cache(maxsize=None)
def _load(name: str) -> dict[str, Any]:
    return json.loads((REFERENCE_DIR / name).read_text())


def published_counts(hub_id: str) -> torch.Tensor | None:
    """Published per-layer class counts [layer 11] of a paper model, or None."""
    entry = _load("published_io_class_counts.json")["models"].get(hub_id)
    return None if entry is None else torch.tensor(entry["per_layer_counts"], dtype=torch.int64)


def published_medians(hub_id: str) -> torch.Tensor | None:
    """Published per-layer median linout (read off a plot, ±0.005) of a paper model, or None."""
    for key, value in _load("published_median_linout.json")["models"].items():
        if _MEDIAN_KEYS.get(key) == hub_id:
            return torch.tensor(value, dtype=torch.float64)
    return None


def is_paper_model(hub_id: str) -> bool:
    """Whether the authors published numbers for this model."""
    return hub_id in PAPER_MODELS.values()


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
