"""The viewer of a layer wider than a chunk: its neuron data split into chunks of neurons (the same data as in one
file per layer, neuron by neuron), deep links and filters in headless Chromium that load only the neuron's chunk and
list the index in the order a brute-force sort gives, the plain-HTML lists in pages, and --from_viewer of a chunked
layer."""

from __future__ import annotations

import html
import json
import re

import numpy as np
import pytest
from helpers import CONTEXT, WINDOW, dump_dom, read_call, tiny_run, unpack, visible_text

from gated_core.artifacts import load_artifact
from gated_core.cli import run_main
from gated_core.models.loading import load_tokenizer
from neuroscope import d_recompute_vis
from neuroscope.view import viewer, viewer_copy

CHUNK = 16  # neurons per chunk in these tests: the tiny model's layers (96 neurons) take 6
PAGE_ROWS = 40  # rows per page of the plain-HTML lists: 3 pages a layer
DOC_TOKENS = 64  # tokens per documents file: the test texts take several
NUMERIC = ("kurtosis", "skew", "max", "min", "mean", "gate_open")


@pytest.fixture(scope="module")
def viewers(tiny_models, tmp_path_factory):
    """Two viewers of every neuron of a tiny Llama: `chunked` (chunks of CHUNK neurons, lists of PAGE_ROWS rows)
    and `whole` (one file per layer, as the default chunk size leaves a layer of 96 neurons)."""
    datadir = tmp_path_factory.mktemp("chunks")
    source, dataset, results, argv = tiny_run(tiny_models["llama"], datadir)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(viewer, "NEURON_CHUNK", CHUNK)
        patch.setattr(viewer, "LIST_PAGE_ROWS", PAGE_ROWS)
        patch.setattr(viewer, "DOC_CHUNK_TOKENS", DOC_TOKENS)
        assert run_main(d_recompute_vis.main, argv + ["--viewer", "chunked"]) == 0
    assert run_main(d_recompute_vis.main, argv + ["--viewer", "whole"]) == 0
    pages = results / "local" / "llama" / "neuroscope"
    return {"chunked": pages / "chunked", "whole": pages / "whole", "pages": pages, "argv": argv, "source": source,
            "dataset": dataset, "stats": load_artifact(datadir / "ref" / "stats.pt")}


def neuron_record(data, column):
    """Everything a layer file holds of the neuron at `column`, read by its offsets (windows, example lists, histogram)
    and by its row of each per-neuron array, as plain lists."""
    neurons = len(unpack(data["neurons"]))
    windows = unpack(data["window_offsets"])[column:column + 2]
    kinds = (len(unpack(data["list_offsets"])) - 1) // neurons
    examples = unpack(data["list_offsets"])[column * kinds:(column + 1) * kinds + 1]
    record = {"width": data["width"], "lists": (examples - examples[0]).tolist(),
              "acts": unpack(data["acts"]).reshape(-1, data["width"])[windows[0]:windows[1]].tolist()}
    for key, value in data.items():
        if key.startswith("window_") and key != "window_offsets":
            record[key] = unpack(value)[windows[0]:windows[1]].tolist()
        elif key.startswith("example_"):
            record[key] = unpack(value)[examples[0]:examples[-1]].tolist()
        elif isinstance(value, dict) and "b64" in value and key not in ("acts", "list_offsets", "window_offsets"):
            rows = unpack(value)
            record[key] = rows.reshape(neurons, -1)[column].tolist()
        elif key in ("cosines", "inputs"):
            record[key] = {name: unpack(v).reshape(neurons, -1)[column].tolist() for name, v in value.items()}
    first, offsets, counts = (unpack(data["histogram"][k]) for k in ("first", "offsets", "counts"))
    record["histogram"] = [int(first[column]), counts[offsets[column]:offsets[column + 1]].tolist()]
    return record


def test_chunks_hold_the_same_neurons_as_whole_layers(viewers):
    """Each chunk file holds neurons [chunk * CHUNK, (chunk + 1) * CHUNK) of its layer, each with exactly the data the
    whole layer's file has of it; the meta says which layers are chunked and how."""
    chunked, whole = viewers["chunked"] / "data", viewers["whole"] / "data"
    meta = read_call(chunked / "meta.js")[1][0]
    d_mlp = viewers["stats"]["top_values"].shape[1]
    assert meta["neuron_chunk"] == CHUNK and meta["chunked_layers"] == [0, 1] and meta["list_page_rows"] == PAGE_ROWS
    assert read_call(whole / "meta.js")[1][0]["chunked_layers"] == []
    assert sorted(p.name for p in chunked.glob("layer_*")) == sorted(f"layer_{layer}_{c}.js" for layer in (0, 1) for c in range(d_mlp // CHUNK))
    for layer in (0, 1):
        part, (number, data) = read_call(whole / f"layer_{layer}.js")
        assert part == "layer" and number == layer
        for chunk in range(d_mlp // CHUNK):
            part, (number, piece, index) = read_call(chunked / f"layer_{layer}_{chunk}.js")
            assert part == "layer" and number == layer and index == chunk
            assert unpack(piece["neurons"]).tolist() == list(range(chunk * CHUNK, (chunk + 1) * CHUNK))
            for column in range(CHUNK):
                mine, expected = neuron_record(piece, column), neuron_record(data, chunk * CHUNK + column)
                assert json.dumps(mine, sort_keys=True) == json.dumps(expected, sort_keys=True), (layer, chunk, column)  # nan == nan


def test_viewer_layers_by_their_files(viewers):
    assert viewer_copy.viewer_layers(viewers["chunked"]) == viewer_copy.viewer_layers(viewers["whole"]) == {0, 1}


def test_layer_chunks_of_a_sparse_choice():
    """The files of a layer: one where the chosen neurons fit in a chunk, else one per chunk of neuron numbers that
    holds any, against a grouping by hand."""
    rng = np.random.default_rng(0)
    neurons = np.sort(rng.choice(11_008, size=700, replace=False))
    assert viewer.layer_chunks(neurons[:viewer.NEURON_CHUNK]) == [(None, 0, viewer.NEURON_CHUNK)]
    expected = {}
    for column, neuron in enumerate(neurons.tolist()):
        expected.setdefault(neuron // viewer.NEURON_CHUNK, []).append(column)
    assert viewer.layer_chunks(neurons) == [(chunk, cols[0], cols[-1] + 1) for chunk, cols in sorted(expected.items())]


def loaded_layer_files(dom):
    return re.findall(r'<script src="data/(layer_[0-9_]+)\.js">', dom)


def needed_documents(folder, layer, neuron):
    """The documents files that hold the windows of a neuron, from its chunk's data and the meta's document ranges."""
    meta = read_call(folder / "data" / "meta.js")[1][0]
    _, (_, data, _) = read_call(folder / "data" / f"layer_{layer}_{neuron // CHUNK}.js")
    column = unpack(data["neurons"]).tolist().index(neuron)
    windows = unpack(data["window_offsets"])[column:column + 2]
    docs = unpack(data["window_doc"])[windows[0]:windows[1]]
    return sorted({next(i for i, (first, stop) in enumerate(meta["doc_chunks"]) if first <= doc < stop or i == len(meta["doc_chunks"]) - 1)
                   for doc in docs.tolist()})


@pytest.mark.slow
@pytest.mark.parametrize("layer, neuron", [(1, 50), (0, 95), (1, 0)])
def test_deep_link_loads_only_the_neurons_chunk(viewers, tmp_path, layer, neuron):
    """#layer.neuron draws that neuron from its chunk (the only layer file loaded): its top example's text is the
    dataset's, and its neighbours in the index are linked across chunk borders."""
    stats, tokenizer = viewers["stats"], load_tokenizer(viewers["source"])
    dom = dump_dom(f"{(viewers['chunked'] / 'viewer.html').as_uri()}#{layer}.{neuron}")
    assert f">Neuron {layer}.{neuron}<" in dom, re.search(r'id="status"[^<]*', dom)
    assert loaded_layer_files(dom) == [f"layer_{layer}_{neuron // CHUNK}"]
    loaded_docs = sorted(int(c) for c in re.findall(r'<script src="data/docs_(\d+)\.js">', dom))
    assert loaded_docs == needed_documents(viewers["chunked"], layer, neuron)
    assert loaded_docs and len(read_call(viewers["chunked"] / "data" / "meta.js")[1][0]["doc_chunks"]) > 1
    doc, position = int(stats["top_docs"][layer, neuron, 0]), int(stats["top_positions"][layer, neuron, 0])
    assert f"document {doc} · token {position}" in dom
    ids = viewers["dataset"]["input_ids"][doc]
    start = max(0, position - WINDOW[0])
    shown = ids[max(0, start - CONTEXT[0]):min(len(ids), start + sum(WINDOW) + 1 + CONTEXT[1])]
    assert "".join(tokenizer.decode([t]) for t in shown) in visible_text(dom).replace("⏎\n", "\n")
    d_mlp = stats["top_values"].shape[1]
    here = layer * d_mlp + neuron
    for link, other in (("prev", here - 1), ("next", here + 1)):
        if 0 <= other < 2 * d_mlp:
            assert f'id="{link}" href="#{other // d_mlp}.{other % d_mlp}"' in dom or f'href="#{other // d_mlp}.{other % d_mlp}" id="{link}"' in dom


@pytest.mark.slow
def test_a_neuron_not_in_the_viewer_loads_nothing(viewers, tmp_path):
    dom = dump_dom(f"{(viewers['chunked'] / 'viewer.html').as_uri()}#1.500")
    assert "neuron 1.500 is not in this viewer" in dom and loaded_layer_files(dom) == []


def index_columns(folder):
    return {name: unpack(value) for name, value in read_call(folder / "data" / "index.js")[1][0].items()}


def brute_force_order(index, d_mlp, query):
    """The ids the index lists for a query (filters and sort, as in the address), by a plain loop and Python's sort."""
    rows = []
    for i, id_ in enumerate(index["ids"].tolist()):
        row = {"id": id_, "layer": id_ // d_mlp, **{k: index[k][i].item() for k in ("io_class", "roles", *NUMERIC)}}
        keep = all(row[key] == int(query[key]) for key in ("layer", "io_class") if key in query)
        keep &= "role" not in query or bool(row["roles"] >> int(query["role"]) & 1)
        for k in NUMERIC:
            keep &= (f"{k}_low" not in query or row[k] >= float(query[f"{k}_low"])) and \
                    (f"{k}_high" not in query or row[k] <= float(query[f"{k}_high"]))
        if keep:
            rows.append(row)
    key, sign = query.get("sort", "id"), -1 if query.get("descending") == "1" else 1
    rows.sort(key=lambda r: (sign * r[key], r["id"]))
    return [r["id"] for r in rows]


@pytest.mark.slow
def test_filters_and_sorts_in_chromium_match_a_brute_force(viewers, tmp_path):
    """Filters and orders in the address list the neurons that a loop over the index finds, in Python's order
    (ties by id), across the chunked layers."""
    index = index_columns(viewers["chunked"])
    d_mlp = viewers["stats"]["top_values"].shape[1]
    common_class = int(np.bincount(index["io_class"]).argmax())
    median = float(np.median(index["kurtosis"]))
    queries = [{"layer": "1", "sort": "max", "descending": "1"}, {"sort": "min", "descending": "0"},
               {"io_class": str(common_class), "kurtosis_low": f"{median:.4f}", "sort": "kurtosis", "descending": "1"},
               {"sort": "io_class", "descending": "1"}, {"gate_open_high": "0.5", "sort": "skew", "descending": "0"}]
    for query in queries:
        expected = brute_force_order(index, d_mlp, query)
        address = "&".join(f"{key}={value}" for key, value in query.items())
        dom = dump_dom(f"{(viewers['chunked'] / 'viewer.html').as_uri()}#?{address}")
        assert f">{len(expected)} of {len(index['ids'])} neurons<" in dom, (query, re.search(r'id="count"[^<]*<', dom))
        shown = [int(layer) * d_mlp + int(n) for layer, n in re.findall(r'<tr class="row"><td><a href="#(\d+)\.(\d+)"', dom)]
        assert shown == expected[:100], query
        assert loaded_layer_files(dom) == []


def test_lists_in_pages(viewers):
    """The plain-HTML lists: every neuron of a layer once over its pages, linked page to page, no script."""
    lists, d_mlp = viewers["chunked"] / "lists", viewers["stats"]["top_values"].shape[1]
    pages = -(-d_mlp // PAGE_ROWS)
    assert sorted(p.name for p in lists.iterdir()) == sorted(["index.html", *(viewer.list_page_name(layer, page)
                                                                            for layer in (0, 1) for page in range(pages))])
    for layer in (0, 1):
        names, seen = [viewer.list_page_name(layer, page) for page in range(pages)], []
        for page, name in enumerate(names):
            text = (lists / name).read_text()
            assert "<script" not in text and f"page {page + 1} of {pages}" in text
            linked = re.findall(r'href="(layer_[0-9_]+\.html)"', text)
            assert sorted(set(linked)) == sorted({names[other] for other in (page - 1, page + 1) if 0 <= other < pages})
            seen += [int(n) for n in re.findall(rf'href="\.\./viewer\.html#{layer}\.(\d+)"', text)]
        assert seen == list(range(d_mlp))
    assert 'href="layer_1.html"' in html.unescape((lists / "index.html").read_text())


@pytest.mark.slow
def test_from_viewer_copies_the_chunks_of_a_layer(viewers, tmp_path, capsys):
    """--from_viewer of layer 1 of the chunked viewer: its chunks and list pages, byte for byte, and a deep link works."""
    argv = [*viewers["argv"][:viewers["argv"].index("--neurons")], "--neurons", "1.*", "--from_viewer", "chunked",
            "--viewer", "chunked1"]
    assert run_main(d_recompute_vis.main, argv) == 0
    folder, source = viewers["pages"] / "chunked1", viewers["chunked"]
    layer_files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("layer_*"))
    assert layer_files == sorted(p.relative_to(source).as_posix() for p in source.rglob("layer_1*"))
    for name in layer_files:
        assert (folder / name).read_bytes() == (source / name).read_bytes()
    assert read_call(folder / "data" / "meta.js")[1][0]["chunked_layers"] == [1]
    dom = dump_dom(f"{(folder / 'viewer.html').as_uri()}#1.37")
    assert ">Neuron 1.37<" in dom and loaded_layer_files(dom) == [f"layer_1_{37 // CHUNK}"]
    (source / "data" / f"layer_1_{50 // CHUNK}.js").rename(tmp_path / "moved.js")
    try:
        capsys.readouterr()
        assert run_main(d_recompute_vis.main, argv[:-1] + ["again"]) == 2
        assert f"layer_1_{50 // CHUNK}.js" in capsys.readouterr().err
    finally:
        (tmp_path / "moved.js").rename(source / "data" / f"layer_1_{50 // CHUNK}.js")


def test_examples_of_columns_knows_every_field():
    """A field added to LayerExamples must be given its rows in viewer.py, else chunks would drop it."""
    from dataclasses import fields

    from neuroscope.recompute.windows import LayerExamples

    names = {f.name for f in fields(LayerExamples)} - {"layer"}
    assert names == {*viewer.EXAMPLE_ROWS, *viewer.WINDOW_ROWS, *viewer.NEURON_ROWS}
