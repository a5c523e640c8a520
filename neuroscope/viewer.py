"""The compact viewer: every chosen neuron of a model browsable offline from one page.

Layout of `<results>/<model>/neuroscope/<name>/`:
- `viewer.html`: the page (inline CSS and JavaScript); `#28.28` opens neuron 28.28, no hash the index;
- `data/meta.js`, `data/index.js`: the run, and one row per neuron for the index (class, roles, kurtosis,
  skew, max, min, mean, gate-open frequency);
- `data/vocab.js`: the vocabulary's strings; `data/docs_<chunk>.js`: the documents' tokens, stored once;
- `data/layer_<layer>.js`: per neuron only its windows (document, start, length), their activations
  (float16), its example lists, histograms and token tables; loaded when a neuron of the layer opens;
- `lists/index.html`, `lists/layer_<layer>.html`: the same index as plain HTML, readable without JavaScript.

Every data file is a script that calls `neuroscope.<part>(...)` with JSON, so that the page loads it
with a <script> tag from file:// (no fetch, no server, no network). Numbers travel as base64 of
little-endian arrays ({"dtype": ..., "b64": ...}); text is JSON with <, > and & escaped, so no data can
close a script or open markup, and the page inserts dataset text only as text nodes.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import re
import shutil
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gated_core.artifacts import atomic_write_bytes, atomic_write_text
from gated_core.errors import UserError, first_line
from neuroscope.activations import SIGN_COMBINATIONS
from neuroscope.facts import INPUT_TABLES, LOGIT_BINS, LayerLogitEffects, ModelFacts
from neuroscope.histogram import histogram_edges
from neuroscope.recompute import LIST_KINDS
from neuroscope.store import Statistics
from neuroscope.viewer_folder import replace_viewer
from neuroscope.windows import LayerExamples, WindowHasher
from wcos_casestudies.constants import CLASS_NAMES
from wcos_casestudies.roles import ROLE_NAMES

ASSETS = Path(__file__).resolve().parent / "assets"
DOC_CHUNK_TOKENS = 1 << 20  # tokens per documents file; a neuron loads only the chunks its examples need
LIST_PREVIEW = 3  # promoted tokens shown per neuron in the plain-HTML lists
JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def to_json(value: Any) -> str:
    """JSON that is safe inside any script: no <, > or & (so no </script> or <!--), ASCII only."""
    text = json.dumps(value, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    for raw, escaped in JSON_ESCAPES.items():
        text = text.replace(raw, escaped)
    return text


def js_call(part: str, *args: Any) -> str:
    """The text of a data file: one call of neuroscope.<part> with JSON arguments."""
    return f"neuroscope.{part}({','.join(to_json(a) for a in args)});\n"


def packed(values: Any, dtype: str | None = None) -> dict[str, str]:
    """An array as {"dtype", "b64"}: little-endian bytes in base64. Integer arrays take the smallest of
    uint8, uint16, int32 that holds them unless `dtype` is given."""
    array = np.asarray(values.numpy() if isinstance(values, torch.Tensor) else values)
    if dtype is None:
        if np.issubdtype(array.dtype, np.integer):
            low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
            dtype = "u1" if 0 <= low and high < 1 << 8 else "u2" if 0 <= low and high < 1 << 16 else "i4"
        else:
            dtype = "f4"
    return {"dtype": dtype, "b64": base64.b64encode(np.ascontiguousarray(array.astype("<" + dtype)).tobytes()).decode("ascii")}


def offsets(counts: np.ndarray) -> np.ndarray:
    """[n + 1] starts of n consecutive groups of the given sizes."""
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


@dataclass
class ViewerRun:
    """What every file of a viewer shares: the run, the chosen neurons, the statistics and the weight facts."""

    folder: Path
    model: str
    dataset: str
    stats: Statistics
    facts: ModelFacts
    neurons: dict[int, np.ndarray]  # layer -> chosen neurons, ascending
    vocab: list[str]
    tokens: np.ndarray  # every document's tokens, concatenated
    doc_starts: np.ndarray  # [document + 1]
    context: tuple[int, int]  # grey tokens shown before and after a window
    notes: list[str]

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @cached_property
    def hasher(self) -> WindowHasher:
        return WindowHasher(self.tokens, self.doc_starts)


def deduplicated(examples: LayerExamples, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Examples to show [kept] (indices, best rank first within each list) and how many examples of the same
    list have the same window text and peak [kept]: an example whose text an earlier one of its list has is dropped."""
    peak = examples.position - examples.window_start[examples.window]
    key = np.stack([examples.column, examples.kind, hashes[examples.window].view(np.int64), peak], axis=1)
    _, first, inverse, counts = np.unique(key, axis=0, return_index=True, return_inverse=True, return_counts=True)
    kept = np.sort(first)  # examples are sorted by (column, kind, rank): the first of each text is the best
    return kept, counts[inverse.reshape(-1)[kept]]


def layer_payload(run: ViewerRun, examples: LayerExamples, effects: LayerLogitEffects) -> dict[str, Any]:
    """Everything the viewer shows of the chosen neurons of one layer."""
    layer, chosen = examples.layer, examples.neurons
    hashes = run.hasher(examples.window_doc, examples.window_start, examples.window_length)
    kept, duplicates = deduplicated(examples, hashes)
    list_sizes = np.bincount(examples.column[kept] * len(LIST_KINDS) + examples.kind[kept], minlength=len(chosen) * len(LIST_KINDS))
    window_counts = np.bincount(examples.window_column, minlength=len(chosen))
    histogram = run.stats.histogram[layer, chosen].numpy() if run.stats.histogram is not None else None
    payload = {
        "neurons": packed(chosen, "i4"),
        "window_offsets": packed(offsets(window_counts), "i4"),
        "window_doc": packed(examples.window_doc, "i4"), "window_start": packed(examples.window_start),
        "window_length": packed(examples.window_length), "width": examples.width,
        "acts": packed(examples.acts.reshape(-1), "f2"),
        "list_offsets": packed(offsets(list_sizes), "i4"),
        "example_window": packed(examples.window[kept] - offsets(window_counts)[examples.column[kept]]),
        "example_peak": packed(examples.position[kept] - examples.window_start[examples.window[kept]]),
        "example_value": packed(examples.stored[kept], "f4"), "example_duplicates": packed(duplicates),
        "bos_value": packed(np.nan_to_num(examples.bos_value, nan=0.0), "f4"),
        "sign_frequencies": packed(run.stats.sign_frequencies[layer, chosen].float(), "f4"),
        "cosines": {name: packed(values[layer, chosen].float(), "f4") for name, values in run.facts.cosines.items()},
        "promoted": packed(effects.promoted, "i4"), "promoted_values": packed(effects.promoted_values, "f4"),
        "suppressed": packed(effects.suppressed, "i4"), "suppressed_values": packed(effects.suppressed_values, "f4"),
        "logit_low": packed(effects.low, "f4"), "logit_high": packed(effects.high, "f4"),
        "logit_histogram": packed(effects.histogram, "i4"),
        "inputs": {name: packed(ids, "i4") for name, ids in effects.input_tokens.items()},
        "reasons": {str(n): reason for (lay, n), reason in run.facts.reasons.items() if lay == layer and n in set(chosen.tolist())},
    }
    if histogram is not None:
        payload["histogram"] = trimmed_histograms(histogram)
    return payload


def trimmed_histograms(histogram: np.ndarray) -> dict[str, Any]:
    """Histograms [chosen bin] without their empty ends: first bin, offsets and the counts in between."""
    nonzero = histogram > 0
    first = np.where(nonzero.any(axis=1), nonzero.argmax(axis=1), 0)
    last = np.where(nonzero.any(axis=1), histogram.shape[1] - nonzero[:, ::-1].argmax(axis=1), 0)
    counts = np.concatenate([row[a:b] for row, a, b in zip(histogram, first, last)])
    return {"first": packed(first, "u1"), "offsets": packed(offsets(last - first), "i4"), "counts": packed(counts, "i4")}


def index_payload(run: ViewerRun, moments: dict[str, dict[int, np.ndarray]]) -> dict[str, Any]:
    """One row per chosen neuron: id (layer * d_mlp + neuron), class, roles (a bit per role), kurtosis, skew,
    max, min, mean, gate-open frequency."""
    d_mlp = run.stats.d_mlp
    layers = sorted(run.neurons)
    ids = np.concatenate([layer * d_mlp + run.neurons[layer] for layer in layers])
    layer_of, neuron_of = ids // d_mlp, ids % d_mlp
    roles = np.zeros(len(ids), dtype=np.int64)
    for bit, name in enumerate(ROLE_NAMES):
        if name in run.facts.roles:
            roles |= run.facts.roles[name][layer_of, neuron_of].numpy().astype(np.int64) << bit

    def column(table: torch.Tensor) -> np.ndarray:
        return table[layer_of, neuron_of].float().numpy()

    return {
        "ids": packed(ids, "i4"), "io_class": packed(run.facts.categories[layer_of, neuron_of].numpy(), "u1"),
        "roles": packed(roles), "max": packed(column(run.stats.top_values[..., 0]), "f4"),
        "min": packed(column(run.stats.bottom_values[..., 0]), "f4"), "mean": packed(column(run.stats.mean), "f4"),
        "gate_open": packed(column(run.stats.gate_open), "f4"),
        **{name: packed(np.concatenate([moments[name][layer] for layer in layers]), "f4") for name in ("kurtosis", "skew")},
    }


def doc_chunks(doc_starts: np.ndarray) -> list[tuple[int, int]]:
    """Consecutive document ranges [first, stop) of about DOC_CHUNK_TOKENS tokens each."""
    chunks, first = [], 0
    for doc in range(1, len(doc_starts)):
        if doc_starts[doc] - doc_starts[first] >= DOC_CHUNK_TOKENS or doc == len(doc_starts) - 1:
            chunks.append((first, doc))
            first = doc
    return chunks


def write_documents(run: ViewerRun) -> list[tuple[int, int]]:
    """`docs_<chunk>.js`: the documents' tokens, each document once."""
    chunks = doc_chunks(run.doc_starts)
    for index, (first, stop) in enumerate(chunks):
        starts = run.doc_starts[first:stop + 1] - run.doc_starts[first]
        tokens = run.tokens[run.doc_starts[first]:run.doc_starts[stop]]
        atomic_write_text(run.data / f"docs_{index}.js", js_call("docs", index, {"first": first, "starts": packed(starts, "i4"),
                                                                                 "tokens": packed(tokens)}))
    return chunks


def meta_payload(run: ViewerRun, chunks: list[tuple[int, int]], k: int) -> dict[str, Any]:
    """The run: model, dataset, layers, the names the data's codes stand for, the histogram edges."""
    meta = run.stats.meta
    return {"model": run.model, "dataset": run.dataset, "tokens": int(meta.tokens), "k": k,
            "n_layers": run.stats.n_layers, "d_mlp": run.stats.d_mlp,
            "layers": sorted(run.neurons), "doc_chunks": chunks, "context": list(run.context),
            "list_kinds": list(LIST_KINDS), "sign_combinations": list(SIGN_COMBINATIONS),
            "class_names": list(CLASS_NAMES), "role_names": list(ROLE_NAMES), "input_tables": list(INPUT_TABLES),
            "histogram_edges": [float(e) if np.isfinite(e) else None for e in histogram_edges().tolist()],
            "logit_bins": LOGIT_BINS, "bos_left_out": bool(meta.examples_without_bos), "notes": run.notes}


def write_viewer(run: ViewerRun, examples: dict[int, LayerExamples], effects: dict[int, LayerLogitEffects],
                 moments: dict[str, dict[int, np.ndarray]]) -> int:
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
        write_page(staging)
        write_lists(aside, effects, moments)
        return meta

    return replace_viewer(run.folder, build)


# ----------------------------------------------------------------------------- --from_viewer

MODEL_FIELDS = ("model", "n_layers", "d_mlp")
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
    """The meta of the viewer `source`, refused unless it is whole, of this run (`expected`: its model, dataset,
    sizes and tokens) and has the `layers`."""
    path = source / "data" / "meta.js"
    meta = read_call(path, "meta")
    if not isinstance(meta, dict) or not all(isinstance(meta.get(key), kind) for key, kind in SOURCE_META.items()):
        raise UserError(f"{path}: not the meta of a viewer (it lacks {', '.join(SOURCE_META)}); write that viewer again "
                        "(d_recompute_vis.py --viewer)")
    for key, value in expected.items():
        if meta[key] != value:
            other = "model" if key in MODEL_FIELDS else "dataset"
            raise UserError(f"{source} is a viewer of another {other}: its {key} is {meta[key]!r}, this run's {value!r}; "
                            "--from_viewer copies only viewers of this model and these statistics")
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


def extract_layers(source: Path, target: Path, layers: list[int], expected: dict[str, Any]) -> int:
    """A viewer of some whole layers of an existing one (`source`, which must be whole and of this run:
    `expected`), without recomputing anything: its data files for those layers, the documents and vocabulary,
    and the index and lists cut to those layers. Call only while holding the pages lock. Returns the size."""
    meta = checked_source_meta(source, expected, layers)
    index = checked_source_index(source, meta)
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
    """`viewer.html`: the page with its style and script inline."""
    page = (ASSETS / "viewer.html").read_text()
    page = page.replace("/*STYLE*/", (ASSETS / "viewer.css").read_text()).replace("/*SCRIPT*/", (ASSETS / "viewer.js").read_text())
    atomic_write_bytes(folder / "viewer.html", page.encode("utf-8"))


LIST_STYLE = ("body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:75em;padding:0 1em;color:#222}"
              "table{border-collapse:collapse}td,th{padding:.15em .6em;border-bottom:1px solid #eee;text-align:left}"
              ".num{font-variant-numeric:tabular-nums;text-align:right}code{background:#f4f4f4}")


def write_lists(run: ViewerRun, effects: dict[int, LayerLogitEffects], moments: dict[str, dict[int, np.ndarray]]) -> None:
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


def layer_list_html(run: ViewerRun, layer: int, effects: LayerLogitEffects, moments: dict[str, dict[int, np.ndarray]]) -> str:
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
