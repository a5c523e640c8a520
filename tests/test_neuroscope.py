"""Neuroscope: the streaming pass against a brute-force computation in TransformerLens, batch sizes,
resumption, shards, recomputation, the pages, and bad inputs."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch
from helpers import BOS, PASS_K, PASS_TEXTS, STAT_KEYS, brute_force_lists, direct_histogram, dump_dom, run_pass, visible_text

from gated_core.artifacts import load_artifact
from gated_core.cli import run_main
from gated_core.models.loading import load_bridge, load_tokenizer
from gated_core.models.sources import resolve_model
from neuroscope import a_dataset, b2_recompute, b_activations, c_neuron_vis, d_recompute_vis
from neuroscope.activation_pass.activations import SIGN_COMBINATIONS, NeuronStats
from neuroscope.activation_pass.reducer import BatchReducer
from neuroscope.activation_pass.store import Statistics
from neuroscope.core.batches import batch_plan
from neuroscope.data.dataset_store import save_dataset
from neuroscope.data.tokenization import build_dataset
from neuroscope.recompute.examples import RecomputeMismatch, recompute_examples

K = PASS_K  # examples per neuron of run_pass

@pytest.fixture(scope="module")
def setup(tiny_models, tmp_path_factory):
    """A tiny Llama, a dataset of the texts above, and a reference run of the pass (batch 4)."""
    import datasets

    folder = tiny_models["llama"]
    source = resolve_model(str(folder))
    datadir = tmp_path_factory.mktemp("neuroscope")
    texts = datasets.Dataset.from_dict({"text": PASS_TEXTS})
    tokenizer = load_tokenizer(source)
    dataset, meta = build_dataset(texts, tokenizer, None, max_length=48)
    meta.update({"tokenizer": source.name, "dataset": "test"})
    save_dataset(dataset, meta, datadir / "data")
    assert run_pass(folder, datadir, "ref", batch_size=4) == 0
    return {"model": folder, "source": source, "datadir": datadir, "dataset": dataset,
            "stats": load_artifact(datadir / "ref" / "stats.pt")}


def test_pass_matches_brute_force_in_transformer_lens(setup):
    """Every activation of every document, one document at a time, through TransformerLens hooks: the
    example lists (BOS left out), the sign-combination lists, the mean, the frequencies and the histogram."""
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
    starts_with_bos = [ids[0] == BOS for ids in setup["dataset"]["input_ids"]]
    assert all(starts_with_bos) and stats["meta"]["examples_without_bos"]
    n_tokens = sum(p.shape[1] for p in post)
    assert int(stats["n_tokens"]) == n_tokens
    checked_lists, histogram_off = 0, 0
    for layer in range(n_layers):
        for neuron in range(d_mlp):
            expected = brute_force_lists(post, pre, lin, starts_with_bos, layer, neuron)
            got = {"top": (stats["top_values"], stats["top_docs"], stats["top_positions"], 1),
                   "bottom": (stats["bottom_values"], stats["bottom_docs"], stats["bottom_positions"], -1)}
            for index, name in enumerate(SIGN_COMBINATIONS):
                got[name] = (stats["combo_values"][:, :, index], stats["combo_docs"][:, :, index],
                             stats["combo_positions"][:, :, index], 1)
            for name, (values, docs, positions, sign) in got.items():
                rows = expected[name][:K]
                assert torch.allclose(sign * values[layer, neuron, :len(rows)], torch.tensor([abs(v) for v, _, _ in rows]),
                                      atol=1e-5), (layer, neuron, name)
                assert (docs[layer, neuron, len(rows):] == -1).all()
                keys = [v for v, _, _ in expected[name][:K + 1]]
                if all(b - a > 1e-4 for a, b in zip(keys, keys[1:])):  # no near-tie: documents and positions are determined
                    assert docs[layer, neuron, :len(rows)].tolist() == [d for _, d, _ in rows], (layer, neuron, name)
                    assert positions[layer, neuron, :len(rows)].tolist() == [p for _, _, p in rows], (layer, neuron, name)
                    checked_lists += 1
            all_post = torch.cat([p[layer, :, neuron] for p in post])
            all_pre = torch.cat([p[layer, :, neuron] for p in pre])
            all_lin = torch.cat([p[layer, :, neuron] for p in lin])
            assert float(stats["mean"][layer, neuron]) == pytest.approx(float(all_post.double().mean()), abs=1e-6)
            assert float(stats["gate_open"][layer, neuron]) == pytest.approx(float((all_pre > 0).double().mean()), abs=1e-9)
            combos = [((all_pre > 0) & (all_lin > 0)), ((all_pre > 0) & (all_lin <= 0)),
                      ((all_pre <= 0) & (all_lin > 0)), ((all_pre <= 0) & (all_lin <= 0))]
            expected_freq = torch.tensor([float(c.double().mean()) for c in combos], dtype=torch.float64)
            assert torch.allclose(stats["sign_frequencies"][layer, neuron], expected_freq, atol=1e-9)
            direct = torch.tensor(direct_histogram(all_post.tolist()))
            histogram_off += int((direct - stats["histogram"][layer, neuron]).abs().sum())
    assert checked_lists > 4 * n_layers * d_mlp  # most lists had no near-ties
    assert int(stats["histogram"].sum()) == n_tokens * n_layers * d_mlp
    assert histogram_off <= 4  # TransformerLens rounds differently in the last bit: a value on a bin edge may move


def test_reducer_against_brute_force_on_random_values():
    """Top, bottom, sign-combination lists and histogram against obvious loops: padding, ties (values
    rounded to 0.1), a = 0, documents of BOS alone or without BOS, every batch size; the histogram exactly."""
    gen = torch.Generator().manual_seed(3)
    n_layers, d_mlp, k = 2, 6, 3
    docs = [[BOS] + torch.randint(0, 9, (int(torch.randint(0, 12, (), generator=gen)),), generator=gen).tolist()
            for _ in range(11)]
    docs[3], docs[4] = [BOS], [1, 2, 3]
    gates = [[torch.randn(len(d), d_mlp, generator=gen).round(decimals=1) for d in docs] for _ in range(n_layers)]
    lins = [[torch.randn(len(d), d_mlp, generator=gen).round(decimals=1) for d in docs] for _ in range(n_layers)]
    for layer in range(n_layers):
        for g, u in zip(gates[layer], lins[layer]):
            g[:, 0] = g[:, 0].abs()  # neuron 0: the gate is open (or g = 0)
            u[:, 1] = 0  # neuron 1: a = 0 everywhere, so no sign-combination examples
    acts = [[torch.nn.functional.silu(g) * u for g, u in zip(gates[layer], lins[layer])] for layer in range(n_layers)]
    post = [torch.stack([acts[layer][d] for layer in range(n_layers)]) for d in range(len(docs))]  # [layer pos neuron]
    pre = [torch.stack([gates[layer][d] for layer in range(n_layers)]) for d in range(len(docs))]
    lin = [torch.stack([lins[layer][d] for layer in range(n_layers)]) for d in range(len(docs))]
    for batch_size in (1, 3, 4, 11):
        stats = _reduce(docs, post, pre, lin, batch_size, k, gen)
        for layer in range(n_layers):
            for neuron in range(d_mlp):
                expected = brute_force_lists(post, pre, lin, [d[0] == BOS for d in docs], layer, neuron)
                for index, name in enumerate(("top", "bottom", *SIGN_COMBINATIONS)):
                    rows = expected[name][:k]
                    slots = slice(0, len(rows))
                    assert stats.docs[layer, neuron, index, slots].tolist() == [d for _, d, _ in rows], (batch_size, name)
                    assert stats.positions[layer, neuron, index, slots].tolist() == [p for _, _, p in rows], (batch_size, name)
                    assert stats.keys[layer, neuron, index, slots].tolist() == pytest.approx([abs(v) for v, _, _ in rows])
                    assert (stats.docs[layer, neuron, index, len(rows):] == -1).all()
                values = torch.cat([p[layer, :, neuron] for p in post]).tolist()
                assert stats.histogram[layer, neuron].tolist() == direct_histogram(values)
    assert int(stats.n_tokens) == sum(len(d) for d in docs)


@pytest.mark.parametrize("holes", [True, False])
def test_reducer_keeps_every_document_with_examples_and_no_other(holes):
    """With k = the batch's rows every document with examples is in every list, and none without (a BOS alone):
    rows of right padding (reduced row by row) and masks with holes inside rows (the masked path); lists and
    histogram against loops."""
    gen = torch.Generator().manual_seed(5)
    mask = torch.tensor([[1, 1, 0, 1, 1, 0, 1], [0, 1, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 0], [1, 0, 0, 0, 0, 0, 0]])
    if not holes:
        mask = (torch.arange(mask.shape[1]) < mask.sum(dim=1, keepdim=True)).long()
    rows, width, d_mlp = mask.shape[0], mask.shape[1], 5
    ids = torch.randint(0, 9, (rows, width), generator=gen)
    ids[0, 0] = ids[2, 0] = ids[3, 0] = BOS  # row 3: a BOS alone, no examples
    g, u = (torch.randn(1, rows, width, d_mlp, generator=gen).round(decimals=1) for _ in range(2))
    a = torch.nn.functional.silu(g) * u
    stats = NeuronStats.empty(1, d_mlp, rows)  # k = rows: every document that has examples is in every list
    reducer = BatchReducer(stats, BOS)
    reducer.start(mask, ids)
    assert (reducer.layout.spans is None) == holes
    reducer(0, g[0], u[0], a[0])
    reducer.apply(torch.arange(rows))
    starts_with_bos = (ids[:, 0] == BOS).tolist()
    for neuron in range(d_mlp):
        expected = brute_force_lists(list(a.transpose(0, 1)), list(g.transpose(0, 1)), list(u.transpose(0, 1)),
                                     starts_with_bos, 0, neuron, mask.tolist())
        for index, name in enumerate(("top", "bottom", *SIGN_COMBINATIONS)):
            found = expected[name]
            assert stats.docs[0, neuron, index, :len(found)].tolist() == [d for _, d, _ in found], name
            assert stats.positions[0, neuron, index, :len(found)].tolist() == [p for _, _, p in found], name
            assert (stats.docs[0, neuron, index, len(found):] == -1).all(), name
        assert stats.histogram[0, neuron].tolist() == direct_histogram(a[0, :, :, neuron][mask.bool()].tolist())


def _reduce(docs, post, pre, lin, batch_size, k, gen):
    """Run the reducer over documents given as [layer pos neuron] values, batched and right-padded with noise."""
    n_layers, _, d_mlp = post[0].shape
    stats = NeuronStats.empty(n_layers, d_mlp, k)
    reducer = BatchReducer(stats, BOS)
    for batch in batch_plan([len(d) for d in docs], batch_size):
        width = max(len(docs[i]) for i in batch)
        ids = torch.zeros(len(batch), width, dtype=torch.long)
        mask = torch.zeros(len(batch), width, dtype=torch.long)
        for row, i in enumerate(batch):
            ids[row, :len(docs[i])], mask[row, :len(docs[i])] = torch.tensor(docs[i]), 1
        reducer.start(mask, ids)
        for layer in range(n_layers):
            padded = []
            for values in (pre, lin, post):
                tensor = 5 * torch.randn(len(batch), width, d_mlp, generator=gen)  # padding: large noise
                for row, i in enumerate(batch):
                    tensor[row, :len(docs[i])] = values[i][layer]
                padded.append(tensor)
            reducer(layer, *padded)
        reducer.apply(torch.tensor(batch))
    return stats


def test_ties_go_to_the_lower_document_and_first_position():
    stats = NeuronStats.empty(1, 2, 2)
    # candidates arrive out of document order; neuron 0 has a three-way tie at 5.0
    stats._merge_extremes(torch.tensor([[[5.0, 1.0]]]).expand(1, 2, 2).clone(), torch.tensor([[[7, 3]]]).expand(1, 2, 2),
                          torch.tensor([[[0, 0]]]).expand(1, 2, 2), top=True)
    stats._merge_extremes(torch.tensor([[[5.0, 5.0], [0.5, 9.0]]]), torch.tensor([[[4, 9], [4, 9]]]),
                          torch.tensor([[[2, 1], [2, 1]]]), top=True)
    assert stats.top_values[0, 0].tolist() == [5.0, 5.0] and stats.top_docs[0, 0].tolist() == [4, 7]
    assert stats.top_values[0, 1].tolist() == [9.0, 5.0] and stats.top_docs[0, 1].tolist() == [9, 7]
    from neuroscope.activation_pass.reducer import BatchReducer

    reducer = BatchReducer(NeuronStats.empty(1, 1, 1))
    reducer.start(torch.tensor([[1, 1, 1, 0]]))
    a = torch.tensor([[[2.0], [3.0], [3.0], [9.0]]])  # position 3 is padding; the max 3.0 comes first at 1
    reducer(0, a, a, a)
    reducer.apply(torch.tensor([0]))
    assert reducer.stats.top_positions.item() == 1 and reducer.stats.top_values.item() == 3.0
    assert reducer.stats.bottom_positions.item() == 0 and int(reducer.stats.n_tokens) == 3


@pytest.mark.parametrize("big_documents", [False, True])
def test_merge_ranked_equals_a_python_sort_by_key_then_document(big_documents):
    """Both paths (one selection for documents below 2^32 - 1, two stable sorts above): keys descending with
    -0.0 equal to 0.0 and ties to the lower document, empty slots (-inf, -1) last."""
    from neuroscope.core.ranked import merge_ranked

    gen = torch.Generator().manual_seed(3)
    rows, k, m = 200, 5, 4
    choices = torch.tensor([-torch.inf, -2.5, -1.0, -0.0, 0.0, 1.0, 3.0, torch.inf])
    offset = (1 << 40) if big_documents else 0

    def entries(n):
        keys = choices[torch.randint(0, len(choices), (rows, n), generator=gen)]
        docs = torch.randperm(rows * n, generator=gen).view(rows, n) + offset
        empty = keys == -torch.inf
        return keys, torch.where(empty, -1, docs), torch.where(empty, -1, torch.randint(0, 9, (rows, n), generator=gen))

    old, new = entries(k), entries(m)
    order = [sorted(range(k), key=lambda j: (-old[0][r, j].item(), old[1][r, j].item() < 0, old[1][r, j].item())) for r in range(rows)]
    old = tuple(t.gather(1, torch.tensor(order)) for t in old)  # a ranked list, as merges leave it
    merged = merge_ranked(*old, *new)
    for r in range(rows):
        everything = [(t[0][r, j].item(), t[1][r, j].item(), t[2][r, j].item()) for t in (old, new) for j in range(t[0].shape[1])]
        expected = sorted(everything, key=lambda e: (-e[0], e[1] < 0, e[1]))[:k]
        got = list(zip(*(t[r].tolist() for t in merged)))
        assert got == expected, r


@pytest.mark.parametrize("with_eligible", [False, True])
def test_first_hits_find_where_each_lists_source_first_holds_the_value(with_eligible):
    """The positions of candidates are read off a, the gate and eligibility; here against each list's source as
    `ExampleSources.formula` writes it, on values with many repeats, zeros and -0.0."""
    from neuroscope.activation_pass.reducer import SOURCE_OF_LIST, ExampleSources

    gen = torch.Generator().manual_seed(5)
    m, width = 300, 12
    a = torch.tensor([-2.0, -1.0, -0.0, 0.0, 1.0, 2.0])[torch.randint(0, 6, (m, width), generator=gen)]
    gate_open = torch.rand(m, width, generator=gen) < 0.5
    eligible = torch.rand(m, width, generator=gen) < 0.7 if with_eligible else None
    for index in range(6):
        source = ExampleSources.formula(SOURCE_OF_LIST[index], a, gate_open, eligible)
        values = source[torch.arange(m), torch.randint(0, width, (m,), generator=gen)]
        values = torch.where(torch.isfinite(values) & ((values != 0) | (index < 2)), values, torch.nan)  # as candidates
        hits = source == values[:, None]
        expected = torch.where(hits.any(dim=1), hits.to(torch.uint8).argmax(dim=1), 0)
        assert torch.equal(ExampleSources.first_hits(index, values, (a, gate_open, eligible)), expected), index


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
    from gated_core.models.loading import load_hf_model

    model, tokenizer = load_hf_model(setup["source"])
    neurons = [(0, 5), (1, 17)]
    stats = Statistics.from_file(setup["stats"])
    examples = recompute_examples(model, setup["dataset"], stats, neurons, 3, tokenizer.pad_token_id,
                                  torch.device("cpu"))
    for key in neurons:
        kinds = [e.kind for e in examples[key]]
        assert kinds.count("max") == kinds.count("min") == K and len(kinds) > 2 * K  # and sign-combination examples
        for example in examples[key]:
            assert example.act[example.position] == pytest.approx(example.stored, abs=1e-5)
            if example.kind in ("max", "min"):  # position 0 (BOS) is no example
                wanted = max(example.act[1:]) if example.kind == "max" else min(example.act[1:])
                assert example.stored == pytest.approx(wanted, abs=1e-5) and example.position > 0
    tampered = dataclasses.replace(stats, top_values=stats.top_values.clone())
    tampered.top_values[1, 17, 0] += 0.5
    with pytest.raises(RecomputeMismatch):
        recompute_examples(model, setup["dataset"], tampered, [(1, 17)], 3, tokenizer.pad_token_id, torch.device("cpu"))


@pytest.mark.slow
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
    page_path = folder / f"L{layer}" / f"N{neuron}" / "vis.html"
    page = page_path.read_text()
    assert "<script>alert" not in page and "alert(" not in page.replace("\\u003c", "<")  # the text is data (token ids), not markup
    assert page.count("</script>") == 1 and "src=" not in page.replace('src="data/', "")  # one inline script, nothing fetched
    assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", page, re.I), "external URL in the page"
    assert not re.search(r"""(src|href)\s*=\s*["'](https?:|//)""", page, re.I)
    index = (folder / "index.html").read_text()
    assert f"L{layer}/N{neuron}/vis.html" in index and "L0/N3/vis.html" in index
    # the two steps apart (b2_recompute.py keeps the values, c_neuron_vis.py renders them) write the same page
    page_path.unlink()
    steps = [a for a in argv if a != "--top_tokens" and a != "5"] + ["--neurons", f"{layer}.{neuron}", "0.3"]
    assert run_main(b2_recompute.main, steps) == 0 and not page_path.exists()
    assert run_main(c_neuron_vis.main, steps + ["--top_tokens", "5"]) == 0
    assert page_path.read_text() == page
    dom = dump_dom(page_path)
    visible = visible_text(dom)
    assert f"Neuron {layer}.{neuron}" in visible and "<script>alert" not in dom and "<b>" not in dom  # markup stayed text
    assert "<script>alert('not run')</script> & other <b>ma" in visible  # the example's shown tokens (48 in all)
    assert dom.count('class="example"') > 2 * K and "Max activations" in visible and "Min activations" in visible
    assert "Sign combinations of (g, u)" in visible and "<svg" in dom and "Position 0 (BOS) is left out" in visible
    assert "it promotes its “suppressed” list" in visible
    assert 'href="../../index.html"' in dom and 'id="next"' in dom
    position = int(setup["stats"]["top_positions"][layer, neuron, 0])
    assert f"document {script_doc} · token {position}" in visible
    titles = re.findall(r'class="t peak" [^>]*title="a (\S+) g (\S+) u (\S+)"', dom)
    assert len(titles) >= 2 * K  # every extreme token carries its a, g and u
    top = float(setup["stats"]["top_values"][layer, neuron, 0])
    assert float(titles[0][0]) == pytest.approx(top, rel=1e-2)  # the first one: the max (3 digits of a float16)
    act = torch.nn.functional.silu(torch.tensor(float(titles[0][1]))) * float(titles[0][2])
    assert float(act) == pytest.approx(top, rel=2e-2)  # a = SiLU(g) * u, from the page's own g and u


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


def test_lazy_positions_equal_dense_ones():
    """Positions looked up only for candidates that can enter a list equal those of max/min with indices."""
    gen = torch.Generator().manual_seed(7)
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] * 1 + [0] * 5])
    stats = NeuronStats.empty(1, 5, 2)
    reducer = BatchReducer(stats)
    for batch in range(4):
        g, u = torch.randn(3, 6, 5, generator=gen), torch.randn(3, 6, 5, generator=gen)
        a = torch.nn.functional.silu(g) * u
        reducer.start(mask)
        reducer(0, g, u, a)
        keys, positions = reducer.pending[0][:2]
        real = mask.bool()[..., None]
        dense = [a.masked_fill(~real, -torch.inf).max(dim=1).indices, a.masked_fill(~real, torch.inf).min(dim=1).indices]
        looked_up = positions[:2] >= 0
        assert looked_up[:, 0].all() or batch > 0  # the first batch: every candidate can enter
        for index in range(2):
            assert torch.equal(positions[index][looked_up[index]], dense[index][looked_up[index]])
        reducer.apply(torch.tensor([3 * batch, 3 * batch + 1, 3 * batch + 2]))
    assert int(stats.n_tokens) == 4 * 11


def test_include_bos_lets_position_zero_into_the_examples(setup):
    """--include_bos reproduces the seed: position 0 may be an example; means, frequencies and histograms do not change."""
    assert run_pass(setup["model"], setup["datadir"], "withbos", extra=["--include_bos"]) == 0
    with_bos, ref = load_artifact(setup["datadir"] / "withbos" / "stats.pt"), setup["stats"]
    assert not with_bos["meta"]["examples_without_bos"]
    assert (with_bos["top_positions"] == 0).any() and not (ref["top_positions"] == 0).any()
    assert (with_bos["top_values"][..., 0] >= ref["top_values"][..., 0]).all()
    assert (with_bos["bottom_values"][..., 0] <= ref["bottom_values"][..., 0]).all()
    for key in ("post_sum", "gate_positive", "both_positive", "histogram", "n_tokens"):
        assert torch.equal(with_bos[key], ref[key]), key


def test_old_statistics_load_with_a_note(setup, tmp_path, capsys):
    """Statistics of the first version (no histogram, no sign-combination lists) still make pages, which say
    what is missing; the pass refuses to continue them."""
    from gated_core.artifacts import save_artifact

    old = {key: value for key, value in setup["stats"].items() if not key.startswith(("combo_", "histogram"))}
    old["meta"] = {key: value for key, value in old["meta"].items() if key not in ("statistics_version", "examples_without_bos")}
    save_artifact(old, setup["datadir"] / "old" / "stats.pt")
    capsys.readouterr()
    assert run_pass(setup["model"], setup["datadir"], "old") == 2
    assert "older b_activations.py" in capsys.readouterr().err
    results = tmp_path / "results"
    argv = ["--model", str(setup["model"]), "--datadir", str(setup["datadir"]), "--activations", "old",
            "--results_dir", str(results), "--device", "cpu", "--neurons", "1.17"]
    assert run_main(d_recompute_vis.main, argv) == 0
    page = (results / "local" / "llama" / "neuroscope" / "L1" / "N17" / "vis.html").read_text()
    assert "older b_activations.py" in page and "Max activations" in page


def test_activation_that_flips_signs_is_refused(setup):
    from gated_core.errors import UserError
    from gated_core.models.loading import load_hf_model
    from neuroscope.core.hooks import check_activation_signs

    model, _ = load_hf_model(setup["source"])
    check_activation_signs(model)
    model.model.layers[0].mlp.act_fn = torch.nn.Softplus()  # positive for g < 0
    with pytest.raises(UserError, match="sign"):
        check_activation_signs(model)
