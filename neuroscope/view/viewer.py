"""The compact viewer: every chosen neuron of a model browsable offline from one page.

Layout of `<results>/<model>/neuroscope/<name>/`:
- `viewer.html`: the page (inline CSS and JavaScript: the renderer of `neuroscope.view.neuron_view`'s data, the
  same as a single page's); `#28.28` opens neuron 28.28, no hash the index;
- `data/meta.js`, `data/index.js`: the run, and one row per neuron for the index (class, roles, kurtosis,
  skew, max, min, mean, gate-open frequency);
- `data/vocab.js`: the vocabulary's strings; `data/docs_<chunk>.js`: the documents' tokens, stored once, in files
  of about DOC_CHUNK_TOKENS tokens (whole documents);
- `data/layer_<layer>.js`: per neuron only its windows (document, start, length), their activations (float16),
  its example lists, histograms and token tables, the arrays deflated (`parts.deflated`); loaded when a
  neuron of the layer opens. A layer of more than NEURON_CHUNK chosen neurons is split by neuron number into
  `data/layer_<layer>_<chunk>.js` (chunk = neuron // NEURON_CHUNK; meta's `chunked_layers` and `neuron_chunk` say
  which), so that opening a neuron loads one chunk whatever the layer's width;
- `data/top_<shard>.js`, `data/search_<shard>.js`: the ranked search by token, from each token to the neurons whose
  token tables or examples' extreme tokens hold it, with the value and its strength relative to the neuron
  (`search_index`); loaded when the page's token box is first used, only the shards of the tokens searched: the top
  files (each token's strongest hits, the counts) for a search's first page, the others for the pages after;
- `lists/index.html`, `lists/layer_<layer>.html`: the same index as plain HTML, readable without JavaScript, in
  pages of LIST_PAGE_ROWS neurons (`lists/layer_<layer>_<page>.html` after the first, with links between them).

Every data file is one part of the view (`neuroscope.view.parts`, written by `neuron_view.js_call`), a script that the page loads with a
<script> tag from file:// (no fetch, no server, no network); the page inserts dataset text only as text nodes.
Each data file's call names its file (`part_file`), and `meta.js`, written last, records the checksum of each data
file (`checksums.part_checksum`), of the page and the lists (`file_checksums`), and of itself: the page uses a file
only once it is the one it asked for with the checksum the meta says, and `--from_viewer` copies only such files
(`viewer_copy`, which also reads a viewer folder back).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gated_core.artifacts import atomic_write_bytes, atomic_write_text
from gated_core.html import render
from gated_core.naming import shown
from gated_core.neurons import neuron_name
from neuroscope.recompute.windows import LayerExamples
from neuroscope.view.checksums import CHECKSUM_METHOD, file_checksum, meta_checksum, part_checksum
from neuroscope.view.facts import LayerLogitEffects
from neuroscope.view.html import viewer_page
from neuroscope.view.neuron_view import Moments, ViewRun, documents_payload, index_payload, js_call, layer_payload, meta_payload
from neuroscope.view.parts import IndexPart, ViewMeta, deflated, plain, read_plain
from neuroscope.view.search_index import TOP_HITS, DocumentTokens, Hits, SearchFiles, SearchIndex, index_peaks, layer_hits
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
    its file (`docs_<chunk>`, `layer_<layer>`, `layer_<layer>_<chunk>`, `search_<shard>`, `top_<shard>`, or the part:
    `meta`, `index`, `vocab`). `assets/viewer.js` (fileOf) names them the same way."""
    if part in ("docs", "search", "top"):
        return f"{part}_{arguments[0]}"
    if part == "layer":
        return f"layer_{arguments[0]}" + (f"_{arguments[2]}" if len(arguments) > 2 else "")
    return part


PART_TITLES = {"meta": "the meta", "index": "the index", "vocab": "the vocabulary"}
NUMBERED_TITLES = {"layer": "layer", "docs": "documents", "search": "the search by token, part",
                   "top": "the search by token's strongest hits, part"}


def part_title(name: str) -> str:
    """What a data file holds, in words: `layer 2`, `layer 2 chunk 3`, `documents 4`, `the search by token, part 0`,
    `the index` (`assets/viewer.js`: titleOf)."""
    found = re.fullmatch(r"(layer|docs|search|top)_(\d+)(?:_(\d+))?", name)
    if found is None:
        return PART_TITLES.get(name, name)
    what = NUMBERED_TITLES[found.group(1)]
    return f"{what} {found.group(2)}" + (f" chunk {found.group(3)}" if found.group(3) else "")


def write_part(data: Path, sums: dict[str, int], part: str, *args: Any) -> int:
    """The data file of the call neuroscope.<part>(*args) in `data` (named by `part_file`), its checksum recorded in
    `sums` (file -> checksum, for the meta); returns its size in characters."""
    args = tuple(plain(arg) for arg in args)
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
        chunked = [layer for layer in sorted(examples) if layer_chunks(examples[layer].neurons)[0][0] is not None]
        meta = plain(meta_payload(aside, write_documents(aside, sums), k, neuron_chunk=NEURON_CHUNK, chunked_layers=chunked,
                                  list_page_rows=LIST_PAGE_ROWS))
        write_part(aside.data, sums, "vocab", run.vocab)
        index = index_payload(aside, moments)
        write_part(aside.data, sums, "index", index)
        documents = DocumentTokens(run.documents.tokens, run.documents.starts, run.documents.ids)
        hits = [write_layer(aside, examples[layer], effects[layer], sums, SearchInputs(index, documents)) for layer in sorted(examples)]
        meta = with_search(meta, write_search(aside.data, SearchIndex.of_hits(Hits.joined(hits), len(run.vocab)), sums))
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


@dataclass(frozen=True)
class SearchInputs:
    """What the search by token needs beside a layer part: the index (each neuron's largest |a|) and the documents."""

    index: IndexPart
    documents: DocumentTokens


def write_layer(run: ViewRun, examples: LayerExamples, effects: LayerLogitEffects, sums: dict[str, int],
                search: SearchInputs) -> Hits:
    """`layer_<layer>.js`, or `layer_<layer>_<chunk>.js` per chunk of a wide layer (`layer_chunks`); their checksums
    into `sums`; returns the hits of the search by token of what they hold."""
    layer, hits = examples.layer, []
    for chunk, first, stop in layer_chunks(examples.neurons):
        if chunk is None:
            payload = layer_payload(run, examples, effects)
            write_part(run.data, sums, "layer", layer, deflated(payload))
        else:
            payload = layer_payload(run, examples_of_columns(examples, first, stop), effects.columns(list(range(first, stop))))
            write_part(run.data, sums, "layer", layer, deflated(payload), chunk)
        ids = layer * run.stats.d_mlp + payload.examples.neurons.array().astype(np.int64)
        hits.append(layer_hits(payload, layer, run.stats.d_mlp, index_peaks(search.index, ids), search.documents))
    return Hits.joined(hits)


def with_search(meta: dict[str, Any], files: SearchFiles) -> dict[str, Any]:
    """The meta (as JSON) with the first token of each shard of its search by token, its keys in ViewMeta's order."""
    tops, rests = files.firsts
    return plain(dataclasses.replace(read_plain(ViewMeta, meta), search_shards=rests, top_shards=tops, search_top=TOP_HITS))


def write_search(data: Path, index: SearchIndex, sums: dict[str, int]) -> SearchFiles:
    """`data/top_<shard>.js` and `data/search_<shard>.js`, the search by token in shards of consecutive tokens (their
    checksums into `sums`); says their size; returns what they hold (the meta's `top_shards`, `search_shards`)."""
    files = SearchFiles.of_index(index)
    size = sum(write_part(data, sums, "top", shard, part) for shard, part in enumerate(files.tops))
    size += sum(write_part(data, sums, "search", shard, part) for shard, part in enumerate(files.rests))
    print(f"search by token: {len(index.hits.neuron):,} (token, neuron, source) hits in {len(files.tops)} files "
          f"data/top_*.js (each token's strongest) and {len(files.rests)} data/search_*.js ({size / 2**20:.2f} MiB)")
    return files


def list_pages(neurons: int, rows: int | None) -> int:
    """How many pages the plain-HTML list of a layer of `neurons` neurons has, at `rows` a page (None: one page)."""
    return 1 if rows is None else max(1, -(-neurons // rows))


def list_page_name(layer: int, page: int) -> str:
    """The file of a page of a layer's plain-HTML list: `layer_<layer>.html` the first, `layer_<layer>_<page>.html` after."""
    return f"layer_{layer}.html" if page == 0 else f"layer_{layer}_{page}.html"


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
        rows.append(ListRow(neuron_name(layer, neuron), shown(facts.io_class(layer, neuron)), ", ".join(facts.role_names(layer, neuron)),
                            f"{moments['kurtosis'][layer][column]:.2f}", f"{float(stats.top_values[layer, neuron, 0]):.3g}",
                            f"{float(stats.bottom_values[layer, neuron, 0]):.3g}", f"{float(stats.mean[layer, neuron]):.3g}",
                            f"{100 * float(stats.gate_open[layer, neuron]):.1f}%",
                            tuple(repr(run.vocab[int(t)]) for t in effects.promoted[column, :LIST_PREVIEW])))
    return rows
