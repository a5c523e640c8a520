"""The folder of a viewer: its marker, the names it may take, and its replacement.

A viewer folder carries a marker file (`neuroscope_viewer.json`: what it is, of which model, dataset and statistics,
the last by their fingerprint); only a folder with that marker is ever replaced, never a page folder, a file, a
symbolic link or a folder of the user's.
A new viewer is written into a hidden folder beside the old one and swapped in (`artifacts.replace_folder`), so
that a kill or a full disk leaves the old viewer whole.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gated_core.artifacts import TEMPORARY_EXTRA, atomic_write_text, remove_stale_folders, replace_folder, staging_folder
from gated_core.errors import UserError

VIEWER_MARKER = "neuroscope_viewer.json"  # in every viewer folder this module writes: what it is, of which model
VIEWER_KIND = "neuroscope_viewer"
# of the meta, recorded in the marker (statistics_fingerprint: of the statistics the viewer was made from)
MARKER_FIELDS = ("model", "dataset", "n_layers", "d_mlp", "tokens", "statistics_fingerprint")
PAGE_FOLDER = re.compile(r"L[0-9]+")  # the folders of the neuron pages (neuroscope/view/pages.py)
PAGE_FILES = ("index.html", "neurons.json")  # the index of the neuron pages, beside them
# every path a viewer holds (relative to its folder): what replace_viewer may delete with it
# (a wide layer's data in chunks, layer_<layer>_<chunk>.js, its list in pages, layer_<layer>_<page>.html; the search by
# token in shards, top_<shard>.js and search_<shard>.js, or as one search.js before it was ranked)
VIEWER_FILES = re.compile(r"viewer\.html|neuroscope_viewer\.json|data|lists|lists/(index|layer_\d+(_\d+)?)\.html|"
                          r"data/(meta|vocab|index|search|(search|top)_\d+|docs_\d+|layer_\d+(_\d+)?)\.js")
DEFAULT_NAME_MAX = 255


def write_marker(folder: Path, meta: dict[str, Any]) -> None:
    """The marker of a viewer folder, from the viewer's meta (`meta.js`): replace_viewer replaces only marked folders."""
    marker = {"kind": VIEWER_KIND, "written_by": "neuroscope/view/viewer.py (d_recompute_vis.py --viewer)",
              **{key: meta.get(key) for key in MARKER_FIELDS}}
    atomic_write_text(Path(folder) / VIEWER_MARKER, json.dumps(marker, indent=1) + "\n")


def viewer_marker(folder: Path) -> dict[str, Any] | None:
    """The marker of a viewer folder that this module wrote, or None (no marker, or not one of ours)."""
    path = Path(folder) / VIEWER_MARKER
    if path.is_symlink() or not path.is_file():
        return None
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return marker if isinstance(marker, dict) and marker.get("kind") == VIEWER_KIND else None


def is_viewer(folder: Path) -> bool:
    """Whether `folder` is a viewer folder that this module wrote: a folder (not a link) with the marker, or a viewer
    written before markers existed (its `data/meta.js` is a viewer's), holding nothing but a viewer's files."""
    folder = Path(folder)
    if not folder.is_dir() or folder.is_symlink():
        return False
    if viewer_marker(folder) is None and not _legacy_viewer(folder):
        return False
    return not foreign_files(folder)


def _legacy_viewer(folder: Path) -> bool:
    """A viewer of an earlier version, without the marker: its page and the meta script of a viewer are there."""
    meta = folder / "data" / "meta.js"
    if not (folder / "viewer.html").is_file() or meta.is_symlink() or not meta.is_file():
        return False
    with meta.open("rb") as handle:
        return handle.read(len(b"neuroscope.meta(")) == b"neuroscope.meta("


def foreign_files(folder: Path) -> list[str]:
    """What a viewer folder holds besides the viewer's own files (and links, which a viewer never has)."""
    return sorted(str(path.relative_to(folder)) for path in Path(folder).rglob("*")
                  if path.is_symlink() or not VIEWER_FILES.fullmatch(path.relative_to(folder).as_posix()))


def name_limit(folder: Path) -> int:
    """The longest file name (in bytes) that the file system of `folder` (or of its nearest existing parent) takes."""
    for candidate in (folder, *folder.parents):
        if candidate.is_dir():
            try:
                return int(os.pathconf(candidate, "PC_NAME_MAX"))
            except (OSError, ValueError):
                return DEFAULT_NAME_MAX
    return DEFAULT_NAME_MAX


def check_viewer_target(folder: Path) -> None:
    """Refuse, before any work, a viewer folder that is a page folder, too long a name, a symbolic link, a file or a
    folder that is not a viewer this module wrote: only those are replaced."""
    folder, name = Path(folder), Path(folder).name
    advice = "choose another --viewer NAME"
    if PAGE_FOLDER.fullmatch(name):
        raise UserError(f"--viewer {name}: {name} is a page folder (the neuron pages of layer {name[1:]}); {advice}")
    if name in PAGE_FILES:  # the other names a viewer may not take are refused by the flag itself (cli.plain_name)
        raise UserError(f"--viewer {name}: a name kept for the page index; {advice}")
    limit = name_limit(folder.parent) - TEMPORARY_EXTRA
    if len(os.fsencode(name)) > limit:
        raise UserError(f"--viewer {name[:24]}…: too long a folder name for this file system (at most {limit} bytes, "
                        f"this one has {len(os.fsencode(name))}); {advice}")
    if folder.is_symlink():
        raise UserError(f"{folder} is a symbolic link; --viewer replaces only viewers that d_recompute_vis.py wrote: {advice}")
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} exists and is not a folder; --viewer replaces only viewers that d_recompute_vis.py wrote: {advice}")
    if folder.exists() and not is_viewer(folder):
        foreign = foreign_files(folder)[:3] if viewer_marker(folder) is not None or _legacy_viewer(folder) else []
        what = (f"holds files the viewer did not write ({', '.join(foreign)})" if foreign
                else f"is not a viewer written by d_recompute_vis.py (no {VIEWER_MARKER} in it)")
        raise UserError(f"{folder} {what}; --viewer replaces only viewers it wrote: {advice}, or move the folder (or "
                        "those files) away yourself")


def replace_viewer(target: Path, build: Callable[[Path], dict[str, Any]]) -> int:
    """Write a viewer into a hidden folder beside `target` (`build` fills it and returns its meta), mark it, and swap it
    in for the viewer at `target`, which stays whole until then. Call only while holding the pages lock: what a
    killed run left beside `target` is removed first. Returns the new viewer's size in bytes."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_folders(target)
    check_viewer_target(target)
    staging = staging_folder(target)
    try:
        write_marker(staging, build(staging))  # the marker last: a viewer with a marker is whole
        replace_folder(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return sum(path.stat().st_size for path in target.rglob("*") if path.is_file())
