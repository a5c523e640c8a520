"""The viewer at OLMo-7B-0424's size, in headless Chromium: an index of 32 x 11,008 = 352,256 neurons (load, filter,
sort) and a layer of 11,008 neurons written in chunks (`neuroscope.view.viewer.NEURON_CHUNK` neurons a file) whose
neurons are real ones copied many times, with documents of the paper's 20M tokens.

The synthetic viewer: the index holds random values in every column; one layer (`--layer`) has data files, each
neuron's payload copied from a neuron of a real viewer (`--source`, by default the committed viewer of every
SmolLM2 neuron), its windows moved to random places of random documents (20M random tokens, 437 a document, as the
paper's dataset has); the vocabulary is the source's, repeated to OLMo's size. Chromium is driven over its
DevTools pipe (no package needed): the times are the page's own (`performance.now()`), not virtual time.

The search by token of every neuron: each synthetic neuron holds the hits of a source neuron (its id modulo the
source's neurons), their values and strengths scaled by a random factor in [0.5, 1], their examples' tokens moved to
random places of random documents; written in shards as the viewer writes them. Searches for common tokens are timed
from the submit to the ranked list drawn (the shards of the token loaded on the way), then again with the shards
loaded; beside them, in the same page, the page's own steps and, as the baseline, a brute-force comparison sort of as
many hits (by strength, then place), the sort a ranked search without the packed keys would do.

  python benchmarks/bench_viewer_index.py                       # 352,256 rows, the chunk size of the viewer
  python benchmarks/bench_viewer_index.py --chunks 64 128 256   # compare chunk sizes (opening time, files)
  python benchmarks/bench_viewer_index.py --save benchmarks/results/viewer_index_cpu.txt
  python benchmarks/bench_viewer_index.py --source results/.../viewer-case-studies --source_layer 28   # without make demo
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OLMO = {"n_layers": 32, "d_mlp": 11_008, "tokens": 20_000_390, "documents": 45_734, "vocab": 50_304}
SOURCE = ROOT / "results" / "HuggingFaceTB" / "SmolLM2-135M-Instruct" / "neuroscope" / "viewer"
SOURCE_LAYER = 5  # the source viewer's layer whose neurons are copied
OPENED = 6  # neurons opened per chunk size: the first cold, then others in other chunks, one in the same chunk
REPEATS = 3  # page loads of the index (the median is reported)
READY_TIMEOUT_S = 120


class Chromium:
    """Headless Chromium over --remote-debugging-pipe: one page, scripts evaluated in it, their results returned."""

    def __init__(self, scratch: Path):
        browser = shutil.which("chromium") or shutil.which("chromium-browser")
        if browser is None:
            raise SystemExit("chromium is not installed: nothing to measure")
        to_child, self._write = os.pipe()
        self._read, from_child = os.pipe()

        def pipes() -> None:  # the DevTools pipe is fd 3 (commands in) and fd 4 (answers out) of the browser
            os.dup2(to_child, 3)
            os.dup2(from_child, 4)

        self.process = subprocess.Popen([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                         "--disable-background-networking", "--remote-debugging-pipe",
                                         f"--user-data-dir={scratch / 'chrome'}", "about:blank"],
                                        preexec_fn=pipes, pass_fds=(3, 4), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_child)
        os.close(from_child)
        self._buffer, self._id = b"", 0
        target = next(t for t in self.call("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})["sessionId"]

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        """Send one DevTools command and wait for its answer (events in between are skipped)."""
        self._id += 1
        message = {"id": self._id, "method": method, "params": params or {}, **({"sessionId": session} if session else {})}
        os.write(self._write, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self._buffer:
                chunk = os.read(self._read, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium closed its DevTools pipe")
                self._buffer += chunk
            text, self._buffer = self._buffer.split(b"\0", 1)
            answer = json.loads(text)
            if answer.get("id") == self._id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]

    def evaluate(self, expression: str) -> object:
        """The value of a JavaScript expression in the page (a promise is waited for)."""
        result = self.call("Runtime.evaluate", {"expression": expression, "awaitPromise": True, "returnByValue": True},
                           self.session)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:60]}…: {result['exceptionDetails'].get('exception', {}).get('description')}")
        return result["result"].get("value")

    def open(self, url: str) -> None:
        """Navigate and wait until the page's load event (the index is drawn before it, by the viewer's own scripts)."""
        self.call("Page.navigate", {"url": url}, self.session)
        self.evaluate(wait_for(f"location.href === {json.dumps(url)} && document.readyState === 'complete'"))

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        os.close(self._write)
        os.close(self._read)


def wait_for(condition: str) -> str:
    """A promise that resolves when `condition` (JavaScript) is true, polled every few milliseconds."""
    return ("new Promise(function (done, fail) { var t0 = Date.now(); (function poll() { try { if (" + condition +
            ") { return done(true); } } catch (e) {} if (Date.now() - t0 > " + str(READY_TIMEOUT_S * 1000) +
            ") { return fail(new Error('timed out')); } setTimeout(poll, 2); })(); })")


# ----------------------------------------------------------------------------- the synthetic viewer

def read_part(path: Path) -> list:
    """The JSON arguments of a viewer's data file."""
    text = path.read_text(encoding="utf-8")
    return json.loads("[" + text[text.index("(") + 1:-3] + "]")


def per_neuron_parts(payload: dict, np) -> list[dict]:
    """A layer payload cut into one record per neuron: its rows of every array (windows, examples, histogram...)."""
    unpacked = {key: unpack(value, np) for key, value in payload.items() if isinstance(value, dict) and "b64" in value}
    n = len(unpacked["neurons"])
    kinds = (len(unpacked["list_offsets"]) - 1) // n
    windows, lists = unpacked["window_offsets"], unpacked["list_offsets"]
    hist = {key: unpack(value, np) for key, value in payload["histogram"].items()}
    records = []
    for c in range(n):
        w, e = slice(windows[c], windows[c + 1]), slice(lists[c * kinds], lists[(c + 1) * kinds])
        record = {"lists": np.diff(lists[c * kinds:(c + 1) * kinds + 1]), "acts": unpacked["acts"].reshape(-1, payload["width"])[w],
                  "hist": (hist["first"][c], hist["counts"][hist["offsets"][c]:hist["offsets"][c + 1]])}
        for key, values in unpacked.items():
            if key.startswith("window_") and key != "window_offsets":
                record[key] = values[w]
            elif key.startswith("example_"):
                record[key] = values[e]
            elif key not in ("acts", "list_offsets", "window_offsets", "neurons"):
                record[key] = values.reshape(n, -1)[c]
        for group in ("cosines", "inputs"):
            record[group] = {name: unpack(v, np).reshape(n, -1)[c] for name, v in payload[group].items()}
        records.append(record)
    return records


def unpack(value: dict, np):
    from neuroscope.view.parts import Packed

    return Packed.read(value).array()


def chunk_payload(records: list[dict], neurons: list[int], width: int, documents: tuple, rng, np) -> dict:
    """A layer part of `neurons`, each a copy of one of `records`, its windows moved into random documents."""
    from neuroscope.view.neuron_view import offsets
    from neuroscope.view.parts import LayerPart, Packed, plain, read_plain

    packed = Packed.of

    chosen = [records[i % len(records)] for i in range(len(neurons))]
    starts, lengths = documents
    cat = {key: np.concatenate([r[key] for r in chosen]) for key in chosen[0] if key not in ("hist", "cosines", "inputs", "lists")}
    docs = rng.integers(0, len(lengths), size=len(cat["window_doc"]))
    payload = {key: packed(values, value_dtype(key, values)) for key, values in cat.items() if key != "acts"}
    payload.update({
        "neurons": packed(np.asarray(neurons), "i4"), "width": width, "acts": packed(cat["acts"].reshape(-1), "f2"),
        "window_doc": packed(docs, "i4"), "window_start": packed(rng.integers(0, np.maximum(lengths[docs] - width, 1))),
        "window_offsets": packed(offsets([len(r["window_doc"]) for r in chosen]), "i4"),
        "list_offsets": packed(offsets(np.concatenate([r["lists"] for r in chosen])), "i4"),
        "histogram": {"first": packed([r["hist"][0] for r in chosen], "u1"),
                      "offsets": packed(offsets([len(r["hist"][1]) for r in chosen]), "i4"),
                      "counts": packed(np.concatenate([r["hist"][1] for r in chosen]), "i4")},
        "reasons": {}})
    for group in ("cosines", "inputs"):
        payload[group] = {name: packed(np.concatenate([r[group][name] for r in chosen]), value_dtype(group, chosen[0][group][name]))
                          for name in chosen[0][group]}
    return read_plain(LayerPart, plain(payload))


def value_dtype(key: str, values) -> str:
    return {"f": "f4", "i": "i4", "u": values.dtype.str[1:]}[values.dtype.kind] if key != "acts" else "f2"


def write_documents(data: Path, doc_tokens: int, rng, np) -> tuple:
    """`docs_<chunk>.js` of OLMO's token count in documents of its mean length, random tokens; (starts, lengths)."""
    from neuroscope.view.neuron_view import Documents, documents_payload, js_call
    from neuroscope.view.viewer import doc_chunks

    length = OLMO["tokens"] // OLMO["documents"]
    lengths = np.full(OLMO["documents"], length)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    documents = Documents(rng.integers(0, OLMO["vocab"], size=int(starts[-1]), dtype=np.uint16), starts)
    chunks = doc_chunks(starts, doc_tokens)
    for index, (first, stop) in enumerate(chunks):
        (data / f"docs_{index}.js").write_text(js_call("docs", index, documents_payload(documents, first, stop)))
    return chunks, (starts[:-1], lengths)


def write_index(data: Path, rng, np) -> int:
    """`index.js` of every OLMo neuron, random values; its size in bytes."""
    from neuroscope.view.neuron_view import js_call
    from neuroscope.view.parts import IndexPart, Packed

    n = OLMO["n_layers"] * OLMO["d_mlp"]
    index = IndexPart(ids=Packed.of(np.arange(n), "i4"), io_class=Packed.of(rng.integers(0, 11, n), "u1"),
                      roles=Packed.of(rng.integers(0, 64, n) * (rng.random(n) < 0.05), "u1"),
                      **{name: Packed.of(rng.standard_normal(n).astype(np.float32) * scale, "f4")
                         for name, scale in (("max", 3), ("min", 3), ("mean", 0.1), ("kurtosis", 10), ("skew", 2))},
                      gate_open=Packed.of(rng.random(n).astype(np.float32), "f4"))
    text = js_call("index", index)
    (data / "index.js").write_text(text)
    return len(text)


def source_layer_file(source: Path, layer: int = SOURCE_LAYER) -> Path | None:
    """The source viewer's data file of `layer`: the whole layer, or its first chunk (of NEURON_CHUNK neurons)."""
    return next((path for path in (source / "data" / f"layer_{layer}{part}.js" for part in ("", "_0")) if path.is_file()), None)


def source_hits(source: Path, np):
    """The hits of the source viewer's search by token, by neuron id (ascending; `search_index.Hits`)."""
    from neuroscope.view.parts import SearchPart, TopPart, read_plain
    from neuroscope.view.search_index import SearchFiles

    meta = read_part(source / "data" / "meta.js")[0]
    if meta.get("top_shards") is None:
        raise SystemExit(f"{source}: no ranked search by token of this version (top_<shard>.js): refresh it with "
                         "python -m neuroscope.view.viewer_refresh")
    files = SearchFiles([read_plain(TopPart, read_part(source / "data" / f"top_{shard}.js")[1]) for shard in range(len(meta["top_shards"]))],
                        [read_plain(SearchPart, read_part(source / "data" / f"search_{shard}.js")[1])
                         for shard in range(len(meta["search_shards"]))])
    hits = files.index().hits
    return hits.rows(np.argsort(hits.neuron, kind="stable"))


def write_search(data: Path, source: Path, documents: tuple, rng, np) -> tuple[dict, int, int]:
    """`top_<shard>.js`, `search_<shard>.js` of every OLMo neuron (see the module's docstring); the meta's keys of
    them (their shards' first tokens), hits, bytes."""
    from neuroscope.view.search_index import TOP_HITS, SearchIndex
    from neuroscope.view.viewer import write_search as write_shards

    hits = source_hits(source, np)
    _, firsts, counts = np.unique(hits.neuron, return_index=True, return_counts=True)
    neurons = OLMO["n_layers"] * OLMO["d_mlp"]
    copied = np.arange(neurons) % len(counts)  # [neuron] the source neuron whose hits it holds
    each = counts[copied]
    owner = np.repeat(np.arange(neurons), each)  # [hit]
    rows = np.repeat(firsts[copied], each) + np.arange(int(each.sum())) - np.repeat(np.cumsum(each) - each, each)
    hits = hits.rows(rows)
    factor = rng.uniform(0.5, 1.0, len(rows))
    example = hits.doc >= 0
    starts, lengths = documents
    doc = rng.integers(0, len(lengths), len(rows))
    hits.neuron, hits.value = owner, hits.value * factor
    hits.strength = (hits.strength * factor).astype(np.float16).astype(np.float64)
    hits.doc, hits.position = np.where(example, doc, -1), np.where(example, rng.integers(0, lengths[doc]), 0)
    index = SearchIndex.of_hits(hits, OLMO["vocab"])
    tops, rests = write_shards(data, index, {}).firsts
    files = [*data.glob("search_*.js"), *data.glob("top_*.js")]
    return {"search_shards": rests, "top_shards": tops, "search_top": TOP_HITS}, len(rows), sum(p.stat().st_size for p in files)


def build_viewer(folder: Path, source: Path, layer: int, chunk: int, doc_tokens: int, np, source_layer: int = SOURCE_LAYER) -> dict:
    """The synthetic viewer in `folder`; what was written (sizes, the meta)."""
    from neuroscope.view.neuron_view import js_call
    from neuroscope.view.parts import deflated, inflated
    from neuroscope.view.viewer import write_page

    rng = np.random.default_rng(0)
    data = folder / "data"
    data.mkdir(parents=True)
    meta = read_part(source / "data" / "meta.js")[0]
    for key in ("checksum", "checksums", "file_checksums", "checksum_method"):  # the source's seal: not of these files
        meta.pop(key, None)
    chunks, documents = write_documents(data, doc_tokens, rng, np)
    meta.update({"model": "OLMo-7B-0424-shaped (synthetic)", "dataset": "synthetic", "tokens": OLMO["tokens"],
                 "n_layers": OLMO["n_layers"], "d_mlp": OLMO["d_mlp"], "layers": list(range(OLMO["n_layers"])),
                 "doc_chunks": chunks, "neuron_chunk": chunk, "chunked_layers": [layer], "notes": []})
    search_meta, search_hits, search_bytes = write_search(data, source, documents, rng, np)
    meta.update(search_meta)
    (data / "meta.js").write_text(js_call("meta", meta))
    vocab = read_part(source / "data" / "vocab.js")[0]
    (data / "vocab.js").write_text(js_call("vocab", [vocab[i % len(vocab)] for i in range(OLMO["vocab"])]))
    index_bytes = write_index(data, rng, np)
    payload = read_part(source_layer_file(source, source_layer))[1]
    payload = inflated(payload)
    records = per_neuron_parts(payload, np)
    layer_bytes = 0
    for first in range(0, OLMO["d_mlp"], chunk):
        neurons = list(range(first, min(first + chunk, OLMO["d_mlp"])))
        text = js_call("layer", layer, deflated(chunk_payload(records, neurons, payload["width"], documents, rng, np)), first // chunk)
        (data / f"layer_{layer}_{first // chunk}.js").write_text(text)
        layer_bytes += len(text)
    write_page(folder)
    docs_bytes = sum(p.stat().st_size for p in data.glob("docs_*.js"))
    return {"index": index_bytes, "layer": layer_bytes, "docs": docs_bytes, "vocab": (data / "vocab.js").stat().st_size,
            "source_neurons": len(records), "search": search_bytes, "search_hits": search_hits,
            "search_shards": len(meta["search_shards"]), "top_shards": len(meta["top_shards"])}


# ----------------------------------------------------------------------------- the measurements

def timed_input(control: str, value: str) -> str:
    """JavaScript: set a filter of the index, redraw it (synchronously) and return the milliseconds it took."""
    return (f"(function () {{ var t0 = performance.now(), box = document.getElementById({json.dumps(control)}); box.value = "
            f"{json.dumps(value)}; document.getElementById('filters').dispatchEvent(new Event('input')); "
            "return [performance.now() - t0, document.getElementById('count').textContent]; })()")


def timed_sort(key: str) -> str:
    """JavaScript: click a column's head (sort by it), and return the milliseconds the redraw took."""
    return ("(function () { var t0 = performance.now(); document.querySelector('#table-head th[data-key=\"" + key +
            "\"]').click(); return [performance.now() - t0, document.getElementById('count').textContent]; })()")


def index_times(browser: Chromium, page: str) -> list[tuple[str, float, str]]:
    """The index: its load (navigation start to the load event, the table drawn), then filters and sorts."""
    loads = []
    for _ in range(REPEATS):
        browser.open("about:blank")
        browser.open(page)
        loads.append(browser.evaluate("performance.getEntriesByType('navigation')[0].loadEventStart"))
    rows = [(f"index: page load, 352,256 rows decoded and the first page drawn (median of {REPEATS})",
             statistics.median(loads), browser.evaluate("document.getElementById('count').textContent"))]
    steps = [("filter: layer 28", timed_input("f-layer", "28")), ("filter: + IO class 7", timed_input("f-class", "7")),
             ("filter: + kurtosis ≥ 5", timed_input("f-kurtosis-low", "5")), ("sort by max (first time: sorted)", timed_sort("max")),
             ("sort by max again (other direction)", timed_sort("max")), ("clear the filters (every row, sorted by max)",
                                                                          clear_filters()),
             ("sort by kurtosis, every row", timed_sort("kurtosis")), ("filter: role 1 (prediction)", timed_input("f-role", "1"))]
    for name, script in steps:
        took, count = browser.evaluate(script)
        rows.append((name, took, count))
    rows.append(("overview: classes and gate-open bins of 352,256 neurons counted and drawn (part of the page load)",
                 browser.evaluate(timed_overview()), ""))
    return rows


def timed_overview() -> str:
    """JavaScript: the index's overview (assets/overview.js) drawn again from index columns of every OLMo neuron
    (random classes and gate-open frequencies); the milliseconds it took."""
    return ("(function () { var n = " + str(OLMO["n_layers"] * OLMO["d_mlp"]) + ", d = " + str(OLMO["d_mlp"]) + ", ix = {ids: "
            "new Int32Array(n), layer: new Int32Array(n), io_class: new Uint8Array(n), gate_open: new Float32Array(n)}; "
            "for (var i = 0; i < n; i++) { ix.ids[i] = i; ix.layer[i] = Math.floor(i / d); ix.io_class[i] = i % 11; "
            "ix.gate_open[i] = Math.random(); } var layers = []; for (var l = 0; l < " + str(OLMO["n_layers"]) + "; l++) { layers.push(l); } "
            "var names = []; for (var c = 0; c < 11; c++) { names.push('class ' + c); } "
            "var t0 = performance.now(); overview.draw(ix, layers, names, CLASS_COLOURS); return performance.now() - t0; })()")


SEARCHES = [(" the", True, 1, "token \" the\", whole token (loads its top shard)"),
            (" the", True, 2, "its second page (loads the rest of its hits: what a first search loaded before the top files)"),
            (".", True, 1, "token \".\", whole token (loads its top shard)"),
            (".", True, 2, "its second page (loads the rest of its hits)"),
            (" with", False, 1, "tokens containing \" with\" (loads their top shards)"),
            (" the", True, 1, "token \" the\" again (its files loaded)"), (".", True, 1, "token \".\" again (its files loaded)")]


def timed_search(text: str, exact: bool, page: int) -> str:
    """JavaScript: search by token through the address, every kind of hit ranked (group=all: the most to sort), one
    page, wait for the ranked list; [ms from the hash change to drawn, the page's steps (matching and counting,
    gathering, ranking, all: ms), what it says]."""
    query = "#?token=" + urllib.parse.quote(text, safe="") + ("&exact=1" if exact else "") + "&group=all" + \
        (f"&tpage={page}" if page > 1 else "")
    return ("(function () { document.body.removeAttribute('data-search-ms'); var t0 = performance.now(); "
            "location.hash = " + json.dumps(query) + "; "
            "return new Promise(function (done) { (function poll() { var v = document.body.getAttribute('data-search-ms'); "
            "if (v) { return done([performance.now() - t0, v, document.getElementById('token-count').textContent]); } "
            "setTimeout(poll, 2); })(); }); })()")


def brute_force_sort(hits: int) -> str:
    """JavaScript: the baseline: a comparison sort of `hits` random strengths' places (strength, then place); its ms."""
    return ("(function () { var n = " + str(hits) + ", s = new Float32Array(n), places = new Array(n); "
            "for (var i = 0; i < n; i++) { s[i] = Math.round(Math.random() * 2048) / 2048; places[i] = i; } "
            "var t0 = performance.now(); places.sort(function (a, b) { return s[b] - s[a] || a - b; }); "
            "return performance.now() - t0; })()")


def search_times(browser: Chromium, page: str) -> list[tuple[str, float, str]]:
    """The search by token: common tokens, from the submit to the ranked list drawn; the page's steps; the baseline."""
    browser.open("about:blank")
    browser.open(page)
    rows = []
    for text, exact, page_number, what in SEARCHES:
        took, steps, says = browser.evaluate(timed_search(text, exact, page_number))
        match, gather, rank, drawn = (float(v) for v in steps.split())
        hits = int(says.split(" · ")[1].split(" hit")[0])
        rows.append((f"search: {what}", took, f"{hits:,} hits; in the page: matching and counting {match:.0f} ms, gathering "
                                              f"{gather:.0f} ms, ranking {rank:.0f} ms, all with drawing {drawn:.0f} ms"))
        if page_number == 2:
            rows.append((f"baseline: brute-force comparison sort of {hits:,} hits in the page", browser.evaluate(brute_force_sort(hits)), ""))
    return rows


def clear_filters() -> str:
    return ("(function () { var t0 = performance.now(); ['f-layer', 'f-class', 'f-kurtosis-low'].forEach(function (id) { "
            "document.getElementById(id).value = ''; }); document.getElementById('filters').dispatchEvent(new Event('input')); "
            "return [performance.now() - t0, document.getElementById('count').textContent]; })()")


def open_neuron(browser: Chromium, layer: int, neuron: int) -> tuple[float, int]:
    """Open a neuron from the page (hash change): the page's own time from the hash change to the neuron drawn; and
    how many data files the page has loaded so far."""
    browser.evaluate(f"location.hash = '#{layer}.{neuron}'; 0")
    browser.evaluate(wait_for(f"document.getElementById('neuron-title') && document.getElementById('neuron-title').textContent"
                              f" === 'Neuron {layer}.{neuron}' && !document.getElementById('neuron-view').hidden"))
    return (float(browser.evaluate("Number(document.body.getAttribute('data-opened-ms'))")),
            int(browser.evaluate("document.querySelectorAll('head script[src]').length")))


def neuron_times(browser: Chromium, page: str, layer: int, chunk: int) -> list[tuple[str, float, str]]:
    """Opening times: a deep link (cold: meta, index, vocabulary, chunk, documents), then neurons opened from the page."""
    browser.open("about:blank")
    browser.open(f"{page}#{layer}.{OLMO['d_mlp'] // 2}")
    deep = browser.evaluate("Number(document.body.getAttribute('data-opened-ms'))")
    rows = [(f"deep link #{layer}.{OLMO['d_mlp'] // 2}: navigation start to the neuron drawn (index included)", deep, "")]
    browser.open("about:blank")
    browser.open(page)
    neurons = [7, 5_003, 10_999, 2_222, 8_191, 8 + 1]  # the last in the same chunk as the first
    for count, neuron in enumerate(neurons[:OPENED]):
        took, files = open_neuron(browser, layer, neuron)
        what = "first neuron opened (vocabulary, its chunk, its documents)" if count == 0 else \
            "a neuron of the same chunk" if neuron // chunk == neurons[0] // chunk else "a neuron of another chunk"
        rows.append((f"open {layer}.{neuron}: {what}", took, f"{files} data files loaded"))
    return rows


def projection(sizes: dict, chunk: int) -> list[str]:
    """The viewer of every OLMo-7B neuron on 20M tokens, from the sizes measured here."""
    per_neuron = sizes["layer"] / OLMO["d_mlp"]
    neurons = OLMO["n_layers"] * OLMO["d_mlp"]
    search = sizes["search"]
    total = per_neuron * neurons + sizes["docs"] + sizes["index"] + sizes["vocab"] + search
    return [f"a layer of {OLMO['d_mlp']:,} neurons in {-(-OLMO['d_mlp'] // chunk)} files of {chunk} neurons: "
            f"{sizes['layer'] / 2**20:.1f} MiB ({per_neuron / 1024:.2f} KiB a neuron, the source's neurons copied)",
            f"documents ({OLMO['tokens']:,} tokens): {sizes['docs'] / 2**20:.1f} MiB; index: {sizes['index'] / 2**20:.1f} MiB; "
            f"vocabulary: {sizes['vocab'] / 2**20:.1f} MiB; search by token: {search / 2**20:.0f} MiB, {sizes['search_hits']:,} hits "
            f"({sizes['search_hits'] / neurons:.0f} a neuron, the source's) in {sizes['top_shards']} top files and {sizes['search_shards']} others",
            f"projected viewer of every OLMo-7B-0424 neuron ({neurons:,}) on the paper's 20M tokens: {total / 2**30:.2f} GiB"]


def measure(args: argparse.Namespace, chunk: int, doc_tokens: int, scratch: Path, np) -> tuple[list, list[str]]:
    """Write the synthetic viewer of one chunk size and documents file size, and time it in Chromium."""
    folder = scratch / f"viewer_{chunk}_{doc_tokens}"
    started = time.perf_counter()
    sizes = build_viewer(folder, args.source, args.layer, chunk, doc_tokens, np, args.source_layer)
    print(f"synthetic viewer with chunks of {chunk} neurons, {doc_tokens} tokens: written in {time.perf_counter() - started:.0f} s",
          file=sys.stderr)
    browser = Chromium(scratch)
    try:
        page = (folder / "viewer.html").as_uri()
        rows = index_times(browser, page) + search_times(browser, page) + neuron_times(browser, page, args.layer, chunk)
    finally:
        browser.close()
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    return rows, projection(sizes, chunk)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=SOURCE, help="a viewer whose neurons are copied (default: the committed SmolLM2 one)")
    parser.add_argument("--chunks", type=int, nargs="+", default=None, help="neurons a data file (default: the viewer's NEURON_CHUNK)")
    parser.add_argument("--doc_tokens", type=int, nargs="+", default=None,
                        help="tokens a documents file (default: the viewer's DOC_CHUNK_TOKENS)")
    parser.add_argument("--layer", type=int, default=28, help="the layer that has data files")
    parser.add_argument("--source_layer", type=int, default=SOURCE_LAYER,
                        help=f"the source viewer's layer whose neurons are copied (default {SOURCE_LAYER})")
    parser.add_argument("--save", type=Path, default=None, help="also write the tables to this file")
    parser.add_argument("--keep", action="store_true", help="keep the synthetic viewers (printed folder)")
    args = parser.parse_args()
    import numpy as np

    from neuroscope.view.viewer import DOC_CHUNK_TOKENS, NEURON_CHUNK

    if source_layer_file(args.source, args.source_layer) is None:
        raise SystemExit(f"{args.source}: no viewer with data/layer_{args.source_layer}.js or layer_{args.source_layer}_0.js "
                         "(write one, or give --source)")
    scratch = Path(tempfile.mkdtemp(prefix="bench_viewer_index."))
    lines = [f"viewer at OLMo-7B-0424's size in headless Chromium ({chromium_version()}), {os.cpu_count()} CPU cores; "
             f"neurons copied from {args.source.relative_to(ROOT) if args.source.is_relative_to(ROOT) else args.source} "
             f"(layer {args.source_layer}; the search's hits from all of its neurons)"]
    try:
        for chunk, doc_tokens in itertools.product(args.chunks or [NEURON_CHUNK], args.doc_tokens or [DOC_CHUNK_TOKENS]):
            rows, sizes = measure(args, chunk, doc_tokens, scratch, np)
            lines += ["", f"### chunks of {chunk} neurons, documents in files of {doc_tokens:,} tokens", "",
                      "| step | ms | shows |", "|---|---|---|"]
            lines += [f"| {name} | {took:.0f} | {shows} |" for name, took, shows in rows]
            lines += [""] + sizes
    finally:
        if args.keep:
            print(f"kept: {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    print("\n".join(lines))
    if args.save:
        with contextlib.suppress(FileNotFoundError):
            args.save.unlink()
        args.save.write_text("\n".join(lines) + "\n")
    return 0


def chromium_version() -> str:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    return subprocess.run([browser, "--version"], capture_output=True, text=True).stdout.strip() if browser else "none"


if __name__ == "__main__":
    sys.exit(main())
