"""Functional roles on constructed weights where the answer is known (paper Section 6 and Appendix E)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wcos_casestudies import roles as R
from wcos_casestudies.constants import CLASS_NAMES


def _numpy_moments(w_out: np.ndarray, w_u: np.ndarray):
    """The definition, written out: C = cos(w_out, W_U columns); z with the unbiased std."""
    c = (w_out / np.linalg.norm(w_out, axis=1, keepdims=True)) @ (w_u / np.linalg.norm(w_u, axis=0, keepdims=True))
    mean = c.mean(axis=1)
    var = c.var(axis=1, ddof=1)
    z = (c - mean[:, None]) / np.sqrt(var)[:, None]
    return mean, var, (z ** 3).mean(axis=1), (z ** 4).mean(axis=1) - 3


def test_moments_match_direct_computation():
    gen = np.random.default_rng(0)
    w_u = gen.normal(size=(24, 700))
    layers = [gen.normal(size=(50, 24)) * (1 + gen.random((50, 1))) for _ in range(3)]
    layers[1][5] = w_u[:, 3]  # a heavy-tailed row
    got = R.unembed_moments((torch.tensor(x) for x in layers), torch.tensor(w_u), n_layers=3, chunk=16)
    for layer, w_out in enumerate(layers):
        mean, var, skew, kurt = _numpy_moments(w_out, w_u)
        np.testing.assert_allclose(got["mean"][layer].numpy(), mean, atol=1e-6)
        np.testing.assert_allclose(got["variance"][layer].numpy(), var, rtol=1e-4)
        np.testing.assert_allclose(got["skew"][layer].numpy(), skew, rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(got["kurtosis"][layer].numpy(), kurt, rtol=1e-3, atol=1e-3)
    scipy_stats = pytest.importorskip("scipy.stats")
    c = _numpy_moments(layers[0][:1], w_u)
    v = 700
    # scipy's (biased) estimators differ from the unbiased-std definition by known factors
    cos = (layers[0][:1] / np.linalg.norm(layers[0][:1])) @ (w_u / np.linalg.norm(w_u, axis=0))
    assert np.isclose(c[2][0], scipy_stats.skew(cos[0]) * ((v - 1) / v) ** 1.5)
    assert np.isclose(c[3][0] + 3, (scipy_stats.kurtosis(cos[0]) + 3) * ((v - 1) / v) ** 2)


def _planted_model(seed=0):
    """W_U with one dominant direction; neurons that copy a token's unembedding into layer 1."""
    gen = torch.Generator().manual_seed(seed)
    d, vocab, n = 64, 600, 40
    w_u = torch.randn(d, vocab, generator=gen, dtype=torch.float64)
    w_u[0] *= 1.5  # C varies most along e_0, with a bell-shaped distribution
    outs = [torch.randn(n, d, generator=gen, dtype=torch.float64) for _ in range(2)]
    outs[0][0] = torch.nn.functional.one_hot(torch.tensor(0), d).double()  # the partition neuron
    outs[1][7] = w_u[:, 13]
    outs[1][8] = w_u[:, 21]
    gatelin = torch.rand(2, n, generator=gen, dtype=torch.float64) * 0.4 - 0.2
    gatelin[1, 7], gatelin[1, 8] = 0.8, -0.8
    return w_u, outs, gatelin


def test_token_copying_neurons_are_prediction_or_suppression():
    w_u, outs, gatelin = _planted_model()
    moments = R.unembed_moments(iter(outs), w_u, n_layers=2)
    partition = R.mask_of(R.top_neurons(moments["variance"], 1), gatelin.shape)
    assert partition[0, 0]
    prediction, suppression, threshold = R.prediction_suppression(moments, gatelin, partition)
    assert moments["kurtosis"][1, 7] > threshold + 3 and moments["skew"][1, 7] > 0
    assert prediction[1, 7] and not suppression[1, 7]
    assert suppression[1, 8] and not prediction[1, 8]  # positive skew, negative gatelin
    assert not (prediction & suppression).any()
    categories = torch.full(gatelin.shape, 6)
    categories[1, 7], categories[1, 8] = 7, 0
    chosen = R.case_study_neurons(prediction, suppression, moments["kurtosis"], categories)
    assert chosen[0].name == "1.7" and chosen[0].io_class == "depletion"
    assert chosen[1].name == "1.8" and chosen[1].io_class == "enrichment"
    # the other typical classes come from prediction neurons of that class, never repeating a covered class
    classes = [c.io_class for c in chosen]
    assert len(classes) == len(set(classes))
    assert all(prediction[c.layer, c.neuron] for c in chosen[2:])


def test_partition_size_errors_and_default():
    from gated_core.errors import UserError

    with pytest.raises(UserError):
        R.top_neurons(torch.zeros(2, 3), 7)
    assert R.default_n_partition(32 * 11008) == 1000
    assert R.default_n_partition(192) == 10


def test_null_space_neuron_is_an_entropy_neuron():
    gen = torch.Generator().manual_seed(3)
    d, vocab = 32, 500
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    spectrum = torch.ones(d, dtype=torch.float64)
    spectrum[-3:] = 1e-3
    w_u = q @ torch.diag(spectrum) @ torch.randn(d, vocab, generator=gen, dtype=torch.float64)
    null = R.unembed_null_space(w_u, 3)
    assert null.shape == (d, 3)
    w_out = torch.randn(20, d, generator=gen, dtype=torch.float64)
    w_out[4] = q[:, -1] * 3 + q[:, -2]  # inside the null space
    scores = R.entropy_scores(w_out, null)
    assert torch.isclose(scores[4], torch.tensor(1.0), atol=1e-4)
    assert int(scores.argmax()) == 4 and float(scores.median()) < 0.6


def test_attention_roles_sign():
    gen = torch.Generator().manual_seed(4)
    d, heads = 16, 4
    directions = torch.randn(heads, d, generator=gen)
    w_out = torch.randn(6, d, generator=gen) * 0.1
    w_out[0] = directions[2] * 2  # writes the direction that makes head 2 attend to BOS
    w_out[1] = directions[2] * 2
    w_out[2] = -directions[1]
    gatelin = torch.tensor([0.9, -0.9, 0.9, 0.1, 0.1, 0.1])
    scores = R.attention_scores(w_out, directions)
    assert torch.isclose(scores[0, 2], torch.tensor(1.0))
    activation, deactivation = R.attention_roles(scores, gatelin)
    assert deactivation[0] and not activation[0]
    assert activation[1] and not deactivation[1]
    assert activation[2]  # negative score, positive gatelin
    assert not (activation[3:] | deactivation[3:]).any()


def test_bos_query_directions_match_hugging_face(tiny_models):
    """q_{A,h} = W_Q[A,h] k_{A,h}(BOS) from the bridge equals a computation on the raw HF model."""
    from gated_core.models.loading import load_bridge, load_hf_model
    from gated_core.models.sources import resolve_model

    source = resolve_model(str(tiny_models["llama"]))
    directions = R.bos_query_directions(load_bridge(source))
    model, tokenizer = load_hf_model(source)
    config = model.config
    n_heads, n_kv = config.num_attention_heads, config.num_key_value_heads
    d_head = config.hidden_size // n_heads
    with torch.no_grad():
        out = model(torch.tensor([[tokenizer.bos_token_id]]), output_hidden_states=True)
        for layer in range(config.num_hidden_layers):
            block = model.model.layers[layer]
            normed = block.input_layernorm(out.hidden_states[layer])[0, 0]
            keys = block.self_attn.k_proj(normed).view(n_kv, d_head)
            w_q = block.self_attn.q_proj.weight.view(n_heads, d_head, -1)  # [head d_head d_model]
            gain = block.input_layernorm.weight
            for head in range(n_heads):
                expected = gain * (w_q[head].T @ keys[head // (n_heads // n_kv)])
                assert torch.allclose(directions[layer, head], expected, atol=1e-5)


def test_contingency_rows_sum_to_role_sizes():
    gen = torch.Generator().manual_seed(5)
    categories = torch.randint(0, 11, (3, 50), generator=gen)
    roles = {"a": torch.rand(3, 50, generator=gen) > 0.5, "b": torch.rand(3, 50, generator=gen) > 0.9}
    table = R.contingency(roles, categories)
    for _, row in table.iterrows():
        assert sum(row[name] for name in CLASS_NAMES) == row["total"] == int(roles[row["role"]].sum())
    assert table.loc[0, CLASS_NAMES[3]] == int(((categories == 3) & roles["a"]).sum())
