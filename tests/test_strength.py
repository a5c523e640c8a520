"""Frequency against strength (`neuroscope/classes/strength.py`, written by e_frequency.py): the per-class medians and
Spearman correlations against a slow obvious computation (ranks by counting, ties averaged; Pearson by its formula),
and e_frequency.py's table against the statistics it read."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from helpers import succeeds

from neuroscope import e_frequency
from neuroscope.activation_pass.store import load_statistics
from neuroscope.classes.strength import strength_table
from wcos_casestudies.constants import CLASS_NAMES


def slow_ranks(values: list[float]) -> list[float]:
    """Rank of each value: 1 + how many are smaller + (how many others are equal) / 2."""
    return [1 + sum(w < v for w in values) + (sum(w == v for w in values) - 1) / 2 for v in values]


def slow_spearman(x: list[float], y: list[float]) -> float:
    rx, ry = slow_ranks(x), slow_ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sx, sy = math.sqrt(sum((a - mx) ** 2 for a in rx)), math.sqrt(sum((b - my) ** 2 for b in ry))
    return cov / (sx * sy) if sx and sy else float("nan")


def slow_median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def test_the_table_against_a_slow_computation():
    generator = torch.Generator().manual_seed(0)
    shape = (3, 40)
    gate_open = (torch.rand(shape, generator=generator) * 20).round() / 20  # ties on purpose
    mean = torch.randn(shape, generator=generator).round(decimals=1)
    mean[0, :3] = float("nan")  # neurons whose every token was non-finite: left out of the medians and correlations
    peak = torch.rand(shape, generator=generator) * 5
    categories = torch.randint(0, len(CLASS_NAMES), shape, generator=generator)
    table = strength_table(gate_open, mean, peak, categories).set_index("class")
    groups = {name: [(layer, n) for layer in range(shape[0]) for n in range(shape[1]) if int(categories[layer, n]) == code]
              for code, name in enumerate(CLASS_NAMES)}
    groups = {name: cells for name, cells in groups.items() if cells}
    groups["all neurons"] = [(layer, n) for layer in range(shape[0]) for n in range(shape[1])]
    assert list(table.index) == list(groups)
    for name, cells in groups.items():
        f, m, p = ([float(t[c]) for c in cells] for t in (gate_open, mean, peak))
        row = table.loc[name]
        assert row["neurons"] == len(cells)
        assert row["median gate_open"] == pytest.approx(slow_median(f))
        finite = [i for i, v in enumerate(m) if not math.isnan(v)]
        assert row["median abs(mean)"] == pytest.approx(slow_median([abs(m[i]) for i in finite]))
        assert row["median max abs(a)"] == pytest.approx(slow_median(p))
        if len(finite) >= 3:
            assert row["spearman gate_open mean"] == pytest.approx(slow_spearman([f[i] for i in finite], [m[i] for i in finite]),
                                                                   nan_ok=True)
        if len(cells) >= 3:
            assert row["spearman gate_open max abs(a)"] == pytest.approx(slow_spearman(f, p), nan_ok=True)


def test_e_frequency_writes_the_table_and_the_plot(ablation_world, tmp_path):
    results_dir = tmp_path / "freq"
    (results_dir / "local" / "llama").mkdir(parents=True)
    (results_dir / "local" / "llama" / "data.pt").write_bytes(ablation_world["results"].path.read_bytes())
    succeeds(e_frequency.main, ["--model", ablation_world["folder"], "--datadir", ablation_world["datadir"], "--activations",
                                "acts", "--results_dir", results_dir, "--random_seeds", "2"])
    folder = results_dir / "local" / "llama" / "frequency"
    assert all((folder / name).is_file() for name in ("strength.csv", "strength.md", "strength.png", "strength.pdf"))
    written = pd.read_csv(folder / "strength.csv")
    from gated_core.models.sources import resolve_model

    stats = load_statistics(resolve_model(str(ablation_world["folder"])), ablation_world["datadir"], "acts")
    categories = ablation_world["results"].categories()
    all_row = written.set_index("class").loc["all neurons"]
    peak = torch.maximum(stats.top_values[..., 0], -stats.bottom_values[..., 0]).flatten().double()
    assert all_row["neurons"] == categories.numel()
    assert all_row["median max abs(a)"] == pytest.approx(slow_median(peak.tolist()), rel=1e-4)
    assert all_row["median gate_open"] == pytest.approx(slow_median(stats.gate_open.flatten().double().tolist()), rel=1e-4)
