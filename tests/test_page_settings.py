"""Neuron pages follow the run's weight settings (--threshold, --refactor_glu, like main.py), and the recomputed values
kept beside each page (activations.pt) read back exactly."""

from __future__ import annotations

from dataclasses import asdict

import datasets
import pytest
import torch
from helpers import dump_dom

from gated_core.artifacts import load_artifact
from gated_core.cli import run_main
from gated_core.errors import UserError
from gated_core.models.loading import load_hf_model, load_tokenizer
from gated_core.models.sources import resolve_model
from neuroscope import b_activations, c_neuron_vis, d_recompute_vis
from neuroscope.activation_pass.store import Statistics
from neuroscope.constants import DEFAULT_BATCH_SIZE
from neuroscope.data.dataset_store import save_dataset
from neuroscope.data.tokenization import build_dataset
from neuroscope.recompute.examples import recompute_examples
from neuroscope.recompute.recomputed import load_examples
from wcos_casestudies.constants import CLASS_NAMES
from wcos_casestudies.results import ModelResults, Settings
from wcos_casestudies.utils import classify

TEXTS = [f"Document {i}: gated neurons read a direction and write another, {'again ' * (i % 5)}then stop."
         for i in range(8)]
THRESHOLD = 0.1  # random 64-dimensional weights have cosines of about ±0.12: classes differ from threshold 0.5


@pytest.fixture(scope="module")
def run(tiny_models, tmp_path_factory):
    """Statistics of a tiny Llama on a few documents, and a neuron whose class depends on the threshold and whose
    gatelin is negative (so --refactor_glu changes its cosines)."""
    folder = tiny_models["llama"]
    source = resolve_model(str(folder))
    datadir = tmp_path_factory.mktemp("pages")
    dataset, meta = build_dataset(datasets.Dataset.from_dict({"text": TEXTS}), load_tokenizer(source), None, max_length=40)
    save_dataset(dataset, {**meta, "tokenizer": source.name, "dataset": "test"}, datadir / "data")
    assert run_main(b_activations.main, ["--model", str(folder), "--datadir", str(datadir), "--dataset", "data",
                                         "--save_to", "stats", "--examples_per_neuron", "2", "--device", "cpu"]) == 0
    cos = ModelResults(source, Settings(), root=tmp_path_factory.mktemp("probe")).cosines()
    low = classify(cos["gatelin"], cos["gateout"], cos["linout"], threshold=THRESHOLD)
    high = classify(cos["gatelin"], cos["gateout"], cos["linout"], threshold=0.5)
    layer, neuron = map(int, torch.nonzero((low != high) & (cos["gatelin"] < -THRESHOLD))[0])
    return {"model": folder, "source": source, "datadir": datadir, "dataset": dataset, "neuron": (layer, neuron),
            "stats": load_artifact(datadir / "stats" / "stats.pt")}


def _pages(run, results_dir, *flags):
    """d_recompute_vis.py as the README writes it."""
    layer, neuron = run["neuron"]
    argv = ["--model", str(run["model"]), "--datadir", str(run["datadir"]), "--activations", "stats", "--device", "cpu",
            "--results_dir", str(results_dir), "--neurons", f"{layer}.{neuron}", "--top_tokens", "3", *flags]
    assert run_main(d_recompute_vis.main, argv) == 0
    return argv


def _expected(run, results_dir, settings):
    """Class and cosines of the neuron under `settings`, and the results folder of those settings."""
    layer, neuron = run["neuron"]
    results = ModelResults(run["source"], settings, root=results_dir)
    code = int(results.categories()[layer, neuron])
    cosines = {name: float(value[layer, neuron]) for name, value in results.cosines().items()}
    return CLASS_NAMES[code], cosines, results.folder


def _facts(page, tmp_path):
    """The weights table of a page as the browser draws it."""
    dom = dump_dom(page)
    return dom[dom.index('<div class="facts">'):dom.index("</table>", dom.index('<div class="facts">'))]


@pytest.mark.slow
@pytest.mark.parametrize("flags, settings", [
    ((), Settings()),
    (("--threshold", str(THRESHOLD)), Settings(threshold=THRESHOLD)),
    (("--refactor_glu",), Settings(refactor_glu=True)),
])
def test_page_shows_the_class_and_cosines_of_the_run(run, tmp_path, flags, settings):
    _pages(run, tmp_path, *flags)
    io_class, cosines, folder = _expected(run, tmp_path, settings)
    assert folder.name == (settings.variant or "llama")  # the matching variant folder: data.pt and the pages
    assert load_artifact(folder / "data.pt")["meta"]["threshold"] == settings.threshold
    layer, neuron = run["neuron"]
    facts = _facts(folder / "neuroscope" / f"L{layer}" / f"N{neuron}" / "vis.html", tmp_path)
    assert f'<td>IO class</td><td class="num">{io_class}</td>' in facts
    for name, value in cosines.items():
        assert f'<td>{name}</td><td class="num">{value:+.3f}</td>' in facts
    default_class, default_cosines, _ = _expected(run, tmp_path / "default", Settings())
    if settings.threshold != 0.5:
        assert io_class != default_class  # the page would be wrong with the default settings
    if settings.refactor_glu:
        assert cosines["gatelin"] == -default_cosines["gatelin"] > 0
        assert cosines["gateout"] == -default_cosines["gateout"]


def test_recomputed_values_round_trip(run, tmp_path):
    argv = _pages(run, tmp_path)
    layer, neuron = run["neuron"]
    folder = tmp_path / "local" / "llama" / "neuroscope"
    stored = load_artifact(folder / f"L{layer}" / f"N{neuron}" / "activations.pt")
    statistics = stored["meta"]["statistics_fingerprint"]
    assert statistics == Statistics.from_file(run["stats"]).fingerprint
    model, tokenizer = load_hf_model(run["source"])
    fresh = recompute_examples(model, run["dataset"], Statistics.from_file(run["stats"]), [run["neuron"]], DEFAULT_BATCH_SIZE,
                               tokenizer.pad_token_id, torch.device("cpu"))[run["neuron"]]  # the pages' batches: the same sums
    loaded = load_examples(folder, run["neuron"], statistics)
    assert [asdict(e) for e in loaded] == [asdict(e) for e in fresh] and sum(e.kind in ("max", "min") for e in loaded) == 4
    # the page made from activations.pt alone (c_neuron_vis.py) is the page d_recompute_vis.py wrote
    page = folder / f"L{layer}" / f"N{neuron}" / "vis.html"
    written = page.read_text()
    page.unlink()
    assert run_main(c_neuron_vis.main, argv) == 0 and page.read_text() == written
    with pytest.raises(UserError, match="recomputed with other statistics"):
        load_examples(folder, run["neuron"], "0" * 16)
