"""The compact viewer of every neuron: its data against a direct recomputation, escaping, no address of
any kind, and the page rendered in headless Chromium (deep link, filters, timing)."""

from __future__ import annotations

import dataclasses
import decimal
import html
import json
import re
import shutil
import urllib.parse

import numpy as np
import pytest
import torch
from helpers import CONTEXT, PASS_TEXTS, WINDOW, dump_dom, read_call, tiny_run, unpack

from gated_core.cli import run_main
from gated_core.models.loading import load_hf_model, load_tokenizer
from neuroscope import d_recompute_vis
from neuroscope.activation_pass.store import Statistics
from neuroscope.core.histogram import histogram_edges, typical_band_edges, typical_bands
from neuroscope.recompute.examples import LIST_KINDS, recompute_examples
from neuroscope.view.neuron_view import to_json
from neuroscope.view.parts import deflated

URL = re.compile(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}|(src|href)\s*=\s*[\"'](https?:|//)", re.I)


def copied_pages(viewer, tmp_path):
    """The pages folder of a copy of the shared viewer's data folder (its dataset, statistics and results), for a test
    that writes viewers beside the shared one."""
    shutil.copytree(viewer["pages"].parents[3], tmp_path / "world")
    return tmp_path / "world" / viewer["pages"].relative_to(viewer["pages"].parents[3])


def test_viewer_files_hold_only_data_and_no_address(viewer):
    folder = viewer["folder"]
    names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert names == ["data/docs_0.js", "data/index.js", "data/layer_0.js", "data/layer_1.js", "data/meta.js", "data/search_0.js",
                     "data/top_0.js", "data/vocab.js", "lists/index.html", "lists/layer_0.html", "lists/layer_1.html", "neuroscope_viewer.json", "viewer.html"]
    assert not (viewer["pages"] / "L0").exists()  # 192 neurons: more than --max_pages, so no vis.html pages
    for path in folder.rglob("*"):
        if path.is_file():
            text = path.read_text()
            assert not URL.search(text), path
            if path.suffix == ".js":
                assert "<" not in text and ">" not in text, path  # nothing in a data file can close a script or open markup
                read_call(path)
    assert "<script" not in (folder / "lists" / "layer_0.html").read_text()


def test_json_cannot_leave_a_script():
    text = to_json(["</script><script>alert(1)</script>", "<!--", "a & b", "\u2028"])
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == ["</script><script>alert(1)</script>", "<!--", "a & b", "\u2028"]


def test_viewer_windows_equal_a_direct_recomputation(viewer):
    """Each example's window of float16 activations against the neuron's values recomputed document by document,
    and the lists against the statistics (BOS left out, duplicates of the same text merged)."""
    layer, neuron = 1, 17
    _, (number, data) = read_call(viewer["folder"] / "data" / f"layer_{layer}.js")
    assert number == layer
    column = list(unpack(data["neurons"])).index(neuron)
    model, tokenizer = load_hf_model(viewer["source"])
    direct = recompute_examples(model, viewer["dataset"], Statistics.from_file(viewer["stats"]), [(layer, neuron)], 3, tokenizer.pad_token_id,
                                torch.device("cpu"))[(layer, neuron)]
    acts = {e.doc: e.act for e in direct}
    width, lists = data["width"], unpack(data["list_offsets"])
    first_window = unpack(data["window_offsets"])[column]
    window_doc, window_start, window_length = (unpack(data[k]) for k in ("window_doc", "window_start", "window_length"))
    all_acts = unpack(data["acts"]).reshape(-1, width)
    example_window, example_peak, example_value = (unpack(data[k]) for k in ("example_window", "example_peak", "example_value"))
    shown = 0
    for kind in range(len(LIST_KINDS)):
        slot = column * len(LIST_KINDS) + kind
        expected = [e for e in direct if e.kind == LIST_KINDS[kind]]
        for e in range(lists[slot], lists[slot + 1]):
            w = first_window + example_window[e]
            doc, start, length = int(window_doc[w]), int(window_start[w]), int(window_length[w])
            want = np.asarray(acts[doc][start:start + length], dtype=np.float16)
            assert np.array_equal(all_acts[w, :length], want)
            position = start + int(example_peak[e])
            assert position > 0 and any(x.doc == doc and x.position == position and x.stored == pytest.approx(float(example_value[e]))
                                        for x in expected)
            shown += 1
        assert 0 < lists[slot + 1] - lists[slot] <= len(expected) or not expected
    assert shown >= 2 * 3


def band_shares(histogram):
    """The fraction of a neuron's tokens in each band of |a| of the typical examples, from its histogram [bin]."""
    edges, bands = histogram_edges().abs(), typical_band_edges()
    shares = torch.zeros(typical_bands(), dtype=torch.float64)
    for i, count in enumerate(histogram.tolist()):
        lower = min(edges[i], edges[i + 1])
        shares[max(b for b in range(typical_bands()) if lower >= bands[b])] += count
    return (shares / shares.sum()).tolist()


@pytest.mark.slow
def test_viewer_in_chromium(viewer, tmp_path):
    """A deep link opens the right neuron with the hostile text as text; a filter in the hash narrows the index."""
    tokenizer = load_tokenizer(viewer["source"])
    stats = viewer["stats"]
    script_doc = next(i for i, ids in enumerate(viewer["dataset"]["input_ids"]) if "<script>" in tokenizer.decode(ids))
    layer, neuron = map(int, torch.nonzero(stats["top_docs"][..., 0] == script_doc)[0])
    page = (viewer["folder"] / "viewer.html").as_uri()
    dom = dump_dom(f"{page}#{layer}.{neuron}")
    assert f">Neuron {layer}.{neuron}<" in dom, re.search(r"id=\"status\"[^<]*", dom)
    assert f"document {script_doc} · token {int(stats['top_positions'][layer, neuron, 0])}" in dom
    assert "<script>alert" not in dom and "<b>" not in dom  # the markup stayed text
    visible = html.unescape(re.sub(r"<[^>]+>", "", re.sub(r"<(script|style)>.*?</\1>", "", dom, flags=re.S)))
    ids = viewer["dataset"]["input_ids"][script_doc]
    position = int(stats["top_positions"][layer, neuron, 0])
    start = max(0, position - WINDOW[0])
    shown = ids[max(0, start - CONTEXT[0]):min(len(ids), start + sum(WINDOW) + 1 + CONTEXT[1])]
    assert "".join(tokenizer.decode([t]) for t in shown) in visible.replace("⏎\n", "\n")
    assert any(c in "".join(tokenizer.decode([t]) for t in shown) for c in "<>&'")  # the window holds markup characters
    assert 0 <= int(re.search(r'data-opened-ms="(\d+)"', dom).group(1)) < 10_000
    for kind in range(len(LIST_KINDS)):
        assert f'id="list-{kind}"' in dom
    for band, share in enumerate(band_shares(stats["histogram"][layer, neuron])):  # the typical examples' bands
        assert f'id="list-{len(LIST_KINDS) - typical_bands() + band}"><h2>' in dom
        assert f"({100 * share:.1f}% of tokens)</h2>" in dom
    index = dump_dom(f"{page}#?layer=1&sort=max&descending=1")
    d_mlp = stats["top_values"].shape[1]
    assert f">{d_mlp} of {2 * d_mlp} neurons<" in index
    rows = re.findall(r'<tr class="row"><td><a href="#(\d+)\.(\d+)"', index)
    assert len(rows) == min(100, d_mlp) and all(int(row[0]) == 1 for row in rows)
    maxima = [float(stats["top_values"][1, int(n), 0]) for _, n in rows]
    assert maxima == sorted(maxima, reverse=True)


def test_viewer_of_some_layers_from_an_existing_one(viewer, tmp_path, capsys):
    """--from_viewer: whole layers of the viewer, copied without the model; the index keeps their neurons only."""
    pages = copied_pages(viewer, tmp_path)
    results = pages.parent.parent.parent
    datadir = results.parent
    argv = ["--model", str(viewer["source"].path), "--datadir", str(datadir), "--activations", "ref", "--results_dir", str(results),
            "--device", "cpu", "--neurons", "1.*", "--from_viewer", "viewer", "--viewer", "layer1"]
    assert run_main(d_recompute_vis.main, argv) == 0
    folder = pages / "layer1"
    assert sorted(p.name for p in (folder / "data").iterdir()) == ["docs_0.js", "index.js", "layer_1.js", "meta.js", "search_0.js", "top_0.js",
                                                                      "vocab.js"]
    assert read_call(folder / "data" / "meta.js")[1][0]["layers"] == [1]
    ids = unpack(read_call(folder / "data" / "index.js")[1][0]["ids"])
    d_mlp = viewer["stats"]["top_values"].shape[1]
    assert sorted(ids.tolist()) == list(range(d_mlp, 2 * d_mlp))
    assert (folder / "data" / "layer_1.js").read_bytes() == (viewer["folder"] / "data" / "layer_1.js").read_bytes()
    assert "layer_0.html" not in (folder / "lists" / "index.html").read_text()
    capsys.readouterr()
    assert run_main(d_recompute_vis.main, argv[:-5] + ["0.1", "--from_viewer", "viewer", "--viewer", "part"]) == 2
    assert "whole layers" in capsys.readouterr().err


def test_viewer_merges_examples_of_the_same_text(viewer):
    """Documents 0 and 8 are the same text: where both are in one list at the same token, the viewer shows one
    example marked ×2."""
    documents = viewer["dataset"]["input_ids"]
    twins = [i for i, ids in enumerate(documents) if ids == documents[0]]
    assert len(twins) == 2
    stats = viewer["stats"]
    found = 0
    for layer in range(stats["top_values"].shape[0]):
        _, (_, data) = read_call(viewer["folder"] / "data" / f"layer_{layer}.js")
        lists, duplicates = unpack(data["list_offsets"]), unpack(data["example_duplicates"])
        docs, positions = stats["top_docs"][layer], stats["top_positions"][layer]
        for neuron in range(docs.shape[0]):
            row = docs[neuron].tolist()
            if all(t in row for t in twins) and positions[neuron, row.index(twins[0])] == positions[neuron, row.index(twins[1])]:
                slot = neuron * len(LIST_KINDS)  # the max list
                shown = duplicates[lists[slot]:lists[slot + 1]].tolist()
                assert 2 in shown and len(shown) == sum(d >= 0 for d in row) - 1
                found += 1
    assert found > 0


def neuron_view(dom):
    """The drawn neuron (the #neuron-view section) without its navigation, which differs by design: a page links to
    the other pages, the viewer to its neighbours in the index."""
    section = re.search(r'<section id="neuron-view"[^>]*>(.*?)</section>\s*<p id="status"', dom, re.S)
    assert section, dom[:2000]
    return re.sub(r"<nav>.*?</nav>", "", section.group(1), count=1, flags=re.S)


@pytest.mark.slow
def test_page_and_viewer_show_the_same_neuron(viewer, tmp_path):
    """One renderer: a neuron's single page and its view in a viewer with the page's coloured tokens (50 before,
    10 after, no grey context) show the same text, tokens, peaks, values and colours. What differs by design: the
    page's tooltips also carry g and u (its legend says so), and the navigation."""
    stats = viewer["stats"]
    layer, neuron = 1, int(torch.argmax(stats["top_values"][1, :, 0]))
    results = tmp_path / "results"
    argv = ["--model", str(viewer["source"].path), "--datadir", str(viewer["pages"].parents[3]), "--activations", "ref",
            "--results_dir", str(results), "--device", "cpu", "--neurons", f"{layer}.{neuron}", "--viewer", "one",
            "--window", "50", "10", "--context", "0", "0"]
    assert run_main(d_recompute_vis.main, argv) == 0
    folder = results / "local" / "llama" / "neuroscope"
    page = neuron_view(dump_dom((folder / f"L{layer}" / f"N{neuron}" / "vis.html").as_uri()))
    shown = neuron_view(dump_dom(f"{(folder / 'one' / 'viewer.html').as_uri()}#{layer}.{neuron}"))
    page_titles = re.findall(r'title="a (\S+) g \S+ u \S+"', page)
    assert len(page_titles) > 2 * 3 and page_titles == re.findall(r'title="a (\S+)"', shown)
    page = re.sub(r' title="a (\S+) g \S+ u \S+"', r' title="a \1"', page).replace(", gate g, linear u)", ")")
    assert page == shown
    assert f"Neuron {layer}.{neuron}" in page and page.count('class="example"') >= 2 * 3 and "<svg" in page


@pytest.mark.slow
def test_compact_viewer(viewer, tmp_path):
    """--compact: the same windows, each activation within half a step (the window's largest |a| / 254) of the
    float16 viewer's, and the page draws them; the activations take about 60% of the bytes here (windows of 10 tokens)."""
    layer = 1
    results = tmp_path / "results"
    argv = ["--model", str(viewer["source"].path), "--datadir", str(viewer["pages"].parents[3]), "--activations", "ref",
            "--results_dir", str(results), "--device", "cpu", "--neurons", f"{layer}.*", "--viewer", "eight", "--compact",
            "--window", *map(str, WINDOW), "--context", *map(str, CONTEXT)]
    assert run_main(d_recompute_vis.main, argv) == 0
    folder = results / "local" / "llama" / "neuroscope" / "eight"
    _, (_, eight) = read_call(folder / "data" / f"layer_{layer}.js")
    _, (_, full) = read_call(viewer["folder"] / "data" / f"layer_{layer}.js")
    for key in ("window_doc", "window_start", "window_length", "example_window", "example_next"):
        assert np.array_equal(unpack(eight[key]), unpack(full[key])), key
    for key in ("example_value", "example_effect"):  # float16
        assert np.array_equal(unpack(eight[key]), unpack(full[key]).astype(np.float16), equal_nan=True), key
    acts = unpack(full["acts"]).astype(np.float32).reshape(-1, full["width"])
    codes = unpack(eight["act_codes"]).astype(np.float32).reshape(acts.shape)
    scales = unpack(eight["act_scales"]).astype(np.float32)
    assert "acts" not in eight and np.abs(codes).max() <= 127 and (scales > 0).any()
    step = np.abs(acts).max(axis=1) / 127
    assert (np.abs(codes * scales[:, None] - acts) <= 0.5 * step[:, None] * 1.01 + 1e-6).all()
    neuron = int(unpack(eight["neurons"])[0])
    dom = dump_dom(f"{(folder / 'viewer.html').as_uri()}#{layer}.{neuron}")
    assert f">Neuron {layer}.{neuron}<" in dom and "in 8 bits, to 1/254 of its window" in dom
    assert len(re.findall(r'title="a (\S+)"', dom)) > 2 * 3
    assert len(eight["act_codes"]["b64"]) + len(eight["act_scales"]["b64"]) < 0.7 * len(full["acts"]["b64"])


def test_direct_effects_in_chunks_of_examples(viewer, tmp_path, monkeypatch):
    """The direct effects computed a few examples at a time (as a 7B model's many examples per batch are) equal those
    computed all at once (the next tokens and ranks exactly)."""
    from neuroscope.recompute import windows

    monkeypatch.setattr(windows, "EFFECT_CHUNK", 5)
    results = tmp_path / "results"
    argv = ["--model", str(viewer["source"].path), "--datadir", str(viewer["pages"].parents[3]), "--activations", "ref",
            "--results_dir", str(results), "--device", "cpu", "--neurons", "all", "--viewer", "viewer",
            "--window", *map(str, WINDOW), "--context", *map(str, CONTEXT)]
    assert run_main(d_recompute_vis.main, argv) == 0
    for layer in (0, 1):
        _, (_, chunked) = read_call(results / "local" / "llama" / "neuroscope" / "viewer" / "data" / f"layer_{layer}.js")
        _, (_, whole) = read_call(viewer["folder"] / "data" / f"layer_{layer}.js")
        assert len(unpack(whole["example_next"])) > 5 * 10
        for key in ("example_next", "example_rank"):
            assert np.array_equal(unpack(chunked[key]), unpack(whole[key])), (layer, key)
        # the same sums over d_model, vectorised over fewer rows: equal to float32 rounding
        np.testing.assert_allclose(unpack(chunked["example_effect"]), unpack(whole["example_effect"]), rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------- search by token, ranked

SEARCH_SOURCES = ("max/min example", "sign-combination example", "typical example", "promoted", "suppressed", "+w_in",
                  "-w_in", "+w_gate", "-w_gate", "gate_embed", "linear_embed")
SEARCH_GROUPS = ("activation",) * 3 + ("output weight",) * 2 + ("input weight",) * 4 + ("embedding connection",) * 2
GROUP_ORDER = list(dict.fromkeys(SEARCH_GROUPS))


def shard_runs(folder, part, firsts):
    """{(token, group): [hit]} of a viewer's files data/<part>_<shard>.js (hits as in `search_hits`), and each
    file's extra arrays (counts, pairs) by token."""
    runs, extra, first = {}, {}, 0
    for shard, shard_first in enumerate(firsts):
        name, (number, payload) = read_call(folder / "data" / f"{part}_{shard}.js")
        assert name == part and number == shard and payload["sources"] == list(SEARCH_SOURCES)
        assert payload["groups"] == list(SEARCH_GROUPS) and payload["first"] == shard_first == first
        offsets = unpack(payload["offsets"])
        columns = [unpack(payload[k]) for k in ("neurons", "source", "value", "strength", "doc", "position")]
        tokens = (len(offsets) - 1) // len(GROUP_ORDER)
        for run in range(len(offsets) - 1):
            token, group = first + run // len(GROUP_ORDER), GROUP_ORDER[run % len(GROUP_ORDER)]
            for e in range(offsets[run], offsets[run + 1]):
                neuron, source, value, strength, doc, position = (c[e] for c in columns)
                assert SEARCH_GROUPS[source] == group
                runs.setdefault((token, group), []).append((token, int(neuron), SEARCH_SOURCES[source], float(value), float(strength),
                                                            int(doc), int(position)))
        if part == "top":
            counts, pairs = unpack(payload["counts"]), unpack(payload["pairs"])
            for t in range(tokens):
                extra[first + t] = ({g: int(counts[t * len(GROUP_ORDER) + i]) for i, g in enumerate(GROUP_ORDER)}, int(pairs[t]))
        first += tokens
    return runs, extra, first


def search_hits(folder):
    """Every hit of a viewer's search by token in the files' order, each run (token, group) its top hits
    (data/top_<shard>.js) then the rest (data/search_<shard>.js): (token, neuron id, source, value, strength, doc,
    position); and the vocabulary's size. Checked on the way: the top files hold each run's first meta.search_top
    hits (all of a run that has no more), and their counts and pairs are those of all the hits."""
    _, (meta,) = read_call(folder / "data" / "meta.js")
    tops, extra, vocab_size = shard_runs(folder, "top", meta["top_shards"])
    rests, _, rest_size = shard_runs(folder, "search", meta["search_shards"])
    assert rest_size == vocab_size and set(extra) == set(range(vocab_size))
    hits = []
    for token in range(vocab_size):
        counts, pairs = extra[token]
        for group in GROUP_ORDER:
            top, rest = tops.get((token, group), []), rests.get((token, group), [])
            assert len(top) == min(counts[group], meta["search_top"]) and len(top) + len(rest) == counts[group]
            hits.extend(top + rest)
        assert pairs == len({h[1] for h in hits if h[0] == token})
    return hits, vocab_size


def f16(x):
    """A number as the page reads a float16 of it."""
    return float(np.float16(x))


def brute_force_hits(folder):
    """Every hit found by a plain loop over the viewer's layer files, index and documents, the strongest of each
    (token, neuron, source) (the first of equals), its strength computed here: |value| over the neuron's largest of
    its kind."""
    _, (meta,) = read_call(folder / "data" / "meta.js")
    _, (_, docs) = read_call(folder / "data" / "docs_0.js")
    _, (index,) = read_call(folder / "data" / "index.js")
    tokens, starts = unpack(docs["tokens"]), unpack(docs["starts"])
    assert len(meta["doc_chunks"]) == 1 and "ids" not in docs
    peak = {int(i): max(abs(float(hi)), abs(float(lo))) for i, hi, lo in zip(unpack(index["ids"]), unpack(index["max"]), unpack(index["min"]))}
    kinds, best = len(meta["list_kinds"]), {}

    def add(token, neuron_id, source, value, scale, doc=-1, position=0):
        strength = f16(abs(value) / scale) if scale > 0 and np.isfinite(value) else 0.0
        key = (int(token), neuron_id, source)
        if key not in best or strength > best[key][1]:
            best[key] = (f16(value), strength, doc, position)

    for layer in meta["layers"]:
        _, (_, data) = read_call(folder / "data" / f"layer_{layer}.js")
        neurons = unpack(data["neurons"])
        tables = {"promoted": (data["promoted"], data["promoted_values"]), "suppressed": (data["suppressed"], data["suppressed_values"]),
                  **{name: (ids, data["input_values"][name]) for name, ids in data["inputs"].items()}}
        lists, first_windows = unpack(data["list_offsets"]), unpack(data["window_offsets"])
        for column, neuron in enumerate(neurons.tolist()):
            neuron_id = layer * meta["d_mlp"] + neuron
            logits = max(abs(float(unpack(data["logit_low"])[column])), abs(float(unpack(data["logit_high"])[column])))
            for name, (ids, values) in tables.items():
                top = len(unpack(ids)) // len(neurons)
                row = slice(column * top, (column + 1) * top)
                other = name.replace("+", "-") if name.startswith("+") else name.replace("-", "+")
                scale = logits if name in ("promoted", "suppressed") else \
                    max(abs(float(unpack(values)[row][0])), abs(float(unpack(data["input_values"][other])[row][0])))
                for t, v in zip(unpack(ids)[row], unpack(values)[row]):
                    add(t, neuron_id, name, float(v), scale)
            for kind in range(kinds):
                source = "max/min example" if meta["list_kinds"][kind] in ("max", "min") else \
                    "typical example" if meta["list_kinds"][kind].startswith("typical") else "sign-combination example"
                for e in range(lists[column * kinds + kind], lists[column * kinds + kind + 1]):
                    w = first_windows[column] + unpack(data["example_window"])[e]
                    doc, position = int(unpack(data["window_doc"])[w]), int(unpack(data["window_start"])[w] + unpack(data["example_peak"])[e])
                    add(tokens[starts[doc] + position], neuron_id, source, float(unpack(data["example_value"])[e]), peak[neuron_id], doc, position)
    return {key: value for key, value in best.items()}


def ranked(hits, tokens):
    """The hits of some tokens as the search ranks them: strength (descending), then source (activations first),
    token, neuron."""
    chosen = [h for h in hits if h[0] in tokens]
    return sorted(chosen, key=lambda h: (-h[4], SEARCH_SOURCES.index(h[2]), h[0], h[1]))


def test_search_index_holds_every_hit_of_the_layer_files_ranked(viewer):
    """data/top_<shard>.js and data/search_<shard>.js against a plain loop over the layer files: the same hits with
    the same values and strengths, and each token's hits of each group in the order of a brute-force sort (strength,
    then source and neuron)."""
    folder = viewer["folder"]
    hits, vocab_size = search_hits(folder)
    assert vocab_size == len(read_call(folder / "data" / "vocab.js")[1][0])
    expected = brute_force_hits(folder)
    assert {(t, n, s): (v, st, d, p) for t, n, s, v, st, d, p in hits} == expected and len(hits) == len(expected)
    assert {s for _, _, s, *_ in hits} == set(SEARCH_SOURCES[:9])  # the tiny model has no connections
    assert all(0 <= h[4] <= 1 for h in hits) and max(h[4] for h in hits) == 1
    for token in {h[0] for h in hits}:
        for group in GROUP_ORDER:
            in_group = [h for h in ranked(hits, {token}) if SEARCH_GROUPS[SEARCH_SOURCES.index(h[2])] == group]
            assert [h for h in hits if h[0] == token and SEARCH_GROUPS[SEARCH_SOURCES.index(h[2])] == group] == in_group


def shown(text):
    """A search text as the page writes it (JSON.stringify), as it appears in the dumped DOM."""
    return html.escape(json.dumps(text, ensure_ascii=False), quote=False)


HIT_ROW = re.compile(r'<li class="token-hit" data-ref="\d+"><span class="num strength">([^<]*)</span> <a href="#[^"]*">([^<]*)</a>'
                     r' · <span class="source">([^<]*)</span> · <span class="num value">[^<]*</span> <code>([^<]*)</code>')


def token_rows(dom):
    """The rows that the token search lists: (strength, layer.neuron, source, token text)."""
    return [(float(s), link, source, json.loads(html.unescape(token))) for s, link, source, token in HIT_ROW.findall(dom)]


def row_of(hit, vocab, d_mlp):
    """A hit as the page lists it (its strength as toFixed(3) writes it: halves up)."""
    strength = float(decimal.Decimal(hit[4]).quantize(decimal.Decimal("0.001"), decimal.ROUND_HALF_UP))
    return (strength, f"{hit[1] // d_mlp}.{hit[1] % d_mlp}", hit[2], vocab[hit[0]])


def group_of(hit):
    return SEARCH_GROUPS[SEARCH_SOURCES.index(hit[2])]


@pytest.mark.slow
def test_search_by_token_in_chromium_ranks_as_a_brute_force_sort(viewer, tmp_path, monkeypatch):
    """#?token=...&exact=1 for the token that drives a neuron hardest (the extreme token of the neuron's largest
    |a|) lists that neuron first and every hit in the brute-force order; in a copy of the viewer refreshed with small
    top runs (7 hits, pages of 7) and small shards, a search of many tokens pages beyond the first page in the same
    order (its later pages from the files of the rest), a group keeps only its hits, and the counts are all the hits'."""
    from neuroscope.view import search_index
    from neuroscope.view.viewer_refresh import refresh_viewer

    folder = tmp_path / "sharded"
    shutil.copytree(viewer["folder"], folder)
    for name, value in (("SHARD_HITS", 1000), ("TOP_SHARD_HITS", 300), ("TOP_HITS", 7)):
        monkeypatch.setattr(search_index, name, value)
    monkeypatch.setattr("neuroscope.view.viewer.TOP_HITS", 7)
    refresh_viewer(folder)
    assert search_hits(folder) == search_hits(viewer["folder"])
    _, (meta,) = read_call(folder / "data" / "meta.js")
    assert len(meta["search_shards"]) > 10 and len(meta["top_shards"]) > 10 and meta["search_top"] == 7
    vocab = read_call(folder / "data" / "vocab.js")[1][0]
    hits, _ = search_hits(viewer["folder"])
    d_mlp = viewer["stats"]["top_values"].shape[1]
    strongest = next(h for h in ranked(hits, {h[0] for h in hits}) if h[2] == "max/min example" and vocab.count(vocab[h[0]]) == 1)
    token = strongest[0]
    whole = (viewer["folder"] / "viewer.html").as_uri()
    quoted = urllib.parse.quote(vocab[token], safe='')
    dom = dump_dom(f"{whole}#?token={quoted}&exact=1")  # the activations (the examples' hits) first
    expected = ranked(hits, {token})
    pairs = len({(t, n) for t, n, *_ in expected})
    assert f"1 token equal to {shown(vocab[token])} · {len(expected)} hits: {pairs} (neuron, token) pairs in {pairs} neurons" in dom
    assert token_rows(dom) == [row_of(h, vocab, d_mlp) for h in expected if "example" in h[2]][:100]
    assert token_rows(dom)[0][1] == f"{strongest[1] // d_mlp}.{strongest[1] % d_mlp}" and strongest[4] == 1
    assert token_rows(dump_dom(f"{whole}#?token={quoted}&exact=1&group=all")) == [row_of(h, vocab, d_mlp) for h in expected[:100]]
    page = (folder / "viewer.html").as_uri()
    query = "e"
    matching = {i for i, v in enumerate(vocab) if query in v}
    many = ranked(hits, matching)
    assert len(many) > 30 and any(len([h for h in many if h[0] == t and group_of(h) == "activation"]) > 7 for t in matching)
    neurons = len({h[1] for h in many})
    first = dump_dom(f"{page}#?token={query}&group=all")
    assert token_rows(first) == [row_of(h, vocab, d_mlp) for h in many[:7]]
    assert f"{len(many)} hits: {len({(h[0], h[1]) for h in many})} (neuron, token) pairs · strongest" in first  # neurons: later
    second = dump_dom(f"{page}#?token={query}&group=all&tpage=2")
    assert token_rows(second) == [row_of(h, vocab, d_mlp) for h in many[7:14]]
    assert f"hits 8–14 of {len(many)}" in second and f"pairs in {neurons} neurons ·" in second
    activations = [h for h in many if group_of(h) == "activation"]
    for number in (1, 2):
        dom = dump_dom(f"{page}#?token={query}&tpage={number}")
        assert token_rows(dom) == [row_of(h, vocab, d_mlp) for h in activations[7 * (number - 1):7 * number]]
    weights = dump_dom(f"{page}#?token={query}&group=output%20weight")
    assert token_rows(weights) == [row_of(h, vocab, d_mlp) for h in many if h[2] in ("promoted", "suppressed")][:7]


@pytest.mark.slow
def test_search_shows_an_example_token_in_context(viewer):
    """An example's hit shows its token in its document's text, marked."""
    folder = viewer["folder"]
    vocab = read_call(folder / "data" / "vocab.js")[1][0]
    hits, _ = search_hits(folder)
    hit = next(h for h in ranked(hits, {h[0] for h in hits}) if "example" in h[2] and vocab.count(vocab[h[0]]) == 1)
    dom = dump_dom(f"{(folder / 'viewer.html').as_uri()}#?token={urllib.parse.quote(vocab[hit[0]], safe='')}&exact=1")
    peak = html.escape(vocab[hit[0]].replace("\n", "⏎"), quote=False) or "∅"
    assert f'<b class="peak">{peak}</b>' in dom


@pytest.mark.slow
def test_search_text_stays_text(viewer, tmp_path):
    """Markup typed into the token box (here in the address) is shown as text, never parsed."""
    hostile = '<img src=x onerror="document.title=1"><b>x</b>'
    dom = dump_dom(f"{(viewer['folder'] / 'viewer.html').as_uri()}#?token={urllib.parse.quote(hostile, safe='')}&group=%3Cb%3E&tpage=%3Cb%3E")
    assert "<img" not in dom and "<b>x" not in dom and "<b>" not in dom.split('id="token-results"')[1]
    assert f"0 tokens containing {shown(hostile)} · 0 hits: 0 (neuron, token) pairs in 0 neurons" in dom


def test_search_index_of_some_layers_from_an_existing_one(viewer, tmp_path, capsys):
    """--from_viewer cuts the search by token to the kept layers' neurons, and refuses a damaged one."""
    pages = copied_pages(viewer, tmp_path)
    results = pages.parent.parent.parent
    argv = ["--model", str(viewer["source"].path), "--datadir", str(results.parent), "--activations", "ref", "--results_dir",
            str(results), "--device", "cpu", "--neurons", "1.*", "--from_viewer", "viewer", "--viewer", "search1"]
    assert run_main(d_recompute_vis.main, argv) == 0
    d_mlp = viewer["stats"]["top_values"].shape[1]
    whole, vocab_size = search_hits(viewer["folder"])
    cut, cut_vocab_size = search_hits(pages / "search1")
    assert cut == [h for h in whole if h[1] // d_mlp == 1] and cut and cut_vocab_size == vocab_size
    damaged = pages / "damaged"
    shutil.copytree(viewer["folder"], damaged)
    search = damaged / "data" / "search_0.js"
    search.write_text(search.read_text()[:-100] + ");\n")
    capsys.readouterr()
    assert run_main(d_recompute_vis.main, argv[:-3] + ["damaged", "--viewer", "search2"]) == 2
    assert "search_0.js: cannot read this file of the viewer" in capsys.readouterr().err
    assert not (pages / "search2").exists()


@pytest.mark.slow
def test_a_viewer_of_the_search_before_its_top_files_is_refused_until_refreshed(viewer, tmp_path, capsys):
    """A viewer whose search has shards but no top files (as written before them): --from_viewer refuses it in one
    line with the remedy, its page says to refresh it, and once refreshed the copy of a layer works."""
    from neuroscope.view.viewer import page_checksums, write_meta
    from neuroscope.view.viewer_refresh import SEAL
    from neuroscope.view.viewer_refresh import main as refresh

    pages = copied_pages(viewer, tmp_path)
    older = pages / "older"
    shutil.copytree(viewer["folder"], older)
    _, (meta,) = read_call(older / "data" / "meta.js")
    sums = {name: value for name, value in meta["checksums"].items() if not name.startswith("top_")}
    for path in (older / "data").glob("top_*.js"):
        path.unlink()
    rest = {k: v for k, v in meta.items() if k not in (*SEAL, "top_shards", "search_top")}
    write_meta(older / "data", rest, sums, page_checksums(older))
    assert "ranked token index of this version" in dump_dom(f"{(older / 'viewer.html').as_uri()}#?token=e")
    results = pages.parent.parent.parent
    argv = ["--model", str(viewer["source"].path), "--datadir", str(results.parent), "--activations", "ref", "--results_dir",
            str(results), "--device", "cpu", "--neurons", "1.*", "--from_viewer", "older", "--viewer", "cut"]
    capsys.readouterr()
    assert run_main(d_recompute_vis.main, argv) == 2
    err = capsys.readouterr().err
    assert "its search by token is of an older version; refresh that viewer (python -m neuroscope.view.viewer_refresh" in err
    assert not (pages / "cut").exists()
    assert refresh([str(older)]) == 0
    assert run_main(d_recompute_vis.main, argv) == 0
    assert search_hits(pages / "cut")[0] == [h for h in search_hits(viewer["folder"])[0] if h[1] // viewer["stats"]["top_values"].shape[1] == 1]


def test_refreshing_a_viewer_rebuilds_its_search_from_its_own_files(viewer, tmp_path):
    """viewer_refresh writes the same search by token and meta as writing the viewer did (its layer files hold every
    value), and refuses a viewer whose layer file was changed after it was written."""
    from neuroscope.view.viewer_refresh import main as refresh

    folder = tmp_path / "copy"
    shutil.copytree(viewer["folder"], folder)
    (folder / "data" / "search_0.js").write_text("neuroscope.search({});\n")
    (folder / "data" / "top_0.js").write_text("neuroscope.top({});\n")
    assert refresh([str(folder)]) == 0
    for name in ("search_0.js", "top_0.js", "meta.js"):
        assert (folder / "data" / name).read_text() == (viewer["folder"] / "data" / name).read_text()
    layer = folder / "data" / "layer_1.js"
    layer.write_text(re.sub(r'"width":(\d+)', lambda m: f'"width":{int(m.group(1)) + 1}', layer.read_text(), count=1))
    assert refresh([str(folder)]) == 2


def test_refreshing_an_older_viewer_takes_the_input_tables_values_from_the_weights(viewer, tmp_path):
    """A viewer whose layer files lack the ±w_in, ±w_gate values (as written before they were kept): refreshed with
    --model, its layer files and search by token are the ones a new viewer has; without, those hits have no value."""
    from neuroscope.view.parts import LayerPart, inflated, read_plain
    from neuroscope.view.viewer import page_checksums, write_meta, write_part
    from neuroscope.view.viewer_copy import read_part
    from neuroscope.view.viewer_refresh import SEAL
    from neuroscope.view.viewer_refresh import main as refresh

    folder = tmp_path / "older"
    shutil.copytree(viewer["folder"], folder)
    _, (meta,) = read_call(folder / "data" / "meta.js")
    sums = dict(meta["checksums"])
    for name in [name for name in sums if name.startswith("layer_")]:
        layer, payload = read_part(folder / "data" / f"{name}.js")[1][:2]
        older = dataclasses.replace(read_plain(LayerPart, inflated(payload)), input_values=None)
        write_part(folder / "data", sums, "layer", layer, deflated(older))
    write_meta(folder / "data", {k: v for k, v in meta.items() if k not in SEAL}, sums, page_checksums(folder))
    assert refresh([str(folder)]) == 0
    hits, _ = search_hits(folder)
    assert all(np.isnan(h[3]) and h[4] == 0 for h in hits if h[2] in ("+w_in", "-w_in", "+w_gate", "-w_gate"))
    assert refresh([str(folder), "--model", str(viewer["source"].path)]) == 0
    for name in ["search_0", "top_0", *(name for name in sums if name.startswith("layer_"))]:
        assert read_call(folder / "data" / f"{name}.js") == read_call(viewer["folder"] / "data" / f"{name}.js"), name


def test_refreshing_a_single_page_keeps_its_data(viewer, tmp_path):
    """A single page (data inline) is written again around the very calls it carries; other HTML is refused."""
    from neuroscope.view.html import viewer_page
    from neuroscope.view.viewer_refresh import main as refresh

    data = viewer["folder"] / "data"
    calls = "".join((data / f"{name}.js").read_text() for name in ("meta", "index", "vocab", "docs_0", "layer_1"))
    page = tmp_path / "vis.html"
    page.write_text(viewer_page(calls).replace("var neuroscope = ", "var older = 1;\nvar neuroscope = "))
    assert refresh([str(page)]) == 0
    assert page.read_text() == viewer_page(calls)
    other = tmp_path / "other.html"
    other.write_text("<!DOCTYPE html><html><body>neuroscope.meta({});\n</body></html>")
    assert refresh([str(other)]) == 2 and other.read_text().startswith("<!DOCTYPE html><html><body>")


# ----------------------------------------------------------------------------- the model at a glance


def gate_bin(value, bins=10):
    """The overview's bin of a gate-open frequency: [b / bins, (b + 1) / bins - 1e-7] (the last up to 1), as its links
    filter the index (bounds inclusive); None for NaN or a value between two bins."""
    for b in range(bins - 1, -1, -1):
        high = 1.0 if b == bins - 1 else float(f"{(b + 1) / bins - 1e-7:.9g}")
        if value >= b / bins or b == 0:
            return b if b / bins <= value <= high else None
    return None


@pytest.mark.slow
def test_overview_counts_equal_the_statistics_and_its_links_filter_to_them(viewer):
    """The index's overview draws, per layer, as many neurons of each IO class as the index holds and as many
    neurons in each gate-open bin as the statistics' gate-open frequencies put there; a part's link filters the
    table to those neurons."""
    folder = viewer["folder"]
    _, (index,) = read_call(folder / "data" / "index.js")
    _, (meta,) = read_call(folder / "data" / "meta.js")
    d_mlp, gate_open = meta["d_mlp"], viewer["stats"]["gate_open"]
    classes, gates = {}, {}
    for neuron_id, io_class in zip(unpack(index["ids"]).tolist(), unpack(index["io_class"]).tolist()):
        layer, neuron = divmod(neuron_id, d_mlp)
        classes[(layer, io_class)] = classes.get((layer, io_class), 0) + 1
        b = gate_bin(float(np.float32(gate_open[layer, neuron])))
        gates[(layer, b)] = gates.get((layer, b), 0) + 1
    page = (folder / "viewer.html").as_uri()
    dom = dump_dom(page)
    drawn_classes = {(int(at), int(c)): int(n) for at, c, n in re.findall(r'data-layer="(\d+)" data-class="(\d+)" data-count="(\d+)"', dom)}
    drawn_gates = {(int(at), int(b)): int(n) for at, b, n in re.findall(r'data-layer="(\d+)" data-bin="(\d+)" data-count="(\d+)"', dom)}
    assert drawn_classes == classes
    assert {k: v for k, v in drawn_gates.items() if v} == gates and len(drawn_gates) == 10 * len(meta["layers"])
    (layer, io_class), count = max(classes.items(), key=lambda item: item[1])
    assert f">{count} of {len(unpack(index['ids']))} neurons<" in dump_dom(f"{page}#?layer={layer}&io_class={io_class}")
    gate_link = r'<a href="(#\?layer=\d+&amp;gate_open_low=[^"]*)" class="ov-link"><title>[^<]*</title><rect [^>]*data-layer="(\d+)" data-bin="(\d+)"'
    links = {(int(at), int(b)): html.unescape(href) for href, at, b in re.findall(gate_link, dom)}
    (layer, b), count = max(gates.items(), key=lambda item: item[1])
    assert f">{count} of {len(unpack(index['ids']))} neurons<" in dump_dom(page + links[(layer, b)])


def test_search_shards_hold_consecutive_tokens_up_to_their_size(viewer):
    """Shards of at most `most` hits (a token of more alone), consecutive, each as large as the next token allows;
    the files read back as the whole index, and files that are not those of their hits are refused."""
    from neuroscope.view.parts import Packed, SearchPart, TopPart, read_plain
    from neuroscope.view.search_index import GROUP_NAMES, SearchFiles

    data = viewer["folder"] / "data"
    files = SearchFiles([read_plain(TopPart, read_call(data / "top_0.js")[1][1])], [read_plain(SearchPart, read_call(data / "search_0.js")[1][1])])
    index = files.index()
    counts = np.diff(index.offsets[::len(GROUP_NAMES)])
    most = int(counts.max()) + 7
    firsts = index.shards(most)
    stops = [*firsts[1:], len(counts)]
    assert firsts[0] == 0 and all(a < b for a, b in zip(firsts, stops))
    for first, stop in zip(firsts, stops):
        assert counts[first:stop].sum() <= most
        assert stop == len(counts) or counts[first:stop + 1].sum() > most  # the next token did not fit
    assert len(firsts) > 1 and SearchFiles.of_index(index) == files
    top, rest = index.split()
    with pytest.raises(ValueError, match="not those of the hits"):  # the same hits in other shards than written
        SearchFiles(files.tops, [rest.payload(0, 5), rest.payload(5, index.vocab_size)]).index()
    with pytest.raises(ValueError, match="not those of the hits"):  # the top hits repeated as the rest: counts wrong
        SearchFiles(files.tops, [top.payload(0, index.vocab_size)]).index()
    with pytest.raises(ValueError, match="whole tokens"):
        SearchFiles(files.tops, [dataclasses.replace(files.rests[0], offsets=Packed.of(np.zeros(3), "i4"))]).index()


def planted_model(folder, target, text, token, neuron):
    """A copy of the tiny checkpoint `folder` in `target` whose last layer's `neuron` reads `token` as it stands in
    `text`: its gate and linear input both along the MLP's input there (so that its largest a on any text is at such
    a token), 8 times as long as the layer's longest rows."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    bos = [] if tokenizer.bos_token_id is None else [tokenizer.bos_token_id]  # as the activation pass runs a document
    ids = torch.tensor([bos + tokenizer(text, add_special_tokens=False)["input_ids"]])
    mlp, found = model.model.layers[-1].mlp, {}
    handle = mlp.register_forward_pre_hook(lambda module, args: found.setdefault("x", args[0][0]))
    with torch.no_grad():
        model(ids)
        handle.remove()
        direction = found["x"][ids[0].tolist().index(token)]
        for weight in (mlp.gate_proj.weight, mlp.up_proj.weight):
            weight[neuron] = 8 * weight.norm(dim=1).max() * direction / direction.norm()
    model.save_pretrained(target)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(folder / name, target / name)
    return target


@pytest.mark.slow
def test_search_lists_a_planted_neuron_first(tiny_models, tmp_path):
    """A neuron planted to respond to one token ("Q", in one document of the dataset) and given the largest neuron
    number, which the unranked search listed last: the ranked search for that token lists it first, with strength 1
    at its max example there, and no other neuron's activation there is as strong."""
    from gated_core.models.loading import load_tokenizer
    from gated_core.models.sources import resolve_model

    source = tiny_models["llama"]
    (token,) = load_tokenizer(resolve_model(str(source)))("Q", add_special_tokens=False)["input_ids"]
    config = json.loads((source / "config.json").read_text())
    layer, neuron = config["num_hidden_layers"] - 1, config["intermediate_size"] - 1
    text = next(text for text in PASS_TEXTS if "Q" in text)
    planted = planted_model(source, tmp_path / "planted", text, token, neuron)
    _, _, results, argv = tiny_run(planted, tmp_path / "world")
    assert run_main(d_recompute_vis.main, argv) == 0
    folder = results / "local" / "planted" / "neuroscope" / "viewer"
    hits, _ = search_hits(folder)
    ours = [h for h in hits if h[0] == token]
    assert ours and {h[1] // config["intermediate_size"] for h in ours} != {layer}  # other neurons meet "Q" too
    dom = dump_dom(f"{(folder / 'viewer.html').as_uri()}#?token=Q&exact=1")
    first = token_rows(dom)[0]
    assert first[1:] == (f"{layer}.{neuron}", "max/min example", "Q") and first[0] > 0.99  # 1 but for recomputation's rounding
    planted_hits = [h for h in ours if h[1] == layer * config["intermediate_size"] + neuron and "example" in h[2]]
    others = [h[4] for h in ours if h[1] != layer * config["intermediate_size"] + neuron and "example" in h[2]]
    assert others and max(others) < min(h[4] for h in planted_hits)  # first by its strength, not by its number
