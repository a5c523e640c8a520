"""What each firing does to the next token (neuroscope/recompute/next_token.py): the direct effect against an explicit
perturbation of the residual with the final norm's scale held, the rank against an argsort over the vocabulary,
the viewer's values against the page's, and --ablation_effect against a separate hook computation."""

from __future__ import annotations

import base64
import json
import re
from unittest import mock

import numpy as np
import pytest
import torch
from helpers import PASS_TEXTS, dump_dom, run_pass, visible_text

from gated_core.cli import run_main
from gated_core.models.loading import load_hf_model, load_tokenizer
from gated_core.models.sources import resolve_model
from neuroscope import d_recompute_vis
from neuroscope.core.hooks import final_norm_input, mlp_hooks, run_model
from neuroscope.data.dataset_store import save_dataset
from neuroscope.data.tokenization import build_dataset
from neuroscope.recompute.next_token import Readout, direct_effects, next_token_ranks, output_weights
from neuroscope.view.parts import inflated

DTYPES = {"u1": "<u1", "u2": "<u2", "i4": "<i4", "f4": "<f4", "f2": "<f2"}
GAIN_OFFSET = {"gemma2": 1.0, "gemma3_text": 1.0}


def unpack(packed):
    return np.frombuffer(base64.b64decode(packed["b64"]), dtype=DTYPES[packed["dtype"]])


def held_norm(model, family, residual):
    """The final norm as a function of x with its scale held at that of `residual` (the test's own formula)."""
    norm = model.model.norm
    r = residual.float()
    if family == "olmo":
        scale = torch.rsqrt(r.var(-1, unbiased=False, keepdim=True) + 1e-5)
        return lambda x: (x.float() - x.float().mean(-1, keepdim=True)) * scale
    eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", None))
    scale = torch.rsqrt(r.pow(2).mean(-1, keepdim=True) + eps)
    gain = norm.weight.float() + GAIN_OFFSET.get(family, 0.0)
    return lambda x: x.float() * scale * gain


@pytest.mark.parametrize("family", ["llama", "gemma2", "olmo"])
def test_direct_effect_equals_a_perturbation_with_the_norm_scale_held(tiny_models, family):
    """DE / a = d logit_t / d δ when δ · w_out is added to the final norm's input at p and the norm's scale is held."""
    model, _ = load_hf_model(resolve_model(str(tiny_models[family])))
    generator = torch.Generator().manual_seed(3)
    input_ids = torch.randint(0, 256, (2, 9), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 6:] = 0
    layer, neuron = 0, 5
    kept = {}
    with mlp_hooks(model, lambda lay, g, u, a: kept.__setitem__("a", a.clone()), [layer]), final_norm_input(model) as captured:
        run_model(model, input_ids, attention_mask)
    residual = captured["x"].clone()
    rows, positions = torch.tensor([0, 0, 1, 1]), torch.tensor([3, 8, 2, 5])  # (0, 8) and (1, 5): a document's last token
    a = kept["a"][rows, positions, neuron]
    w_out = output_weights(model, layer, torch.full((4,), neuron))
    tokens, effects = direct_effects(Readout.of(model), residual, input_ids, attention_mask, rows, positions, a, w_out)
    assert tokens.tolist() == [int(input_ids[0, 4]), -1, int(input_ids[1, 3]), -1]
    assert np.isnan(effects[[1, 3]]).all()
    held = held_norm(model, family, residual)
    with torch.no_grad():
        assert torch.allclose(held(residual).to(residual.dtype), model.model.norm(residual), atol=1e-5)  # the norm, at r
        delta = 1.0  # the map with the scale held is linear: any step is exact up to rounding
        for k in (0, 2):
            row, p = int(rows[k]), int(positions[k])
            bumped = residual.clone()
            bumped[row, p] += delta * model.model.layers[layer].mlp.down_proj.weight[:, neuron]
            with mock.patch.object(model.model.norm, "forward", held):
                change = (model.lm_head(model.model.norm(bumped)) - model.lm_head(model.model.norm(residual)))[row, p, tokens[k]]
            assert effects[k] == pytest.approx(float(a[k]) * float(change) / delta, rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("family", ["llama", "gemma2", "olmo"])
def test_rank_is_the_place_in_an_argsort_of_the_whole_vocabulary(tiny_models, family):
    model, _ = load_hf_model(resolve_model(str(tiny_models[family])))
    layer = 1
    neurons = np.array([0, 7, 7, 40, 95, 3], dtype=np.int64)
    targets = np.array([5, 0, 299, 17, 256, -1], dtype=np.int64)
    ranks = next_token_ranks(Readout.of(model), model, layer, neurons, targets)
    with torch.no_grad():
        w_out = model.model.layers[layer].mlp.down_proj.weight.T.float()  # [neuron d_model]
        if family == "olmo":
            direction = w_out - w_out.mean(-1, keepdim=True)
        else:
            direction = w_out * (model.model.norm.weight.float() + GAIN_OFFSET.get(family, 0.0))
        scores = direction @ model.lm_head.weight.float().T  # [neuron vocab]
    for neuron, target, rank in zip(neurons, targets, ranks):
        if target < 0:
            assert rank == 0
            continue
        order = torch.argsort(scores[neuron], descending=True).tolist()
        assert rank == order.index(int(target)) + 1


@pytest.fixture(scope="module")
def pages(tiny_models, tmp_path_factory):
    """One neuron's page (with --ablation_effect) and its view in a viewer with the page's coloured tokens."""
    import datasets

    folder = tiny_models["llama"]
    source = resolve_model(str(folder))
    datadir = tmp_path_factory.mktemp("next_token")
    dataset, meta = build_dataset(datasets.Dataset.from_dict({"text": PASS_TEXTS}), load_tokenizer(source), None, max_length=48)
    meta.update({"tokenizer": source.name, "dataset": "test"})
    save_dataset(dataset, meta, datadir / "data")
    assert run_pass(folder, datadir, "ref") == 0
    layer, neuron = 1, 17
    results = datadir / "results"
    argv = ["--model", str(folder), "--datadir", str(datadir), "--activations", "ref", "--results_dir", str(results),
            "--device", "cpu", "--neurons", f"{layer}.{neuron}", "--viewer", "one", "--window", "50", "10",
            "--context", "0", "0", "--ablation_effect", "--batch_size", "3"]
    assert run_main(d_recompute_vis.main, argv) == 0
    top = results / "local" / "llama" / "neuroscope"
    page = (top / f"L{layer}" / f"N{neuron}" / "vis.html").read_text()
    call = re.search(r"neuroscope\.layer\((\d+),(\{.*?\})\);\n", page)
    viewer = (top / "one" / "data" / f"layer_{layer}.js").read_text()
    return {"source": source, "dataset": dataset, "layer": layer, "neuron": neuron, "folder": top,
            "page": json.loads(call.group(2)), "viewer": inflated(json.loads(re.fullmatch(r"neuroscope\.layer\(\d+,(.*)\);\n", viewer, re.S).group(1)))}


def test_viewer_and_page_carry_the_same_next_token_values(pages):
    page, viewer = pages["page"], pages["viewer"]
    assert unpack(page["list_offsets"]).tolist() == unpack(viewer["list_offsets"]).tolist()
    tokens = unpack(page["example_next"])
    assert len(tokens) >= 6 and (tokens >= 0).any()
    assert tokens.tolist() == unpack(viewer["example_next"]).tolist()
    assert unpack(page["example_rank"]).tolist() == unpack(viewer["example_rank"]).tolist()
    assert ((unpack(page["example_rank"]) > 0) == (tokens >= 0)).all()
    np.testing.assert_allclose(unpack(page["example_effect"]), unpack(viewer["example_effect"]), rtol=1e-5, atol=1e-7)
    assert np.isnan(unpack(page["example_effect"])[tokens < 0]).all()
    assert "example_ablation" in page and "example_ablation" not in viewer  # pages only


def test_ablation_effect_equals_a_separate_hook_computation(pages):
    """Each shown example: the next-token loss with a[p, neuron] of its layer zeroed, minus the clean loss, one
    document at a time through the whole Hugging Face model (logits included)."""
    page, layer, neuron = pages["page"], pages["layer"], pages["neuron"]
    model, _ = load_hf_model(pages["source"])
    window_doc, peaks = unpack(page["window_doc"]), unpack(page["example_peak"])
    windows, ablation = unpack(page["example_window"]), unpack(page["example_ablation"])
    tokens = unpack(page["example_next"])
    checked = 0
    for e in range(len(peaks)):
        doc, p = int(window_doc[windows[e]]), int(peaks[e])  # a page's window is its whole document
        ids = torch.tensor([pages["dataset"][doc]["input_ids"]])
        if p + 1 >= ids.shape[1]:
            assert tokens[e] == -1 and np.isnan(ablation[e])
            continue
        assert tokens[e] == int(ids[0, p + 1])

        def zero(module, inputs, p=p):
            inputs[0][0, p, neuron] = 0

        with torch.no_grad():
            clean = torch.nn.functional.cross_entropy(model(ids).logits[0, p], ids[0, p + 1])
            handle = model.model.layers[layer].mlp.down_proj.register_forward_pre_hook(zero)
            try:
                ablated = torch.nn.functional.cross_entropy(model(ids).logits[0, p], ids[0, p + 1])
            finally:
                handle.remove()
        assert ablation[e] == pytest.approx(float(ablated - clean), rel=1e-3, abs=1e-5)
        checked += 1
    assert checked >= 4


@pytest.mark.slow
def test_page_shows_each_example_s_next_token(pages, tmp_path):
    """The meta line of each example: next token, direct effect and rank (and the ablation effect on a page), the
    definitions in its title, and a select above each list that orders it by direct effect."""
    layer, neuron = pages["layer"], pages["neuron"]
    dom = dump_dom(pages["folder"] / f"L{layer}" / f"N{neuron}" / "vis.html")
    visible = visible_text(dom)
    tokens, effects = unpack(pages["page"]["example_next"]), unpack(pages["page"]["example_effect"])
    assert re.search(r"#\d+ · document \d+ · token \d+ · a \S+ · → \".*\" · direct effect [+-]\S+ \(rank \d+\) · Δloss if zeroed [+-]\S+",
                     visible)
    shown = re.findall(r"direct effect ([+-]\S+) \(rank (\d+)\)", visible)  # the lists in order, as the payload has them
    assert [int(rank) for _, rank in shown] == unpack(pages["page"]["example_rank"])[tokens >= 0].tolist()
    np.testing.assert_allclose([float(value) for value, _ in shown], effects[tokens >= 0], rtol=5e-3)
    assert visible.count("direct effect") >= 6 and 'title="next token ' in dom and "the final norm's scale held" in dom
    assert dom.count('<option value="effect">by direct effect on the next token</option>') >= 2


@pytest.mark.slow
def test_a_list_orders_by_direct_effect(pages, tmp_path):
    """Choosing "by direct effect" in a list's select redraws it with the largest direct effect first (none last),
    each example keeping its rank number."""
    layer, neuron = pages["layer"], pages["neuron"]
    page = (pages["folder"] / f"L{layer}" / f"N{neuron}" / "vis.html").read_text()
    choose = ('<script>var box = document.getElementById("order-0"); box.value = "effect";'
              'box.dispatchEvent(new Event("change"));</script></body>')
    ordered = tmp_path / "ordered.html"
    ordered.write_text(page.replace("</body>", choose))
    dom = dump_dom(ordered)
    section = re.search(r'<section id="list-0">(.*?)</section>', dom, re.S).group(1)
    shown = re.findall(r"#(\d+) · document[^<]*?(?:direct effect ([+-]\S+)|end of document)", visible_text(section))
    data = pages["page"]
    first, stop = unpack(data["list_offsets"])[:2]
    effects = unpack(data["example_effect"])[first:stop]
    keys = np.where(np.isnan(effects), -np.inf, effects)
    assert [int(rank) for rank, _ in shown] == (np.argsort(-keys, kind="stable") + 1).tolist()
    assert len(shown) >= 2
