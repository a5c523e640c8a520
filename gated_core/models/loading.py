"""Tokenizers, Hugging Face models and TransformerLens bridges of a `ModelSource`."""

from __future__ import annotations

from typing import Any

import torch

from ..errors import UserError, first_line
from .sources import ModelSource


def load_tokenizer(source: ModelSource) -> Any:
    """The tokenizer of a source (from the folder, or from the GGUF file itself)."""
    from transformers import AutoTokenizer

    try:
        if source.is_gguf:
            return AutoTokenizer.from_pretrained(source.path.parent, gguf_file=source.path.name)
        return AutoTokenizer.from_pretrained(source.path)
    except (OSError, ValueError, TypeError, KeyError) as exc:  # missing, damaged or foreign tokenizer files
        raise UserError(f"{source.path}: cannot load the tokenizer ({first_line(exc)})") from exc


def load_hf_model(source: ModelSource, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                  tokenizer: Any = None) -> tuple[Any, Any]:
    """The Hugging Face model and tokenizer of a source (a GGUF is dequantised to float32); pass a
    tokenizer already loaded to skip loading it again."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    kwargs: dict[str, Any] = {"dtype": dtype}
    folder = source.path
    if source.is_gguf:
        folder, kwargs["gguf_file"] = source.path.parent, source.path.name
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(source)
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:  # missing, truncated or foreign weight files
        raise UserError(f"{source.path}: cannot load the model with transformers ({first_line(exc)})") from exc
    if not getattr(model.config, "architectures", None):  # GGUF configs leave it empty; the bridge needs it
        model.config.architectures = [type(model).__name__]
    return model.to(device).eval(), tokenizer


def load_bridge(source: ModelSource, processing: bool = True, device: str | torch.device = "cpu",
                dtype: torch.dtype = torch.float32) -> Any:
    """TransformerLens 4.3 bridge in compatibility mode (default processing unless `processing` is False)."""
    from transformer_lens.model_bridge import TransformerBridge

    model, tokenizer = load_hf_model(source, dtype=dtype, device=device)
    bridge = TransformerBridge.boot_transformers(
        str(source.path.parent if source.is_gguf else source.path),
        hf_model=model, tokenizer=tokenizer, device=device, dtype=dtype,
    )
    bridge.enable_compatibility_mode(disable_warnings=True, no_processing=not processing)
    return bridge
