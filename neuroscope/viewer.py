"""The compact viewer: every chosen neuron of a model browsable offline from one page.

Layout of `<results>/<model>/neuroscope/<name>/`:
- `viewer.html`: the page (inline CSS and JavaScript: the renderer of `neuroscope.neuron_view`'s data, the
  same as a single page's); `#28.28` opens neuron 28.28, no hash the index;
- `data/meta.js`, `data/index.js`: the run, and one row per neuron for the index (class, roles, kurtosis,
  skew, max, min, mean, gate-open frequency);
- `data/vocab.js`: the vocabulary's strings; `data/docs_<chunk>.js`: the documents' tokens, stored once;
- `data/layer_<layer>.js`: per neuron only its windows (document, start, length), their activations
  (float16), its example lists, histograms and token tables; loaded when a neuron of the layer opens;
- `data/search.js`: the search by token, an inverse index from each token to the neurons whose token tables or
  examples' extreme tokens hold it (`search_index`); loaded when the page's token box is first used;
- `lists/index.html`, `lists/layer_<layer>.html`: the same index as plain HTML, readable without JavaScript.

Every data file is one part of the view (`neuron_view.js_call`), a script that the page loads with a
<script> tag from file:// (no fetch, no server, no network); the page inserts dataset text only as text nodes.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from gated_core.artifacts import atomic_write_bytes, atomic_write_text, check_made_from
from gated_core.errors import UserError, first_line
from neuroscope.facts import LayerLogitEffects
from neuroscope.neuron_view import (
    Moments,
    ViewRun,
    documents_payload,
    index_payload,
    js_call,
    layer_payload,
    meta_payload,
)
from neuroscope.pages import viewer_page
from neuroscope.search_index import SearchIndex, viewer_layer_tokens
from neuroscope.viewer_folder import replace_viewer
from neuroscope.windows import LayerExamples

DOC_CHUNK_TOKENS = 1 << 20  # tokens per documents file; a neuron loads only the chunks its examples need
LIST_PREVIEW = 3  # promoted tokens shown per neuron in the plain-HTML lists


def doc_chunks(doc_starts: np.ndarray) -> list[tuple[int, int]]:
    """Consecutive document ranges [first, stop) of about DOC_CHUNK_TOKENS tokens each."""
    chunks, first = [], 0
    for doc in range(1, len(doc_starts)):
        if doc_starts[doc] - doc_starts[first] >= DOC_CHUNK_TOKENS or doc == len(doc_starts) - 1:
            chunks.append((first, doc))
            first = doc
    return chunks


def write_documents(run: ViewRun) -> list[tuple[int, int]]:
    """`docs_<chunk>.js`: the documents' tokens, each document once."""
    chunks = doc_chunks(run.documents.starts)
    for index, (first, stop) in enumerate(chunks):
        atomic_write_text(run.data / f"docs_{index}.js", js_call("docs", index, documents_payload(run.documents, first, stop)))
    return chunks


def write_viewer(run: ViewRun, examples: dict[int, LayerExamples], effects: dict[int, LayerLogitEffects],
                 moments: Moments) -> int:
    """Write the whole viewer into `run.folder` (aside first, then in place of the viewer that was there: see
    `replace_viewer`; call only while holding the pages lock); returns its size in bytes."""
    k = run.stats.k

    def build(staging: Path) -> dict[str, Any]:
        aside = dataclasses.replace(run, folder=staging)
        meta = meta_payload(aside, write_documents(aside), k)
        atomic_write_text(aside.data / "meta.js", js_call("meta", meta))
        atomic_write_text(aside.data / "vocab.js", js_call("vocab", run.vocab))
        atomic_write_text(aside.data / "index.js", js_call("index", index_payload(aside, moments)))
        for layer in sorted(examples):
            atomic_write_text(aside.data / f"layer_{layer}.js", js_call("layer", layer, layer_payload(aside, examples[layer], effects[layer])))
        tokens = [viewer_layer_tokens(aside, examples[layer], effects[layer]) for layer in sorted(examples)]
        write_search(aside.data / "search.js", SearchIndex.of_layers(tokens, len(run.vocab)))
        write_page(staging)
        write_lists(aside, effects, moments)
        return meta

    return replace_viewer(run.folder, build)


def write_search(path: Path, index: SearchIndex) -> int:
    """`data/search.js`, the search by token; says and returns its size in bytes."""
    text = js_call("search", index.payload())
    atomic_write_text(path, text)
    print(f"search by token: {len(index.neurons):,} (token, neuron) entries in data/search.js ({len(text) / 2**20:.2f} MiB)")
    return len(text)


# ----------------------------------------------------------------------------- --from_viewer

MODEL_FIELDS = ("model", "n_layers", "d_mlp")  # a viewer that differs in one of these is of another model
MADE_FROM_KEY = "statistics_fingerprint"  # what a viewer's meta records of the statistics it was made from
FROM_VIEWER_REMEDY = ("--from_viewer copies only viewers of this model and these statistics: write that viewer again "
                      "(d_recompute_vis.py --viewer)")
SOURCE_META = {"model": str, "dataset": str, "n_layers": int, "d_mlp": int, "tokens": int, "layers": list, "doc_chunks": list}
PACKED_TYPES = ("u1", "u2", "i4", "f4", "f2")
FILE_ENDS = {".js": (b"neuroscope.", b");"), ".html": (b"<!DOCTYPE html>", b"</html>")}  # how a whole file begins and ends


def read_call(path: Path, part: str) -> Any:
    """The JSON argument of the one neuroscope.<part>(...) call of a data file of this module; a missing, cut or
    unreadable file is a UserError naming it."""
    try:
        text = path.read_text(encoding="utf-8")
        if not (text.startswith(f"neuroscope.{part}(") and text.endswith(");\n")):
            raise ValueError("cut short, or not a data file of a viewer")
        return json.loads(f"[{text[len(part) + 12:-3]}]")[0]
    except (OSError, UnicodeDecodeError, ValueError, IndexError) as exc:
        raise UserError(f"{path}: cannot read this file of the viewer ({first_line(exc)}); write that viewer again "
                        "(d_recompute_vis.py --viewer)") from exc


def unpacked(value: dict[str, str]) -> np.ndarray:
    """The array that `packed` wrote."""
    return np.frombuffer(base64.b64decode(value["b64"], validate=True), dtype="<" + value["dtype"])


def source_files(meta: dict[str, Any], layers: list[int]) -> list[str]:
    """The files of a viewer that a viewer of some of its layers copies, relative to its folder."""
    return [*(f"data/docs_{chunk}.js" for chunk in range(len(meta["doc_chunks"]))), "data/vocab.js", "viewer.html",
            *(f"data/layer_{layer}.js" for layer in layers), *(f"lists/layer_{layer}.html" for layer in layers)]


def checked_source_meta(source: Path, expected: dict[str, Any], layers: list[int]) -> dict[str, Any]:
    """The meta of the viewer `source`, refused unless it is whole, of this run (`expected`, `workflow.viewer_identity`:
    its model and sizes, and the fingerprint of the statistics it must have been made from) and has the `layers`."""
    path = source / "data" / "meta.js"
    meta = read_call(path, "meta")
    if not isinstance(meta, dict) or not all(isinstance(meta.get(key), kind) for key, kind in SOURCE_META.items()):
        raise UserError(f"{path}: not the meta of a viewer (it lacks {', '.join(SOURCE_META)}); write that viewer again "
                        "(d_recompute_vis.py --viewer)")
    for key in MODEL_FIELDS:
        if meta[key] != expected[key]:
            raise UserError(f"{source} is a viewer of another model: its {key} is {meta[key]!r}, this run's {expected[key]!r}; "
                            "--from_viewer copies only viewers of this model and these statistics")
    check_made_from(source, meta, MADE_FROM_KEY, expected[MADE_FROM_KEY], FROM_VIEWER_REMEDY, made="a viewer made with")
    missing = sorted(set(layers) - set(meta["layers"]))
    if missing:
        raise UserError(f"{source}: the viewer has no layer {', '.join(map(str, missing))} (it has {meta['layers']})")
    return meta


def checked_source_index(source: Path, meta: dict[str, Any]) -> dict[str, np.ndarray]:
    """The index of the viewer `source` as arrays of one length, refused unless it is whole."""
    path = source / "data" / "index.js"
    index = read_call(path, "index")
    try:
        arrays = {name: unpacked(value) for name, value in index.items() if value["dtype"] in PACKED_TYPES}
        lengths = {len(array) for array in arrays.values()}
        ids = arrays["ids"]
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{path}: not the index of a viewer ({first_line(exc)}); write that viewer again") from exc
    if len(arrays) != len(index) or len(lengths) != 1 or ids.dtype.kind != "i" or \
            ((ids < 0) | (ids >= meta["n_layers"] * meta["d_mlp"])).any():
        raise UserError(f"{path}: not the index of a viewer (columns of other lengths or types, or other neurons); "
                        "write that viewer again")
    return arrays


def check_source_files(source: Path, meta: dict[str, Any], layers: list[int]) -> None:
    """Every file that a viewer of `layers` copies from `source` is there, and its data files are whole."""
    for name in [*source_files(meta, layers), "lists/index.html"]:
        path = source / name
        if path.is_symlink() or not path.is_file():
            raise UserError(f"{path}: missing from the viewer {source.name} (or not a file); write that viewer again")
        head, tail = FILE_ENDS[path.suffix]
        with path.open("rb") as handle:
            starts = handle.read(len(head))
            handle.seek(max(path.stat().st_size - 16, 0))
            if starts != head or not handle.read().rstrip().endswith(tail):
                raise UserError(f"{path}: cut short, or not a file of a viewer; write that viewer again")


def checked_source_search(source: Path, meta: dict[str, Any]) -> SearchIndex | None:
    """The search by token of the viewer `source`, refused unless it is whole; None for a viewer written before it."""
    path = source / "data" / "search.js"
    if not path.exists() and not path.is_symlink():
        return None
    if path.is_symlink() or not path.is_file():
        raise UserError(f"{path}: not a file of a viewer; write that viewer again (d_recompute_vis.py --viewer)")
    payload = read_call(path, "search")
    try:
        index = SearchIndex(unpacked(payload["offsets"]).astype(np.int64), unpacked(payload["neurons"]).astype(np.int64),
                            unpacked(payload["where"]).astype(np.uint8))
        index.check(meta["n_layers"] * meta["d_mlp"])
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{path}: not the search by token of a viewer ({first_line(exc)}); write that viewer again") from exc
    return index


def extract_layers(source: Path, target: Path, layers: list[int], expected: dict[str, Any]) -> int:
    """A viewer of some whole layers of an existing one (`source`, which must be whole and of this run:
    `expected`), without recomputing anything: its data files for those layers, the documents and vocabulary,
    and the index, the search by token and the lists cut to those layers. Call only while holding the pages lock.
    Returns the size."""
    meta = checked_source_meta(source, expected, layers)
    index = checked_source_index(source, meta)
    search = checked_source_search(source, meta)
    check_source_files(source, meta, layers)
    keep = np.isin(index["ids"] // meta["d_mlp"], layers)
    try:
        lists_index = (source / "lists" / "index.html").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{source / 'lists' / 'index.html'}: cannot read it ({first_line(exc)}); write that viewer again") from exc

    def build(staging: Path) -> dict[str, Any]:
        (staging / "data").mkdir()
        (staging / "lists").mkdir()
        for name in source_files(meta, layers):
            shutil.copy(source / name, staging / name)
        cut = {name: {"dtype": array.dtype.str[1:], "b64": base64.b64encode(array[keep].tobytes()).decode("ascii")}
               for name, array in index.items()}
        atomic_write_text(staging / "data" / "meta.js", js_call("meta", {**meta, "layers": sorted(layers)}))
        atomic_write_text(staging / "data" / "index.js", js_call("index", cut))
        if search is not None:
            write_search(staging / "data" / "search.js", search.kept(np.isin(search.neurons // meta["d_mlp"], layers)))
        atomic_write_text(staging / "lists" / "index.html", lists_of_layers(lists_index, layers))
        return meta

    return replace_viewer(target, build)


def lists_of_layers(text: str, layers: list[int]) -> str:
    """`lists/index.html` of a viewer, its list cut to the links of `layers`."""
    def of_layers(item: str) -> bool:
        found = re.search(r"layer_(\d+)\.html", item)
        return found is not None and int(found.group(1)) in layers

    kept = "".join(item for item in re.findall(r"<li>.*?</li>", text) if of_layers(item))
    return re.sub(r"<ul>.*</ul>", lambda _: f"<ul>{kept}</ul>", text, flags=re.S)


def write_page(folder: Path) -> None:
    """`viewer.html`: the page with its style and script inline, its data in `data/`."""
    atomic_write_bytes(folder / "viewer.html", viewer_page().encode("utf-8"))


LIST_STYLE = ("body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:75em;padding:0 1em;color:#222}"
              "table{border-collapse:collapse}td,th{padding:.15em .6em;border-bottom:1px solid #eee;text-align:left}"
              ".num{font-variant-numeric:tabular-nums;text-align:right}code{background:#f4f4f4}")


def write_lists(run: ViewRun, effects: dict[int, LayerLogitEffects], moments: Moments) -> None:
    """`lists/index.html` and one `lists/layer_<layer>.html` per layer: the index as plain HTML (no JavaScript)."""
    def head(title: str) -> str:
        return f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title><style>{LIST_STYLE}</style></head><body>"

    model = html.escape(run.model)
    links = "".join(f'<li><a href="layer_{layer}.html">layer {layer}</a> ({len(run.neurons[layer])} neurons)</li>' for layer in sorted(run.neurons))
    atomic_write_text(run.folder / "lists" / "index.html",
                      head(f"neurons of {model}") + f"<h1>Neurons of {model}</h1><p>dataset {html.escape(run.dataset)}; "
                      f"the interactive viewer is <a href=\"../viewer.html\">viewer.html</a> (needs JavaScript).</p><ul>{links}</ul></body></html>")
    for layer in sorted(run.neurons):
        atomic_write_text(run.folder / "lists" / f"layer_{layer}.html",
                          head(f"layer {layer} of {model}") + layer_list_html(run, layer, effects[layer], moments) + "</body></html>")


def layer_list_html(run: ViewRun, layer: int, effects: LayerLogitEffects, moments: Moments) -> str:
    """The table of one layer's neurons: class, roles, kurtosis, extremes, mean, gate-open, first promoted tokens."""
    stats, facts = run.stats, run.facts
    rows = []
    for column, neuron in enumerate(run.neurons[layer].tolist()):
        promoted = " ".join(f"<code>{html.escape(repr(run.vocab[int(t)]))}</code>" for t in effects.promoted[column, :LIST_PREVIEW])
        cells = [f'<a href="../viewer.html#{layer}.{neuron}">{layer}.{neuron}</a>', html.escape(facts.io_class(layer, neuron)),
                 html.escape(", ".join(facts.role_names(layer, neuron))),
                 f"{moments['kurtosis'][layer][column]:.2f}", f"{float(stats.top_values[layer, neuron, 0]):.3g}",
                 f"{float(stats.bottom_values[layer, neuron, 0]):.3g}", f"{float(stats.mean[layer, neuron]):.3g}",
                 f"{100 * float(stats.gate_open[layer, neuron]):.1f}%", promoted]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    header = "".join(f"<th>{h}</th>" for h in ("neuron", "IO class", "roles", "kurtosis", "max", "min", "mean", "gate open", "promotes"))
    return (f"<p><a href=\"index.html\">all layers</a></p><h1>Layer {layer} of {html.escape(run.model)}</h1>"
            f"<table><tr>{header}</tr>{''.join(rows)}</table>")
