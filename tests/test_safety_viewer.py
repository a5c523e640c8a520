"""Data safety of the whole-model viewer (issue "data safety, round 2"): `--viewer NAME` replaces only a viewer
it wrote (atomically, under the pages lock), `--from_viewer` copies only an intact viewer of this model and
these statistics, windows fit in the documents, a malformed address opens the index, and the model's index
links a viewer of any name.

Hostile command lines end in one `error:` line with the file tree unchanged (`refused`), before the model loads.
"""

from __future__ import annotations

import errno
import html
import json
import os
import re
import shutil
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest
from helpers import ROOT, VIEWER_PAGES, call, call_arguments, copied, dump_dom, from_viewer_args, refused, succeeds, viewer_args

from gated_core.locks import hold_lock
from neuroscope import d_recompute_vis
from neuroscope.data.dataset_store import load_tokenized
from wcos_casestudies.report import write_results_index

COMMITTED_VIEWER = ROOT / "results/HuggingFaceTB/SmolLM2-135M-Instruct/neuroscope/viewer-case-studies"


def contents(folder: Path) -> dict[str, bytes]:
    """Every file below `folder` with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def viewer_tree(work, tmp_path_factory):
    """A results tree with the page of neuron 0.1 (folder L0), the viewer `viewer` of every neuron, and a user's
    folder, a file and a symbolic link beside them."""
    root = tmp_path_factory.mktemp("viewer_safety")
    results = root / "results"
    shutil.copytree(work["results"], results)
    succeeds(d_recompute_vis.main, viewer_args(work, results, "--neurons", "0.1"))
    succeeds(d_recompute_vis.main, viewer_args(work, results, "--neurons", "all"))
    pages = root / VIEWER_PAGES
    (pages / "my_notes").mkdir()
    (pages / "my_notes" / "notes.txt").write_text("keep me")
    (pages / "a_file").write_text("keep me too")
    (pages / "link").symlink_to(pages / "viewer")
    return root


# ----------------------------------------------------------------------------- 1. what --viewer replaces


def test_viewer_replaces_only_viewers_it_wrote(work, viewer_tree, monkeypatch):
    """Page folders, a user's folder, a file, a symbolic link and a name too long for the file system are refused in
    one line, before the model is loaded, by the recomputing run and by --from_viewer alike."""
    import neuroscope.view.workflow

    def no_work(*args, **kwargs):
        raise AssertionError("the model was loaded before the viewer's folder was checked")

    monkeypatch.setattr(neuroscope.view.workflow, "load_inputs", no_work)
    results = viewer_tree / "results"
    for name, match in (("L0", "page folder"), ("L12", "page folder"), ("my_notes", "not a viewer"),
                        ("a_file", "not a folder"), ("link", "symbolic link"), ("neurons.json", "kept for the page index"),
                        ("neurons.json.lock", "kept for"), (".viewer.x.partial", "kept for"),
                        ("v" * 250, "too long"), ("w" * 300, "too long")):
        refused(d_recompute_vis.main, viewer_args(work, results, "--neurons", "all", "--viewer", name), viewer_tree, match)
        refused(d_recompute_vis.main, from_viewer_args(work, results, "viewer", name), viewer_tree, match)
    assert (viewer_tree / VIEWER_PAGES / "L0" / "N1" / "vis.html").is_file()
    assert (viewer_tree / VIEWER_PAGES / "my_notes" / "notes.txt").read_text() == "keep me"


def test_a_viewer_is_replaced_in_place_and_leftovers_go(work, viewer_tree, tmp_path):
    """Its own viewer is replaced (under the pages lock); what a killed run left beside it is removed."""
    tree = copied(viewer_tree, tmp_path)
    pages = tree / VIEWER_PAGES
    for leftover in (".viewer.k1ll3d_x.partial", ".viewer.k1ll3d_x.replaced", ".part.k1ll3d_x.partial"):
        (pages / leftover / "data").mkdir(parents=True)
        (pages / leftover / "data" / "meta.js").write_text("neuroscope.meta({")
    succeeds(d_recompute_vis.main, viewer_args(work, tree / "results", "--neurons", "all", "--viewer", "viewer"))
    succeeds(d_recompute_vis.main, from_viewer_args(work, tree / "results", "viewer", "part"))
    succeeds(d_recompute_vis.main, from_viewer_args(work, tree / "results", "viewer", "part"))  # replaces its own
    assert hidden(pages) == []
    assert sorted(p.name for p in pages.iterdir()) == ["L0", "a_file", "index.html", "link", "my_notes", "neurons.json",
                                                       "part", "viewer"]
    assert call_arguments(pages / "part" / "data" / "meta.js")[0]["layers"] == [1]
    assert (pages / "part" / "data" / "layer_1.js").read_bytes() == (pages / "viewer" / "data" / "layer_1.js").read_bytes()


def test_one_lock_for_the_pages_and_the_viewers(work, viewer_tree):
    """While a run holds the lock of the pages (neurons.json.lock), no run writes a viewer beside them."""
    results = viewer_tree / "results"
    with hold_lock(viewer_tree / VIEWER_PAGES / "neurons.json"):
        for argv in (viewer_args(work, results, "--neurons", "all"), from_viewer_args(work, results, "viewer", "part")):
            refused(d_recompute_vis.main, argv, viewer_tree, f"process {os.getpid()}")


def test_an_interrupted_viewer_write_keeps_the_old_viewer(work, viewer_tree, tmp_path, monkeypatch):
    """A full disk (or a kill) in the middle of writing: the old viewer stays byte for byte, nothing is left beside it."""
    import neuroscope.view.viewer

    tree = copied(viewer_tree, tmp_path)
    pages = tree / VIEWER_PAGES
    real_write = neuroscope.view.viewer.atomic_write_text

    def full_disk(path, text):
        if Path(path).name == "index.js":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_write(path, text)

    monkeypatch.setattr(neuroscope.view.viewer, "atomic_write_text", full_disk)
    for argv, name in ((viewer_args(work, tree / "results", "--neurons", "all"), "viewer"),
                       (from_viewer_args(work, tree / "results", "viewer", "part"), "part")):
        if name == "part":
            monkeypatch.setattr(neuroscope.view.viewer, "atomic_write_text", real_write)
            succeeds(d_recompute_vis.main, argv)
            monkeypatch.setattr(neuroscope.view.viewer, "atomic_write_text", full_disk)
        before = contents(pages / name)
        outcome = call(d_recompute_vis.main, argv)
        assert outcome.code != 0 or outcome.crash is not None
        assert contents(pages / name) == before
        assert hidden(pages) == [] and not (pages / f"{name}.lock").exists()


def test_the_committed_viewer_carries_the_marker():
    """`make demo` replaces viewer-case-studies/ with --viewer: it must be marked as a viewer of its model."""
    from neuroscope.view.viewer_folder import is_viewer, viewer_marker

    meta = call_arguments(COMMITTED_VIEWER / "data" / "meta.js")[0]
    assert is_viewer(COMMITTED_VIEWER)
    assert {key: viewer_marker(COMMITTED_VIEWER)[key] for key in ("model", "dataset", "n_layers", "d_mlp")} == \
        {key: meta[key] for key in ("model", "dataset", "n_layers", "d_mlp")}


# ----------------------------------------------------------------------------- 2. and 3. what --from_viewer copies


def _rewrite_meta(folder: Path, **changes) -> None:
    """The meta with `changes`, sealed with its own checksum again, as a viewer written so would have it."""
    from neuroscope.view.checksums import meta_checksum

    meta = {**call_arguments(folder / "data" / "meta.js")[0], **changes}
    if "checksum" in meta:
        meta["checksum"] = meta_checksum(meta)
    text = json.dumps(meta, separators=(",", ":"))
    (folder / "data" / "meta.js").write_text(f"neuroscope.meta({text});\n")


def test_a_viewer_of_another_model_is_not_copied_in(work, viewer_tree, tmp_path):
    """A viewer folder copied in from another model (or made from other statistics): its meta does not fit this run."""
    tree = copied(viewer_tree, tmp_path)
    pages = tree / VIEWER_PAGES
    meta = call_arguments(pages / "viewer" / "data" / "meta.js")[0]
    changes = {"model": "someone/else", "n_layers": meta["n_layers"] + 30, "d_mlp": meta["d_mlp"] * 8,
               "statistics_fingerprint": "0123456789abcdef"}
    for key, value in changes.items():
        shutil.copytree(pages / "viewer", pages / f"foreign_{key}")
        _rewrite_meta(pages / f"foreign_{key}", **{key: value})
    for key, value in changes.items():
        match = "other statistics (fingerprint 01234567" if key == "statistics_fingerprint" else f"another model: its {key}"
        line = refused(d_recompute_vis.main, from_viewer_args(work, tree / "results", f"foreign_{key}", "part"), tree, match)
        assert f"foreign_{key}" in line and str(value)[:8] in line


DAMAGES = [("data/layer_1.js", "remove"), ("lists/layer_1.html", "remove"), ("lists/index.html", "remove"),
           ("data/docs_0.js", "remove"), ("data/vocab.js", "remove"), ("viewer.html", "remove"), ("data/meta.js", "truncate"),
           ("data/index.js", "truncate"), ("data/layer_1.js", "truncate"), ("viewer.html", "truncate"),
           ("lists/layer_1.html", "truncate")]


def test_a_damaged_viewer_is_not_copied(work, viewer_tree, tmp_path):
    """A file missing or cut short: one line naming it, before anything is written."""
    tree = copied(viewer_tree, tmp_path)
    pages = tree / VIEWER_PAGES
    for number, (name, damage) in enumerate(DAMAGES):
        folder = pages / f"damaged{number}"
        shutil.copytree(pages / "viewer", folder)
        if damage == "remove":
            (folder / name).unlink()
        else:
            text = (folder / name).read_text()
            (folder / name).write_text(text[:len(text) // 2])
    for number, (name, _) in enumerate(DAMAGES):
        refused(d_recompute_vis.main, from_viewer_args(work, tree / "results", f"damaged{number}", "part"), tree,
                str(pages / f"damaged{number}" / name))


# ----------------------------------------------------------------------------- 4. windows


def test_windows_and_context_fit_in_the_documents(work, viewer_tree, tmp_path):
    """--window and --context far beyond any document: capped at the longest document (no MemoryError)."""
    tree = copied(viewer_tree, tmp_path)
    succeeds(d_recompute_vis.main, viewer_args(work, tree / "results", "--neurons", "0.1", "--max_pages", "0", "--viewer", "wide",
                                               "--window", "200000", "200000", "--context", "200000", "200000"))
    dataset, _ = load_tokenized(work["datadir"] / "docs")
    longest = max(int(np.sum(mask)) for mask in dataset["attention_mask"])
    folder = tree / VIEWER_PAGES / "wide" / "data"
    assert call_arguments(folder / "layer_0.js")[1]["width"] == longest
    assert call_arguments(folder / "meta.js")[0]["context"] == [longest, longest]


# ----------------------------------------------------------------------------- 5. a malformed address


@pytest.mark.slow
def test_a_malformed_address_opens_the_index(viewer_tree, tmp_path):
    """`#%` or `#?sort=%zz` in the address: the index (a malformed part of the filters is left out), never a hang."""
    folder = viewer_tree / VIEWER_PAGES / "viewer"
    meta = call_arguments(folder / "data" / "meta.js")[0]
    total, d_mlp = meta["n_layers"] * meta["d_mlp"], meta["d_mlp"]
    page = (folder / "viewer.html").as_uri()
    for address, shown in (("#%", total), ("#?sort=%zz", total), ("#%E0%A4%A", total), ("#?layer=1&sort=%zz&role=%", d_mlp)):
        dom = dump_dom(page + address)
        assert f">{shown} of {total} neurons<" in dom, (address, re.search(r'id="status"[^<]*<', dom))
        assert "loading" not in re.search(r'id="status"[^>]*>([^<]*)<', dom).group(1)


# ----------------------------------------------------------------------------- 6. the model's index


def test_the_model_index_links_a_viewer_of_any_name(tmp_path):
    folder = tmp_path / "model"
    for name in ("a#b", "c?d", "e%20f", "g h"):
        (folder / "neuroscope" / name).mkdir(parents=True)
        (folder / "neuroscope" / name / "viewer.html").write_text("<!DOCTYPE html>")
    page = write_results_index(folder, "model").read_text()
    targets = [html.unescape(href) for href in re.findall(r'href="([^"]*)"', page)]
    assert len(set(targets)) == 4  # each viewer linked (in "Start here" and in the list of pages)
    for href in targets:
        parts = urlsplit(href)
        assert not parts.scheme and not parts.query and not parts.fragment, href
        assert (folder / unquote(parts.path)).is_file(), href


def test_a_viewer_holding_your_files_is_not_replaced(work, viewer_tree, tmp_path):
    """A marked viewer with a file of yours inside (notes, a screenshot) is refused: replacing it would delete that."""
    tree = copied(viewer_tree, tmp_path)
    (tree / VIEWER_PAGES / "viewer" / "lists" / "my_screenshot.png").write_bytes(b"\x89PNG mine")
    refused(d_recompute_vis.main, viewer_args(work, tree / "results", "--neurons", "all"), tree, "my_screenshot.png")


def test_a_viewer_of_the_previous_version_is_replaced(work, viewer_tree, tmp_path):
    """A viewer written before markers existed (only a viewer's files, `data/meta.js` a viewer's) is replaced, and
    then carries the marker; with the folder's ordinary permissions (not those of a temporary folder)."""
    from neuroscope.view.viewer_folder import VIEWER_MARKER, viewer_marker

    tree = copied(viewer_tree, tmp_path)
    viewer = tree / VIEWER_PAGES / "viewer"
    (viewer / VIEWER_MARKER).unlink()
    succeeds(d_recompute_vis.main, viewer_args(work, tree / "results", "--neurons", "all"))
    assert viewer_marker(viewer)["model"] == call_arguments(viewer / "data" / "meta.js")[0]["model"]
    umask = os.umask(0)
    os.umask(umask)
    assert viewer.stat().st_mode & 0o777 == 0o777 & ~umask


def test_a_kill_between_the_two_renames_keeps_the_old_viewer(work, viewer_tree, tmp_path):
    """Killed after the old viewer was renamed aside and before the new one took its place: the next run puts the old
    one back (it is the only whole copy) before it decides what to replace."""
    tree = copied(viewer_tree, tmp_path)
    pages = tree / VIEWER_PAGES
    before = contents(pages / "viewer")
    (pages / "viewer").rename(pages / ".viewer.k1ll3d_x.replaced")
    (pages / ".viewer.k1ll3d_y.partial").mkdir()  # the new one, half written
    with hold_lock(pages / "neurons.json"):  # a run that is refused by the lock changes nothing
        refused(d_recompute_vis.main, viewer_args(work, tree / "results", "--neurons", "all"), tree, "being written")
    from gated_core.artifacts import remove_stale_folders

    remove_stale_folders(pages / "viewer")
    assert contents(pages / "viewer") == before and hidden(pages) == []


def test_leftovers_of_one_name_are_not_those_of_another(tmp_path):
    """`docs` and `docs.v2` side by side: the clean-up of `docs` never touches what a run of `docs.v2` is writing."""
    from gated_core.artifacts import remove_stale_folders

    for name in (".docs.v2.abcdefgh.partial", ".docs.v2.abcdefgh.replaced", ".docs.abcdefgh.partial"):
        (tmp_path / name).mkdir()
    (tmp_path / "docs").mkdir()
    remove_stale_folders(tmp_path / "docs")
    assert hidden(tmp_path) == [".docs.v2.abcdefgh.partial", ".docs.v2.abcdefgh.replaced"]
