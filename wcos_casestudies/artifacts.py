"""Saving and loading result files: `.pt` (default) or `.pickle`, atomic writes, metadata.

Only plain data is stored: tensors, numbers, strings, lists and dicts. `.pt` files are
read with `torch.load(weights_only=True)`; `.pickle` files store numpy arrays and are
read with an unpickler that accepts nothing but numpy arrays and builtin containers, so
a pickle from elsewhere is refused instead of executed.
"""

from __future__ import annotations

import io
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .constants import ARTIFACT_FORMATS
from .errors import UserError

PROJECT_TAG = "wcos_casestudies"


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
    """Write `data` to `path` through a temporary file and a rename, never leaving half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; results should be readable like any file
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Atomic write of a text file (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def markdown_table(frame: Any) -> str:
    """A pandas DataFrame as a Markdown table (no extra dependency)."""
    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows]) + "\n"


def write_table(frame: Any, stem: Path, title: str = "") -> None:
    """Write a DataFrame as `stem.csv` and `stem.md` (atomically), the Markdown under an optional title."""
    atomic_write_text(Path(f"{stem}.csv"), frame.to_csv(index=False))
    atomic_write_text(Path(f"{stem}.md"), (f"# {title}\n\n" if title else "") + markdown_table(frame))


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
    """Save a dict of plain data atomically; the suffix of `path` (.pt or .pickle) picks the format."""
    path = Path(path)
    buffer = io.BytesIO()
    if path.suffix == ".pickle":
        pickle.dump(_to_numpy(data), buffer, protocol=pickle.HIGHEST_PROTOCOL)
    elif path.suffix == ".pt":
        torch.save(_to_cpu(data), buffer)
    else:
        raise UserError(f"{path}: unknown artifact format; use .pt or .pickle")
    atomic_write_bytes(path, buffer.getvalue())
    return path


def load_artifact(path: Path, expect_tag: bool = True) -> dict[str, Any]:
    """Load a `.pt` or `.pickle` artifact; an unreadable or foreign file is a UserError naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        if path.suffix == ".pickle":
            with path.open("rb") as handle:
                data = _to_torch(_SafeUnpickler(handle).load())
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any failure to parse means the file cannot be trusted
        raise UserError(
            f"{path}: cannot read this file ({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); "
            "it may be truncated or not written by this project. Move it away or rerun with --overwrite"
        ) from exc
    if not isinstance(data, dict) or (expect_tag and data.get("meta", {}).get("project") != PROJECT_TAG):
        raise UserError(f"{path}: not a result file of this project; move it away or rerun with --overwrite")
    return data


def find_artifact(folder: Path, stem: str) -> Path | None:
    """The existing `stem.pt` or `stem.pickle` in `folder` (`.pt` first), or None."""
    for fmt in ARTIFACT_FORMATS:
        candidate = Path(folder) / f"{stem}.{fmt}"
        if candidate.exists():
            return candidate
    return None
