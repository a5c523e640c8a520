"""Typical examples of the activation pass: the hash, the bands, the bottom-k sample against an obvious loop over
every token (on random values and on a tiny model), merging parts, shards and resumption bit-identical to one run,
statistics of version 2 and runs without typical examples."""

from __future__ import annotations

import pytest
import torch
from helpers import brute_band

from gated_core.artifacts import load_artifact, save_artifact
from gated_core.cli import run_main
from gated_core.errors import UserError
from gated_core.models.sources import resolve_model
from neuroscope import b_activations
from neuroscope.activation_pass.activations import SIGN_COMBINATIONS, NeuronStats
from neuroscope.activation_pass.reducer import BatchReducer
from neuroscope.activation_pass.store import Statistics, load_stats, statistics_fingerprint, statistics_notes
from neuroscope.core.batches import batch_plan
from neuroscope.core.histogram import histogram_codes, typical_band_edges, typical_band_lookup, typical_bands
from neuroscope.core.ranked import EMPTY_HASH, POSITION_BITS, pack_tokens, reference_hash, token_hash, unpack_tokens
from neuroscope.recompute.examples import LIST_KINDS, TYPICAL_KINDS, typical_lists

BOS = 256  # the tiny tokenizer's <bos>
TYPICAL_KEYS = ("typical_values", "typical_docs", "typical_positions")
K, K_TYPICAL = 2, 3


def test_token_hash_is_splitmix64_in_int64():
    """The int64 torch hash equals the plain-integer splitmix64 finalizer, including at the extremes."""
    gen = torch.Generator().manual_seed(0)
    tokens = torch.cat([torch.randint(0, 2 ** 62, (2000,), generator=gen), torch.arange(300),
                        torch.tensor([2 ** 63 - 1, (2 ** 43 - 1) << POSITION_BITS])])
    hashes = token_hash(tokens)
    assert hashes.tolist() == [reference_hash(t) for t in tokens.tolist()]
    assert len(set(hashes.tolist())) == len(tokens)
    assert token_hash(torch.tensor([-1])).item() == EMPTY_HASH
    assert reference_hash(959135552437182909) == EMPTY_HASH  # the one token never sampled: document 914,702,942,311
    assert 959135552437182909 >> POSITION_BITS == 914_702_942_311
    docs, positions = torch.tensor([0, 5, -1, 123456]), torch.tensor([3, 0, -1, 1023])
    assert [t.tolist() for t in unpack_tokens(pack_tokens(docs, positions))] == [docs.tolist(), positions.tolist()]


def test_bands_follow_their_edges():
    """The band read from a value's bits is the one its |a| falls in, for float32 and bf16, edges and zeros included."""
    gen = torch.Generator().manual_seed(1)
    values = torch.cat([torch.randn(5000, generator=gen) * 3, torch.tensor([0.0, -0.0, 0.25, -0.25, 1.0, 4.0, -4.0,
                                                                            0.2499999, 3.9999998, 1e-40, float("inf")])])
    lookup = typical_band_lookup()
    for dtype in (torch.float32, torch.bfloat16):
        cast = values.to(dtype)
        bands = lookup[histogram_codes(cast).long()].tolist()
        assert bands == [brute_band(v) for v in cast.float().tolist()], dtype
    assert typical_band_edges().tolist() == [0.0, 0.25, 1.0, 4.0, float("inf")]


def brute_force_sample(docs, post, pre, lin, k):
    """[layer][neuron][combination][band] -> [(doc, position, a)] of the k tokens of smallest hash, by an obvious loop
    over every token (position 0 left out of documents that start with BOS)."""
    n_layers, _, d_mlp = post[0].shape
    cells = [[[[[] for _ in range(typical_bands())] for _ in SIGN_COMBINATIONS] for _ in range(d_mlp)] for _ in range(n_layers)]
    for doc, ids in enumerate(docs):
        for position in range(len(ids)):
            if position == 0 and ids[0] == BOS:
                continue
            key = reference_hash((doc << POSITION_BITS) + position)
            for layer in range(n_layers):
                for neuron in range(d_mlp):
                    a = post[doc][layer, position, neuron].item()
                    g, u = pre[doc][layer, position, neuron].item(), lin[doc][layer, position, neuron].item()
                    combination = 2 * (g <= 0) + (u <= 0)
                    cells[layer][neuron][combination][brute_band(a)].append((key, doc, position, a))
    return [[[[[row[1:] for row in sorted(cell)[:k]] for cell in combination] for combination in neuron] for neuron in layer]
            for layer in cells]


def random_documents(gen, n_layers=2, d_mlp=5, n_docs=12):
    """Documents (token ids, most starting with BOS) and their g, u, a [layer pos neuron], spread over every band."""
    docs = [[BOS] + torch.randint(0, 9, (int(torch.randint(0, 14, (), generator=gen)),), generator=gen).tolist()
            for _ in range(n_docs)]
    docs[3], docs[4] = [BOS], [1, 2, 3]
    pre = [2 * torch.randn(n_layers, len(d), d_mlp, generator=gen) for d in docs]
    lin = [2 * torch.randn(n_layers, len(d), d_mlp, generator=gen) for d in docs]
    for g, u in zip(pre, lin):
        u[:, :, 1] = 0  # neuron 1: a = 0 everywhere (band 0, "lin-")
        g[:, :, 2] = g[:, :, 2].abs() * 3  # neuron 2: the gate is open, large values
    post = [torch.nn.functional.silu(g) * u for g, u in zip(pre, lin)]
    return docs, post, pre, lin


def reduce(docs, post, pre, lin, batch_size, k_typical, budget=None, batches=None, device="cpu", dtype=torch.float32):
    """The reducer over documents given as [layer pos neuron] values, batched and right-padded with noise."""
    n_layers, _, d_mlp = post[0].shape
    stats = NeuronStats.empty(n_layers, d_mlp, 2, device, typical_per_band=k_typical)
    reducer = BatchReducer(stats, BOS)
    if budget is not None:
        reducer.typical.budget = budget
    gen = torch.Generator().manual_seed(5)
    plan = batch_plan([len(d) for d in docs], batch_size)
    for batch in (plan if batches is None else [plan[i] for i in batches]):
        width = max(len(docs[i]) for i in batch)
        ids, mask = torch.zeros(len(batch), width, dtype=torch.long), torch.zeros(len(batch), width, dtype=torch.long)
        for row, i in enumerate(batch):
            ids[row, :len(docs[i])], mask[row, :len(docs[i])] = torch.tensor(docs[i]), 1
        reducer.start(mask.to(device), ids.to(device), torch.tensor(batch, device=device))
        for layer in range(n_layers):
            padded = []
            for values in (pre, lin, post):
                tensor = 9 * torch.randn(len(batch), width, d_mlp, generator=gen)  # padding: large noise
                for row, i in enumerate(batch):
                    tensor[row, :len(docs[i])] = values[i][layer]
                padded.append(tensor.to(device, dtype))
            reducer(layer, *padded)
        reducer.apply(torch.tensor(batch, device=device))
    return stats.to("cpu")


def sample_of(stats):
    """The statistics' typical examples as [layer][neuron][combination][band] -> [(doc, position, a)]."""
    docs, positions, values = (t.tolist() for t in (stats.typical_docs, stats.typical_positions, stats.typical_values))
    return [[[[[(d, p, v) for d, p, v in zip(*cell) if d >= 0] for cell in zip(*combination)]
              for combination in zip(*neuron)] for neuron in zip(*layer)] for layer in zip(docs, positions, values)]


def test_sample_against_brute_force_on_random_values():
    """Every batch size, with and without chunked merging (a budget of 7 candidates): the k tokens of smallest hash
    per neuron, sign combination and band, with their a; empty slots after the band's last token."""
    docs, post, pre, lin = random_documents(torch.Generator().manual_seed(2))
    expected = brute_force_sample(docs, post, pre, lin, K_TYPICAL)
    filled = sum(len(cell) for layer in expected for neuron in layer for combination in neuron for cell in combination)
    assert filled > 60 and any(len(cell) < K_TYPICAL for cell in expected[0][0][0])  # full and partial slots
    reference = None
    for batch_size, budget in ((1, None), (3, None), (4, 7), (12, None), (12, 1)):
        stats = reduce(docs, post, pre, lin, batch_size, K_TYPICAL, budget)
        assert sample_of(stats) == expected, (batch_size, budget)
        if reference is not None:
            for name in ("sample_tokens", "sample_values"):
                assert torch.equal(getattr(stats, name), getattr(reference, name))
        reference = stats
    assert (reference.typical_values[reference.typical_docs < 0] == 0).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_sample_equals_the_cpu_one():
    """On a GPU, in float32 and bf16, whole or in chunks: the same sample as on the CPU, bit for bit."""
    docs, post, pre, lin = random_documents(torch.Generator().manual_seed(6), d_mlp=300)
    for dtype in (torch.float32, torch.bfloat16):
        for budget in (None, 50):
            cpu = reduce(docs, post, pre, lin, 4, K_TYPICAL, budget, dtype=dtype)
            cuda = reduce(docs, post, pre, lin, 4, K_TYPICAL, budget, device="cuda", dtype=dtype)
            for name in ("sample_tokens", "sample_values", "histogram"):
                assert torch.equal(getattr(cpu, name), getattr(cuda, name)), (dtype, budget, name)


def test_parts_merge_into_the_whole():
    """Statistics of two parts of the batches, merged, equal those of one run over all of them, bit for bit."""
    docs, post, pre, lin = random_documents(torch.Generator().manual_seed(4))
    n_batches = len(batch_plan([len(d) for d in docs], 3))
    whole = reduce(docs, post, pre, lin, 3, K_TYPICAL)
    first = reduce(docs, post, pre, lin, 3, K_TYPICAL, batches=range(0, 2))
    first.merge(reduce(docs, post, pre, lin, 3, K_TYPICAL, batches=range(2, n_batches)))
    for name in ("sample_tokens", "sample_values", "keys", "docs", "histogram"):
        assert torch.equal(getattr(first, name), getattr(whole, name)), name
    with pytest.raises(RuntimeError, match="typical examples per band"):
        whole.merge(NeuronStats.empty(2, 5, 2, typical_per_band=1))


@pytest.fixture(scope="module")
def setup(tiny_models, tmp_path_factory):
    """A tiny Llama, a dataset and a reference run of the pass (batch 4, 3 typical examples per band)."""
    import datasets

    from gated_core.models.loading import load_tokenizer
    from neuroscope.data.dataset_store import save_dataset
    from neuroscope.data.tokenization import build_dataset

    folder = tiny_models["llama"]
    source = resolve_model(str(folder))
    datadir = tmp_path_factory.mktemp("typical")
    texts = [f"Document {i}: " + " ".join(["gated", "neurons", "read", "and", "write"][: 1 + i % 5] * (1 + i % 4))
             for i in range(13)]
    dataset, meta = build_dataset(datasets.Dataset.from_dict({"text": texts}), load_tokenizer(source), None, max_length=40)
    meta.update({"tokenizer": source.name, "dataset": "test"})
    save_dataset(dataset, meta, datadir / "data")
    assert run_pass(folder, datadir, "ref") == 0
    return {"model": folder, "source": source, "datadir": datadir, "dataset": dataset,
            "stats": load_artifact(datadir / "ref" / "stats.pt")}


def run_pass(model, datadir, save_to, batch_size=4, extra=()):
    return run_main(b_activations.main, ["--model", str(model), "--datadir", str(datadir), "--dataset", "data",
                                         "--save_to", save_to, "--examples_per_neuron", str(K), "--batch_size",
                                         str(batch_size), "--device", "cpu", "--typical_per_band", str(K_TYPICAL), *extra])


def model_activations(source, dataset):
    """g, u and a [layer pos neuron] of every document, one document at a time, from hooks on the Hugging Face MLP."""
    from gated_core.models.loading import load_hf_model

    model, _ = load_hf_model(source)
    seen = {}
    hooks = []
    for index, layer in enumerate(model.model.layers):
        mlp = layer.mlp
        hooks.append(mlp.gate_proj.register_forward_hook(lambda m, i, o, index=index: seen.__setitem__(("g", index), o)))
        hooks.append(mlp.up_proj.register_forward_hook(lambda m, i, o, index=index: seen.__setitem__(("u", index), o)))
        hooks.append(mlp.down_proj.register_forward_hook(lambda m, i, o, index=index: seen.__setitem__(("a", index), i[0])))
    post, pre, lin = [], [], []
    with torch.no_grad():
        for ids in dataset["input_ids"]:
            model(input_ids=torch.tensor([ids]))
            for name, out in (("a", post), ("g", pre), ("u", lin)):
                out.append(torch.stack([seen[(name, i)][0] for i in range(len(model.model.layers))]).float())
    for hook in hooks:
        hook.remove()
    return post, pre, lin


def test_pass_sample_against_brute_force_on_a_model(setup):
    """The pass at batch size 1 (the same forward passes as one document at a time) against the obvious loop over
    every token's g, u and a; at batch size 4 the same tokens, but for values within float error of a band's edge."""
    post, pre, lin = model_activations(setup["source"], setup["dataset"])
    docs = setup["dataset"]["input_ids"]
    assert run_pass(setup["model"], setup["datadir"], "b1", batch_size=1) == 0
    one = Statistics.from_file(load_artifact(setup["datadir"] / "b1" / "stats.pt"))
    expected = brute_force_sample(docs, post, pre, lin, K_TYPICAL)
    got = sample_of(one)
    assert [[[[[(d, p) for d, p, _ in cell] for cell in c] for c in n] for n in layer] for layer in got] == \
           [[[[[(d, p) for d, p, _ in cell] for cell in c] for c in n] for n in layer] for layer in expected]
    values = torch.tensor([v for layer in got for n in layer for c in n for cell in c for _, _, v in cell])
    wanted = torch.tensor([v for layer in expected for n in layer for c in n for cell in c for _, _, v in cell])
    assert torch.allclose(values, wanted, atol=1e-6) and len(values) > 100
    ref = Statistics.from_file(setup["stats"])
    assert ref.typical_per_band == K_TYPICAL and ref.meta.typical_per_band == K_TYPICAL
    same = (ref.typical_docs == one.typical_docs) & (ref.typical_positions == one.typical_positions)
    assert same.float().mean() > 0.95  # (all of them here: no value within float error of a band's edge)
    assert torch.allclose(ref.typical_values[same], one.typical_values[same], atol=1e-5)


def _equal(a, b):
    for key in (*TYPICAL_KEYS, "top_values", "top_docs", "combo_docs", "histogram", "post_sum"):
        assert torch.equal(a[key], b[key]), key


def test_shards_and_resumption_are_exact(setup):
    datadir = setup["datadir"]
    for index in range(3):
        assert run_pass(setup["model"], datadir, "sharded", extra=["--num_shards", "3", "--shard_index", str(index)]) == 0
    assert run_main(b_activations.main, ["--datadir", str(datadir), "--save_to", "sharded", "--merge", "--num_shards", "3"]) == 0
    _equal(load_artifact(datadir / "sharded" / "stats.pt"), setup["stats"])
    assert run_pass(setup["model"], datadir, "resumed", extra=["--stop_after_batches", "1", "--checkpoint_every", "1"]) == 0
    assert run_pass(setup["model"], datadir, "resumed") == 0
    _equal(load_artifact(datadir / "resumed" / "stats.pt"), setup["stats"])


def test_settings_must_agree_and_zero_turns_them_off(setup, capsys):
    """A checkpoint or shard of another --typical_per_band is refused; 0 keeps none (empty tensors), a negative
    number is refused."""
    datadir = setup["datadir"]
    assert run_pass(setup["model"], datadir, "other", extra=["--stop_after_batches", "1", "--checkpoint_every", "1"]) == 0
    capsys.readouterr()
    assert run_pass(setup["model"], datadir, "other", extra=["--typical_per_band", "2"]) == 2
    assert "typical_per_band" in capsys.readouterr().err
    assert run_pass(setup["model"], datadir, "off", extra=["--typical_per_band", "0"]) == 0
    off = Statistics.from_file(load_artifact(datadir / "off" / "stats.pt"))
    assert off.typical_per_band == 0 and off.typical_docs.shape == (*off.top_docs.shape[:2], 4, typical_bands(), 0)
    assert torch.equal(off.top_docs, Statistics.from_file(setup["stats"]).top_docs)
    with pytest.raises(SystemExit) as exit_info:
        run_pass(setup["model"], datadir, "neg", extra=["--typical_per_band", "-1"])
    assert exit_info.value.code == 2 and "must be at least 0" in capsys.readouterr().err


def test_version_2_statistics_load_without_typical_examples(setup, tmp_path):
    """Statistics of version 2 (no typical examples) load for pages with None and keep their fingerprint; the pass
    refuses to continue them."""
    old = {key: value for key, value in setup["stats"].items() if key not in TYPICAL_KEYS}
    old["meta"] = {key: value for key, value in old["meta"].items() if key not in ("typical_per_band", "tensors_digest")}
    old["meta"]["statistics_version"] = 2
    save_artifact(old, tmp_path / "stats.pt")
    stats, meta, data = load_stats(tmp_path / "stats.pt", allow_old=True)
    loaded = Statistics.from_file(data)
    assert stats is None and loaded.typical_docs is None and loaded.typical_per_band == 0
    assert loaded.meta.statistics_version == 2 and "no typical examples" in statistics_notes(loaded.meta)[0]
    again = dict(data, meta=dict(data["meta"], typical_per_band=None))
    assert statistics_fingerprint(again) == statistics_fingerprint(data) == loaded.fingerprint
    with pytest.raises(UserError, match="no typical examples"):
        load_stats(tmp_path / "stats.pt")


def test_band_lists_are_the_smallest_hashes_of_the_whole_band():
    """What pages and the viewer show per band of |a| (`typical_lists`, the union of the sign combinations' samples cut
    to k) equals the k tokens of smallest hash among all the band's tokens, by an obvious loop over every token."""
    docs, post, pre, lin = random_documents(torch.Generator().manual_seed(7))
    stats = reduce(docs, post, pre, lin, 4, K_TYPICAL)  # its typical_* views are those of `Statistics`
    n_layers, _, d_mlp = post[0].shape
    for layer in range(n_layers):
        values, band_docs, positions = typical_lists(stats, layer)  # [band neuron k]
        for neuron in range(d_mlp):
            by_band = [[] for _ in range(typical_bands())]
            for doc, ids in enumerate(docs):
                for position in range(len(ids)):
                    if not (position == 0 and ids[0] == BOS):
                        a = post[doc][layer, position, neuron].item()
                        by_band[brute_band(a)].append((reference_hash((doc << POSITION_BITS) + position), doc, position, a))
            for band, tokens in enumerate(by_band):
                want = [row[1:3] for row in sorted(tokens)[:K_TYPICAL]]
                got = [(d, p) for d, p in zip(band_docs[band, neuron].tolist(), positions[band, neuron].tolist()) if d >= 0]
                assert got == want, (layer, neuron, band)
                assert values[band, neuron, :len(want)].tolist() == pytest.approx([row[3] for row in sorted(tokens)[:K_TYPICAL]])
    assert LIST_KINDS[-len(TYPICAL_KINDS):] == TYPICAL_KINDS and len(TYPICAL_KINDS) == typical_bands()
