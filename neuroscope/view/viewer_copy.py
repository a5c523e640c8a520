"""Reading a viewer folder, and `--from_viewer`: a viewer of some whole layers of an existing one, copied without
recomputing anything (`extract_layers`).

A viewer's files are read back only through the checks here: a data file must be one whole call of its own part
(`read_part`, `verified_part`) with the checksum its meta records (`viewer.write_meta`); the meta must be of this model
and of the statistics this run uses; the index and the search by token are read as their parts
(`parts.IndexPart`'s arrays, `parts.SearchPart`). Anything else is one line naming the file and the remedy.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from gated_core.artifacts import atomic_write_text, check_provenance, made_from
from gated_core.errors import UserError, first_line
from neuroscope.view.checksums import CHECKSUM_METHOD, file_checksum, meta_checksum, part_checksum
from neuroscope.view.neuron_view import js_call
from neuroscope.view.parts import IndexPart, Packed, SearchPart, TopPart, read_plain
from neuroscope.view.search_index import TOP_HITS, SearchFiles, SearchIndex
from neuroscope.view.viewer import (
    list_page_name,
    list_pages,
    page_checksums,
    part_file,
    part_title,
    with_search,
    write_meta,
    write_part,
    write_search,
)
from neuroscope.view.viewer_folder import replace_viewer


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
        ids = Packed.read(read_call(data / "index.js", "index")["ids"]).array().astype(np.int64)
    except (UserError, KeyError, TypeError, ValueError):
        return set()
    return set(zip((ids // d_mlp).tolist(), (ids % d_mlp).tolist())) if d_mlp > 0 else set()


MODEL_FIELDS = ("model", "n_layers", "d_mlp")  # a viewer that differs in one of these is of another model
MADE_FROM_KEY = "statistics_fingerprint"  # what a viewer's meta records of the statistics it was made from
FROM_VIEWER_REMEDY = ("--from_viewer copies only viewers of this model and these statistics: write that viewer again "
                      "(d_recompute_vis.py --viewer)")
SOURCE_META = {"model": str, "dataset": str, "n_layers": int, "d_mlp": int, "tokens": int, "layers": list, "doc_chunks": list}
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


def checked_source_index(source: Path, meta: dict[str, Any]) -> IndexPart:
    """The index of the viewer `source`, refused unless it is whole: its part, its columns of one length, its ids
    neurons of the model."""
    path = source / "data" / "index.js"
    try:
        index = read_plain(IndexPart, verified_part(path, meta)[1][0])
        ids = index.ids.array()
    except (TypeError, ValueError) as exc:
        raise UserError(f"{path}: not the index of a viewer ({first_line(exc)}); write that viewer again") from exc
    if len({len(column.array()) for column in index.columns().values()}) != 1 or ids.dtype.kind != "i" or \
            ((ids < 0) | (ids >= meta["n_layers"] * meta["d_mlp"])).any():
        raise UserError(f"{path}: not the index of a viewer (columns of other lengths or types, or other neurons); "
                        "write that viewer again")
    return index


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
    """The search by token of the viewer `source` (its shards `top_<shard>.js`, `search_<shard>.js`), refused unless
    it is whole; None for a viewer written before it; a viewer of an older search (one `search.js`, or shards without
    top files) is refused with the remedy."""
    if "search" in meta.get("checksums", {}) or (source / "data" / "search.js").exists() or \
            (meta.get("search_shards") is not None and meta.get("top_shards") is None):
        raise UserError(f"{source}: its search by token is of an older version; refresh that viewer "
                        f"(python -m neuroscope.view.viewer_refresh {source}) or {REWRITE}")
    if meta.get("search_shards") is None:
        return None
    files = SearchFiles(source_shards(source, meta, meta.get("top_shards"), "top", TopPart),
                        source_shards(source, meta, meta.get("search_shards"), "search", SearchPart))
    try:
        index = files.index()
        if files.firsts != (meta["top_shards"], meta["search_shards"]) or meta.get("search_top") != TOP_HITS:
            raise ValueError(f"its meta's top_shards, search_shards {meta['top_shards']}, {meta['search_shards']} "
                             f"or search_top {meta.get('search_top')} are not its files'")
        index.check(meta["n_layers"] * meta["d_mlp"])
    except (TypeError, ValueError) as exc:
        raise UserError(f"{source / 'data'}: not the search by token of a viewer ({first_line(exc)}); write that viewer again") from exc
    return index


def source_shards(source: Path, meta: dict[str, Any], firsts: Any, part: str, kind: type) -> list:
    """The parts `kind` of a viewer's files `<part>_<shard>.js`, one per first token its meta lists (`firsts`), each
    verified against the meta."""
    parts = []
    for shard in range(len(firsts) if isinstance(firsts, list) else 0):
        path = source / "data" / f"{part}_{shard}.js"
        if path.is_symlink() or not path.is_file():
            raise UserError(f"{path}: missing from the viewer {source.name} (or not a file); {REWRITE}")
        try:
            parts.append(read_plain(kind, verified_part(path, meta)[1][1]))
        except (TypeError, ValueError) as exc:
            raise UserError(f"{path}: not the search by token of a viewer ({first_line(exc)}); write that viewer again") from exc
    return parts


def extract_layers(source: Path, target: Path, layers: list[int], expected: dict[str, Any]) -> int:
    """A viewer of some whole layers of an existing one (`source`, which must be whole and of this run:
    `expected`), without recomputing anything: its data files for those layers, the documents and vocabulary,
    and the index, the search by token and the lists cut to those layers. Call only while holding the pages lock.
    Returns the size."""
    meta = checked_source_meta(source, expected, layers)
    index = checked_source_index(source, meta)
    search = checked_source_search(source, meta)
    ids = index.ids.array()
    check_source_files(source, meta, layers, ids)
    copied = source_files(meta, layers, ids)
    check_copied_files(source, meta, [*copied, "lists/index.html"])
    verified = "checksums" in meta
    if not verified:
        print(f"note: {source} was written before viewers carried checksums: its files are copied unverified (and the copy "
              "says so when it opens); write it again (d_recompute_vis.py --viewer) to have them verified")
    keep = np.isin(ids // meta["d_mlp"], layers)
    try:
        lists_index = (source / "lists" / "index.html").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{source / 'lists' / 'index.html'}: cannot read it ({first_line(exc)}); write that viewer again") from exc

    def build(staging: Path) -> dict[str, Any]:
        (staging / "data").mkdir()
        (staging / "lists").mkdir()
        for name in copied:
            shutil.copy(source / name, staging / name)
        kept_meta = {**meta, "layers": sorted(layers)}
        if "chunked_layers" in meta:
            kept_meta["chunked_layers"] = [layer for layer in meta["chunked_layers"] if layer in layers]
        sums = {Path(name).stem: meta["checksums"][Path(name).stem] for name in copied if verified and name.endswith(".js")}
        write_part(staging / "data", sums, "index", index.rows(keep))
        if search is not None:
            kept = search.kept(np.isin(search.hits.neuron // meta["d_mlp"], layers))
            kept_meta = with_search(kept_meta, write_search(staging / "data", kept, sums))
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


