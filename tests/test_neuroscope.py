"""Neuroscope: the streaming pass against a brute-force computation in TransformerLens, batch sizes,
resumption, shards, recomputation, the pages, and bad inputs."""

from __future__ import annotations

import html
import re
import shutil
import subprocess

import pytest
import torch

from neuroscope import a_dataset, b2_recompute, b_activations, c_neuron_vis, d_recompute_vis
from neuroscope.activations import NeuronStats
from neuroscope.data import build_dataset, save_dataset
from neuroscope.recompute import RecomputeMismatch, recompute_examples
from wcos_casestudies.artifacts import load_artifact
from wcos_casestudies.cli import run_main
from wcos_casestudies.models.loading import load_bridge, load_tokenizer
from wcos_casestudies.models.sources import resolve_model

TEXTS = [
    "Gated neurons read a direction and write another.",
    "<script>alert('not run')</script> & other <b>markup</b> stays text.",
    "Short.",
    "The gate decides; the linear input scales; the output weight writes.",
    "Repeat repeat repeat repeat repeat repeat repeat.",
    "A somewhat longer document about transformers, their residual stream and the MLP layers that read from it.",
    "x",
    "Numbers 1 2 3 4 5 6 7 8 9 10 11 12.",
    "Gated neurons read a direction and write another.",  # a duplicate of document 0
    "Last one, of medium length, to end the set.",
    "¿Qué? Ünïcödé ✓ and tabs\tand\nnew lines.",
]
K = 3


@pytest.fixture(scope="module")
def setup(tiny_models, tmp_path_factory):
    """A tiny Llama, a dataset of the texts above, and a reference run of the pass (batch 4)."""
    import datasets

    folder = tiny_models["llama"]
    source = resolve_model(str(folder))
    datadir = tmp_path_factory.mktemp("neuroscope")
    texts = datasets.Dataset.from_dict({"text": TEXTS})
    tokenizer = load_tokenizer(source)
    dataset, meta = build_dataset(texts, tokenizer, None, max_length=48)
    meta.update({"tokenizer": source.name, "dataset": "test"})
    save_dataset(dataset, meta, datadir / "data")
    assert run_pass(folder, datadir, "ref", batch_size=4) == 0
    return {"model": folder, "source": source, "datadir": datadir, "dataset": dataset,
            "stats": load_artifact(datadir / "ref" / "stats.pt")}


def run_pass(model, datadir, save_to, batch_size=4, extra=()):
    return run_main(b_activations.main, ["--model", str(model), "--datadir", str(datadir), "--dataset", "data",
                                         "--save_to", save_to, "--examples_per_neuron", str(K), "--batch_size",
                                         str(batch_size), "--device", "cpu", *extra])


STAT_KEYS = ("top_values", "top_docs", "top_positions", "bottom_values", "bottom_docs", "bottom_positions",
             "post_sum", "gate_positive", "lin_positive", "both_positive", "n_tokens")


def test_pass_matches_brute_force_in_transformer_lens(setup):
    """Every activation of every document, one document at a time, through TransformerLens hooks."""
    bridge = load_bridge(setup["source"])
    n_layers, d_mlp = bridge.cfg.n_layers, bridge.cfg.d_mlp
    post, pre, lin = [], [], []
    with torch.no_grad():
        for ids in setup["dataset"]["input_ids"]:
            _, cache = bridge.run_with_cache(torch.tensor([ids]))
            post.append(torch.stack([cache[f"blocks.{i}.mlp.hook_post"][0] for i in range(n_layers)]))  # [layer pos neuron]
            pre.append(torch.stack([cache[f"blocks.{i}.mlp.hook_pre"][0] for i in range(n_layers)]))
            lin.append(torch.stack([cache[f"blocks.{i}.mlp.hook_pre_linear"][0] for i in range(n_layers)]))
    stats = setup["stats"]
    n_tokens = sum(p.shape[1] for p in post)
    assert int(stats["n_tokens"]) == n_tokens
    checked_docs = 0
    for layer in range(n_layers):
        for neuron in range(d_mlp):
            for kind, sign in (("top", 1.0), ("bottom", -1.0)):
                # obvious loop: each document's extreme and its first position, sorted by value then document
                per_doc = []
                for doc, acts in enumerate(post):
                    values = sign * acts[layer, :, neuron]
                    best = float(values.max())
                    position = int(torch.nonzero(values == values.max())[0])
                    per_doc.append((-best, doc, position))
                per_doc.sort()
                expected_values = [-sign * v for v, _, _ in per_doc[:K]]
                assert torch.allclose(stats[f"{kind}_values"][layer, neuron], torch.tensor(expected_values), atol=1e-5)
                gaps = [per_doc[i + 1][0] - per_doc[i][0] for i in range(K)]
                if min(gaps) > 1e-4:  # no near-tie at or next to the cut: documents and positions are determined
                    assert stats[f"{kind}_docs"][layer, neuron].tolist() == [d for _, d, _ in per_doc[:K]]
                    assert stats[f"{kind}_positions"][layer, neuron].tolist() == [p for _, _, p in per_doc[:K]]
                    checked_docs += 1
            all_post = torch.cat([p[layer, :, neuron] for p in post])
            all_pre = torch.cat([p[layer, :, neuron] for p in pre])
            all_lin = torch.cat([p[layer, :, neuron] for p in lin])
            assert float(stats["mean"][layer, neuron]) == pytest.approx(float(all_post.double().mean()), abs=1e-6)
            assert float(stats["gate_open"][layer, neuron]) == pytest.approx(float((all_pre > 0).double().mean()), abs=1e-9)
            combos = [((all_pre > 0) & (all_lin > 0)), ((all_pre > 0) & (all_lin <= 0)),
                      ((all_pre <= 0) & (all_lin > 0)), ((all_pre <= 0) & (all_lin <= 0))]
            expected = torch.tensor([float(c.double().mean()) for c in combos], dtype=torch.float64)
            assert torch.allclose(stats["sign_frequencies"][layer, neuron], expected, atol=1e-9)
    assert checked_docs > n_layers * d_mlp  # most neurons had no near-ties


def test_ties_go_to_the_lower_document_and_first_position():
    stats = NeuronStats.empty(1, 2, 2)
    # candidates arrive out of document order; neuron 0 has a three-way tie at 5.0
    stats._merge_extremes(torch.tensor([[[5.0, 1.0]]]).expand(1, 2, 2).clone(), torch.tensor([[[7, 3]]]).expand(1, 2, 2),
                          torch.tensor([[[0, 0]]]).expand(1, 2, 2), top=True)
    stats._merge_extremes(torch.tensor([[[5.0, 5.0], [0.5, 9.0]]]), torch.tensor([[[4, 9], [4, 9]]]),
                          torch.tensor([[[2, 1], [2, 1]]]), top=True)
    assert stats.top_values[0, 0].tolist() == [5.0, 5.0] and stats.top_docs[0, 0].tolist() == [4, 7]
    assert stats.top_values[0, 1].tolist() == [9.0, 5.0] and stats.top_docs[0, 1].tolist() == [9, 7]
    from neuroscope.activations import BatchReducer

    reducer = BatchReducer(NeuronStats.empty(1, 1, 1))
    reducer.start(torch.tensor([[1, 1, 1, 0]]))
    a = torch.tensor([[[2.0], [3.0], [3.0], [9.0]]])  # position 3 is padding; the max 3.0 comes first at 1
    reducer(0, a, a, a)
    reducer.apply(torch.tensor([0]))
    assert reducer.stats.top_positions.item() == 1 and reducer.stats.top_values.item() == 3.0
    assert reducer.stats.bottom_positions.item() == 0 and int(reducer.stats.n_tokens) == 3


def _equal(a, b, exact=True):
    for key in STAT_KEYS:
        if exact:
            assert torch.equal(a[key], b[key]), key
        else:
            close = torch.allclose(a[key].double(), b[key].double(), atol=1e-5) if a[key].is_floating_point() else None
            assert close is None or close, key


def test_batch_sizes_agree(setup):
    assert run_pass(setup["model"], setup["datadir"], "b1", batch_size=1) == 0
    one = load_artifact(setup["datadir"] / "b1" / "stats.pt")
    ref = setup["stats"]
    for key in ("top_values", "bottom_values"):
        assert torch.allclose(one[key], ref[key], atol=1e-5)
    assert torch.allclose(one["mean"], ref["mean"], atol=1e-6)
    for key in ("gate_positive", "lin_positive", "both_positive", "n_tokens"):
        assert torch.equal(one[key], ref[key])


def test_resume_after_interruption_is_exact(setup):
    datadir = setup["datadir"]
    assert run_pass(setup["model"], datadir, "resumed", extra=["--stop_after_batches", "1", "--checkpoint_every", "1"]) == 0
    assert (datadir / "resumed" / "stats.partial.pt").exists() and not (datadir / "resumed" / "stats.pt").exists()
    assert run_pass(setup["model"], datadir, "resumed", extra=["--stop_after_batches", "1"]) == 0
    assert run_pass(setup["model"], datadir, "resumed") == 0
    assert not (datadir / "resumed" / "stats.partial.pt").exists()
    _equal(load_artifact(datadir / "resumed" / "stats.pt"), setup["stats"])


def test_shards_and_merge_are_exact(setup, capsys):
    datadir = setup["datadir"]
    for index in range(3):
        assert run_pass(setup["model"], datadir, "sharded", extra=["--num_shards", "3", "--shard_index", str(index)]) == 0
    merge = ["--datadir", str(datadir), "--save_to", "sharded", "--merge", "--num_shards", "3"]
    assert run_main(b_activations.main, merge) == 0
    _equal(load_artifact(datadir / "sharded" / "stats.pt"), setup["stats"])
    # a missing shard: one clear line, exit 2, nothing written
    (datadir / "sharded" / "stats.pt").unlink()
    (datadir / "sharded" / "stats.shard1of3.pt").unlink()
    capsys.readouterr()
    assert run_main(b_activations.main, merge) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: shards do not add up") and len(err.splitlines()) == 1
    assert not (datadir / "sharded" / "stats.pt").exists()


def test_recompute_equals_stored_and_fails_loudly(setup):
    from wcos_casestudies.models.loading import load_hf_model

    model, tokenizer = load_hf_model(setup["source"])
    neurons = [(0, 5), (1, 17)]
    examples = recompute_examples(model, setup["dataset"], setup["stats"], neurons, 3, tokenizer.pad_token_id,
                                  torch.device("cpu"))
    for key in neurons:
        assert len(examples[key]) == 2 * K
        for example in examples[key]:
            assert example.act[example.position] == pytest.approx(example.stored, abs=1e-5)
            wanted = max(example.act) if example.kind == "max" else min(example.act)
            assert example.stored == pytest.approx(wanted, abs=1e-5)
    tampered = {**setup["stats"], "top_values": setup["stats"]["top_values"].clone()}
    tampered["top_values"][1, 17, 0] += 0.5
    with pytest.raises(RecomputeMismatch):
        recompute_examples(model, setup["dataset"], tampered, [(1, 17)], 3, tokenizer.pad_token_id, torch.device("cpu"))


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_pages(setup, tmp_path, capsys):
    results = tmp_path / "results"
    argv = ["--model", str(setup["model"]), "--datadir", str(setup["datadir"]), "--activations", "ref",
            "--results_dir", str(results), "--device", "cpu", "--top_tokens", "5"]
    # the neuron whose top document is the <script> one, so that the page must escape it
    tokenizer = load_tokenizer(setup["source"])
    script_doc = next(i for i, ids in enumerate(setup["dataset"]["input_ids"]) if "<script>" in tokenizer.decode(ids))
    layer, neuron = map(int, torch.nonzero(setup["stats"]["top_docs"][..., 0] == script_doc)[0])
    assert run_main(d_recompute_vis.main, argv + ["--neurons", f"{layer}.{neuron}", "0.3"]) == 0
    folder = results / "local" / "llama" / "neuroscope"
    page = (folder / f"L{layer}" / f"N{neuron}" / "vis.html").read_text()
    assert "<script>alert" not in page and page.count("<script>") == 1  # only the page's own script
    visible = html.unescape(re.sub(r"<[^>]+>", "", page))
    assert "<script>alert('not run')</script> & other <b>ma" in visible  # truncated at 48 tokens
    assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", page, re.I), "external URL in the page"
    assert not re.search(r"""(src|href)\s*=\s*["'](https?:|//)""", page, re.I)
    assert page.count('class="example"') == 2 * K and "Max activations" in page and "Min activations" in page
    assert 'href="../../index.html"' in page and 'id="next"' in page
    index = (folder / "index.html").read_text()
    assert f"L{layer}/N{neuron}/vis.html" in index and "L0/N3/vis.html" in index
    # the two steps apart (b2_recompute.py keeps the values, c_neuron_vis.py renders them) write the same page
    page_path = folder / f"L{layer}" / f"N{neuron}" / "vis.html"
    page_path.unlink()
    steps = [a for a in argv if a != "--top_tokens" and a != "5"] + ["--neurons", f"{layer}.{neuron}", "0.3"]
    assert run_main(b2_recompute.main, steps) == 0 and not page_path.exists()
    assert run_main(c_neuron_vis.main, steps + ["--top_tokens", "5"]) == 0
    assert page_path.read_text() == page
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium is not installed (.ci/run installs it)")
    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                          "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'chrome'}",
                          "--dump-dom", (folder / f"L{layer}" / f"N{neuron}" / "vis.html").as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    assert dom.count('class="example"') == 2 * K
    assert "<script>alert" not in dom and "Neuron" in dom
    assert "<script>alert('not run')</script>" in html.unescape(re.sub(r"<[^>]+>", "", dom))


def test_bad_inputs(setup, tmp_path, capsys):
    datadir = setup["datadir"]
    model = str(setup["model"])

    def fails(main, argv, match):
        before = sorted(p for p in datadir.rglob("*"))
        capsys.readouterr()
        assert run_main(main, argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("error:") and match in err, err
        assert sorted(p for p in datadir.rglob("*")) == before

    base = ["--model", model, "--datadir", str(datadir), "--device", "cpu"]
    fails(b_activations.main, base + ["--dataset", "nope", "--save_to", "x"], "no such dataset folder")
    fails(b_activations.main, base + ["--dataset", "data", "--save_to", "x", "--examples_per_neuron", "50"], "--examples_per_neuron")
    vis = base + ["--activations", "ref", "--results_dir", str(tmp_path)]
    fails(d_recompute_vis.main, vis + ["--neurons", "1-17"], "LAYER.NEURON")
    fails(d_recompute_vis.main, vis + ["--neurons", "2.0"], "out of range")
    fails(d_recompute_vis.main, vis + ["--neurons", "0.96"], "out of range")
    other = ["--model", "smollm2-135m", "--datadir", str(datadir), "--activations", "ref", "--neurons", "0.1", "--device", "cpu",
             "--results_dir", str(tmp_path)]
    fails(d_recompute_vis.main, other, "statistics of local/llama")
    # a dataset tokenized for another tokenizer (SmolLM2's, vocabulary 49152)
    assert run_main(a_dataset.main, ["--datadir", str(tmp_path), "--save_to", "smol", "--Mtokens", "0.002"]) == 0
    fails(b_activations.main, ["--model", model, "--datadir", str(tmp_path), "--dataset", "smol", "--save_to", "x",
                               "--device", "cpu"], "tokenized with")
    fails(a_dataset.main, ["--datadir", str(tmp_path), "--save_to", "smol", "--Mtokens", "0.002"], "exists")


def test_masked_and_per_document_reductions_agree():
    """The two ways of skipping padding (per-document views on CPUs, masked batches on GPUs) give the same numbers."""
    from neuroscope.activations import BatchReducer

    gen = torch.Generator().manual_seed(7)
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] * 1 + [0] * 5])
    g, u = torch.randn(3, 6, 5, generator=gen), torch.randn(3, 6, 5, generator=gen)
    a = torch.nn.functional.silu(g) * u
    results = []
    for per_document in (True, False):
        reducer = BatchReducer(NeuronStats.empty(1, 5, 2))
        reducer.per_document = per_document
        reducer.start(mask)
        reducer(0, g, u, a)
        reducer.apply(torch.tensor([4, 0, 9]))
        results.append(reducer.stats.state_dict())
    for key in STAT_KEYS:
        if key == "post_sum":  # float32 sums in another order: equal up to rounding
            assert torch.allclose(results[0][key].double(), results[1][key].double(), rtol=1e-6, atol=2 ** 8), key
        else:
            assert torch.equal(results[0][key], results[1][key]), key
    assert int(results[0]["n_tokens"]) == 11
