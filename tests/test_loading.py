"""Model resolution and both weight paths: low-memory reader == TransformerLens, per family."""

from __future__ import annotations

import pytest
import torch

from gated_core.errors import UserError
from gated_core.models.glu import glu_signs, refactor_glu_hf_model
from gated_core.models.loading import load_hf_model
from gated_core.models.readers import BridgeReader, LowMemReader, open_weights
from gated_core.models.sources import resolve_model
from wcos_casestudies.utils import classify, model_cosines

GATED = ["llama", "mistral", "qwen2", "gemma2", "gemma3_text", "olmo"]


def _cosines(reader):
    return model_cosines(reader.layers(), reader.arch.n_layers)


@pytest.mark.parametrize("family", GATED)
@pytest.mark.parametrize("processing", [True, False])
def test_lowmem_equals_transformer_lens(tiny_models, family, processing):
    source = resolve_model(str(tiny_models[family]))
    lowmem = open_weights(source, processing=processing)
    assert isinstance(lowmem, LowMemReader)
    tl = BridgeReader(source, processing=processing)
    for index in range(lowmem.arch.n_layers):
        a, b = lowmem.layer(index), tl.layer(index)
        for name in ("gate", "lin", "out"):
            assert torch.allclose(getattr(a, name), getattr(b, name), atol=1e-6), (family, index, name)
    ours, theirs = _cosines(lowmem), _cosines(tl)
    for name in ("gatelin", "gateout", "linout"):
        assert (ours[name] - theirs[name]).abs().max() < 1e-5


def test_processing_changes_weights(tiny_models):
    """Sanity check that the comparison above is not vacuous: raw and processed weights differ."""
    for family in ("llama", "gemma2", "olmo"):
        source = resolve_model(str(tiny_models[family]))
        raw, processed = open_weights(source, processing=False).layer(0), open_weights(source).layer(0)
        assert not torch.allclose(raw.lin, processed.lin)
    olmo = open_weights(resolve_model(str(tiny_models["olmo"]))).layer(0)
    assert olmo.lin.mean(-1).abs().max() < 1e-6 and olmo.out.mean(-1).abs().max() < 1e-6
    assert olmo.gate.mean(-1).abs().max() > 1e-4  # TransformerLens leaves w_gate uncentred


@pytest.mark.slow  # an embedded model read from its GGUF by transformers: minutes on 2 cores
def test_gguf_lowmem_equals_transformer_lens(smollm2_source):
    lowmem = open_weights(smollm2_source)
    assert isinstance(lowmem, LowMemReader) and smollm2_source.is_gguf
    tl = BridgeReader(smollm2_source)
    for index in (0, lowmem.arch.n_layers // 2, lowmem.arch.n_layers - 1):
        a, b = lowmem.layer(index), tl.layer(index)
        for name in ("gate", "lin", "out"):
            assert torch.allclose(getattr(a, name), getattr(b, name), atol=1e-6)


def test_non_gated_model_goes_through_transformer_lens(tiny_models):
    source = resolve_model(str(tiny_models["gpt2"]))
    reader = open_weights(source)
    assert isinstance(reader, BridgeReader) and not reader.arch.gated
    cos = _cosines(reader)
    assert cos["gatelin"] is None and cos["linout"].shape == (2, 96)
    codes = classify(None, None, cos["linout"])
    assert set(codes.unique().tolist()) <= {0, 6, 7}
    with pytest.raises(UserError):
        open_weights(source, loader="lowmem")


@pytest.mark.parametrize("family", ["llama", "gemma2", "olmo"])
def test_refactor_glu_keeps_classes_and_logits(tiny_models, family):
    source = resolve_model(str(tiny_models[family]))
    reader = open_weights(source)
    plain = model_cosines(reader.layers(), reader.arch.n_layers)
    flipped = model_cosines(reader.layers(), reader.arch.n_layers, refactor=True)
    assert (flipped["gatelin"] >= 0).all()
    assert torch.equal(plain["linout"], flipped["linout"])
    signs = torch.stack([glu_signs(layer) for layer in reader.layers()])
    assert (signs < 0).any(), "random weights should have some negative w_gate·w_in"
    assert torch.allclose(flipped["gateout"], plain["gateout"] * signs)
    for threshold in (0.1, 0.5):
        before = classify(plain["gatelin"], plain["gateout"], plain["linout"], threshold=threshold)
        after = classify(flipped["gatelin"], flipped["gateout"], flipped["linout"], threshold=threshold)
        assert torch.equal(before, after)
    model, tokenizer = load_hf_model(source)
    tokens = tokenizer("Gated neurons read and write.", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(tokens).logits
        refactor_glu_hf_model(model, list(signs))
        assert torch.allclose(model(tokens).logits, logits, atol=1e-5)
        refactor_glu_hf_model(model, list(-torch.ones_like(signs)))  # flip all: still the same function
        assert torch.allclose(model(tokens).logits, logits, atol=1e-5)


def test_resolve_errors(tmp_path):
    with pytest.raises(UserError, match="unknown model"):
        resolve_model("not a model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not a model checkpoint"):
        resolve_model(str(tmp_path / "empty"))
    with pytest.raises(UserError, match="neither a local folder nor in the Hugging Face cache"):
        resolve_model("allenai/OLMo-7B-0424-hf", allow_download=False)
    (tmp_path / "x.bin").write_bytes(b"123")
    with pytest.raises(UserError, match="gguf"):
        resolve_model(str(tmp_path / "x.bin"))


def test_aliases_resolve_to_hub_ids():
    from gated_core.models.registry import canonical_hub_id, expand_model_names

    assert canonical_hub_id("Llama-2-7b") == "meta-llama/Llama-2-7b-hf"
    assert canonical_hub_id("mistral-7b") == "mistralai/Mistral-7B-v0.1"
    assert canonical_hub_id("OLMo-7B-0424") == "allenai/OLMo-7B-0424-hf"
    assert canonical_hub_id("SMOLLM2-135M") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert len(expand_model_names(["all"])) == 12
    assert expand_model_names(["smollm2-135m", "all", "smollm2-135m"])[0] == "smollm2-135m"


def test_embedded_default_resolves_offline(smollm2_source):
    assert smollm2_source.name == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert "GGUF" in smollm2_source.provenance and smollm2_source.path.exists()


@pytest.mark.slow  # an embedded model read from its GGUF by transformers: minutes on 2 cores
def test_gemma3_gguf_lowmem_equals_transformer_lens():
    """Embedded Gemma-3-270m (GeGLU; llama.cpp stores its norm gains as 1 + w)."""
    source = resolve_model("gemma-3-270m", allow_download=False)
    lowmem = open_weights(source)
    assert isinstance(lowmem, LowMemReader) and lowmem.arch.glu == "GeGLU"
    tl = BridgeReader(source)
    for index in (0, lowmem.arch.n_layers - 1):
        a, b = lowmem.layer(index), tl.layer(index)
        for name in ("gate", "lin", "out"):
            assert torch.allclose(getattr(a, name), getattr(b, name), atol=1e-6)
