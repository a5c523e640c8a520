"""The compact viewer: every chosen neuron of a model browsable offline from one page.

Layout of `<results>/<model>/neuroscope/<name>/`:
- `viewer.html`: the page (inline CSS and JavaScript: the renderer of `neuroscope.view.neuron_view`'s data, the
  same as a single page's); `#28.28` opens neuron 28.28, no hash the index;
- `data/meta.js`, `data/index.js`: the run, and one row per neuron for the index (class, roles, kurtosis,
  skew, max, min, mean, gate-open frequency);
- `data/vocab.js`: the vocabulary's strings; `data/docs_<chunk>.js`: the documents' tokens, stored once, in files
  of about DOC_CHUNK_TOKENS tokens (whole documents);
- `data/layer_<layer>.js`: per neuron only its windows (document, start, length), their activations (float16),
  its example lists, histograms and token tables, the arrays deflated (`neuron_view.deflated`); loaded when a
  neuron of the layer opens. A layer of more than NEURON_CHUNK chosen neurons is split by neuron number into
  `data/layer_<layer>_<chunk>.js` (chunk = neuron // NEURON_CHUNK; meta's `chunked_layers` and `neuron_chunk` say
  which), so that opening a neuron loads one chunk whatever the layer's width;
- `data/search.js`: the search by token, an inverse index from each token to the neurons whose token tables or
  examples' extreme tokens hold it (`search_index`); loaded when the page's token box is first used;
- `lists/index.html`, `lists/layer_<layer>.html`: the same index as plain HTML, readable without JavaScript, in
  pages of LIST_PAGE_ROWS neurons (`lists/layer_<layer>_<page>.html` after the first, with links between them).

Every data file is one part of the view (`neuron_view.js_call`), a script that the page loads with a
<script> tag from file:// (no fetch, no server, no network); the page inserts dataset text only as text nodes.
Each data file's call names its file (`part_file`), and `meta.js`, written last, records the checksum of each data
file (`checksums.part_checksum`), of the page and the lists (`file_checksums`), and of itself: the page uses a file
only once it is the one it asked for with the checksum the meta says, and `--from_viewer` copies only such files.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gated_core.artifacts import atomic_write_bytes, atomic_write_text, check_provenance, made_from
from gated_core.errors import UserError, first_line
from gated_core.html import render
from gated_core.neurons import neuron_name
from neuroscope.recompute.windows import LayerExamples
from neuroscope.view.checksums import CHECKSUM_METHOD, file_checksum, meta_checksum, part_checksum
from neuroscope.view.facts import LayerLogitEffects
from neuroscope.view.html import viewer_page
from neuroscope.view.neuron_view import (
    Moments,
    ViewRun,
    deflated,
    documents_payload,
    index_payload,
    js_call,
    layer_payload,
    meta_payload,
)
from neuroscope.view.search_index import SearchIndex, viewer_layer_tokens
from neuroscope.view.viewer_folder import replace_viewer

# tokens per documents file; a neuron loads only the files its examples need: its ~50 windows lie in as many random
# documents, so small files (~44 KiB) keep its first opening short (20M tokens: 0.2 s, against 0.7 s with files of
# 2^20 tokens, every one of which it needed; benchmarks/bench_viewer_index.py)
DOC_CHUNK_TOKENS = 1 << 14
LIST_PREVIEW = 3  # promoted tokens shown per neuron in the plain-HTML lists
# neurons per data file of a wide layer (by neuron number): opening a neuron reads one file of this many neurons
# (about 1 MiB at 8 KiB a neuron; benchmarks/bench_viewer_index.py measures the opening time)
NEURON_CHUNK = 128
LIST_PAGE_ROWS = 1000  # neurons per page of the plain-HTML lists
# the rows of each field of LayerExamples: per example, per window, per chosen neuron (a chunk takes its own rows)
EXAMPLE_ROWS = ("column", "kind", "rank", "doc", "position", "stored", "window", "next_token", "direct_effect",
                "next_rank", "ablation_effect")
WINDOW_ROWS = ("window_column", "window_doc", "window_start", "window_length", "acts", "gates", "lins")
NEURON_ROWS = ("neurons", "bos_value")


def doc_chunks(doc_starts: np.ndarray, tokens: int | None = None) -> list[tuple[int, int]]:
    """Consecutive document ranges [first, stop) of about `tokens` (DOC_CHUNK_TOKENS) tokens each."""
    tokens = tokens or DOC_CHUNK_TOKENS
    chunks, first = [], 0
    for doc in range(1, len(doc_starts)):
        if doc_starts[doc] - doc_starts[first] >= tokens or doc == len(doc_starts) - 1:
            chunks.append((first, doc))
            first = doc
    return chunks


def part_file(part: str, arguments: list[Any] | tuple[Any, ...]) -> str:
    """The data file (in `data/`, without `.js`) that the call neuroscope.<part>(*arguments) belongs in: a call names
    its file (`docs_<chunk>`, `layer_<layer>`, `layer_<layer>_<chunk>`, or the part: `meta`, `index`, `vocab`,
    `search`). `assets/viewer.js` (fileOf) names them the same way."""
    if part == "docs":
        return f"docs_{arguments[0]}"
    if part == "layer":
        return f"layer_{arguments[0]}" + (f"_{arguments[2]}" if len(arguments) > 2 else "")
    return part


PART_TITLES = {"meta": "the meta", "index": "the index", "vocab": "the vocabulary", "search": "the search by token"}


def part_title(name: str) -> str:
    """What a data file holds, in words: `layer 2`, `layer 2 chunk 3`, `documents 4`, `the index`
    (`assets/viewer.js`: titleOf)."""
    found = re.fullmatch(r"(layer|docs)_(\d+)(?:_(\d+))?", name)
    if found is None:
        return PART_TITLES.get(name, name)
    what = "documents" if found.group(1) == "docs" else "layer"
    return f"{what} {found.group(2)}" + (f" chunk {found.group(3)}" if found.group(3) else "")


def write_part(data: Path, sums: dict[str, int], part: str, *args: Any) -> int:
    """The data file of the call neuroscope.<part>(*args) in `data` (named by `part_file`), its checksum recorded in
    `sums` (file -> checksum, for the meta); returns its size in characters."""
    name, text = part_file(part, args), js_call(part, *args)
    atomic_write_text(data / f"{name}.js", text)
    sums[name] = part_checksum(part, *args)
    return len(text)


def write_meta(data: Path, meta: dict[str, Any], sums: dict[str, int], files: dict[str, int]) -> dict[str, Any]:
    """`meta.js`, written last: the run, the checksums of the data files (`sums`) and of the other files (`files`:
    path in the viewer -> checksum of its bytes), and its own checksum; returns the meta as written."""
    meta = {**meta, "checksum_method": CHECKSUM_METHOD, "checksums": dict(sorted(sums.items())),
            "file_checksums": dict(sorted(files.items()))}
    meta["checksum"] = meta_checksum(meta)
    atomic_write_text(data / "meta.js", js_call("meta", meta))
    return meta


def page_checksums(folder: Path) -> dict[str, int]:
    """The checksums of the bytes of a viewer's page and lists (`viewer.html`, `lists/*.html`), by path in the viewer."""
    paths = [folder / "viewer.html", *sorted((folder / "lists").glob("*.html"))]
    return {path.relative_to(folder).as_posix(): file_checksum(path.read_bytes()) for path in paths}


def write_documents(run: ViewRun, sums: dict[str, int]) -> list[tuple[int, int]]:
    """`docs_<chunk>.js`: the documents' tokens, each document once (their checksums into `sums`)."""
    chunks = doc_chunks(run.documents.starts)
    for index, (first, stop) in enumerate(chunks):
        write_part(run.data, sums, "docs", index, documents_payload(run.documents, first, stop))
    return chunks


def write_viewer(run: ViewRun, examples: dict[int, LayerExamples], effects: dict[int, LayerLogitEffects],
                 moments: Moments) -> int:
    """Write the whole viewer into `run.folder` (aside first, then in place of the viewer that was there: see
    `replace_viewer`; call only while holding the pages lock); returns its size in bytes."""
    k = run.stats.k

    def build(staging: Path) -> dict[str, Any]:
        aside, sums = dataclasses.replace(run, folder=staging), {}
        meta = {**meta_payload(aside, write_documents(aside, sums), k), "neuron_chunk": NEURON_CHUNK,
                "chunked_layers": [layer for layer in sorted(examples) if layer_chunks(examples[layer].neurons)[0][0] is not None],
                "list_page_rows": LIST_PAGE_ROWS}
        write_part(aside.data, sums, "vocab", run.vocab)
        write_part(aside.data, sums, "index", index_payload(aside, moments))
        for layer in sorted(examples):
            write_layer(aside, examples[layer], effects[layer], sums)
        tokens = [viewer_layer_tokens(aside, examples[layer], effects[layer]) for layer in sorted(examples)]
        write_search(aside.data, SearchIndex.of_layers(tokens, len(run.vocab)), sums)
        write_page(staging)
        write_lists(aside, effects, moments)
        return write_meta(aside.data, meta, sums, page_checksums(staging))

    return replace_viewer(run.folder, build)


def layer_chunks(neurons: np.ndarray) -> list[tuple[int | None, int, int]]:
    """The data files of a layer's chosen neurons [chosen] (ascending): (chunk, first, stop) per file, its neurons
    being the columns [first, stop); one file (chunk None) where they are at most NEURON_CHUNK, else one per
    chunk = neuron // NEURON_CHUNK that holds any."""
    if len(neurons) <= NEURON_CHUNK:
        return [(None, 0, len(neurons))]
    chunks, firsts = np.unique(np.asarray(neurons) // NEURON_CHUNK, return_index=True)
    stops = [*firsts[1:].tolist(), len(neurons)]
    return [(int(chunk), int(first), int(stop)) for chunk, first, stop in zip(chunks, firsts, stops)]


def examples_of_columns(examples: LayerExamples, first: int, stop: int) -> LayerExamples:
    """The examples and windows of the chosen neurons [first, stop) of a layer, their columns and windows counted
    from there (examples and windows are sorted by column)."""
    known = {"layer", *EXAMPLE_ROWS, *WINDOW_ROWS, *NEURON_ROWS}
    unknown = [f.name for f in dataclasses.fields(examples) if f.name not in known]
    if unknown:
        raise ValueError(f"examples_of_columns does not know the rows of LayerExamples.{', '.join(unknown)}")
    rows = slice(*np.searchsorted(examples.column, [first, stop]))
    windows = slice(*np.searchsorted(examples.window_column, [first, stop]))
    parts = {**{name: rows for name in EXAMPLE_ROWS}, **{name: windows for name in WINDOW_ROWS},
             **{name: slice(first, stop) for name in NEURON_ROWS}}
    cut = {name: None if getattr(examples, name) is None else getattr(examples, name)[part] for name, part in parts.items()}
    cut["column"], cut["window_column"] = cut["column"] - first, cut["window_column"] - first
    cut["window"] = cut["window"] - windows.start
    return LayerExamples(layer=examples.layer, **cut)


def write_layer(run: ViewRun, examples: LayerExamples, effects: LayerLogitEffects, sums: dict[str, int]) -> None:
    """`layer_<layer>.js`, or `layer_<layer>_<chunk>.js` per chunk of a wide layer (`layer_chunks`); their checksums
    into `sums`."""
    layer = examples.layer
    for chunk, first, stop in layer_chunks(examples.neurons):
        if chunk is None:
            write_part(run.data, sums, "layer", layer, deflated(layer_payload(run, examples, effects)))
            continue
        payload = layer_payload(run, examples_of_columns(examples, first, stop), effects.columns(list(range(first, stop))))
        write_part(run.data, sums, "layer", layer, deflated(payload), chunk)


def viewer_layers(folder: Path) -> set[int]:
    """The layers whose neuron data a viewer folder holds, by its files (`layer_<layer>.js`, `layer_<layer>_<chunk>.js`)."""
    return {int(found.group(1)) for path in (Path(folder) / "data").glob("layer_*.js")
            if (found := re.fullmatch(r"layer_(\d+)(_\d+)?\.js", path.name))}


def viewer_neurons(folder: Path) -> set[tuple[int, int]]:
    """The neurons (layer, neuron) whose data a viewer folder holds, read from its own meta and index (`data/meta.js`,
    `data/index.js`); none where those cannot be read (a viewer cut short, or not a viewer)."""
    data = Path(folder) / "data"
    try:
        d_mlp = int(read_call(data / "meta.js", "meta")["d_mlp"])
        ids = unpacked(read_call(data / "index.js", "index")["ids"]).astype(np.int64)
    except (UserError, KeyError, TypeError, ValueError):
        return set()
    return set(zip((ids // d_mlp).tolist(), (ids % d_mlp).tolist())) if d_mlp > 0 else set()


def write_search(data: Path, index: SearchIndex, sums: dict[str, int]) -> int:
    """`data/search.js`, the search by token (its checksum into `sums`); says and returns its size in bytes."""
    size = write_part(data, sums, "search", index.payload())
    print(f"search by token: {len(index.neurons):,} (token, neuron) entries in data/search.js ({size / 2**20:.2f} MiB)")
    return size


# ----------------------------------------------------------------------------- --from_viewer

MODEL_FIELDS = ("model", "n_layers", "d_mlp")  # a viewer that differs in one of these is of another model
MADE_FROM_KEY = "statistics_fingerprint"  # what a viewer's meta records of the statistics it was made from
FROM_VIEWER_REMEDY = ("--from_viewer copies only viewers of this model and these statistics: write that viewer again "
                      "(d_recompute_vis.py --viewer)")
SOURCE_META = {"model": str, "dataset": str, "n_layers": int, "d_mlp": int, "tokens": int, "layers": list, "doc_chunks": list}
PACKED_TYPES = ("u1", "u2", "i4", "f4", "f2")
FILE_ENDS = {".js": (b"neuroscope.", b");"), ".html": (b"<!DOCTYPE html>", b"</html>")}  # how a whole file begins and ends


CALL = re.compile(r"neuroscope\.(\w+)\((.*)\);\n", re.S)  # a data file: one call, from its start to its end
REWRITE = "write that viewer again (d_recompute_vis.py --viewer)"


def read_part(path: Path) -> tuple[str, list[Any]]:
    """The part and the JSON arguments of the one neuroscope.<part>(...) call of a data file; a missing, cut or
    unreadable file is a UserError naming it."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read this file of the viewer ({first_line(exc)}); {REWRITE}") from exc
    try:
        found = CALL.fullmatch(text)
        if found is None:
            raise ValueError("not one call of neuroscope.<part>(...) from its start to its end")
        args = json.loads(f"[{found.group(2)}]")
        if not args:
            raise ValueError(f"neuroscope.{found.group(1)}() without arguments")
    except ValueError as exc:
        raise UserError(f"{path}: cannot read this file of the viewer: cut short or does not parse ({first_line(exc)}); "
                        f"{REWRITE}") from exc
    return found.group(1), args


def read_call(path: Path, part: str) -> Any:
    """The JSON argument of the one neuroscope.<part>(...) call of a data file of this module (`read_part`)."""
    found, args = read_part(path)
    if found != part:
        raise UserError(f"{path}: holds a call of neuroscope.{found}, not of neuroscope.{part}; {REWRITE}")
    return args[0]


def check_sum(path: Path, seen: int, recorded: Any) -> None:
    """Refuse a file whose checksum is not the one its viewer's meta records."""
    if seen != recorded:
        said = f"{recorded:08x}" if isinstance(recorded, int) else repr(recorded)
        raise UserError(f"{path}: checksum mismatch (damaged after it was written): CRC-32 {seen:08x}, its meta.js records "
                        f"{said}; {REWRITE}")


def verified_part(path: Path, meta: dict[str, Any]) -> tuple[str, list[Any]]:
    """`read_part`, refused unless the file holds its own call (`part_file`: not another file's data) and, in a viewer
    with checksums, the checksum that its meta records of it."""
    part, args = read_part(path)
    found = part_file(part, args)
    if found != path.stem:
        raise UserError(f"{path}: holds {part_title(found)}, not {part_title(path.stem)} (the data of {found}.js); {REWRITE}")
    sums = meta.get("checksums")
    if sums is not None:
        if found not in sums:
            raise UserError(f"{path}: not a file of this viewer (its meta.js lists no {found}.js); {REWRITE}")
        check_sum(path, part_checksum(part, *args), sums[found])
    return part, args


def check_meta_checksums(path: Path, meta: dict[str, Any]) -> None:
    """The meta's checksum of itself, and checksums of the kind this version makes; a viewer written before checksums
    has none (its files are copied unverified)."""
    if not {"checksum", "checksums", "file_checksums", "checksum_method"} & set(meta):
        return
    check_sum(path, meta_checksum(meta), meta.get("checksum"))
    tables = [meta.get(key) for key in ("checksums", "file_checksums")]
    if meta.get("checksum_method") != CHECKSUM_METHOD or not all(isinstance(table, dict) for table in tables) or \
            not all(isinstance(value, int) for table in tables for value in table.values()):
        raise UserError(f"{path}: its checksums are not of the kind this version writes (method "
                        f"{meta.get('checksum_method')!r}); {REWRITE}")


def check_copied_files(source: Path, meta: dict[str, Any], names: list[str]) -> None:
    """Each file that a copy reads from `source` (`names`, relative to it) is the one its meta records: a data file
    holds its own call with its checksum (`verified_part`), the page and the lists the bytes of theirs; a viewer written
    before checksums: data files by their names only."""
    for name in names:
        path = source / name
        if path.suffix == ".js":
            verified_part(path, meta)
        elif "file_checksums" in meta:
            if name not in meta["file_checksums"]:
                raise UserError(f"{path}: not a file of this viewer (its meta.js lists no {name}); {REWRITE}")
            check_sum(path, file_checksum(path.read_bytes()), meta["file_checksums"][name])


def unpacked(value: dict[str, str]) -> np.ndarray:
    """The array that `packed` wrote."""
    return np.frombuffer(base64.b64decode(value["b64"], validate=True), dtype="<" + value["dtype"])


def source_files(meta: dict[str, Any], layers: list[int], ids: np.ndarray) -> list[str]:
    """The files of a viewer that a viewer of some of its layers copies, relative to its folder; `ids` [neuron]: the
    neurons of its index (layer * d_mlp + neuron)."""
    return [*(f"data/docs_{chunk}.js" for chunk in range(len(meta["doc_chunks"]))), "data/vocab.js", "viewer.html",
            *(name for layer in layers for name in layer_files(meta, layer, ids[ids // meta["d_mlp"] == layer] % meta["d_mlp"]))]


def layer_files(meta: dict[str, Any], layer: int, neurons: np.ndarray) -> list[str]:
    """The data files and list pages of one layer of a viewer (`neurons`: its chosen ones), relative to its folder."""
    if layer in meta.get("chunked_layers", []):
        data = [f"data/layer_{layer}_{chunk}.js" for chunk in np.unique(neurons // meta["neuron_chunk"]).tolist()]
    else:
        data = [f"data/layer_{layer}.js"]
    return [*data, *(f"lists/{list_page_name(layer, page)}" for page in range(list_pages(len(neurons), meta.get("list_page_rows"))))]


def list_pages(neurons: int, rows: int | None) -> int:
    """How many pages the plain-HTML list of a layer of `neurons` neurons has, at `rows` a page (None: one page)."""
    return 1 if rows is None else max(1, -(-neurons // rows))


def list_page_name(layer: int, page: int) -> str:
    """The file of a page of a layer's plain-HTML list: `layer_<layer>.html` the first, `layer_<layer>_<page>.html` after."""
    return f"layer_{layer}.html" if page == 0 else f"layer_{layer}_{page}.html"


def checked_source_meta(source: Path, expected: dict[str, Any], layers: list[int]) -> dict[str, Any]:
    """The meta of the viewer `source`, refused unless it is whole, of this run (`expected`, `workflow.viewer_identity`:
    its model and sizes, and the fingerprint of the statistics it must have been made from) and has the `layers`."""
    path = source / "data" / "meta.js"
    meta = read_call(path, "meta")
    if not isinstance(meta, dict) or not all(isinstance(meta.get(key), kind) for key, kind in SOURCE_META.items()):
        raise UserError(f"{path}: not the meta of a viewer (it lacks {', '.join(SOURCE_META)}); write that viewer again "
                        "(d_recompute_vis.py --viewer)")
    check_meta_checksums(path, meta)
    for key in MODEL_FIELDS:
        if meta[key] != expected[key]:
            raise UserError(f"{source} is a viewer of another model: its {key} is {meta[key]!r}, this run's {expected[key]!r}; "
                            "--from_viewer copies only viewers of this model and these statistics")
    check_provenance(source, meta, made_from(statistics=expected[MADE_FROM_KEY]), FROM_VIEWER_REMEDY, made="a viewer made with")
    chunking = (meta.get("neuron_chunk", 1), meta.get("list_page_rows", 1), meta.get("chunked_layers", []))
    if not (isinstance(chunking[0], int) and isinstance(chunking[1], int) and min(chunking[:2]) > 0 and isinstance(chunking[2], list)):
        raise UserError(f"{path}: not the meta of a viewer (its neuron_chunk, list_page_rows or chunked_layers are not "
                        "what a viewer writes); write that viewer again (d_recompute_vis.py --viewer)")
    missing = sorted(set(layers) - set(meta["layers"]))
    if missing:
        raise UserError(f"{source}: the viewer has no layer {', '.join(map(str, missing))} (it has {meta['layers']})")
    return meta


def checked_source_index(source: Path, meta: dict[str, Any]) -> dict[str, np.ndarray]:
    """The index of the viewer `source` as arrays of one length, refused unless it is whole."""
    path = source / "data" / "index.js"
    index = verified_part(path, meta)[1][0]
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


def check_source_files(source: Path, meta: dict[str, Any], layers: list[int], ids: np.ndarray) -> None:
    """Every file that a viewer of `layers` copies from `source` is there, and its data files are whole."""
    for name in [*source_files(meta, layers, ids), "lists/index.html"]:
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
    if not path.exists() and not path.is_symlink() and "search" not in meta.get("checksums", {}):
        return None
    if path.is_symlink() or not path.is_file():
        raise UserError(f"{path}: missing from the viewer {source.name} (or not a file); {REWRITE}")
    payload = verified_part(path, meta)[1][0]
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
    check_source_files(source, meta, layers, index["ids"])
    copied = source_files(meta, layers, index["ids"])
    check_copied_files(source, meta, [*copied, "lists/index.html"])
    verified = "checksums" in meta
    if not verified:
        print(f"note: {source} was written before viewers carried checksums: its files are copied unverified (and the copy "
              "says so when it opens); write it again (d_recompute_vis.py --viewer) to have them verified")
    keep = np.isin(index["ids"] // meta["d_mlp"], layers)
    try:
        lists_index = (source / "lists" / "index.html").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{source / 'lists' / 'index.html'}: cannot read it ({first_line(exc)}); write that viewer again") from exc

    def build(staging: Path) -> dict[str, Any]:
        (staging / "data").mkdir()
        (staging / "lists").mkdir()
        for name in copied:
            shutil.copy(source / name, staging / name)
        cut = {name: {"dtype": array.dtype.str[1:], "b64": base64.b64encode(array[keep].tobytes()).decode("ascii")}
               for name, array in index.items()}
        kept_meta = {**meta, "layers": sorted(layers)}
        if "chunked_layers" in meta:
            kept_meta["chunked_layers"] = [layer for layer in meta["chunked_layers"] if layer in layers]
        sums = {Path(name).stem: meta["checksums"][Path(name).stem] for name in copied if verified and name.endswith(".js")}
        write_part(staging / "data", sums, "index", cut)
        if search is not None:
            write_search(staging / "data", search.kept(np.isin(search.neurons // meta["d_mlp"], layers)), sums)
        atomic_write_text(staging / "lists" / "index.html", lists_of_layers(lists_index, layers))
        if not verified:  # a copy of a viewer without checksums stays without them: nothing vouches for its files
            atomic_write_text(staging / "data" / "meta.js", js_call("meta", kept_meta))
            return kept_meta
        return write_meta(staging / "data", kept_meta, sums, page_checksums(staging))

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


@dataclass(frozen=True)
class ListRow:
    """One neuron of a page of the plain-HTML lists (`templates/layer_list.html`), its numbers as the page prints them."""

    name: str  # LAYER.NEURON
    io_class: str
    roles: str
    kurtosis: str
    max: str
    min: str
    mean: str
    gate_open: str
    promoted: tuple[str, ...]  # the first LIST_PREVIEW promoted tokens, each as Python writes the string


def write_lists(run: ViewRun, effects: dict[int, LayerLogitEffects], moments: Moments) -> None:
    """`lists/index.html` and per layer its pages of LIST_PAGE_ROWS neurons (`list_page_name`): the index as plain
    HTML (no JavaScript; `templates/lists_index.html`, `templates/layer_list.html`)."""
    layers = [(layer, list_page_name(layer, 0), len(run.neurons[layer])) for layer in sorted(run.neurons)]
    atomic_write_text(run.folder / "lists" / "index.html",
                      render("neuroscope.view", "lists_index.html", model=run.model, dataset=run.dataset, layers=layers))
    for layer in sorted(run.neurons):
        pages = list_pages(len(run.neurons[layer]), LIST_PAGE_ROWS)
        for page in range(pages):
            atomic_write_text(run.folder / "lists" / list_page_name(layer, page),
                              render("neuroscope.view", "layer_list.html", model=run.model, layer=layer, page=page, pages=pages,
                                     previous=list_page_name(layer, page - 1) if page > 0 else None,
                                     next=list_page_name(layer, page + 1) if page < pages - 1 else None,
                                     rows=list_rows(run, layer, effects[layer], moments, page)))


def list_rows(run: ViewRun, layer: int, effects: LayerLogitEffects, moments: Moments, page: int = 0) -> list[ListRow]:
    """The rows of one page of a layer's neurons (LIST_PAGE_ROWS of them): class, roles, kurtosis, extremes, mean,
    gate-open, first promoted tokens."""
    stats, facts = run.stats, run.facts
    rows = []
    chosen = run.neurons[layer].tolist()
    for column in range(page * LIST_PAGE_ROWS, min((page + 1) * LIST_PAGE_ROWS, len(chosen))):
        neuron = chosen[column]
        rows.append(ListRow(neuron_name(layer, neuron), facts.io_class(layer, neuron), ", ".join(facts.role_names(layer, neuron)),
                            f"{moments['kurtosis'][layer][column]:.2f}", f"{float(stats.top_values[layer, neuron, 0]):.3g}",
                            f"{float(stats.bottom_values[layer, neuron, 0]):.3g}", f"{float(stats.mean[layer, neuron]):.3g}",
                            f"{100 * float(stats.gate_open[layer, neuron]):.1f}%",
                            tuple(repr(run.vocab[int(t)]) for t in effects.promoted[column, :LIST_PREVIEW])))
    return rows
