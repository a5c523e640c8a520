"""Bring a written viewer's page and search by token up to this version from its own files, without the model or
its activations: `viewer.html` written again (this version's page: the ranked search, the model at a glance),
`data/top_<shard>.js` and `data/search_<shard>.js` rebuilt from the viewer's layer, index and document files
(`search_index.layer_hits`), and `data/meta.js` sealed again with the new checksums. Every file it reads is first
verified against the meta's checksums; a viewer without checksums is refused (write it again with d_recompute_vis.py
--viewer).

A viewer written before the ±w_in, ±w_gate tables kept their values has none in its layer files: with --model (the
viewer's model, its weights read as the viewer's were, with TransformerLens processing) they are computed from the
weights, w · W_U at the tables' tokens, and written into those layer files, after checking that the weights give the
very tables the files hold (the same tokens in the same order); without it those hits get strength 0 and no value.

A single page (`vis.html`, its data inline) is written again the same way: this version's page around the very
calls it carries.

    python -m neuroscope.view.viewer_refresh results/<model>/neuroscope/<viewer> [--model smollm2-135m]
    python -m neuroscope.view.viewer_refresh results/<model>/neuroscope/L28/N28/vis.html
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gated_core.artifacts import atomic_write_text
from gated_core.errors import UserError
from neuroscope.view.html import viewer_page
from neuroscope.view.parts import DocumentsPart, IndexPart, LayerPart, Packed, deflated, inflated, read_plain
from neuroscope.view.search_index import DocumentTokens, Hits, SearchIndex, index_peaks, layer_hits
from neuroscope.view.viewer import page_checksums, with_search, write_meta, write_page, write_part, write_search
from neuroscope.view.viewer_copy import REWRITE, check_meta_checksums, read_call, verified_part

SEAL = ("checksum_method", "checksums", "file_checksums", "checksum")  # what write_meta adds to a meta


def part_of(folder: Path, name: str, meta: dict[str, Any]) -> list[Any]:
    """The verified arguments of the data file `data/<name>.js`."""
    return verified_part(folder / "data" / f"{name}.js", meta)[1]


def document_tokens(folder: Path, meta: dict[str, Any]) -> DocumentTokens:
    """Every document of the viewer, its chunks (`docs_<chunk>.js`) joined: tokens, starts, dataset ids."""
    tokens, starts, ids, base = [], [], [], 0
    for chunk in range(len(meta["doc_chunks"])):
        part = read_plain(DocumentsPart, part_of(folder, f"docs_{chunk}", meta)[1])
        local = part.starts.array().astype(np.int64)
        tokens.append(part.tokens.array().astype(np.int64))
        starts.append(local[:-1] + base)
        ids.append(part.ids.array().astype(np.int64) if part.ids is not None else np.arange(part.first, part.first + len(local) - 1))
        base += int(local[-1])
    return DocumentTokens(np.concatenate(tokens), np.concatenate([*starts, [base]]), np.concatenate(ids))


def viewer_hits(folder: Path, meta: dict[str, Any]) -> Hits:
    """The hits of the search by token of every layer file of the viewer."""
    index = read_plain(IndexPart, part_of(folder, "index", meta)[0])
    documents = document_tokens(folder, meta)
    hits = []
    for name in sorted(name for name in meta["checksums"] if name.startswith("layer_")):
        layer, payload = part_of(folder, name, meta)[:2]
        part = read_plain(LayerPart, inflated(payload))
        ids = layer * meta["d_mlp"] + part.examples.neurons.array().astype(np.int64)
        hits.append(layer_hits(part, layer, meta["d_mlp"], index_peaks(index, ids), documents))
    return Hits.joined(hits)


def table_values(reader: Any, w_u: torch.Tensor, layer: int, part: LayerPart) -> dict[str, Packed]:
    """w · W_U at the tokens of each ±w_in, ±w_gate table of a layer part [chosen top] (float32), from the weights;
    a UserError unless the weights give the same tables (each the top tokens of +w · W_U or -w · W_U, in order)."""
    weights = reader.layer(layer)
    neurons = torch.from_numpy(part.examples.neurons.array().astype(np.int64))
    values = {}
    for name, tokens in part.inputs.items():
        vector = weights.lin if name.endswith("w_in") else weights.gate
        product = vector[neurons].float() @ w_u  # [chosen vocab]
        table = torch.from_numpy(tokens.array().astype(np.int64)).reshape(len(neurons), -1)
        signed = product if name.startswith("+") else -product
        if not torch.equal(torch.topk(signed, table.shape[1]).indices, table):
            raise UserError(f"layer {layer}: the weights do not give the viewer's {name} tables (another model or settings?)")
        values[name] = Packed.of(product.gather(1, table).reshape(-1), "f4")
    return values


def fill_input_values(folder: Path, meta: dict[str, Any], sums: dict[str, int], model: str) -> int:
    """Write the input tables' values (`table_values`) into each layer file that lacks them; their new checksums into
    `sums`; returns how many files were written."""
    from gated_core.models.readers import open_weights
    from gated_core.models.sources import resolve_model

    reader = open_weights(resolve_model(model, allow_download=False), processing=True)
    w_u = reader.unembed().float()
    written = 0
    for name in sorted(name for name in meta["checksums"] if name.startswith("layer_")):
        args = part_of(folder, name, meta)
        part = read_plain(LayerPart, inflated(args[1]))
        if part.input_values is not None or not part.inputs:
            continue
        part = dataclasses.replace(part, input_values=table_values(reader, w_u, args[0], part))
        write_part(folder / "data", sums, "layer", args[0], deflated(part), *args[2:])
        written += 1
    return written


def refresh_viewer(folder: Path, model: str | None = None) -> dict[str, Any]:
    """Write the viewer's page, search by token and meta again from its own files (see the module), with `model` the
    input tables' values where its layer files lack them; returns the meta."""
    meta_path = folder / "data" / "meta.js"
    meta = read_call(meta_path, "meta")
    check_meta_checksums(meta_path, meta)
    if not isinstance(meta.get("checksums"), dict):
        raise UserError(f"{meta_path}: a viewer without checksums cannot be refreshed; {REWRITE}")
    vocab = part_of(folder, "vocab", meta)[0]
    sums = dict(meta["checksums"])
    if model is not None:
        print(f"input tables' values from {model}'s weights: {fill_input_values(folder, meta, sums, model)} layer files written")
        meta = {**meta, "checksums": sums}
    try:
        index = SearchIndex.of_hits(viewer_hits(folder, meta), len(vocab))
    except (TypeError, ValueError) as exc:
        raise UserError(f"{folder}: its files do not fit this version ({exc}); {REWRITE}") from exc
    for name in [name for name in sums if re.fullmatch(r"search|(search|top)_\d+", name)]:  # the search written before
        (folder / "data" / f"{name}.js").unlink(missing_ok=True)
        del sums[name]
    files = write_search(folder / "data", index, sums)
    write_page(folder)
    rest = {k: v for k, v in meta.items() if k not in SEAL}
    return write_meta(folder / "data", with_search(rest, files), sums, page_checksums(folder))


INLINE_CALL = re.compile(r"^neuroscope\.(?:meta|index|vocab|docs|layer)\(.*\);$", re.M)  # a single page's data


def refresh_page(path: Path) -> None:
    """A single page written again: this version's page (`html.viewer_page`) around the data calls it carries."""
    text = path.read_text(encoding="utf-8")
    calls = [found.group(0) + "\n" for found in INLINE_CALL.finditer(text)]
    if not calls or not text.rstrip().endswith("</html>") or "neuroscope.start();</script>" not in text:
        raise UserError(f"{path}: not a single page of the neuroscope (vis.html); write the pages again")
    atomic_write_text(path, viewer_page("".join(calls)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("viewer", type=Path, help="the viewer's folder (holding viewer.html and data/), or a single page")
    parser.add_argument("--model", help="the viewer's model: compute the ±w_in, ±w_gate tables' values where its layer "
                                        "files lack them (checked against the tables they hold)")
    args = parser.parse_args(argv)
    try:
        if args.viewer.suffix == ".html":
            refresh_page(args.viewer)
        else:
            refresh_viewer(args.viewer, args.model)
    except UserError as exc:
        print(f"error: {exc}")
        return 2
    print(f"{args.viewer}: " + ("page written again" if args.viewer.suffix == ".html" else
                                "page, search by token and meta written again"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
