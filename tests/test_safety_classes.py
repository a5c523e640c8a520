"""Data safety of the frequency and ablation scripts (e_frequency.py, e_ablate.py): the ablation's baseline and
finished sets are keyed by what they were computed from (dataset contents, weights, the statistics' means),
one frequency run per output folder, output locations checked before the work, leftovers of killed writes removed.

Every ablation here zero- or mean-ablates the tiny Llama's orthogonal-output neurons (its random weights put
every neuron in that class), without random sets, so that a run is one baseline pass and one ablated pass.
"""

from __future__ import annotations

import codecs
import os
import shutil
from pathlib import Path

import torch
from helpers import CORPUS_TEXTS, dataset_args, pass_args, refused, succeeds, write_corpus

from gated_core.artifacts import load_artifact
from gated_core.locks import hold_lock
from gated_core.models.sources import resolve_model
from neuroscope import a_dataset, b_activations, e_ablate, e_frequency
from neuroscope.activation_pass.store import load_statistics
from wcos_casestudies import main as main_script
from wcos_casestudies.synthetic import tiny_checkpoint

ABLATION = "local/llama/ablation/docs"  # the ablation folder of the dataset `docs`, under a results root


def ablate_args(model: Path, datadir: Path, results: Path, *extra) -> list:
    return ["--model", model, "--datadir", datadir, "--dataset", "docs", "--activations", "acts", "--results_dir", results,
            "--classes", "orthogonal_output", "--random_seeds", 0, "--bootstrap", 20, "--batch_size", 3,
            "--device", "cpu", *extra]


def frequency_args(model: Path, datadir: Path, results: Path) -> list:
    return ["--model", model, "--datadir", datadir, "--activations", "acts", "--results_dir", results, "--random_seeds", 2]


def copy_results(work, folder: Path) -> Path:
    """A copy of the fixture's results tree (the cosines and classes of main.py) that a test may change."""
    shutil.copytree(work["results"], folder)
    return folder


def fresh_dataset(work, tmp_path: Path) -> Path:
    """A data folder with the dataset `docs` of CORPUS_TEXTS (no statistics yet)."""
    datadir = tmp_path / "data"
    succeeds(a_dataset.main, dataset_args(datadir, "docs", write_corpus(tmp_path / "v1.jsonl", CORPUS_TEXTS), work["model"]))
    return datadir


def rebuild_in_place(work, datadir: Path, tmp_path: Path) -> None:
    """`docs` rebuilt from other texts of the same lengths: the same documents and tokens, other token ids."""
    rotated = write_corpus(tmp_path / "v2.jsonl", [codecs.encode(text, "rot13") for text in CORPUS_TEXTS])
    succeeds(a_dataset.main, dataset_args(datadir, "docs", rotated, work["model"]) + ["--overwrite"])


def stored(results: Path) -> tuple[dict, dict]:
    """The baseline and the finished sets of the ablation folder of `docs`."""
    folder = results / ABLATION
    return load_artifact(folder / "baseline.pt"), load_artifact(folder / "sets.pt")["sets"]


def assert_same_ablation(results: Path, reference: Path) -> None:
    """The baseline and every set's summary of `results` are those of `reference` (computed from scratch)."""
    (baseline, sets), (expected_baseline, expected_sets) = stored(results), stored(reference)
    assert torch.equal(baseline["values"], expected_baseline["values"])
    assert sets.keys() == expected_sets.keys()
    for key, record in sets.items():
        assert record["summary"] == expected_sets[key]["summary"] and record["means_from"] == expected_sets[key]["means_from"]
        assert record["statistics_fingerprint"] == expected_sets[key]["statistics_fingerprint"]


# ----------------------------------------------------------------------------- 1. keyed by what they were computed from


def test_the_baseline_of_a_rebuilt_dataset_is_not_reused(work, tmp_path):
    """A dataset rebuilt in place with the same counts: the old baseline is refused; --overwrite recomputes it."""
    model, datadir = work["model"], fresh_dataset(work, tmp_path)
    results = copy_results(work, tmp_path / "results")
    succeeds(e_ablate.main, ablate_args(model, datadir, results))
    old_baseline = stored(results)[0]["values"]
    rebuild_in_place(work, datadir, tmp_path)
    refused(e_ablate.main, ablate_args(model, datadir, results), tmp_path, "other contents of the dataset")
    succeeds(e_ablate.main, ablate_args(model, datadir, results, "--overwrite"))
    scratch = copy_results(work, tmp_path / "scratch")
    succeeds(e_ablate.main, ablate_args(model, datadir, scratch))
    assert_same_ablation(results, scratch)
    assert not torch.allclose(old_baseline, stored(scratch)[0]["values"])  # the old baseline would have been wrong


def test_the_baseline_of_other_weights_is_not_reused(work, tmp_path):
    """Other weights of the same name, classified again by main.py --overwrite: the old baseline is refused."""
    datadir, other = fresh_dataset(work, tmp_path), tiny_checkpoint("llama", tmp_path / "b" / "llama", seed=11)
    results = copy_results(work, tmp_path / "results")
    succeeds(e_ablate.main, ablate_args(work["model"], datadir, results))
    succeeds(main_script.main, ["--model", other, "--results_dir", results, "--overwrite"])
    refused(e_ablate.main, ablate_args(other, datadir, results), tmp_path, "other weights")
    succeeds(e_ablate.main, ablate_args(other, datadir, results, "--overwrite"))
    scratch = tmp_path / "scratch"
    succeeds(main_script.main, ["--model", other, "--results_dir", scratch])
    succeeds(e_ablate.main, ablate_args(other, datadir, scratch))
    assert_same_ablation(results, scratch)


def test_means_of_statistics_of_a_rebuilt_dataset_are_refused(work, tmp_path):
    """Mean ablation with statistics made on the dataset's old contents: refused, until they are made again."""
    model, datadir = work["model"], fresh_dataset(work, tmp_path)
    succeeds(b_activations.main, pass_args(model, datadir, "acts"))
    rebuild_in_place(work, datadir, tmp_path)
    results = copy_results(work, tmp_path / "results")
    line = refused(e_ablate.main, ablate_args(model, datadir, results, "--mode", "mean"), tmp_path,
                   "other contents of the dataset")
    assert "stats.pt" in line
    succeeds(b_activations.main, pass_args(model, datadir, "acts", "--overwrite"))
    succeeds(e_ablate.main, ablate_args(model, datadir, results, "--mode", "mean"))
    record = next(iter(stored(results)[1].values()))
    assert record["mode"] == "mean" and str((datadir / "acts" / "stats.pt").resolve()) == record["means_from"]
    assert record["statistics_fingerprint"] == load_statistics(resolve_model(str(model)), datadir, "acts").fingerprint


def test_finished_mean_sets_of_other_statistics_are_not_reused(work, tmp_path):
    """Statistics made again in place (here in bfloat16: other means): the finished mean sets are refused."""
    model, datadir = work["model"], fresh_dataset(work, tmp_path)
    succeeds(b_activations.main, pass_args(model, datadir, "acts"))
    results = copy_results(work, tmp_path / "results")
    succeeds(e_ablate.main, ablate_args(model, datadir, results, "--mode", "mean"))
    old_means = load_artifact(datadir / "acts" / "stats.pt")["mean"]
    succeeds(b_activations.main, pass_args(model, datadir, "acts", "--overwrite", "--dtype", "bfloat16"))
    assert not torch.equal(old_means, load_artifact(datadir / "acts" / "stats.pt")["mean"])
    refused(e_ablate.main, ablate_args(model, datadir, results, "--mode", "mean"), tmp_path, "used the means of other statistics")
    succeeds(e_ablate.main, ablate_args(model, datadir, results, "--mode", "mean", "--overwrite"))
    scratch = copy_results(work, tmp_path / "scratch")
    succeeds(e_ablate.main, ablate_args(model, datadir, scratch, "--mode", "mean"))
    assert_same_ablation(results, scratch)


# ----------------------------------------------------------------------------- 2. one writer per output


def test_one_frequency_run_per_output_folder(work, tmp_path):
    results = copy_results(work, tmp_path / "results")
    with hold_lock(results / "local/llama/frequency"):
        refused(e_frequency.main, frequency_args(work["model"], work["datadir"], results), tmp_path,
                f"is being written by process {os.getpid()}")
    succeeds(e_frequency.main, frequency_args(work["model"], work["datadir"], results))
    assert not (results / "local/llama/frequency.lock").exists()


# ----------------------------------------------------------------------------- 3. output locations first


def test_output_locations_are_checked_before_the_work(work, tmp_path, monkeypatch):
    import gated_core.models.loading
    import neuroscope.classes.frequency

    def no_work(*args, **kwargs):
        raise AssertionError("the work started before the output location was checked")

    monkeypatch.setattr(gated_core.models.loading, "load_hf_model", no_work)
    monkeypatch.setattr(neuroscope.classes.frequency, "class_frequencies", no_work)
    model, datadir = work["model"], work["datadir"]
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for results in (a_file, a_file / "below"):
        refused(e_ablate.main, ablate_args(model, datadir, results), tmp_path, "is a file")
        refused(e_frequency.main, frequency_args(model, datadir, results), tmp_path, "is a file")
    for blocked in ("local/llama/frequency", "local/llama/ablation", ABLATION):
        results = copy_results(work, tmp_path / blocked.replace("/", "_"))
        (results / blocked).parent.mkdir(parents=True, exist_ok=True)
        (results / blocked).write_text("mine")
        script, argv = (e_frequency, frequency_args(model, datadir, results)) if "frequency" in blocked else \
            (e_ablate, ablate_args(model, datadir, results))
        refused(script.main, argv, tmp_path, "is a file")
    read_only = copy_results(work, tmp_path / "read_only")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != read_only and real_access(path, mode))
    refused(e_ablate.main, ablate_args(model, datadir, read_only), tmp_path, "not writable")
    refused(e_frequency.main, frequency_args(model, datadir, read_only), tmp_path, "not writable")


# ----------------------------------------------------------------------------- 4. leftovers


def test_leftovers_of_killed_writes_are_removed(work, tmp_path):
    results = copy_results(work, tmp_path / "results")
    folder = results / ABLATION
    folder.mkdir(parents=True)
    leftovers = (".sets.pt.k1ll3d_x.tmp", ".baseline.pt.k1ll3d_x.tmp", ".ablation.csv.k1ll3d_x.tmp", ".ablation.png.k1ll3d_x.tmp")
    for name in leftovers:
        (folder / name).write_bytes(b"half a file")
    (folder / "notes.tmp").write_text("mine, kept")
    succeeds(e_ablate.main, ablate_args(work["model"], work["datadir"], results))
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["ablation.csv", "ablation.md", "ablation.pdf", "ablation.png", "baseline.pt", "notes.tmp", "sets.pt"])
    # the frequency folder likewise
    frequency = results / "local/llama/frequency"
    frequency.mkdir()
    for name in (".frequency.csv.k1ll3d_x.tmp", ".sign_frequencies.md.k1ll3d_x.tmp", ".frequency.pdf.k1ll3d_x.tmp"):
        (frequency / name).write_bytes(b"half a file")
    succeeds(e_frequency.main, frequency_args(work["model"], work["datadir"], results))
    assert sorted(p.name for p in frequency.iterdir()) == sorted(
        ["frequency.csv", "frequency.md", "frequency.pdf", "frequency.png", "sign_frequencies.csv", "sign_frequencies.md",
         "strength.csv", "strength.md", "strength.pdf", "strength.png", "wcos_output.json"])  # written whole, with its marker
