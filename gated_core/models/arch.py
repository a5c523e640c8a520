"""Shapes and family of a model, read from its config.json or GGUF header."""

from __future__ import annotations

import json
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError, first_line
from .sources import ModelSource

NON_GATED_TYPES = {"gpt2", "gpt_neox", "gptj", "opt", "bloom", "gpt_neo", "pythia"}
GEGLU_ACTS = {"gelu_pytorch_tanh", "gelu_new", "gelu", "gelu_fast"}

@dataclass(frozen=True)
class ArchInfo:
    """Shapes and family of a model, read from its config (or GGUF header)."""

    family: str  # model_type (Hugging Face) or general.architecture (GGUF)
    n_layers: int
    d_model: int
    d_mlp: int
    vocab_size: int
    act: str
    gated: bool

    def require_gated(self, model: str, needed_for: str) -> None:
        """Refuse a model without gates (UserError naming what needs them)."""
        if not self.gated:
            raise UserError(f"{model} is not a gated model (no w_gate): {needed_for}")

    @property
    def glu(self) -> str:
        """SwiGLU, GeGLU or none (non-gated)."""
        if not self.gated:
            return "none"
        return "GeGLU" if self.act in GEGLU_ACTS else "SwiGLU"



def gguf_reader(path: Path) -> Any:
    import gguf

    try:
        return gguf.GGUFReader(str(path))
    except Exception as exc:  # a corrupt or foreign file: numpy/struct errors of many kinds
        raise UserError(f"{path}: not a readable GGUF file ({first_line(exc)})") from exc


def gguf_field(reader: Any, key: str, default: Any = None) -> Any:
    field_ = reader.fields.get(key)
    return default if field_ is None else field_.contents()


def dimension(value: Any, key: str, where: Path, minimum: int = 1) -> int:
    """A size read from a config or GGUF header: a whole number of at least `minimum`, else a UserError."""
    if value is None:
        raise UserError(f"{where}: {key} is missing")
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise UserError(f"{where}: {key} is {value!r}, not a whole number of at least {minimum}")
    return int(value)


def read_gguf_arch(path: Path) -> ArchInfo:
    """Shapes and family from a GGUF header; every size must be there and be a positive whole number."""
    reader = gguf_reader(path)
    try:
        arch = gguf_field(reader, "general.architecture")
        names = {t.name: t for t in reader.tensors}
    except (ValueError, TypeError, IndexError, KeyError) as exc:  # a damaged header
        raise UserError(f"{path}: the GGUF header cannot be read ({first_line(exc)})") from exc
    if not isinstance(arch, str) or "blk.0.ffn_up.weight" not in names:
        raise UserError(f"{path}: GGUF file without the MLP tensors of a transformer")
    sizes = {}
    for key in ("block_count", "embedding_length", "feed_forward_length"):
        sizes[key] = dimension(gguf_field(reader, f"{arch}.{key}"), f"{arch}.{key}", path)
    vocab = int(names["token_embd.weight"].shape[-1]) if "token_embd.weight" in names else 0
    return ArchInfo(family=arch, n_layers=sizes["block_count"], d_model=sizes["embedding_length"],
                    d_mlp=sizes["feed_forward_length"], vocab_size=vocab,
                    act="gelu_pytorch_tanh" if arch.startswith("gemma") else "silu", gated="blk.0.ffn_gate.weight" in names)


def json_type(value: Any) -> str:
    """How JSON names the type of a parsed value."""
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def read_config(config_path: Path) -> dict[str, Any]:
    """A model's config.json as a dict (the text model's part of a multimodal config)."""
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{config_path}: cannot read the model config ({first_line(exc)})") from exc
    if not isinstance(config, dict):
        raise UserError(f"{config_path}: the model config is {json_type(config)}, not a JSON object")
    if "text_config" in config and "num_hidden_layers" not in config:
        text = config["text_config"]
        if not isinstance(text, dict):
            raise UserError(f"{config_path}: text_config is {json_type(text)}, not a JSON object")
        config = {**text, "model_type": text.get("model_type", "")}
    return config


def read_arch(source: ModelSource) -> ArchInfo:
    """Shapes and family of the model from config.json or the GGUF header (every size checked)."""
    if source.is_gguf:
        return read_gguf_arch(source.path)
    config_path = source.path / "config.json"
    config = read_config(config_path)
    family = str(config.get("model_type", "unknown"))
    d_model = config.get("hidden_size", config.get("n_embd"))
    n_layers = config.get("num_hidden_layers", config.get("n_layer"))
    if d_model is None or n_layers is None:
        raise UserError(f"{config_path}: not a transformer language model config")
    d_model = dimension(d_model, "hidden_size", config_path)
    d_mlp = config.get("intermediate_size") or config.get("n_inner") or 4 * d_model
    act = config.get("hidden_activation") or config.get("hidden_act") or config.get("activation_function") or "silu"
    return ArchInfo(
        family=family,
        n_layers=dimension(n_layers, "num_hidden_layers", config_path),
        d_model=d_model,
        d_mlp=dimension(d_mlp, "intermediate_size", config_path),
        vocab_size=dimension(config.get("vocab_size") or 0, "vocab_size", config_path, minimum=0),
        act=str(act),
        gated=family not in NON_GATED_TYPES,
    )
