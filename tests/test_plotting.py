"""Layer-specific random regions (cosines between different neurons of a layer) and the plots that show them."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.text import Text

from gated_core.cli import run_main
from gated_core.models.readers import LayerMLP, open_weights
from gated_core.models.sources import resolve_model
from wcos_casestudies import main as main_script
from wcos_casestudies import plotting
from wcos_casestudies.constants import CLASS_NAMES
from wcos_casestudies.utils import (
    RANDOM_REGION_COLUMNS,
    RANDOM_REGION_QUANTILES,
    category_stats,
    mismatched_cosine_quantiles,
    mismatched_sample,
    model_random_regions,
    random_cosine_interval,
    random_regions_table,
)

PROVENANCE = "GGUF Q4_K_M dequantised · TransformerLens processing · t = 0.5, corrected rule"
PAIRS = {"gatelin": ("gate", "lin"), "gateout": ("gate", "out"), "linout": ("lin", "out")}


def _layer(n_neurons: int, d_model: int, seed: int, gated: bool = True) -> LayerMLP:
    g = torch.Generator().manual_seed(seed)
    gate, lin, out = (torch.randn(n_neurons, d_model, generator=g) for _ in range(3))
    return LayerMLP(gate=gate if gated else None, lin=lin, out=out)


def _slow_quantiles(layer: LayerMLP, rows, columns) -> dict[str, list[float]]:
    """The obvious loop: every (i in rows, j in columns) with i != j, one cosine at a time."""
    result = {}
    for name, (first, second) in PAIRS.items():
        a, b = getattr(layer, first).double().tolist(), getattr(layer, second).double().tolist()
        values = []
        for i in rows:
            for j in columns:
                if i != j:
                    dot = sum(x * y for x, y in zip(a[i], b[j]))
                    values.append(dot / math.sqrt(sum(x * x for x in a[i]) * sum(y * y for y in b[j])))
        result[name] = np.quantile(values, RANDOM_REGION_QUANTILES).tolist()
    return result


def test_all_pairs_of_a_small_layer_equal_the_slow_loop():
    layer = _layer(n_neurons=6, d_model=5, seed=1)
    fast = mismatched_cosine_quantiles(layer, torch.Generator().manual_seed(0), n_pairs=36)
    slow = _slow_quantiles(layer, range(6), range(6))
    for name in PAIRS:
        assert fast[name] == pytest.approx(slow[name], abs=1e-12), name


def test_sampled_pairs_equal_the_slow_loop_on_the_same_sample():
    layer = _layer(n_neurons=40, d_model=7, seed=2)
    fast = mismatched_cosine_quantiles(layer, torch.Generator().manual_seed(5), n_pairs=150)
    rows, columns = mismatched_sample(40, 150, torch.Generator().manual_seed(5))
    assert len(rows) == len(columns) == math.ceil(math.sqrt(150)) < 40
    slow = _slow_quantiles(layer, rows.tolist(), columns.tolist())
    for name in PAIRS:
        assert fast[name] == pytest.approx(slow[name], abs=1e-12), name


@pytest.mark.parametrize("n_neurons, n_pairs", [(4, 100), (300, 2000)])
def test_a_neuron_is_never_paired_with_itself(n_neurons, n_pairs):
    """gate = lin = out = identity: the same neuron gives cosine 1, two different ones 0."""
    eye = torch.eye(n_neurons)
    regions = mismatched_cosine_quantiles(LayerMLP(gate=eye, lin=eye, out=eye), torch.Generator().manual_seed(0),
                                          n_pairs=n_pairs, levels=(0.0, 1.0))
    assert all(bounds == (0.0, 0.0) for bounds in regions.values())
    rows, columns = mismatched_sample(n_neurons, n_pairs, torch.Generator().manual_seed(0))
    assert len(set(rows.tolist())) == len(rows) and len(set(columns.tolist())) == len(columns)


def test_regions_are_deterministic_per_seed_and_shaped_per_layer():
    layers = [_layer(200, 16, seed) for seed in range(3)]
    first = model_random_regions(layers, len(layers), seed=7, n_pairs=500)
    again = model_random_regions(layers, len(layers), seed=7, n_pairs=500)
    other = model_random_regions(layers, len(layers), seed=8, n_pairs=500)
    assert set(first) == set(PAIRS)
    for name in PAIRS:
        assert first[name].shape == (2, 3) and (first[name][0] < first[name][1]).all()
        assert torch.equal(first[name], again[name])
        assert not torch.equal(first[name], other[name])
    without_gate = model_random_regions([_layer(50, 8, 0, gated=False)], 1)
    assert set(without_gate) == {"linout"}


def test_random_weights_give_the_beta_interval():
    """Independent Gaussian neurons: the layer's region is the chance interval of random directions."""
    d_model = 256
    regions = model_random_regions([_layer(2000, d_model, seed=3)], 1, n_pairs=40_000)
    half_width = random_cosine_interval(d_model)
    for name in PAIRS:
        low, high = regions[name][:, 0].tolist()
        assert low == pytest.approx(-half_width, abs=0.01) and high == pytest.approx(half_width, abs=0.01), name


def test_random_regions_table():
    regions = {"linout": torch.tensor([[-0.1, -0.2], [0.1, 0.2]], dtype=torch.float64)}
    table = random_regions_table(regions)
    assert list(table.columns) == ["cosine", "layer", *RANDOM_REGION_COLUMNS]
    assert RANDOM_REGION_COLUMNS == ("q0.025_random", "q0.975_random")
    assert table.values.tolist() == [["linout", 0, -0.1, 0.1], ["linout", 1, -0.2, 0.2]]


# --------------------------------------------------------------------------- plots


@pytest.fixture
def figures(monkeypatch):
    """Every figure the plot functions save, kept for inspection."""
    saved = []
    original = plotting.save_figure

    def keep(fig, stem, *args, **kwargs):
        saved.append(fig)
        return original(fig, stem, *args, **kwargs)

    monkeypatch.setattr(plotting, "save_figure", keep)
    return saved


def _cosines(n_layers: int = 3, n_neurons: int = 60) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {name: torch.rand(n_layers, n_neurons, generator=g, dtype=torch.float64) * 2 - 1 for name in PAIRS}


def _check_figure(fig, paths, provenance=PROVENANCE):
    assert [p.suffix for p in paths] == [".pdf", ".png"] and all(p.stat().st_size > 0 for p in paths)
    if provenance:
        assert provenance.split(" · ")[0] in fig.get_suptitle().replace("\n", " ")
    small = [(t.get_text(), t.get_fontsize()) for t in fig.findobj(Text)
             if t.get_visible() and t.get_text().strip() and t.get_fontsize() < plotting.FONT_SIZE]
    assert not small, small


def test_fine_plot_labels_every_panel_and_draws_the_layer_regions(tmp_path, figures):
    cosines = _cosines()
    regions = {name: torch.tensor([[-0.11, -0.12, -0.13], [0.21, 0.22, 0.23]], dtype=torch.float64) for name in PAIRS}
    paths = plotting.plot_fine(cosines, tmp_path / "fine", "test/model", ncols=2, baseline=0.08, threshold=0.5,
                               random_regions=regions, provenance=PROVENANCE)
    fig = figures[-1]
    _check_figure(fig, paths)
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.get_title().startswith("layer")]
    assert len(panels) == 3
    for layer, ax in enumerate(panels):
        assert ax.get_xlabel() == "cos(w_gate, w_out)" and ax.get_ylabel() == "cos(w_in, w_out)"
        dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
        vertical = sorted(line.get_xdata()[0] for line in dashed if line.get_xdata()[0] == line.get_xdata()[1])
        assert vertical == pytest.approx([-0.11 - 0.01 * layer, 0.21 + 0.01 * layer])
    legend = " ".join(t.get_text() for t in fig.legends[0].get_texts())
    assert "t = 0.5" in legend and "±0.080" in legend and "different neurons" in legend
    # Figure 5 layout: one row, no regions, no provenance
    paths = plotting.plot_fine(cosines, tmp_path / "selected", "test/model", layers=[0, 2], ncols=2)
    _check_figure(figures[-1], paths, provenance=None)


def test_box_plot_whiskers_at_min_and_max_with_band_and_note(tmp_path, figures):
    cosines = _cosines()
    paths = plotting.plot_quartiles(cosines, tmp_path / "boxplot", "test/model", baseline=0.08, threshold=0.5,
                                    provenance=PROVENANCE)
    fig = figures[-1]
    _check_figure(fig, paths)
    linout_ax = fig.axes[2]
    boxes = linout_ax.containers[0]
    for layer in range(3):
        low, median, high = torch.quantile(cosines["linout"][layer], torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64))
        assert boxes.medians[layer].get_ydata()[0] == pytest.approx(float(median))
        assert min(boxes.whiskers[2 * layer].get_ydata()) == pytest.approx(float(low))
        assert max(boxes.whiskers[2 * layer + 1].get_ydata()) == pytest.approx(float(high))
    assert all(ax.get_xlabel() == "layer" for ax in fig.axes)
    legend = " ".join(t.get_text() for t in fig.legends[0].get_texts())
    assert "whiskers: min and max" in legend and "random directions" in legend and "t = 0.5" in legend


def test_coarse_plot_counts_are_readable_and_fit_their_bars(tmp_path, figures):
    codes = torch.tensor([[6] * 90 + [2] * 9 + [0] * 1, [7] * 50 + [6] * 50])
    counts = category_stats(codes)
    paths = plotting.plot_coarse(counts, tmp_path / "coarse", "test/model", provenance=PROVENANCE)
    fig = figures[-1]
    _check_figure(fig, paths)
    ax = fig.axes[0]
    assert [c.get_label() for c in ax.containers] == list(CLASS_NAMES)
    assert sorted(int(t.get_text()) for t in ax.texts) == [9, 50, 50, 90]  # the 1-neuron segment is too thin
    fig.draw_without_rendering()
    bars = [bar.get_window_extent() for container in ax.containers for bar in container]
    for text in ax.texts:
        box = text.get_window_extent()
        assert any(bar.x0 <= box.x0 and box.x1 <= bar.x1 and bar.y0 <= box.y0 and box.y1 <= bar.y1 for bar in bars)


def test_medians_legend_is_compact(tmp_path, figures):
    medians = {f"org/model-{k}": torch.linspace(0.3, -0.2, 10 + k, dtype=torch.float64) for k in range(12)}
    paths = plotting.plot_medians(medians, tmp_path / "medians", provenance=PROVENANCE)
    fig = figures[-1]
    _check_figure(fig, paths)
    fig.draw_without_rendering()
    legend_height = fig.legends[0].get_window_extent().height
    assert legend_height < 0.3 * fig.bbox.height
    assert len(fig.legends[0].get_texts()) == 12


def test_definition_plot_labels_its_thresholds(tmp_path, figures):
    paths = plotting.plot_definition(tmp_path / "defplot", threshold=0.4)
    _check_figure(figures[-1], paths, provenance=None)
    assert any("t = 0.4" in t.get_text() for t in figures[-1].legends[0].get_texts())


def test_provenance_line():
    line = plotting.provenance_line("GGUF file x.gguf", True, 0.5, "legacy_copysign", refactored=True)
    assert line == "GGUF file x.gguf · TransformerLens processing · t = 0.5, legacy copysign rule · GLU signs refactored"
    assert plotting.provenance_line(None, False, 0.3, "corrected") == "raw weights (no processing) · t = 0.3, corrected rule"


def test_main_writes_the_random_regions_table(tiny_models, tmp_path, capsys):
    results = tmp_path / "results"
    argv = ["--quartiles", "--plot_fine", "--model", str(tiny_models["llama"]), "--results_dir", str(results),
            "--device", "cpu"]
    assert run_main(main_script.main, argv) == 0, capsys.readouterr().err
    folder = results / "local" / "llama"
    table = pd.read_csv(folder / "random_regions.csv")
    reader = open_weights(resolve_model(str(tiny_models["llama"])))
    expected = random_regions_table(model_random_regions(reader.layers(), reader.arch.n_layers))
    pd.testing.assert_frame_equal(table, expected, check_exact=False, rtol=1e-9)
    assert (folder / "random_regions.md").exists() and (folder / "fine.png").exists()
