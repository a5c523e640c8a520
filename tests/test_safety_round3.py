"""Data safety, round 3: output folders never followed through symbolic links, statistics rewritten in place,
files that lost their checksum, inputs that are not regular files, connections under a lock and within what the
model allows.

Each case was found by a hostile round on the newest surfaces; each test failed on the commit before this round.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from helpers import call, copy_data, page_args, pass_args, refused, succeeds

from gated_core.artifacts import load_artifact, save_artifact
from gated_core.locks import hold_lock
from neuroscope import b_activations, c_neuron_vis, d_recompute_vis, e_ablate, e_frequency, g_connections
from neuroscope.activation_pass.activations import STATISTICS_VERSION
from wcos_casestudies import main as main_script

MODEL_FOLDER = Path("local/llama")  # below --results_dir


def users_folder(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    """A folder of the user's with files that a run would write there if it followed a link."""
    folder = tmp_path / "mine"
    folder.mkdir()
    files = {name: f"the user's {name}\n".encode() for name in ("probe.json", "frequency.csv", "connections.csv",
                                                                 "stats.pt", "data.pt", "vis.html", "index.html")}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder, files


def unchanged(folder: Path, files: dict[str, bytes]) -> bool:
    return sorted(p.name for p in folder.iterdir()) == sorted(files) and all(
        (folder / name).read_bytes() == data for name, data in files.items())


def connections_args(work, results: Path, *extra) -> list:
    return ["--model", work["model"], "--results_dir", results, "--device", "cpu", "--no_embedding", *extra]


# ----------------------------------------------------------------------------- output folders and links


@pytest.mark.parametrize("where", ["frequency", "ablation", "connections", "neuroscope", "neuroscope/L0", "model"])
def test_outputs_are_never_written_through_a_link(work, tmp_path, where):
    """An output folder below --results_dir that is a symbolic link to a folder of the user's: refused in one line,
    the user's files untouched (before: written into the link's target, exit 0)."""
    mine, files = users_folder(tmp_path)
    results = tmp_path / "results"
    shutil.copytree(work["results"], results)
    model = results / MODEL_FOLDER
    link = results if where == "model" else model
    if where == "model":
        shutil.rmtree(model)
        link = model
    else:
        link = model / where
        link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(mine, target_is_directory=True)
    data = ["--datadir", work["datadir"], "--activations", "acts"]
    runs = {"frequency": (e_frequency, ["--model", work["model"], "--results_dir", results, *data]),
            "ablation": (e_ablate, ["--model", work["model"], "--results_dir", results, *data, "--device", "cpu",
                                    "--mtokens", "0.0001", "--random_seeds", "1"]),
            "connections": (g_connections, connections_args(work, results)),
            "neuroscope": (d_recompute_vis, page_args(work["model"], work["datadir"], results)),
            "neuroscope/L0": (d_recompute_vis, page_args(work["model"], work["datadir"], results)),
            "model": (main_script, ["--model", work["model"], "--results_dir", results, "--quartiles"])}
    script, argv = runs[where]
    if where == "ablation":  # the ablation's own folder is ablation/<dataset>: the link one level up
        link.unlink()
        (model / "ablation").symlink_to(mine, target_is_directory=True)
    refused(script.main, argv, tmp_path, "symbolic link")
    assert unchanged(mine, files)


def test_statistics_are_never_written_through_a_link(work, tmp_path):
    mine, files = users_folder(tmp_path)
    datadir = copy_data(work, tmp_path)
    (datadir / "linked").symlink_to(mine, target_is_directory=True)
    refused(b_activations.main, pass_args(work["model"], datadir, "linked"), tmp_path, "symbolic link")
    assert unchanged(mine, files)


def test_a_results_dir_that_is_a_link_is_the_users_choice(work, tmp_path):
    """--results_dir itself may be a link (a results tree on another disk): only the folders below it are the
    project's."""
    real = tmp_path / "disk" / "results"
    shutil.copytree(work["results"], real)
    (tmp_path / "results").symlink_to(real, target_is_directory=True)
    succeeds(main_script.main, ["--model", work["model"], "--results_dir", tmp_path / "results", "--quartiles"])


# ----------------------------------------------------------------------------- statistics rewritten in place


def test_statistics_rewritten_in_place_refuse_what_was_made_from_them(work, tmp_path):
    """A tensor of stats.pt edited and saved with the project's own writer, its metadata kept (the recorded tensor
    digest too): the pages made from the old numbers are refused (before: the page drew the edited maximum beside
    the old recomputed values, exit 0)."""
    datadir = copy_data(work, tmp_path)
    results = tmp_path / "results"
    shutil.copytree(work["results"], results)
    succeeds(d_recompute_vis.main, page_args(work["model"], datadir, results))
    path = datadir / "acts" / "stats.pt"
    data = load_artifact(path)
    data["top_values"] = data["top_values"].clone()
    data["top_values"][0, 1, 0] *= 2
    save_artifact(data, path)
    line = refused(c_neuron_vis.main, page_args(work["model"], datadir, results), tmp_path, "other statistics")
    assert "activations.pt" in line
    outcome = call(c_neuron_vis.main, page_args(work["model"], datadir, results))
    assert "changed after the pass" in outcome.err  # the note says why the statistics count as other ones
    # made again from the edited numbers, the recomputation itself finds them wrong
    refused(d_recompute_vis.main, page_args(work["model"], datadir, results), tmp_path, "does not match the statistics")


# ----------------------------------------------------------------------------- checksums and what messages saw


def test_a_file_that_lost_its_checksum_is_refused_saying_what_it_records(work, tmp_path):
    """Statistics files have carried a checksum since statistics had a kind: one that records its kind (and its
    version) but no checksum lost it after it was written (before: read without verification, "written by an older
    version")."""
    datadir = copy_data(work, tmp_path)
    path = datadir / "acts" / "stats.pt"
    data = torch.load(path, weights_only=True)
    del data["sha256"]
    data["top_values"] = data["top_values"] * 2
    torch.save(data, path)
    line = refused(c_neuron_vis.main, page_args(work["model"], datadir, tmp_path / "results"), tmp_path, "no checksum")
    assert "activation_statistics" in line and f"statistics version {STATISTICS_VERSION}" in line
    assert "older version" not in line


@pytest.mark.parametrize("flag", ["--neurons_from", "--activations"])
def test_a_fifo_is_named_as_such(work, tmp_path, flag):
    """A FIFO given where a file is read: "a FIFO, not a regular file", never "no such file" (and never opened: a
    FIFO's open waits for a writer)."""
    datadir = copy_data(work, tmp_path)
    if flag == "--neurons_from":
        fifo = tmp_path / "neurons.txt"
        argv = [*page_args(work["model"], datadir, tmp_path / "results"), "--neurons_from", fifo]
    else:
        (datadir / "piped").mkdir()
        fifo = datadir / "piped" / "stats.pt"
        argv = page_args(work["model"], datadir, tmp_path / "results", "piped")
    os.mkfifo(fifo)
    refused(d_recompute_vis.main, argv, tmp_path, "a FIFO, not a regular file")


# ----------------------------------------------------------------------------- connections


def test_connections_top_k_is_bounded_by_the_model(work, tmp_path, monkeypatch):
    """--top_k 1000000000 tried to allocate 1.5 TB: now one line, before the weights are read."""
    results = tmp_path / "results"
    line = refused(g_connections.main, connections_args(work, results, "--top_k", "1000000000"), tmp_path,
                   "no list can be that long")
    assert "the neurons of the other layers" in line
    from neuroscope.connections import run as connections_run

    memory = 1 << 19  # a machine of 512 KiB
    monkeypatch.setattr(connections_run, "memory_bytes", lambda device: memory)
    line = refused(g_connections.main, connections_args(work, results, "--top_k", "50"), tmp_path, "MiB of CPU memory here")
    config = json.loads((work["model"] / "config.json").read_text())
    # by hand: 4 kinds without the embedding's, 2 rankings each without statistics, 16 bytes an entry, room for a merge
    per_k = 4 * 2 * config["num_hidden_layers"] * config["intermediate_size"] * 16 * 3
    fits = int(line.split("at most --top_k ")[1].split()[0])
    assert fits * per_k <= memory < (fits + 1) * per_k
    succeeds(g_connections.main, connections_args(work, results, "--top_k", str(fits)))



def test_one_connections_run_at_a_time(work, tmp_path):
    """Two g_connections.py runs into one folder: the second stops naming the first (before: connections.pt of one,
    connections.csv and the class table of the other)."""
    results = tmp_path / "results"
    shutil.copytree(work["results"], results)
    with hold_lock(results / MODEL_FOLDER / "connections"):
        refused(g_connections.main, connections_args(work, results, "--top_k", "3"), tmp_path, f"process {os.getpid()}")


def test_connections_are_written_as_one_folder_and_leftovers_go(work, tmp_path):
    """A killed run left its staging folder (and an old folder set aside): the next run removes them; the folder it
    writes is marked, and an earlier version's folder (no marker, only its own files) is replaced."""
    results = tmp_path / "results"
    shutil.copytree(work["results"], results)
    folder = results / MODEL_FOLDER / "connections"
    folder.mkdir()
    (folder / "connections.csv").write_text("an earlier version's table\n")  # legacy: replaced
    staged = folder.parent / ".connections.k1ll3d00.partial"
    staged.mkdir()
    (staged / "connections.pt").write_bytes(b"\0" * 4096)
    succeeds(g_connections.main, connections_args(work, results, "--top_k", "3"))
    assert not staged.exists() and not (folder / "connections.csv").exists()  # no --neurons, no case studies: no csv
    assert json.loads((folder / "wcos_output.json").read_text())["kind"] == "connections"
    assert sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(".connections")) == []
    (folder / "notes.txt").write_text("mine\n")  # a file of the user's in the folder: never replaced with it
    refused(g_connections.main, connections_args(work, results, "--top_k", "3"), tmp_path, "notes.txt")


@pytest.mark.parametrize("where", ["frequency", "ablation/docs"])
def test_a_folder_of_the_users_is_never_written_into(work, tmp_path, where):
    """A folder of the user's where the frequency or the ablation files go (a file of theirs in it): refused in one
    line, before any work (before: their files beside ours, or overwritten when the names met)."""
    results = tmp_path / "results"
    shutil.copytree(work["results"], results)
    folder = results / MODEL_FOLDER / where
    folder.mkdir(parents=True)
    (folder / "frequency.csv").write_text("the user's own table\n")  # a name the frequency writes
    (folder / "draft.md").write_text("the user's notes\n")
    data = ["--model", work["model"], "--results_dir", results, "--datadir", work["datadir"], "--activations", "acts"]
    script, argv = ((e_frequency, data) if where == "frequency"
                    else (e_ablate, [*data, "--device", "cpu", "--mtokens", "0.0001", "--random_seeds", "1"]))
    refused(script.main, argv, tmp_path, "draft.md" if where == "frequency" else "not a folder of the ablation")


def test_the_frequency_is_written_as_one_folder(work, tmp_path):
    """What a killed run left (its staging folder) goes; an earlier version's folder is replaced; the new one is
    marked."""
    results = tmp_path / "results"
    shutil.copytree(work["results"], results)
    folder = results / MODEL_FOLDER / "frequency"
    folder.mkdir(parents=True)
    (folder / "frequency.csv").write_text("an earlier version's table\n")
    (folder / ".frequency.csv.abcd1234.tmp").write_text("a killed write\n")
    staged = folder.parent / ".frequency.k1ll3d00.partial"
    staged.mkdir()
    succeeds(e_frequency.main, ["--model", work["model"], "--results_dir", results, "--datadir", work["datadir"],
                                "--activations", "acts", "--random_seeds", "2"])
    assert not staged.exists() and "earlier version" not in (folder / "frequency.csv").read_text()
    marker = json.loads((folder / "wcos_output.json").read_text())
    assert marker["kind"] == "frequency" and sorted(marker["files"]) == sorted(
        p.name for p in folder.iterdir() if p.name != "wcos_output.json")
