"""Data safety (issue 8): never a silent wrong result, never a deleted folder, one line for every mistake.

One test per cause: cached results keyed by what they were computed from (weights, dataset
contents), checksums and plausibility of artifacts, --overwrite deleting only what the tool made,
one writer per output, validated model configs, output locations checked before the work, files
that are empty or not text, numbers and names from the command line and the environment, and
leftovers of killed writes. Then a catalogue of hostile command lines, run end to end: each must
end with exit status 2, one `error:` line last on stderr, no traceback, and the file tree unchanged.
"""

from __future__ import annotations

import codecs
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from helpers import CORPUS_TEXTS, assert_flags_exist, copy_data, dataset_args, page_args, pass_args, refused, succeeds, write_corpus

from gated_core.artifacts import load_artifact, save_artifact
from gated_core.errors import UserError
from gated_core.locks import hold_lock, lock_path
from gated_core.models.readers import open_weights
from gated_core.models.sources import resolve_model
from neuroscope import a_dataset, b2_recompute, b_activations, c_neuron_vis, d_recompute_vis, e_ablate, e_frequency
from neuroscope.activation_pass.store import load_stats, stats_path
from neuroscope.data.dataset_store import load_tokenized
from neuroscope.view.checksums import meta_checksum
from neuroscope.view.neuron_view import js_call
from wcos_casestudies import defplot, selected_plot
from wcos_casestudies import main as main_script
from wcos_casestudies.synthetic import tiny_checkpoint
from wcos_casestudies.utils import model_cosines

ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- 1. keyed by content


def test_cached_results_are_keyed_by_the_weights(work, tmp_path):
    """Two checkpoints in folders of the same name: the second never reuses the first's cosines or statistics."""
    first, second = tmp_path / "a" / "llama", tmp_path / "b" / "llama"
    shutil.copytree(work["model"], first)  # a copy with the files' times: the same weights
    tiny_checkpoint("llama", second, seed=11)
    results = tmp_path / "results"
    argv = ["--quartiles", "--results_dir", results]
    succeeds(main_script.main, ["--model", first, *argv])
    refused(main_script.main, ["--model", second, *argv], results, "other weights")
    succeeds(main_script.main, ["--model", second, *argv, "--overwrite"])
    data = load_artifact(results / "local/llama/data.pt")
    expected = model_cosines(open_weights(resolve_model(str(second))).layers(), 2)["linout"]
    assert torch.allclose(data["linout"], expected) and str(second) in data["meta"]["provenance"]
    assert "reused" in succeeds(main_script.main, ["--model", second, *argv]).out
    # the activation statistics of the first model are refused for the second
    refused(d_recompute_vis.main, page_args(second, work["datadir"], tmp_path / "pages"), tmp_path, "with other weights")


# ----------------------------------------------------------------------------- 2. checksums and plausibility


def test_damaged_or_implausible_artifacts_are_refused(work, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(work["results"], results)
    data_pt = results / "local/llama/data.pt"
    argv = ["--model", work["model"], "--results_dir", results, "--quartiles"]
    good = data_pt.read_bytes()
    damaged = bytearray(good)
    middle = len(damaged) // 2
    damaged[middle:middle + 64] = bytes(b ^ 0xFF for b in damaged[middle:middle + 64])
    data_pt.write_bytes(bytes(damaged))
    refused(main_script.main, argv, results, str(data_pt))
    data_pt.write_bytes(good)
    for name, change, match in (("linout", lambda t: t * 500, "outside [-1, 1]"), ("gatelin", lambda t: t[:1], "has shape"),
                                ("categories", lambda t: t + 20, "class codes")):
        data = load_artifact(data_pt)
        data[name] = change(data[name])
        save_artifact(data, data_pt)  # a valid checksum of impossible numbers
        refused(main_script.main, argv, results, match)
        data_pt.write_bytes(good)
    stats = load_artifact(work["datadir"] / "acts/stats.pt")
    stats["top_values"] = stats["top_values"][..., :1]
    save_artifact(stats, tmp_path / "stats.pt")
    with pytest.raises(UserError, match="has shape"):
        load_stats(tmp_path / "stats.pt")


def test_artifacts_without_checksum_still_load(tmp_path, capsys):
    """Files of the previous version carry no checksum: read as they are, with a note."""
    path = tmp_path / "old.pt"
    torch.save({"meta": {"project": "wcos_casestudies"}, "x": torch.ones(3)}, path)
    assert torch.equal(load_artifact(path)["x"], torch.ones(3))
    assert "no checksum" in capsys.readouterr().err
    save_artifact({"meta": {"project": "wcos_casestudies"}, "x": torch.ones(3)}, path)
    assert "sha256" not in load_artifact(path) and capsys.readouterr().err == ""


# ----------------------------------------------------------------------------- 3. --overwrite


def test_overwrite_replaces_only_datasets_it_made(work, tmp_path):
    datadir = copy_data(work, tmp_path)
    (datadir / "mine").mkdir()
    (datadir / "mine" / "notes.txt").write_text("keep me")
    (datadir / "a_file").write_text("keep me too")
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(datadir / "docs", elsewhere / "docs")
    (datadir / "link").symlink_to(elsewhere / "docs")
    base = dataset_args(datadir, "X", work["corpus"], work["model"]) + ["--overwrite"]
    at = base.index("X")
    for name in (".", "..", "/", str(tmp_path), "docs/..", "a/b", ""):
        refused(a_dataset.main, base[:at] + [name] + base[at + 1:], tmp_path, "plain folder name")
    for name, match in (("acts", "not a dataset written by a_dataset.py"), ("mine", "not a dataset written"),
                        ("a_file", "not a folder"), ("link", "symbolic link")):
        refused(a_dataset.main, base[:at] + [name] + base[at + 1:], tmp_path, match)
    # its own dataset is replaced in place; nothing is left beside it
    before = load_tokenized(datadir / "docs")[1]
    succeeds(a_dataset.main, base[:at] + ["docs"] + base[at + 1:])
    assert load_tokenized(datadir / "docs")[1]["fingerprint"] == before["fingerprint"]
    assert sorted(p.name for p in datadir.iterdir()) == ["a_file", "acts", "docs", "link", "mine"]


# ----------------------------------------------------------------------------- 4. rebuilt datasets


def test_a_rebuilt_dataset_is_noticed(work, tmp_path):
    """Rebuilt in place with the same counts but other tokens: old statistics are not reused, old shards not merged."""
    model, datadir = work["model"], tmp_path / "data"
    original = write_corpus(tmp_path / "v1.jsonl", CORPUS_TEXTS)
    rotated = write_corpus(tmp_path / "v2.jsonl", [codecs.encode(t, "rot13") for t in CORPUS_TEXTS])
    succeeds(a_dataset.main, dataset_args(datadir, "docs", original, model))
    succeeds(b_activations.main, pass_args(model, datadir, "acts"))
    succeeds(b_activations.main, pass_args(model, datadir, "sharded", "--num_shards", 2, "--shard_index", 0))
    old = load_tokenized(datadir / "docs")[1]
    succeeds(a_dataset.main, dataset_args(datadir, "docs", rotated, model) + ["--overwrite"])
    new = load_tokenized(datadir / "docs")[1]
    assert (old["documents"], old["tokens"]) == (new["documents"], new["tokens"]) and old["fingerprint"] != new["fingerprint"]
    refused(b_activations.main, pass_args(model, datadir, "acts"), tmp_path, "other contents of the dataset")
    refused(d_recompute_vis.main, page_args(model, datadir, tmp_path / "pages"), tmp_path, "its tokens are not those")
    succeeds(b_activations.main, pass_args(model, datadir, "sharded", "--num_shards", 2, "--shard_index", 1))
    line = refused(b_activations.main, ["--datadir", datadir, "--save_to", "sharded", "--merge", "--num_shards", 2],
                   tmp_path, "other contents of the dataset")
    assert "stats.shard0of2.pt" in line and "--shard_index 0" in line
    succeeds(b_activations.main, pass_args(model, datadir, "acts", "--overwrite"))
    assert load_artifact(datadir / "acts/stats.pt")["meta"]["dataset_fingerprint"] == new["fingerprint"]


def test_dataset_files_changed_behind_the_metadata_are_refused(work, tmp_path):
    datadir = copy_data(work, tmp_path)
    meta_path = datadir / "docs" / "neuroscope_meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "fingerprint": "0" * 16}))
    with pytest.raises(UserError, match="do not match its metadata"):
        load_tokenized(datadir / "docs")


# ----------------------------------------------------------------------------- 5. one writer per output


def test_one_writer_per_output(work, tmp_path):
    datadir = copy_data(work, tmp_path)
    target = stats_path(datadir / "locked")
    with hold_lock(target) as lock:
        refused(b_activations.main, pass_args(work["model"], datadir, "locked"), tmp_path,
                f"process {os.getpid()} on {socket.gethostname()}")
    assert not lock.exists()
    # a holder killed with SIGKILL leaves its lock file behind; the next run takes it over
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from gated_core.locks import acquire; acquire(Path(sys.argv[1])); "
                               "print('held', flush=True); time.sleep(120)", str(target)],
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert holder.stdout.readline().strip() == "held"
    refused(b_activations.main, pass_args(work["model"], datadir, "locked"), tmp_path, f"process {holder.pid}")
    holder.kill()
    holder.wait()
    assert lock_path(target).exists()
    succeeds(b_activations.main, pass_args(work["model"], datadir, "locked"))
    assert not lock_path(target).exists() and target.exists()
    # the pages of a model and their index: one page run at a time
    results = tmp_path / "results"
    with hold_lock(results / "local/llama/neuroscope/neurons.json"):
        refused(d_recompute_vis.main, page_args(work["model"], datadir, results), tmp_path, f"process {os.getpid()}")


# ----------------------------------------------------------------------------- 6. model configs


def _gguf_without_sizes(path: Path) -> None:
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "llama")
    for part in ("up", "gate", "down"):
        writer.add_tensor(f"blk.0.ffn_{part}.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


CONFIG_CHANGES = {
    "a list": (lambda c: [], "an array, not a JSON object"),
    "null": (lambda c: None, "null, not a JSON object"),
    "layers abc": (lambda c: {**c, "num_hidden_layers": "abc"}, "num_hidden_layers is 'abc'"),
    "no layers": (lambda c: {**c, "num_hidden_layers": 0}, "num_hidden_layers is 0"),
    "negative width": (lambda c: {**c, "intermediate_size": -4}, "intermediate_size is -4"),
    "text_config a string": (lambda c: {"text_config": "x"}, "text_config is a string"),
}


@pytest.mark.parametrize("change", sorted(CONFIG_CHANGES))
def test_model_configs_are_validated(work, tmp_path, change):
    folder = tmp_path / "model"
    shutil.copytree(work["model"], folder)
    edit, match = CONFIG_CHANGES[change]
    (folder / "config.json").write_text(json.dumps(edit(json.loads((folder / "config.json").read_text()))))
    refused(main_script.main, ["--model", folder, "--results_dir", tmp_path / "results"], tmp_path, match)


def test_damaged_weight_files_are_refused(work, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(work["model"], folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    refused(main_script.main, ["--model", folder, "--results_dir", tmp_path / "results"], tmp_path, "truncated")
    _gguf_without_sizes(tmp_path / "sizes.gguf")
    refused(main_script.main, ["--model", tmp_path / "sizes.gguf", "--results_dir", tmp_path / "r"], tmp_path,
            "llama.block_count is missing")
    data = (tmp_path / "sizes.gguf").read_bytes()
    (tmp_path / "half.gguf").write_bytes(data[:len(data) // 2])
    refused(main_script.main, ["--model", tmp_path / "half.gguf", "--results_dir", tmp_path / "r"], tmp_path, "GGUF")


# ----------------------------------------------------------------------------- 7. output locations first


def test_output_locations_are_checked_before_the_work(work, tmp_path, monkeypatch):
    import neuroscope.activation_pass.collect
    import wcos_casestudies.results

    def no_work(*args, **kwargs):
        raise AssertionError("the work started before the output location was checked")

    monkeypatch.setattr(neuroscope.activation_pass.collect, "load_hf_model", no_work)
    monkeypatch.setattr(wcos_casestudies.results, "model_cosines", no_work)
    datadir = copy_data(work, tmp_path)
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    (datadir / "a_file").write_text("x")
    model = work["model"]
    for results in (a_file, a_file / "below"):
        refused(main_script.main, ["--model", model, "--results_dir", results], tmp_path, "is a file")
    refused(b_activations.main, pass_args(model, datadir, "a_file"), tmp_path, "is a file")
    refused(d_recompute_vis.main, page_args(model, datadir, a_file), tmp_path, "is a file")
    refused(defplot.main, ["--out", a_file / "defplot"], tmp_path, "is a file")
    refused(selected_plot.main, ["--model", model, "--results_dir", a_file], tmp_path, "is a file")
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != read_only and real_access(path, mode))
    refused(main_script.main, ["--model", model, "--results_dir", read_only], tmp_path, "not writable")
    refused(b_activations.main, pass_args(model, read_only, "acts"), tmp_path, "not writable")


# ----------------------------------------------------------------------------- 8. empty files


def test_empty_files_give_one_line(work, tmp_path):
    results = tmp_path / "results"
    (results / "local/llama").mkdir(parents=True)
    (results / "local/llama/data.pt").write_bytes(b"")
    refused(main_script.main, ["--model", work["model"], "--results_dir", results], tmp_path, "cannot read")
    datadir = copy_data(work, tmp_path)
    (datadir / "zero").mkdir()
    (datadir / "zero" / "stats.partial.pt").write_bytes(b"")
    refused(b_activations.main, pass_args(work["model"], datadir, "zero"), tmp_path, "cannot read")


# ----------------------------------------------------------------------------- 9. input files


INPUTS = {
    "binary.txt": (b"\x89PNG\r\n\x1a\n\x00\x00", "binary data"),
    "empty.txt": (b"", "no text in it"),
    "latin1.txt": ("café".encode("latin-1"), "not UTF-8"),
    "latin1.jsonl": ('{"text": "café"}\n'.encode("latin-1"), "UTF-8"),
    "garbage.jsonl": (b'{"text": "ok"}\nnot json at all\n', "cannot read these json files"),
    "garbage.parquet": (bytes(range(256)) * 4, "cannot read these parquet files"),
    "numbers.jsonl": (b'{"text": 5}\n{"text": 7}\n', "not text"),
    "lists.jsonl": (b'{"text": ["a", "b"]}\n', "not text"),
    "blank.jsonl": (b'{"text": "  "}\n{"text": null}\n', "no text in it"),
}


@pytest.mark.parametrize("name", sorted(INPUTS))
def test_input_files_that_are_not_text(work, tmp_path, name):
    content, match = INPUTS[name]
    (tmp_path / name).write_bytes(content)
    refused(a_dataset.main, dataset_args(tmp_path / "data", "x", tmp_path / name, work["model"]), tmp_path, match)


def test_empty_documents_are_left_out_with_a_note(work, tmp_path):
    corpus = write_corpus(tmp_path / "c.jsonl", ["one document", "", "   ", "another one"])
    outcome = succeeds(a_dataset.main, dataset_args(tmp_path / "data", "x", corpus, work["model"]))
    assert "left out 2 empty document(s) of 4" in outcome.err
    assert load_tokenized(tmp_path / "data" / "x")[1]["documents"] == 2


# ----------------------------------------------------------------------------- 10. numbers and names


def test_numbers_and_names_from_the_environment(work, tmp_path, monkeypatch):
    for variables, match in (({"WORLD_SIZE": "abc"}, "WORLD_SIZE='abc'"), ({"WORLD_SIZE": "٣"}, "WORLD_SIZE"),
                             ({"RANK": "-1"}, "RANK='-1'"), ({"WORLD_SIZE": "2", "RANK": "5"}, "RANK 5")):
        with monkeypatch.context() as env:
            for key, value in variables.items():
                env.setenv(key, value)
            refused(b_activations.main, pass_args(work["model"], work["datadir"], "env"), work["root"], match)


def test_a_local_model_is_suggested_by_its_path(work, tmp_path, smollm2_source):
    line = refused(d_recompute_vis.main, page_args("smollm2-135m", work["datadir"], tmp_path), tmp_path, "pass --model")
    suggested = line.rsplit("--model ", 1)[1].strip()
    assert resolve_model(suggested).path == resolve_model(str(work["model"])).path


# ----------------------------------------------------------------------------- 11. leftovers


def test_leftovers_of_killed_writes_are_removed(work, tmp_path):
    datadir = copy_data(work, tmp_path)
    (datadir / "fresh").mkdir()
    for name in (".stats.partial.pt.k1ll3d_x.tmp", ".stats.pt.k1ll3d_x.tmp"):
        (datadir / "fresh" / name).write_bytes(b"half a file")
    (datadir / ".docs2.abc123_x.partial").mkdir()
    (datadir / ".docs2.abc123_x.partial" / "data-00000-of-00001.arrow").write_bytes(b"half")
    succeeds(b_activations.main, pass_args(work["model"], datadir, "fresh"))
    assert sorted(p.name for p in (datadir / "fresh").iterdir()) == ["stats.pt"]
    succeeds(a_dataset.main, dataset_args(datadir, "docs2", work["corpus"], work["model"]))
    assert not [p.name for p in datadir.iterdir() if p.name.startswith(".")]


# ----------------------------------------------------------------------------- the catalogue


PAGE_RUN = ["--model", "{MODEL}", "--datadir", "{DATA}", "--activations", "acts", "--results_dir", "{RESULTS}", "--device", "cpu"]


@dataclass
class Hostile:
    """One hostile command line: the script, its arguments (with ROOT, MODEL, DATA, RESULTS filled in), what the error must say."""

    label: str
    script: object
    argv: list
    match: str
    env: dict = field(default_factory=dict)


CATALOGUE = [
    Hostile("same name, other weights", main_script, ["--model", "{ROOT}/b/llama", "--results_dir", "{RESULTS}"], "other weights"),
    Hostile("flipped bytes in data.pt", main_script, ["--model", "{MODEL}", "--results_dir", "{ROOT}/flipped", "--quartiles"], "data.pt"),
    Hostile("zero-byte data.pt", main_script, ["--model", "{MODEL}", "--results_dir", "{ROOT}/zero"], "cannot read"),
    Hostile("config is a list", main_script, ["--model", "{ROOT}/list_config", "--results_dir", "{ROOT}/r"], "an array"),
    Hostile("results_dir is a file", main_script, ["--model", "{MODEL}", "--results_dir", "{ROOT}/a_file"], "is a file"),
    Hostile("threshold nan", main_script, ["--model", "{MODEL}", "--results_dir", "{RESULTS}", "--threshold", "nan"], "--threshold"),
    Hostile("save_to .", a_dataset, ["--datadir", "{DATA}", "--save_to", ".", "--overwrite"], "plain folder name"),
    Hostile("save_to ..", a_dataset, ["--datadir", "{DATA}", "--save_to", "..", "--overwrite"], "plain folder name"),
    Hostile("save_to absolute", a_dataset, ["--datadir", "{DATA}", "--save_to", "{ROOT}", "--overwrite"], "plain folder name"),
    Hostile("save_to statistics", a_dataset, ["--datadir", "{DATA}", "--save_to", "acts", "--overwrite", "--tokenizer", "{MODEL}"],
            "not a dataset written"),
    Hostile("mtokens inf", a_dataset, ["--datadir", "{DATA}", "--save_to", "n", "--mtokens", "1e999"], "finite"),
    Hostile("mtokens 0", a_dataset, ["--datadir", "{DATA}", "--save_to", "n", "--mtokens", "0"], "above 0"),
    Hostile("binary .txt", a_dataset, ["--datadir", "{DATA}", "--save_to", "n", "--dataset", "{ROOT}/binary.txt",
                                       "--tokenizer", "{MODEL}"], "binary data"),
    Hostile("empty .txt", a_dataset, ["--datadir", "{DATA}", "--save_to", "n", "--dataset", "{ROOT}/empty.txt",
                                      "--tokenizer", "{MODEL}"], "no text"),
    Hostile("batch size 0", b_activations, ["--datadir", "{DATA}", "--dataset", "docs", "--batch_size", "0"], "at least 1"),
    Hostile("examples -1", b_activations, ["--datadir", "{DATA}", "--dataset", "docs", "--examples_per_neuron", "-1"], "at least 1"),
    Hostile("WORLD_SIZE abc", b_activations, ["--model", "{MODEL}", "--datadir", "{DATA}", "--dataset", "docs"], "WORLD_SIZE",
            {"WORLD_SIZE": "abc"}),
    Hostile("zero-byte checkpoint", b_activations, ["--model", "{MODEL}", "--datadir", "{DATA}", "--dataset", "docs",
                                                     "--save_to", "zero", "--examples_per_neuron", "2", "--device", "cpu"],
            "cannot read"),
    Hostile("merge of nothing", b_activations, ["--datadir", "{DATA}", "--save_to", "nothing", "--merge", "--num_shards", "2"],
            "no such folder"),
    Hostile("neuron in Arabic-Indic digits", d_recompute_vis, ["--model", "{MODEL}", "--datadir", "{DATA}", "--results_dir",
                                                               "{RESULTS}", "--neurons", "٠.١"], "LAYER.NEURON"),
    Hostile("neuron with a superscript", d_recompute_vis, ["--model", "{MODEL}", "--datadir", "{DATA}", "--results_dir",
                                                           "{RESULTS}", "--neurons", "1.²"], "LAYER.NEURON"),
    Hostile("statistics of another kind", d_recompute_vis, ["--model", "{MODEL}", "--datadir", "{DATA}", "--activations",
                                                             "wrong_kind", "--results_dir", "{RESULTS}", "--neurons", "0.1"],
            "holds the cosines"),
    Hostile("corrupt neurons.json", d_recompute_vis, ["--model", "{MODEL}", "--datadir", "{DATA}", "--activations", "acts",
                                                      "--results_dir", "{ROOT}/bad_index", "--neurons", "0.1"], "page index"),
    Hostile("damaged data.pt on a page run", d_recompute_vis, ["--model", "{MODEL}", "--datadir", "{DATA}", "--activations",
                                                               "acts", "--results_dir", "{ROOT}/flipped", "--neurons", "0.1"],
            "main.py --overwrite"),
    Hostile("layers in Arabic-Indic digits", selected_plot, ["--model", "{MODEL}", "--results_dir", "{RESULTS}", "--layers", "١"],
            "not a whole number"),
    # second round: the viewer, --from_viewer, the frequency and ablation scripts, fingerprints, inputs, names
    Hostile("viewer over a page folder", d_recompute_vis, [*PAGE_RUN, "--neurons", "0.1", "--viewer", "L0"], "page folder"),
    Hostile("viewer over a folder of yours", d_recompute_vis, [*PAGE_RUN, "--neurons", "0.1", "--viewer", "my_notes"],
            "not a viewer written"),
    Hostile("viewer over a file", d_recompute_vis, [*PAGE_RUN, "--neurons", "0.1", "--viewer", "a_file"], "not a folder"),
    Hostile("viewer over a symbolic link", d_recompute_vis, [*PAGE_RUN, "--neurons", "0.1", "--viewer", "link"], "symbolic link"),
    Hostile("viewer name of 300 characters", d_recompute_vis, [*PAGE_RUN, "--neurons", "0.1", "--viewer", "v" * 300], "too long"),
    Hostile("from_viewer of another model", d_recompute_vis, [*PAGE_RUN, "--neurons", "0.*", "--from_viewer", "foreign",
                                                             "--viewer", "part"], "another model"),
    Hostile("from_viewer of a cut index.js", d_recompute_vis, [*PAGE_RUN, "--neurons", "0.*", "--from_viewer", "damaged",
                                                              "--viewer", "part"], "index.js"),
    Hostile("activations.pt of another neuron", c_neuron_vis, [*PAGE_RUN, "--neurons", "0.2"], "not 0.2"),
    Hostile("statistics into a dataset folder", b_activations, ["--model", "{MODEL}", "--datadir", "{DATA}", "--dataset", "docs",
                                                                "--save_to", "docs", "--device", "cpu"], "is a tokenized dataset"),
    Hostile("tokenizer with two ids swapped", b_activations, ["--model", "{ROOT}/swapped", "--datadir", "{DATA}", "--dataset",
                                                              "docs", "--save_to", "sw", "--device", "cpu"], "another tokenizer"),
    Hostile("full hash of a sampled result", main_script, ["--model", "{MODEL}", "--results_dir", "{RESULTS}", "--full_hash"],
            "--full_hash"),
    Hostile("overwrite a dataset holding your files", a_dataset, ["--datadir", "{DATA}", "--save_to", "docs_notes", "--overwrite",
                                                                  "--tokenizer", "{MODEL}"], "did not write"),
    Hostile("a FIFO named .txt", a_dataset, ["--datadir", "{DATA}", "--save_to", "n", "--dataset", "{ROOT}/fifo.txt",
                                             "--tokenizer", "{MODEL}"], "FIFO"),
    Hostile("empty .jsonl", a_dataset, ["--datadir", "{DATA}", "--save_to", "n", "--dataset", "{ROOT}/empty.jsonl",
                                        "--tokenizer", "{MODEL}"], "no text"),
    Hostile("empty .jsonl, streaming", a_dataset, ["--datadir", "{DATA}", "--save_to", "n", "--dataset", "{ROOT}/empty.jsonl",
                                                   "--tokenizer", "{MODEL}", "--streaming"], "no text"),
    Hostile("save_to with a glob sign", a_dataset, ["--datadir", "{DATA}", "--save_to", "*", "--tokenizer", "{MODEL}"], "holds '*'"),
    Hostile("frequency, results_dir a file", e_frequency, ["--model", "{MODEL}", "--datadir", "{DATA}", "--activations", "acts",
                                                           "--results_dir", "{ROOT}/a_file"], "is a file"),
    Hostile("ablation, results_dir a file", e_ablate, ["--model", "{MODEL}", "--datadir", "{DATA}", "--activations", "acts",
                                                       "--results_dir", "{ROOT}/a_file", "--device", "cpu"], "is a file"),
    Hostile("ablation, a file where ablation/ goes", e_ablate, ["--model", "{MODEL}", "--datadir", "{DATA}", "--activations",
                                                                "acts", "--results_dir", "{ROOT}/ablation_file", "--device", "cpu"],
            "is a file"),
]


@pytest.fixture(scope="module")
def hostile_tree(work, tmp_path_factory):
    """The files the catalogue's command lines point at, under one root whose tree must not change."""
    root = tmp_path_factory.mktemp("hostile")
    shutil.copytree(work["datadir"], root / "data")
    shutil.copytree(work["results"], root / "results")
    tiny_checkpoint("llama", root / "b" / "llama", seed=12)
    data_pt = root / "results/local/llama/data.pt"
    for name, content in (("flipped", bytes(b ^ 0xFF if 900 <= i < 964 else b for i, b in enumerate(data_pt.read_bytes()))),
                          ("zero", b"")):
        (root / name / "local/llama").mkdir(parents=True)
        (root / name / "local/llama/data.pt").write_bytes(content)
    (root / "data/zero").mkdir()
    (root / "data/zero/stats.partial.pt").write_bytes(b"")
    (root / "data/wrong_kind").mkdir()
    shutil.copy(data_pt, root / "data/wrong_kind/stats.pt")
    (root / "bad_index/local/llama/neuroscope").mkdir(parents=True)
    (root / "bad_index/local/llama/neuroscope/neurons.json").write_text("{not json")
    shutil.copytree(work["model"], root / "list_config")
    (root / "list_config/config.json").write_text("[1, 2]")
    (root / "a_file").write_text("x")
    (root / "binary.txt").write_bytes(b"\x00\x01\x02\xff")
    (root / "empty.txt").write_bytes(b"")
    _second_round_tree(root, work)
    time.sleep(0.01)  # so that a file rewritten by a run would show another modification time
    return root


def _second_round_tree(root: Path, work) -> None:
    """What the second round's cases point at: the recomputed values of neuron 0.1 copied to 0.2, a viewer of every
    neuron and copies of it (of another model, with a cut index.js), a folder of yours, a file and a link where a viewer
    could go, a dataset folder holding your file, a FIFO, an empty .jsonl, a model whose tokenizer has two ids swapped."""
    page_run = [_fill(a, {"{MODEL}": str(work["model"]), "{DATA}": str(root / "data"), "{RESULTS}": str(root / "results")})
                for a in PAGE_RUN]
    succeeds(b2_recompute.main, [*page_run, "--neurons", "0.1"])
    succeeds(d_recompute_vis.main, [*page_run, "--neurons", "all", "--max_pages", "0", "--viewer", "viewer"])
    pages = root / "results/local/llama/neuroscope"
    (pages / "L0/N2").mkdir()
    shutil.copy(pages / "L0/N1/activations.pt", pages / "L0/N2/activations.pt")
    for name in ("foreign", "damaged"):
        shutil.copytree(pages / "viewer", pages / name)
    meta = pages / "foreign/data/meta.js"
    text = meta.read_text()
    foreign = {**json.loads(text[text.index("(") + 1:text.rindex(");")]), "model": "someone/else"}
    foreign["checksum"] = meta_checksum(foreign)  # whole: a viewer of another model, not a damaged one
    meta.write_text(js_call("meta", foreign))
    index = pages / "damaged/data/index.js"
    index.write_bytes(index.read_bytes()[:len(index.read_bytes()) // 2])
    (pages / "my_notes").mkdir()
    (pages / "my_notes/notes.txt").write_text("keep me")
    (pages / "a_file").write_text("keep me too")
    (pages / "link").symlink_to(pages / "viewer")
    shutil.copytree(root / "data/docs", root / "data/docs_notes")
    (root / "data/docs_notes/notes.txt").write_text("keep me")
    os.mkfifo(root / "fifo.txt")
    (root / "empty.jsonl").write_bytes(b"")
    (root / "ablation_file/local/llama").mkdir(parents=True)
    (root / "ablation_file/local/llama/ablation").write_text("x")
    shutil.copytree(work["model"], root / "swapped")
    tokenizer = json.loads((root / "swapped/tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    vocab["a"], vocab["e"] = vocab["e"], vocab["a"]
    (root / "swapped/tokenizer.json").write_text(json.dumps(tokenizer))


@pytest.mark.parametrize("case", CATALOGUE, ids=[case.label for case in CATALOGUE])
def test_hostile_command_lines(case, hostile_tree, work, monkeypatch):
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    fill = {"{ROOT}": str(hostile_tree), "{MODEL}": str(work["model"]), "{DATA}": str(hostile_tree / "data"),
            "{RESULTS}": str(hostile_tree / "results")}
    argv = [_fill(a, fill) for a in case.argv]
    line = refused(case.script.main, argv, hostile_tree, case.match)
    assert_flags_exist(line, case.script)


def _fill(text: str, fill: dict[str, str]) -> str:
    for key, value in fill.items():
        text = text.replace(key, value)
    return text


@pytest.mark.slow
def test_a_real_process_ends_with_one_line(work, tmp_path):
    """As a user sees it: a real process, a bad environment variable, exit status 2 and one line."""
    proc = subprocess.run([sys.executable, "-m", "neuroscope.b_activations", "--model", str(work["model"]), "--datadir",
                           str(work["datadir"]), "--dataset", "docs", "--save_to", "x"], cwd=str(ROOT),
                          env={**os.environ, "WORLD_SIZE": "two", "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: the environment variable WORLD_SIZE='two': 'two' is not a whole number"]
