"""The unembedding W_U of both readers against TransformerLens itself, for every family, with and without processing.

Every vocabulary statistic of Section 6 (prediction, suppression and entropy neurons, the token tables, the pages'
promoted tokens) reads W_U from `reader.unembed()`. The low-memory reader rebuilds TransformerLens' processing of W_U
by hand (final-norm gain folded in, centred over the vocabulary unless logits are soft-capped); these tests pin it to
what TransformerLens 4.3 does, so that a release that changes it fails here. In particular TransformerLens 4.3 does
not centre W_U over d_model for LayerNorm models (OLMo), although LayerNorm's output has zero mean.
"""

from __future__ import annotations

import pytest
import torch

from gated_core.models.readers import BridgeReader, LowMemReader, open_weights
from gated_core.models.sources import resolve_model

GATED = ["llama", "mistral", "qwen2", "gemma2", "gemma3_text", "olmo"]
TOKENS = [[5, 70, 80, 90, 100, 33, 250]]


def bridge_logits_from_w_u(bridge, w_u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """TransformerLens' logits of TOKENS, and the same logits recomputed from its unembedding input and `w_u`."""
    bos = bridge.tokenizer.bos_token_id
    tokens = torch.tensor([[bos if bos is not None else 1] + TOKENS[0][1:]])
    with torch.no_grad():
        logits, cache = bridge.run_with_cache(tokens, names_filter=lambda name: name == "unembed.hook_in")
        recomputed = cache["unembed.hook_in"][0].float() @ w_u + bridge.b_U.float()
        cap = getattr(bridge.cfg, "output_logits_soft_cap", 0) or 0
        if cap > 0:
            recomputed = cap * torch.tanh(recomputed / cap)
    return logits[0].float(), recomputed


def check_unembed(source, processing: bool) -> dict[str, torch.Tensor]:
    lowmem = open_weights(source, processing=processing)
    assert isinstance(lowmem, LowMemReader)
    tl = BridgeReader(source, processing=processing)
    ours, theirs = lowmem.unembed(), tl.unembed()
    assert ours.shape == theirs.shape == (lowmem.arch.d_model, lowmem.arch.vocab_size)
    scale = float(theirs.abs().max())
    assert (ours - theirs).abs().max() <= 1e-6 * scale, "the low-memory reader's W_U differs from TransformerLens'"
    logits, recomputed = bridge_logits_from_w_u(tl.bridge, theirs)
    assert torch.allclose(logits, recomputed, atol=1e-4 * float(logits.abs().max()) + 1e-5), \
        "TransformerLens' W_U is not the matrix its forward pass unembeds with"
    return {"w_u": theirs, "softcap": torch.tensor(float(getattr(tl.bridge.cfg, "output_logits_soft_cap", 0) or 0))}


@pytest.mark.parametrize("family", GATED)
@pytest.mark.parametrize("processing", [True, False])
def test_unembed_equals_transformer_lens(tiny_models, family, processing):
    source = resolve_model(str(tiny_models[family]))
    got = check_unembed(source, processing)
    w_u, softcapped = got["w_u"], bool(got["softcap"] > 0)
    raw = LowMemReader(source, processing=False).unembed()
    if not processing:
        assert torch.equal(w_u, raw)
        return
    assert not torch.allclose(w_u, raw), "processing should change W_U (final-norm gain, centring)"
    vocab_means = w_u.mean(dim=1).abs().max()
    assert (vocab_means < 1e-5) != softcapped, "centred over the vocabulary exactly when logits are not soft-capped"
    if family == "olmo":  # TransformerLens 4.3 leaves W_U uncentred over d_model for LayerNorm models
        assert w_u.mean(dim=0).abs().max() > 1e-3


@pytest.mark.parametrize("processing", [True, False])
def test_gguf_unembed_equals_transformer_lens(smollm2_source, processing):
    """The embedded SmolLM2 GGUF (tied embeddings: token_embd.weight is W_U)."""
    check_unembed(smollm2_source, processing)
