"""Saving and loading result files: `.pt` (default) or `.pickle`, atomic writes, metadata.

Only plain data is stored: tensors, numbers, strings, lists and dicts. `.pt` files are
read with `torch.load(weights_only=True)`; `.pickle` files store numpy arrays and are
read with an unpickler that accepts nothing but numpy arrays and builtin containers, so
a pickle from elsewhere is refused instead of executed.
"""

from __future__ import annotations

import contextlib
import glob
import io
import os
import pickle
import shutil
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .cli import check_regular_file
from .constants import ARTIFACT_FORMATS
from .errors import UserError, first_line
from .fingerprint import content_digest, kind_mismatch, short
from .naming import shown

PROJECT_TAG = "wcos_casestudies"
CHECKSUM_KEY = "sha256"  # top-level key of an artifact: content_digest of everything else in it
TEMPORARY_SUFFIX = ".tmp"
STAGING_SUFFIX = ".partial"  # a whole folder being written beside the one it replaces
REPLACED_SUFFIX = ".replaced"  # the old folder while the new one is swapped in
DEFAULT_REMEDY = "move it away and make it again"
KINDS_BEFORE_CHECKSUMS = ("cosines", "roles")  # data.pt and roles.pt recorded their kind one version before checksums
# meta["kind"] of each artifact, and how messages name it
KINDS = {
    "cosines": "the cosines of main.py (data.pt)",
    "roles": "the role statistics of casestudies.py (roles.pt)",
    "activation_statistics": "activation statistics of b_activations.py",
    "recomputed_examples": "recomputed activations of b2_recompute.py",
}
# what an artifact can be made from, by the meta key of that input's fingerprint: how messages name another one of
# it, and the likely reason it is another
MADE_FROM = {
    "weights_fingerprint": ("other weights", "another checkpoint of the same name, or its files changed"),
    "dataset_fingerprint": ("other contents of the dataset", "it was rebuilt since"),
    "statistics_fingerprint": ("other statistics", "b_activations.py ran again since, or on other inputs"),
    "tokenizer_fingerprint": ("another tokenizer", "other tokens, ids or special tokens, or its files changed since"),
}


def package_versions() -> dict[str, str]:
    """Versions of the packages whose behaviour the numbers depend on."""
    from importlib.metadata import PackageNotFoundError, version

    from . import __version__

    versions = {"wcos_casestudies": __version__}
    for name in ("torch", "transformers", "transformer-lens", "numpy", "gguf"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "absent"
    return versions


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file and a rename, never leaving half a file: a write that
    fails (a full disk, a read-only file system, Ctrl-C) removes its temporary file, and its OSError names `path`
    (the kernel names no file when a write or fsync fails)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    umask = os.umask(0)
    os.umask(umask)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX)
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o666 & ~umask)  # mkstemp makes 0600; results should be readable like any file
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):  # the error that stopped the write is the one to report
                Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            exc.filename, exc.filename2 = str(path), None
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Atomic write of a text file (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def markdown_table(frame: Any) -> str:
    """A pandas DataFrame as a Markdown table (no extra dependency)."""
    header = "| " + " | ".join(str(c).replace("|", "\\|") for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows]) + "\n"


def write_table(frame: Any, stem: Path, title: str = "") -> None:
    """Write a DataFrame as `stem.csv` and `stem.md` (atomically), the Markdown under an optional title; the CSV keeps
    the paper's class names (stored values), the Markdown shows them in the naming in use (`gated_core.naming`)."""
    atomic_write_text(Path(f"{stem}.csv"), frame.to_csv(index=False))
    atomic_write_text(Path(f"{stem}.md"), shown((f"# {title}\n\n" if title else "") + markdown_table(frame)))


def _to_numpy(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().numpy()
    if isinstance(obj, dict):
        return {k: _to_numpy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_numpy(v) for v in obj)
    return obj


def _to_torch(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, dict):
        return {k: _to_torch(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_torch(v) for v in obj)
    return obj


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


class _SafeUnpickler(pickle.Unpickler):
    """Accept only numpy arrays, numpy scalars and builtin containers."""

    ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("builtins", "slice"),
        ("collections", "OrderedDict"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED or (module == "numpy.dtypes" and name.endswith("DType")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def save_artifact(data: dict[str, Any], path: Path) -> Path:
    """Save a dict of plain data atomically, with a checksum of its contents; the suffix of `path`
    (.pt or .pickle) picks the format."""
    path = Path(path)
    payload = {key: value for key, value in _to_cpu(data).items() if key != CHECKSUM_KEY}
    payload[CHECKSUM_KEY] = content_digest(payload)
    buffer = io.BytesIO()
    if path.suffix == ".pickle":
        pickle.dump(_to_numpy(payload), buffer, protocol=pickle.HIGHEST_PROTOCOL)
    elif path.suffix == ".pt":
        torch.save(payload, buffer)
    else:
        raise UserError(f"{path}: unknown artifact format; use .pt or .pickle")
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _read_file(path: Path, remedy: str) -> Any:
    """The raw object in a `.pt` or `.pickle` file; a file that does not parse is a UserError naming it."""
    try:
        if path.suffix == ".pickle":
            with path.open("rb") as handle:
                return _to_torch(_SafeUnpickler(handle).load())
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any failure to parse means the file cannot be trusted
        raise UserError(f"{path}: cannot read this file ({first_line(exc)}); it may be truncated or not written by "
                        f"this project: {remedy}") from exc


def _recorded_version(meta: dict[str, Any]) -> str:
    """What a file's metadata says of its kind and version, for messages: `kind activation_statistics, version 3`."""
    versions = [f"{key.removesuffix('_version').replace('_', ' ')} version {value}" for key, value in meta.items()
                if key.endswith("_version") and isinstance(value, int)]
    return ", ".join([f"kind {meta['kind']}", *versions])


def _verify_checksum(path: Path, data: dict[str, Any], remedy: str) -> None:
    """Refuse a file whose contents differ from the checksum stored in it. A file from before checksums (none stored)
    is read as it is, with a note, unless its metadata records a kind that came with or after checksums (every kind
    but the two of KINDS_BEFORE_CHECKSUMS): such a file lost its checksum after it was written and is refused."""
    stored = data.pop(CHECKSUM_KEY, None)
    meta = data.get("meta") if isinstance(data.get("meta"), dict) else {}
    if stored is None and meta.get("kind") not in (None, *KINDS_BEFORE_CHECKSUMS):
        raise UserError(f"{path}: has no checksum, but its metadata says {_recorded_version(meta)}, and every such file "
                        f"is written with one: the checksum was removed, or the file was not written by this project: {remedy}")
    if stored is None:
        print(f"note: {path} has no checksum ({_recorded_version(meta) if meta.get('kind') else 'and records no kind'}: "
              "written before checksums existed); read without verification", file=sys.stderr)
        return
    if not isinstance(stored, str) or stored != content_digest(data):
        raise UserError(f"{path}: its contents do not match the checksum stored in it (the file was damaged after it was "
                        f"written): {remedy}")


def load_artifact(path: Path, expect_tag: bool = True, kind: str | None = None, required: Iterable[str] = (),
                  remedy: str = DEFAULT_REMEDY) -> dict[str, Any]:
    """Load a `.pt` or `.pickle` artifact and verify its checksum; with `kind`, refuse an artifact of another
    kind, and one without the `required` keys. Every problem is a UserError naming the file and `remedy`."""
    path = Path(path)
    check_regular_file(path)
    data = _read_file(path, remedy)
    meta = data.get("meta") if isinstance(data, dict) else None
    if not isinstance(data, dict) or (expect_tag and (not isinstance(meta, dict) or meta.get("project") != PROJECT_TAG)):
        raise UserError(f"{path}: not a result file of this project: {remedy}")
    _verify_checksum(path, data, remedy)
    stored_kind = meta.get("kind") if isinstance(meta, dict) else None
    if kind is not None and stored_kind not in (None, kind):
        raise UserError(f"{path}: holds {KINDS.get(stored_kind, repr(stored_kind))}, not {KINDS.get(kind, kind)}")
    missing = [key for key in required if key not in data]
    if missing:
        raise UserError(f"{path}: not {KINDS.get(kind, 'the file expected')} (it lacks {', '.join(missing)}): {remedy}")
    return data


def made_from(**fingerprints: str | None) -> dict[str, str | None]:
    """The metadata entries by which an artifact records what it was made from, one per input named (`weights`,
    `dataset`, `statistics`, `tokenizer`), in the order named: `made_from(weights=a, statistics=b)` is
    `{"weights_fingerprint": a, "statistics_fingerprint": b}`. Every artifact records its inputs through this function,
    and `check_provenance` checks them, so that the keys are the same in every file."""
    recorded = {f"{name}_fingerprint": value for name, value in fingerprints.items()}
    unknown = sorted(set(recorded) - set(MADE_FROM))
    if unknown:
        raise ValueError(f"made_from: no input {', '.join(unknown)}; inputs are {', '.join(MADE_FROM)}")
    return recorded


def check_provenance(path: Path, meta: dict[str, Any], expected: dict[str, Any], remedy: str,
                     made: str = "were made with") -> None:
    """Refuse the artifact at `path` unless its `meta` agrees with `expected` on every key: an input's fingerprint
    (a key of MADE_FROM, from `made_from`: which input changed, `check_made_from`) or a setting (`<path>: <made>
    key=stored, not expected; <remedy>`)."""
    for key, value in expected.items():
        if key in MADE_FROM:
            check_made_from(path, meta, key, value, remedy, made)
        elif meta.get(key) != value:
            raise UserError(f"{path}: {made} {key}={meta.get(key)!r}, not {value!r}; {remedy}")


def made_from_mismatch(key: str, stored: Any, expected: Any, made: str = "were made with") -> str | None:
    """Why an artifact that records the fingerprint `stored` under `key` was not made from the input whose fingerprint is
    `expected` now (`made`: the words before the input, e.g. "holds the roles of"), or None when it was."""
    if stored == expected:
        return None
    if key == "weights_fingerprint" and kind_mismatch(stored, expected):
        return kind_mismatch(stored, expected)
    if stored is None:
        return f"records no {key.replace('_', ' ')} (written by an older version)"
    other, why = MADE_FROM[key]
    return f"{made} {other} (fingerprint {short(stored)}, now {short(expected)}: {why})"


def check_made_from(path: Path, meta: dict[str, Any], key: str, expected: Any, remedy: str,
                    made: str = "were made with") -> None:
    """Refuse the artifact at `path` unless its `meta` records, under `key` (one of MADE_FROM), the fingerprint
    `expected` of what it was made from: one line naming the file, which input changed and the `remedy`."""
    reason = made_from_mismatch(key, meta.get(key), expected, made)
    if reason is not None:
        joiner = "or " if key == "weights_fingerprint" and kind_mismatch(meta.get(key), expected) else ""
        raise UserError(f"{path}: {reason}; {joiner}{remedy}")


RANDOM_PART = "[a-z0-9_]" * 8  # the random part of a name that tempfile makes (mkstemp, mkdtemp), as a glob
TEMPORARY_EXTRA = len("..") + 8 + max(len(TEMPORARY_SUFFIX), len(STAGING_SUFFIX), len(REPLACED_SUFFIX))  # added to a name


def _leftovers(path: Path, suffix: str) -> list[Path]:
    """The temporary names of writes of `path` beside it: exactly `.<name>.<8 random characters><suffix>` (so that the
    leftovers of `docs` are never those of `docs.v2`)."""
    return sorted(Path(path).parent.glob(f".{glob.escape(Path(path).name)}.{RANDOM_PART}{suffix}"))


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Remove the temporary files that an interrupted atomic write of `path` left beside it (call this only
    while holding the lock of `path`, so that no other process is writing them)."""
    return _remove_files(_leftovers(path, TEMPORARY_SUFFIX))


def remove_stale_temporaries_in(folder: Path) -> list[Path]:
    """Remove the temporary files that interrupted atomic writes left in `folder`, whatever file they were writing
    (call only while holding the lock of the whole folder)."""
    return _remove_files(sorted(Path(folder).glob(f".?*.{RANDOM_PART}{TEMPORARY_SUFFIX}")))


def _remove_files(stale: list[Path]) -> list[Path]:
    """Remove the plain files among `stale` (never a folder or a link); returns `stale`."""
    for item in stale:
        if item.is_file() and not item.is_symlink():
            item.unlink()
    return stale


def staging_folder(folder: Path) -> Path:
    """A new hidden folder beside `folder`, where a whole folder is written before `replace_folder` swaps it in
    (with the permissions of a folder made by mkdir, not mkdtemp's owner-only ones)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=STAGING_SUFFIX))
    umask = os.umask(0)
    os.umask(umask)
    staged.chmod(0o777 & ~umask)
    return staged


def replace_folder(staged: Path, folder: Path) -> None:
    """Put the finished `staged` folder in place of `folder`: the old one is renamed aside first and removed last,
    so that a kill or a full disk at any point leaves the old folder or the new one whole (a kill between the two
    renames leaves the old one aside, where `remove_stale_folders` puts it back)."""
    old = None
    if folder.exists():
        old = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=REPLACED_SUFFIX))
        os.replace(folder, old)
    try:
        os.replace(staged, folder)
    except BaseException:
        if old is not None:
            os.replace(old, folder)
        raise
    if old is not None:
        shutil.rmtree(old)


def remove_stale_folders(folder: Path) -> None:
    """Clean up after an interrupted `replace_folder` of `folder` (call only while holding the lock of `folder`):
    staging folders go; an old folder set aside goes too, unless `folder` itself is missing, in which case it is
    the last whole copy and is put back in place."""
    for item in _leftovers(folder, STAGING_SUFFIX):
        if item.is_dir() and not item.is_symlink():
            shutil.rmtree(item)
    aside = [item for item in _leftovers(folder, REPLACED_SUFFIX) if item.is_dir() and not item.is_symlink()]
    if aside and not Path(folder).exists() and not Path(folder).is_symlink():
        newest = max(aside, key=lambda item: item.stat().st_mtime_ns)
        os.replace(newest, folder)
        aside.remove(newest)
    for item in aside:
        shutil.rmtree(item)


def find_artifact(folder: Path, stem: str) -> Path | None:
    """The existing `stem.pt` or `stem.pickle` in `folder` (`.pt` first), or None."""
    for fmt in ARTIFACT_FORMATS:
        candidate = Path(folder) / f"{stem}.{fmt}"
        if candidate.exists():
            return candidate
    return None
