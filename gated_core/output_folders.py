"""Output folders that a tool of this project owns: a marker in each, and their replacement as one unit.

A folder that a tool writes whole (a probe's page and data, ...) carries a marker file, `wcos_output.json`:
{"kind": KIND, "written_by": SCRIPT, "files": [every path it holds], **fields}. Only a folder of the same kind
(or one that the previous version wrote without a marker, whose paths all match the kind's `legacy` pattern) is
ever replaced: never a symbolic link, a file, a folder of the user's, nor a folder with links or with files that
the tool did not write.
A new folder is written into a hidden staging folder beside the old one, marked last and swapped in
(`artifacts.replace_folder`), so that a kill or a full disk leaves the old folder or the new one whole, never a
mixture of two runs; the next run (holding the folder's lock, `locks.hold_lock`) removes what a killed run left.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .artifacts import TEMPORARY_SUFFIX, atomic_write_text, remove_stale_folders, replace_folder, staging_folder
from .errors import UserError

MARKER_NAME = "wcos_output.json"  # in every output folder that a tool of this project writes whole
SHOWN_PATHS = 3  # foreign paths named in a refusal
RANDOM_REGEX = "[a-z0-9_]{8}"  # the random part of a temporary name that tempfile makes, as a regular expression
DEFAULT_ADVICE = "write elsewhere, or move that folder away yourself"
RESULTS_ADVICE = "give another --results_dir, or move that folder away yourself"  # for the folders below it


def read_marker(folder: Path) -> dict[str, Any] | None:
    """The marker of `folder` whatever its kind, or None (a link, no marker, a marker that is not a JSON object)."""
    path = Path(folder) / MARKER_NAME
    if Path(folder).is_symlink() or path.is_symlink() or not path.is_file():
        return None
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return marker if isinstance(marker, dict) else None


def folder_marker(folder: Path, kind: str) -> dict[str, Any] | None:
    """The marker of `folder` when a tool wrote it as a folder of `kind`, else None."""
    marker = read_marker(folder)
    return marker if marker is not None and marker.get("kind") == kind else None


def linked_part(folder: Path) -> Path | None:
    """The symbolic link among `folder` and its missing parents (up to the first one that exists), or None: a link
    there would send the output elsewhere (or, dangling, stop the run half-way)."""
    for candidate in (Path(folder), *Path(folder).parents):
        if candidate.is_symlink():
            return candidate
        if candidate.exists():
            return None
    return None


def relative_paths(folder: Path) -> list[str]:
    """Every path under `folder` (files and folders, links not followed), relative to it, sorted."""
    return sorted(path.relative_to(folder).as_posix() for path in Path(folder).rglob("*"))


def foreign_paths(folder: Path, kind: str, legacy: re.Pattern[str] | None) -> tuple[bool, list[str]]:
    """Whether an existing folder is one that a tool of `kind` may write into (marked as of `kind`, empty, or a folder
    of the previous version: unmarked, with at least one path matching `legacy`), and the paths in it that the tool
    did not write (links always count; for a folder of another kind or of no kind, every path that is not its)."""
    paths = relative_paths(folder)
    links = [path for path in paths if (Path(folder) / path).is_symlink()]
    marker = folder_marker(folder, kind)
    if marker is not None:
        files = marker.get("files")
        listed = {MARKER_NAME, *(name for name in (files if isinstance(files, list) else []) if isinstance(name, str))}
        return True, sorted({*links, *(path for path in paths if path not in listed)})
    ours = [path for path in paths if legacy is not None and legacy.fullmatch(path)]
    foreign = sorted({*links, *(path for path in paths if path not in ours)})
    return read_marker(folder) is None and (bool(ours) or not paths), foreign


def check_output_folder(folder: Path, kind: str, legacy: re.Pattern[str] | None = None,
                        advice: str = DEFAULT_ADVICE, others_kept: bool = False) -> None:
    """Refuse, in one line and before any work, an output folder of `kind` that its tool may not write: a symbolic
    link (the folder, or a missing parent), a file, a folder of another kind, a folder without this kind's marker
    that holds none of the tool's files (`legacy`: what the previous version wrote), or a folder with links or with
    files its tool did not write (`others_kept`: a folder written file by file, never replaced, may hold files of the
    user's beside the tool's, but no link). `advice`: what to do instead, for the message."""
    folder = Path(folder)
    link = linked_part(folder)
    if link is not None:
        raise UserError(f"{link} is a symbolic link; the {kind} is written only into folders of its own: {advice}")
    if not folder.exists():
        return
    if not folder.is_dir():
        raise UserError(f"{folder} exists and is not a folder; {advice}")
    ours, foreign = foreign_paths(folder, kind, legacy)
    other = read_marker(folder)
    shown = f"{', '.join(foreign[:SHOWN_PATHS])}{', …' if len(foreign) > SHOWN_PATHS else ''}"
    if other is not None and other.get("kind") != kind:
        raise UserError(f"{folder} is a folder of another kind ({other.get('kind')!r}, written by "
                        f"{other.get('written_by')}); it is never written into: {advice}")
    if not ours:
        raise UserError(f"{folder} is not a folder of the {kind}: it holds none of its files, only {shown}; it is never "
                        f"written into: {advice}")
    links = [path for path in foreign if (folder / path).is_symlink()]
    if links if others_kept else foreign:
        shown = ", ".join((links or foreign)[:SHOWN_PATHS]) + (", …" if len(links or foreign) > SHOWN_PATHS else "")
        raise UserError(f"{folder} holds {'links' if others_kept else 'paths'} that the {kind} did not write ({shown}); "
                        f"{advice}, or move them away yourself")


def write_folder_marker(folder: Path, kind: str, fields: dict[str, Any]) -> None:
    """The marker of a finished folder: its kind, the script that wrote it, every path in it, and `fields`."""
    marker = {"kind": kind, "written_by": Path(sys.argv[0]).name or "python", **fields,
              "files": relative_paths(folder)}
    atomic_write_text(Path(folder) / MARKER_NAME, json.dumps(marker, indent=1) + "\n")


@contextmanager
def rewrite_folder(folder: Path, kind: str, fields: dict[str, Any], legacy: re.Pattern[str] | None = None,
                   advice: str = DEFAULT_ADVICE) -> Iterator[Path]:
    """Write the folder of `kind` at `folder` as one unit: removes what killed runs left beside it, checks it
    (`check_output_folder`), yields a new hidden staging folder to fill, and when the block ends without an error
    writes the marker (with `fields`) last and swaps the staging folder in; after an error only the staging folder
    goes. Call only while holding the lock of `folder` (`locks.hold_lock`)."""
    folder = Path(folder)
    check_output_folder(folder, kind, legacy, advice)  # before anything is made on the way to it
    folder.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_folders(folder)
    staging = staging_folder(folder)
    try:
        yield staging
        write_folder_marker(staging, kind, fields)
        check_output_folder(folder, kind, legacy, advice)  # again: nothing of the user's came in while it was written
        replace_folder(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def legacy_pattern(names: str) -> re.Pattern[str]:
    """The paths that the previous version of a tool left in its folder, from a regular expression of its file
    `names`: those files, and the temporary files of their interrupted atomic writes (`artifacts.atomic_write_bytes`)."""
    return re.compile(rf"(?:{names})|\.(?:{names})\.{RANDOM_REGEX}{re.escape(TEMPORARY_SUFFIX)}")
