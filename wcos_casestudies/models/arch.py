"""Shapes and family of a model, read from its config.json or GGUF header."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError
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
        raise UserError(f"{path}: not a readable GGUF file ({type(exc).__name__})") from exc


def gguf_field(reader: Any, key: str, default: Any = None) -> Any:
    field_ = reader.fields.get(key)
    return default if field_ is None else field_.contents()


def read_arch(source: ModelSource) -> ArchInfo:
    """Shapes and family of the model from config.json or the GGUF header."""
    if source.is_gguf:
        reader = gguf_reader(source.path)
        arch = gguf_field(reader, "general.architecture")
        names = {t.name: t for t in reader.tensors}
        if arch is None or "blk.0.ffn_up.weight" not in names:
            raise UserError(f"{source.path}: GGUF file without the MLP tensors of a transformer")
        vocab = int(names["token_embd.weight"].shape[-1]) if "token_embd.weight" in names else 0
        act = "gelu_pytorch_tanh" if arch.startswith("gemma") else "silu"
        return ArchInfo(
            family=arch,
            n_layers=int(gguf_field(reader, f"{arch}.block_count")),
            d_model=int(gguf_field(reader, f"{arch}.embedding_length")),
            d_mlp=int(gguf_field(reader, f"{arch}.feed_forward_length")),
            vocab_size=vocab,
            act=act,
            gated="blk.0.ffn_gate.weight" in names,
        )
    config_path = source.path / "config.json"
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{config_path}: cannot read the model config ({exc})") from exc
    if "text_config" in config and "num_hidden_layers" not in config:
        config = {**config["text_config"], "model_type": config["text_config"].get("model_type", "")}
    family = config.get("model_type", "unknown")
    d_model = config.get("hidden_size", config.get("n_embd"))
    n_layers = config.get("num_hidden_layers", config.get("n_layer"))
    if d_model is None or n_layers is None:
        raise UserError(f"{config_path}: not a transformer language model config")
    d_mlp = config.get("intermediate_size") or config.get("n_inner") or 4 * d_model
    act = config.get("hidden_activation") or config.get("hidden_act") or config.get("activation_function") or "silu"
    return ArchInfo(
        family=family,
        n_layers=int(n_layers),
        d_model=int(d_model),
        d_mlp=int(d_mlp),
        vocab_size=int(config.get("vocab_size", 0)),
        act=str(act),
        gated=family not in NON_GATED_TYPES,
    )
