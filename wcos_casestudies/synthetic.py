"""Random checkpoints for tests and benchmarks: tiny models of every family, a byte-level
tokenizer, and large checkpoints with real model shapes written one layer at a time."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

FAMILIES = ("llama", "mistral", "qwen2", "gemma2", "gemma3_text", "olmo", "gpt2")
OLMO_CLIP_QKV = 8.0  # OLMo-7B-0424's clip of the query, key and value activations


def byte_tokenizer(folder: Path) -> Any:
    """A byte-level BPE tokenizer without merges (256 byte tokens + <bos> <eos> <pad>), saved in `folder`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {symbol: index for index, symbol in enumerate(alphabet)}
    for special in ("<bos>", "<eos>", "<pad>"):
        vocab[special] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")
    tokenizer.save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


def tiny_config(family: str, d_model: int = 64, d_mlp: int = 96, n_layers: int = 2, vocab_size: int = 300) -> Any:
    """A transformers config of the given family with tiny sizes."""
    import transformers as tf

    common = dict(hidden_size=d_model, intermediate_size=d_mlp, num_hidden_layers=n_layers, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=vocab_size, bos_token_id=256, eos_token_id=257, pad_token_id=258,
                  max_position_embeddings=2048)
    if family == "llama":
        return tf.LlamaConfig(**common)
    if family == "mistral":
        return tf.MistralConfig(**common, sliding_window=None)
    if family == "qwen2":
        return tf.Qwen2Config(**common)
    if family == "gemma2":
        return tf.Gemma2Config(**common, head_dim=16)
    if family == "gemma3_text":
        return tf.Gemma3TextConfig(**common, head_dim=16)
    if family == "olmo":
        return tf.OlmoConfig(**common)
    if family == "gpt2":
        return tf.GPT2Config(n_embd=d_model, n_inner=d_mlp, n_layer=n_layers, n_head=4, vocab_size=vocab_size,
                             bos_token_id=256, eos_token_id=257)
    raise ValueError(f"unknown family {family!r}; use one of {FAMILIES}")


def tiny_checkpoint(family: str, folder: Path, seed: int = 0, noise: float = 0.1, **sizes: int) -> Path:
    """Write a random model of `family` (every parameter perturbed, norm gains included) with a tokenizer."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family, **sizes))
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * noise)
    folder = Path(folder)
    model.save_pretrained(folder)
    byte_tokenizer(folder)
    return folder


def large_llama_checkpoint(folder: Path, n_layers: int = 32, d_model: int = 4096, d_mlp: int = 11008,
                           vocab_size: int = 32000, dtype: torch.dtype = torch.bfloat16, seed: int = 0,
                           mlp_only: bool = False) -> Path:
    """A Llama-shaped safetensors checkpoint with random weights, one shard per layer (Llama-2-7B by default).

    Written layer by layer, so memory stays at one layer. With `mlp_only` the attention and
    embedding matrices are left out (enough for the weight analysis, not for a forward pass).
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    n_heads = max(1, d_model // 128)

    def rand(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape, generator=generator) * 0.02).to(dtype)

    weight_map: dict[str, str] = {}
    for layer in range(n_layers):
        prefix = f"model.layers.{layer}."
        tensors = {
            prefix + "mlp.gate_proj.weight": rand(d_mlp, d_model),
            prefix + "mlp.up_proj.weight": rand(d_mlp, d_model),
            prefix + "mlp.down_proj.weight": rand(d_model, d_mlp),
            prefix + "input_layernorm.weight": (1 + rand(d_model).float()).to(dtype),
            prefix + "post_attention_layernorm.weight": (1 + rand(d_model).float()).to(dtype),
        }
        if not mlp_only:
            for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
                tensors[prefix + f"self_attn.{name}.weight"] = rand(d_model, d_model)
        shard = f"model-{layer + 1:05d}-of-{n_layers + 1:05d}.safetensors"
        save_file(tensors, str(folder / shard), metadata={"format": "pt"})
        weight_map.update({name: shard for name in tensors})
        del tensors
    shard = f"model-{n_layers + 1:05d}-of-{n_layers + 1:05d}.safetensors"
    last = {"model.norm.weight": (1 + rand(d_model).float()).to(dtype)}
    if not mlp_only:
        last["model.embed_tokens.weight"] = rand(vocab_size, d_model)
        last["lm_head.weight"] = rand(vocab_size, d_model)
    save_file(last, str(folder / shard), metadata={"format": "pt"})
    weight_map.update({name: shard for name in last})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": d_model,
        "intermediate_size": d_mlp, "num_hidden_layers": n_layers, "num_attention_heads": n_heads,
        "num_key_value_heads": n_heads, "vocab_size": vocab_size, "hidden_act": "silu", "rms_norm_eps": 1e-5,
        "max_position_embeddings": 4096, "torch_dtype": str(dtype).removeprefix("torch."), "tie_word_embeddings": False,
        "bos_token_id": 1, "eos_token_id": 2,
    }
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    return folder


def olmo_checkpoint(folder: Path, n_layers: int, d_model: int = 4096, d_mlp: int = 11008, n_heads: int = 32,
                    vocab_size: int = 50304, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                    seed: int = 0) -> Path:
    """An OLMo-shaped checkpoint (OLMo-7B-0424's shapes by default, `n_layers` layers) with the library's random
    initialisation and the byte tokenizer (its ids 0-258 of the `vocab_size` rows), saved in `folder`.

    Built on `device` in `dtype`: a GPU makes the 32 layers of the real shapes in seconds. The OLMo family rather
    than Llama: the paper's model is OLMo-7B-0424 (norms without gains, clipped q/k/v), so the benchmarks run its
    code path; the random weights only set the shapes, not the values of any statistic.
    """
    from transformers import AutoModelForCausalLM

    config = tiny_config("olmo", d_model=d_model, d_mlp=d_mlp, n_layers=n_layers, vocab_size=vocab_size)
    config.num_attention_heads = config.num_key_value_heads = n_heads
    config.clip_qkv = OLMO_CLIP_QKV
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    folder = Path(folder)
    model.save_pretrained(folder)
    del model
    byte_tokenizer(folder)
    return folder
