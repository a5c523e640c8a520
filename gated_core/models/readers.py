"""MLP weights layer by layer, with TransformerLens' default processing (paper, Section 5):

- `LowMemReader` reads only the MLP matrices and the ln2 gains of one layer at a time from
  safetensors or GGUF files and applies the processing itself, so a 7B model needs a few
  hundred MB;
- `BridgeReader` loads the whole model into TransformerLens 4.3 (`TransformerBridge` plus
  `enable_compatibility_mode()`) and takes `W_gate`, `W_in`, `W_out` from it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from einops import rearrange

from ..constants import LOADERS
from ..errors import UserError, first_line
from .arch import ArchInfo, gguf_field, gguf_reader, read_arch, read_config
from .loading import load_bridge
from .sources import ModelSource


def _unreadable_weight_errors() -> tuple[type[BaseException], ...]:
    """What reading a damaged safetensors or GGUF file raises."""
    from safetensors import SafetensorError

    return (SafetensorError, OSError, ValueError, RuntimeError, IndexError, UnicodeDecodeError)


UNREADABLE_WEIGHTS = _unreadable_weight_errors()

# Families whose MLP weights the low-memory reader knows how to process:
# model_type -> (ln2 gain name in the layer, offset added to the stored gain, norm kind).
SAFETENSORS_FAMILIES: dict[str, tuple[str | None, float, str]] = {
    "llama": ("post_attention_layernorm", 0.0, "rms"),
    "mistral": ("post_attention_layernorm", 0.0, "rms"),
    "qwen2": ("post_attention_layernorm", 0.0, "rms"),
    "gemma2": ("pre_feedforward_layernorm", 1.0, "rms"),
    "gemma3_text": ("pre_feedforward_layernorm", 1.0, "rms"),
    "olmo": (None, 0.0, "ln"),
}
# GGUF architectures: general.architecture -> (ln2 tensor, norm kind). llama.cpp stores
# Gemma's gains already as 1 + w, so the stored value is the multiplier for every family.
GGUF_FAMILIES: dict[str, tuple[str | None, str]] = {
    "llama": ("ffn_norm", "rms"),
    "qwen2": ("ffn_norm", "rms"),
    "gemma2": ("ffn_norm", "rms"),
    "gemma3": ("ffn_norm", "rms"),
    "olmo": (None, "ln"),
}


@dataclass
class LayerMLP:
    """One layer's MLP weights, neuron-major: each [neuron d_model]; gate is None when not gated."""

    gate: torch.Tensor | None
    lin: torch.Tensor
    out: torch.Tensor


def process_layer(gate: torch.Tensor | None, lin: torch.Tensor, out: torch.Tensor,
                  gain: torch.Tensor | None, norm: str) -> LayerMLP:
    """TransformerLens' default processing of one MLP layer (as `HookedTransformer.from_pretrained` applies it), all [neuron d_model].

    The ln2 gain is folded into the reading weights; for LayerNorm models the linear
    input and the output are centred over d_model and the gate is left uncentred, as
    TransformerLens does.
    """
    if gain is not None:
        lin = lin * gain
        gate = None if gate is None else gate * gain
    if norm == "ln":
        lin = lin - lin.mean(dim=-1, keepdim=True)
        out = out - out.mean(dim=-1, keepdim=True)
    return LayerMLP(gate=gate, lin=lin, out=out)


class WeightReader:
    """Reads one layer's MLP weights at a time (float32, neuron-major)."""

    arch: ArchInfo
    source: ModelSource
    processing: bool
    loader: str

    def layer(self, index: int) -> LayerMLP:
        raise NotImplementedError

    def unembed(self) -> torch.Tensor:
        """The unembedding W_U [d_model vocab] (float32; processing: final norm gain folded in, centred over the vocabulary)."""
        raise NotImplementedError

    def embed(self) -> torch.Tensor:
        """The embedding W_E [vocab d_model] (float32) as it is added to the residual stream (processing: centred over
        d_model for LayerNorm models, as TransformerLens' center_writing_weights does)."""
        raise NotImplementedError

    def layers(self) -> Iterator[LayerMLP]:
        for index in range(self.arch.n_layers):
            yield self.layer(index)


class LowMemReader(WeightReader):
    """Reads the MLP weights and ln2 gains straight from safetensors or GGUF files."""

    loader = "lowmem"

    def __init__(self, source: ModelSource, processing: bool = True):
        self.source, self.processing = source, processing
        self.arch = read_arch(source)
        if source.is_gguf:
            self._reader = gguf_reader(source.path)
            self._tensors = {t.name: t for t in self._reader.tensors}
            ln_name, self._norm = GGUF_FAMILIES[self.arch.family]
            self._ln_template = None if ln_name is None else "blk.{layer}." + ln_name + ".weight"
            self._gain_offset = 0.0
            self._final_norm = None if self._norm == "ln" else "output_norm.weight"
            self._unembed_names = ("output.weight", "token_embd.weight")
            self._softcap = bool(gguf_field(self._reader, f"{self.arch.family}.final_logit_softcapping"))
        else:
            ln_name, self._gain_offset, self._norm = SAFETENSORS_FAMILIES[self.arch.family]
            self._ln_template = None if ln_name is None else "model.layers.{layer}." + ln_name + ".weight"
            self._files = _safetensors_index(source.path)
            self._final_norm = None if self._norm == "ln" else "model.norm.weight"
            self._unembed_names = ("lm_head.weight", "model.embed_tokens.weight")
            config = read_config(source.path / "config.json")
            self._softcap = bool(config.get("final_logit_softcapping"))

    def _has(self, name: str) -> bool:
        return name in (self._tensors if self.source.is_gguf else self._files)

    @staticmethod
    def supports(source: ModelSource) -> bool:
        """Whether this reader understands the source's files and family."""
        arch = read_arch(source)
        if source.is_gguf:
            return arch.family in GGUF_FAMILIES
        return arch.family in SAFETENSORS_FAMILIES and bool(list(source.path.glob("*.safetensors")))

    def _get(self, name: str) -> torch.Tensor:
        if not self._has(name):
            raise UserError(f"{self.source.path}: tensor {name} missing from the {'GGUF' if self.source.is_gguf else 'safetensors'} files")
        try:
            if self.source.is_gguf:
                from gguf.quants import dequantize

                tensor = self._tensors[name]
                return torch.from_numpy(np.array(dequantize(tensor.data, tensor.tensor_type), dtype=np.float32))
            from safetensors import safe_open

            with safe_open(self._files[name], framework="pt") as handle:
                return handle.get_tensor(name).float()
        except UNREADABLE_WEIGHTS as exc:
            raise UserError(f"{self.source.path}: cannot read tensor {name} ({first_line(exc)}); "
                            "the file may be truncated or damaged") from exc

    def layer(self, index: int) -> LayerMLP:
        if self.source.is_gguf:
            names = [f"blk.{index}.ffn_{part}.weight" for part in ("gate", "up", "down")]
        else:
            names = [f"model.layers.{index}.mlp.{part}_proj.weight" for part in ("gate", "up", "down")]
        gate, lin = self._get(names[0]), self._get(names[1])  # [neuron d_model]
        out = rearrange(self._get(names[2]), "d_model neuron -> neuron d_model")
        if not self.processing:
            return LayerMLP(gate=gate, lin=lin, out=out.contiguous())
        gain = None
        if self._ln_template is not None:
            gain = self._get(self._ln_template.format(layer=index)) + self._gain_offset
        return process_layer(gate, lin, out, gain, self._norm)

    def unembed(self) -> torch.Tensor:
        name = next((n for n in self._unembed_names if self._has(n)), None)
        if name is None:
            raise UserError(f"{self.source.path}: no unembedding ({' or '.join(self._unembed_names)}) in the checkpoint")
        w_u = rearrange(self._get(name), "vocab d_model -> d_model vocab").contiguous()
        if not self.processing:
            return w_u
        if self._final_norm is not None:
            w_u = w_u * (self._get(self._final_norm) + self._gain_offset)[:, None]
        if not self._softcap:  # TransformerLens skips center_unembed when logits are soft-capped
            w_u = w_u - w_u.mean(dim=1, keepdim=True)
        return w_u

    def embed(self) -> torch.Tensor:
        name = "token_embd.weight" if self.source.is_gguf else "model.embed_tokens.weight"
        w_e = self._get(name)  # [vocab d_model]
        if self.arch.family.startswith("gemma"):  # Gemma multiplies the embedding by sqrt(d_model) before layer 0
            w_e = w_e * self.arch.d_model ** 0.5
        if self.processing and self._norm == "ln":
            w_e = w_e - w_e.mean(dim=-1, keepdim=True)
        return w_e


def _safetensors_index(folder: Path) -> dict[str, str]:
    """Tensor name -> safetensors file for a (possibly sharded) checkpoint folder."""
    index_file = folder / "model.safetensors.index.json"
    try:
        if index_file.exists():
            weight_map = json.loads(index_file.read_text(encoding="utf-8"))["weight_map"]
            return {str(name): str(folder / file) for name, file in weight_map.items()}
        from safetensors import safe_open

        files: dict[str, str] = {}
        for file in sorted(folder.glob("*.safetensors")):
            with safe_open(str(file), framework="pt") as handle:
                files.update({name: str(file) for name in handle.keys()})
        return files
    except (*UNREADABLE_WEIGHTS, KeyError, TypeError, AttributeError) as exc:
        raise UserError(f"{folder}: cannot read the safetensors files or their index ({first_line(exc)}); "
                        "a file may be truncated or damaged") from exc


class BridgeReader(WeightReader):
    """MLP weights of a TransformerLens bridge ([layer d_model neuron] -> [neuron d_model])."""

    loader = "tl"

    def __init__(self, source: ModelSource, processing: bool = True, device: str | torch.device = "cpu", bridge: Any = None):
        self.source, self.processing = source, processing
        self.arch = read_arch(source)
        self.bridge = bridge if bridge is not None else load_bridge(source, processing=processing, device=device)

    def layer(self, index: int) -> LayerMLP:
        with torch.no_grad():
            w_gate = self.bridge.W_gate
            neuron_major = "d_model neuron -> neuron d_model"  # TransformerLens stores reading weights [layer d_model neuron]
            gate = None if w_gate is None else rearrange(w_gate[index], neuron_major).float().cpu()
            lin = rearrange(self.bridge.W_in[index], neuron_major).float().cpu()
            return LayerMLP(gate=gate, lin=lin, out=self.bridge.W_out[index].float().cpu())

    def unembed(self) -> torch.Tensor:
        with torch.no_grad():
            return self.bridge.W_U.float().cpu().detach()  # float32 on the CPU: the parameter itself, which requires grad

    def embed(self) -> torch.Tensor:
        with torch.no_grad():
            w_e = self.bridge.W_E.float().cpu().detach()
        return w_e * self.arch.d_model ** 0.5 if self.arch.family.startswith("gemma") else w_e  # as LowMemReader.embed


def open_weights(source: ModelSource, processing: bool = True, loader: str = "auto",
                 device: str | torch.device = "cpu") -> WeightReader:
    """A reader for the source's MLP weights: low-memory where it applies (`auto`), else TransformerLens."""
    if loader not in LOADERS:
        raise UserError(f"unknown loader {loader!r}; use one of {', '.join(LOADERS)}")
    if loader == "lowmem" and not LowMemReader.supports(source):
        raise UserError(
            f"--loader lowmem does not support {source.name} (family {read_arch(source).family}); "
            f"it reads safetensors of {', '.join(SAFETENSORS_FAMILIES)} and GGUF of {', '.join(GGUF_FAMILIES)}; use --loader tl"
        )
    if loader == "lowmem" or (loader == "auto" and LowMemReader.supports(source)):
        return LowMemReader(source, processing=processing)
    return BridgeReader(source, processing=processing, device=device)


# ----------------------------------------------------------------------------- sign refactoring


@dataclass
class WeightsInfo:
    """What every artifact records about where its weights came from."""

    model: str
    provenance: str
    gguf: bool
    processing: str
    loader: str
    arch: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, reader: WeightReader) -> WeightsInfo:
        arch = reader.arch
        return cls(
            model=reader.source.name,
            provenance=reader.source.provenance,
            gguf=reader.source.is_gguf,
            processing="transformer_lens_default" if reader.processing else "none",
            loader=reader.loader,
            arch={"family": arch.family, "n_layers": arch.n_layers, "d_model": arch.d_model,
                  "d_mlp": arch.d_mlp, "vocab_size": arch.vocab_size, "act": arch.act, "glu": arch.glu},
        )
