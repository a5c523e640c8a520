"""The parts of a neuron's view as types: the one home of the format of what each `neuroscope.<part>(...)` call of a view
carries (`neuron_view` builds the parts, `viewer.py` and `pages.py` write them, `assets/viewer.js` draws them).

- `Packed`: an array as the little-endian bytes of one of DTYPES, written {"dtype", "b64"} (base64), or in the viewer's
  neuron data files {"dtype", "z": [start, length]} within the file's one DEFLATE stream (`deflated`);
- one frozen dataclass per part and per object within one: `ViewMeta`, `IndexPart`, `DocumentsPart`, `LayerPart` (with
  `ExampleArrays` written inline, `Histograms`, `ConnectionLists` of `ConnectionKind`s), `SearchPart` and `TopPart`; the vocabulary
  is a list of strings by token id (or, on a single page, an object of the ids it shows);
- `plain`: the one serialiser, a part as the JSON value of its call (fields in their order; an `optional` field that is
  None is left out, any other None is written null); `read_plain`: the part back from that value, refusing a key it
  does not know or a missing one;
- `SCHEMA`: each part's keys, their kinds and whether they must be there, and the dtypes, derived from the dataclasses
  and written into the page (`html.viewer_page`): the page unpacks by it and refuses a data file that does not fit it.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import types
import typing
import zlib
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np
import torch

# each array's type: numpy's little-endian code -> what the page reads it as (a typed array's name; float16 decoded)
DTYPES = {"u1": "Uint8Array", "i1": "Int8Array", "u2": "Uint16Array", "i4": "Int32Array", "f4": "Float32Array",
          "f2": "float16"}
# zlib's level for the viewer's neuron data (`deflated`): 4 packs a chunk of 128 SmolLM2 neurons to 0.758 of its
# bytes in 20 ms, 9 to 0.753 in 78 ms
DEFLATE_LEVEL = 4
OPTIONAL = "optional"  # a field's metadata: left out of the part where it is None
INLINE = "inline"  # a field's metadata: its dataclass's fields are written into the part itself


def optional() -> Any:
    """A field that a part may lack: None, and then left out of its JSON."""
    return field(default=None, metadata={OPTIONAL: True})


def inline() -> Any:
    """A field (a dataclass) whose fields the part's JSON holds directly."""
    return field(metadata={INLINE: True})


@dataclass(frozen=True)
class Packed:
    """An array as the little-endian bytes of `dtype` (a key of DTYPES)."""

    dtype: str
    data: bytes

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"an array of dtype {self.dtype!r}: a view's arrays are {', '.join(DTYPES)}")
        if len(self.data) % np.dtype(self.dtype).itemsize:
            raise ValueError(f"{len(self.data)} bytes are no whole number of {self.dtype} values")

    @classmethod
    def of(cls, values: Any, dtype: str | None = None) -> Packed:
        """An array (numpy or torch) packed; integer arrays take the smallest of uint8, uint16, int32 that holds them
        unless `dtype` is given, other arrays float32."""
        array = np.asarray(values.numpy() if isinstance(values, torch.Tensor) else values)
        if dtype is None:
            if np.issubdtype(array.dtype, np.integer):
                low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
                dtype = "u1" if 0 <= low and high < 1 << 8 else "u2" if 0 <= low and high < 1 << 16 else "i4"
            else:
                dtype = "f4"
        return cls(dtype, np.ascontiguousarray(array.astype("<" + dtype)).tobytes())

    def array(self) -> np.ndarray:
        """The values, as numpy reads them."""
        return np.frombuffer(self.data, dtype="<" + self.dtype)

    @classmethod
    def read(cls, value: Any) -> Packed:
        """The array of its JSON {"dtype", "b64"} (`plain`); a ValueError for anything else."""
        if not isinstance(value, dict) or set(value) != {"dtype", "b64"} or not isinstance(value["b64"], str):
            raise ValueError("an array is {dtype, b64}")
        return cls(value["dtype"], base64.b64decode(value["b64"], validate=True))


@dataclass(frozen=True, kw_only=True)
class ExampleArrays:
    """The windows (with their values) and example lists of a layer's chosen neurons [chosen]: windows by neuron
    (`window_offsets`), each (document, start, length) with its activations [window width] at full precision (`acts`,
    float16) or in 8 bits (`act_codes`, a code per token, and `act_scales`, one per window: a = code * scale), on single
    pages also g and u; the example lists by (neuron, list kind) (`list_offsets`), each example its window (counted
    within its neuron's), its extreme token within it, its value, how many examples of its list show the same text,
    and where computed its next token, direct effect and rank and its ablation effect."""

    neurons: Packed
    window_offsets: Packed
    window_doc: Packed
    window_start: Packed
    window_length: Packed
    width: int
    acts: Packed | None = optional()
    act_codes: Packed | None = optional()
    act_scales: Packed | None = optional()
    list_offsets: Packed
    example_window: Packed
    example_peak: Packed
    example_value: Packed
    example_duplicates: Packed
    bos_value: Packed
    gates: Packed | None = optional()
    lins: Packed | None = optional()
    example_next: Packed | None = optional()
    example_effect: Packed | None = optional()
    example_rank: Packed | None = optional()
    example_ablation: Packed | None = optional()


@dataclass(frozen=True, kw_only=True)
class Histograms:
    """Histograms [chosen bin] without their empty ends: each one's first bin, the offsets of its counts, the counts."""

    first: Packed
    offsets: Packed
    counts: Packed


@dataclass(frozen=True, kw_only=True)
class ConnectionKind:
    """One kind of connection list of the chosen neurons [chosen shown]: the other end (neuron id or token id; -1: none),
    and the virtual weight, cosine, expected contribution (where the lists have them) and the other neuron's class."""

    other: Packed
    virtual_weight: Packed | None = optional()
    cosine: Packed | None = optional()
    expected: Packed | None = optional()
    other_class: Packed | None = optional()


@dataclass(frozen=True, kw_only=True)
class ConnectionLists:
    """The first `shown` entries of each connection list, by kind; `inputs_by`: what the inputs are ranked by."""

    shown: int
    inputs_by: str
    kinds: dict[str, ConnectionKind]


@dataclass(frozen=True, kw_only=True)
class LayerPart:
    """`neuroscope.layer(layer, part[, chunk])`: everything the view shows of the chosen neurons of one layer."""

    examples: ExampleArrays = inline()
    sign_frequencies: Packed
    nonfinite: Packed | None = optional()
    cosines: dict[str, Packed]
    promoted: Packed
    promoted_values: Packed
    suppressed: Packed
    suppressed_values: Packed
    logit_low: Packed
    logit_high: Packed
    logit_histogram: Packed
    inputs: dict[str, Packed]
    input_values: dict[str, Packed] | None = optional()  # [chosen top] w · W_U of each `inputs` table (float32)
    reasons: dict[str, str]  # neuron -> why its facts are missing
    histogram: Histograms | None = optional()
    connections: ConnectionLists | None = optional()


@dataclass(frozen=True, kw_only=True)
class IndexPart:
    """`neuroscope.index(part)`: one row per chosen neuron, in ascending id (layer * d_mlp + neuron)."""

    ids: Packed
    io_class: Packed
    roles: Packed  # a bit per role
    max: Packed
    min: Packed
    mean: Packed
    gate_open: Packed
    kurtosis: Packed
    skew: Packed

    def columns(self) -> dict[str, Packed]:
        """Every column, by name, in order."""
        return {item.name: getattr(self, item.name) for item in dataclasses.fields(self)}

    def rows(self, keep: np.ndarray) -> IndexPart:
        """The rows `keep` (a mask or indices) of every column, each in its dtype."""
        return IndexPart(**{name: Packed.of(column.array()[keep], column.dtype) for name, column in self.columns().items()})


@dataclass(frozen=True, kw_only=True)
class DocumentsPart:
    """`neuroscope.docs(chunk, part)`: the tokens of some consecutive documents, `first` the first one's row; `ids`:
    which documents of the dataset they are, where a view carries only some."""

    first: int
    starts: Packed
    tokens: Packed
    ids: Packed | None = optional()


@dataclass(frozen=True, kw_only=True)
class SearchPart:
    """`neuroscope.search(part)`: the ranked search by token (`search_index.SearchIndex`): per hit [hit] in CSR form
    over the vocabulary (`offsets`), its neuron id, source (index into `sources`, each of a group of `groups`), value,
    strength, and for an example the dataset document and position of its token (-1, 0 otherwise); one shard of
    consecutive tokens from `first` (`data/search_<shard>.js`)."""

    first: int
    sources: list[str]
    groups: list[str]
    offsets: Packed
    neurons: Packed
    source: Packed
    value: Packed
    strength: Packed
    doc: Packed
    position: Packed


@dataclass(frozen=True, kw_only=True)
class TopPart(SearchPart):
    """`neuroscope.top(shard, part)`: the strongest hits of each (token, group) of tokens from `first`
    (`data/top_<shard>.js`), as a `SearchPart`, with how many hits each (token, group) has in all [token group]
    (`counts`, these and the rest in `data/search_<shard>.js`) and how many neurons each token's hits are of [token]
    (`pairs`), so that the first page of any search, and its counts, need only these files."""

    counts: Packed
    pairs: Packed


@dataclass(frozen=True, kw_only=True)
class ViewMeta:
    """`neuroscope.meta(part)`: the run, the names the data's codes stand for, the histogram edges; the viewer adds its
    chunking and the checksums (`viewer.write_meta`), a single page its neuron and links (`page`)."""

    model: str
    dataset: str
    tokens: int
    k: int
    n_layers: int
    d_mlp: int
    layers: list[int]
    doc_chunks: list[tuple[int, int]]
    context: list[int]
    shown: list[int] | None  # null: an example's whole window
    list_kinds: list[str]
    sign_combinations: list[str]
    class_names: list[str]
    role_names: list[str]
    input_tables: list[str]
    histogram_edges: list[float | None]
    typical_band_edges: list[float | None]
    typical_per_band: int
    typical_off: bool
    dtype: str
    logit_bins: int
    bos_left_out: bool
    notes: list[str]
    compact: bool
    statistics_fingerprint: str | None  # `made_from(statistics=...)`
    naming_words: dict[str, str] | None = optional()  # the paper's class word -> the word shown (`gated_core.naming`)
    neuron_chunk: int | None = optional()
    chunked_layers: list[int] | None = optional()
    list_page_rows: int | None = optional()
    search_shards: list[int] | None = optional()  # the first token of each data/search_<shard>.js
    top_shards: list[int] | None = optional()  # the first token of each data/top_<shard>.js
    search_top: int | None = optional()  # hits of each (token, group) in data/top_<shard>.js at most
    page: dict[str, Any] | None = optional()
    checksum_method: str | None = optional()
    checksums: dict[str, int] | None = optional()
    file_checksums: dict[str, int] | None = optional()
    checksum: int | None = optional()


PARTS = {"meta": ViewMeta, "index": IndexPart, "vocab": None, "docs": DocumentsPart, "layer": LayerPart, "search": SearchPart,
         "top": TopPart}


def plain(value: Any, stream: list[bytes] | None = None) -> Any:
    """A part (or any value within one) as JSON: dataclasses as objects of their fields in order (an `optional` field
    that is None left out, an `inline` one's fields in place), arrays {"dtype", "b64"}; with `stream`, arrays
    {"dtype", "z": [start, length]}, their bytes appended to `stream`."""
    if isinstance(value, Packed):
        if stream is None:
            return {"dtype": value.dtype, "b64": base64.b64encode(value.data).decode("ascii")}
        start = sum(map(len, stream))
        stream.append(value.data)
        return {"dtype": value.dtype, "z": [start, len(value.data)]}
    if dataclasses.is_dataclass(value):
        out: dict[str, Any] = {}
        for item in dataclasses.fields(value):
            got = getattr(value, item.name)
            if item.metadata.get(INLINE):
                out.update(plain(got, stream))
            elif got is not None or not item.metadata.get(OPTIONAL):
                out[item.name] = plain(got, stream)
        return out
    if isinstance(value, dict):
        return {key: plain(item, stream) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item, stream) for item in value]
    return value


def deflated(part: Any) -> dict[str, Any]:
    """A part as JSON with every array moved into one raw DEFLATE stream ({"dtype", "z": [start, length]}, its bytes in
    the stream's unpacked bytes), "deflate": {"b64", "bytes"} holding the stream in base64 and its unpacked size. The
    viewer's neuron data files are written so (about 3/4 of the bytes at full precision, 2/3 with --compact);
    `assets/inflate.js` unpacks them in the page, `inflated` here."""
    stream: list[bytes] = []
    out = plain(part, stream)
    packer = zlib.compressobj(DEFLATE_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    packed_stream = packer.compress(b"".join(stream)) + packer.flush()
    return {**out, "deflate": {"b64": base64.b64encode(packed_stream).decode("ascii"), "bytes": sum(map(len, stream))}}


def inflated(payload: dict[str, Any]) -> dict[str, Any]:
    """The JSON that `plain` makes of the part that `deflated` was given (a payload without "deflate" as it is)."""
    if "deflate" not in payload:
        return payload
    raw = zlib.decompress(base64.b64decode(payload["deflate"]["b64"], validate=True), -zlib.MAX_WBITS)
    if len(raw) != payload["deflate"]["bytes"]:
        raise ValueError(f"deflated arrays of {len(raw)} bytes, not the {payload['deflate']['bytes']} said")

    def restored(value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        if "z" not in value:
            return {key: restored(item) for key, item in value.items()}
        start, length = value["z"]
        return {"dtype": value["dtype"], "b64": base64.b64encode(raw[start:start + length]).decode("ascii")}

    return restored({key: value for key, value in payload.items() if key != "deflate"})


# ----------------------------------------------------------------------------- kinds of fields, the schema, reading

PLAIN_KINDS = {int: "int", float: "number", str: "str", bool: "bool", list: "list", tuple: "list", dict: "object"}


def field_kind(annotation: Any) -> tuple[str, bool]:
    """A field's kind in SCHEMA and whether it may be null: "array" (Packed), "arrays" (an object of them), the name of
    a dataclass, "<name>{}" (an object of them), a JSON type taken as it is (PLAIN_KINDS: "int", "number", "str",
    "bool", "list", "object"), or "json" (any JSON value)."""
    args = typing.get_args(annotation)
    nullable = typing.get_origin(annotation) in (Union, types.UnionType) and type(None) in args
    if nullable:
        annotation = next(arg for arg in args if arg is not type(None))
    if annotation is Packed:
        return "array", nullable
    if dataclasses.is_dataclass(annotation):
        return annotation.__name__, nullable
    if typing.get_origin(annotation) is dict:
        value = typing.get_args(annotation)[1]
        if value is Packed:
            return "arrays", nullable
        if dataclasses.is_dataclass(value):
            return f"{value.__name__}{{}}", nullable
    return PLAIN_KINDS.get(typing.get_origin(annotation) or annotation, "json"), nullable


@dataclass(frozen=True)
class Key:
    """One key of a part's JSON: its kind (`field_kind`), whether the part must have it, whether it may be null (an
    optional field that is None is left out, never null), and the dataclass of its kind where it is one."""

    name: str
    kind: str
    required: bool
    nullable: bool
    inner: type | None


@functools.cache
def type_fields(cls: type) -> tuple[Key, ...]:
    """The keys of a dataclass's JSON, in order (inline fields expanded); computed once per type (`read_plain` asks
    for every part it reads)."""
    hints = typing.get_type_hints(cls)
    out = []
    for item in dataclasses.fields(cls):
        if item.metadata.get(INLINE):
            out.extend(type_fields(hints[item.name]))
            continue
        kind, nullable = field_kind(hints[item.name])
        optional_field = bool(item.metadata.get(OPTIONAL))
        out.append(Key(item.name, kind, not optional_field, nullable and not optional_field, TYPES.get(kind.removesuffix("{}"))))
    return tuple(out)


def all_types() -> dict[str, type]:
    """Every dataclass that a part holds, by name."""
    found: dict[str, type] = {}
    pending = [cls for cls in PARTS.values() if cls is not None]
    while pending:
        cls = pending.pop()
        found[cls.__name__] = cls
        for hint in typing.get_type_hints(cls).values():
            for candidate in (hint, *typing.get_args(hint), *(a for h in typing.get_args(hint) for a in typing.get_args(h))):
                if dataclasses.is_dataclass(candidate) and candidate is not Packed and candidate.__name__ not in found:
                    pending.append(candidate)
    return found


TYPES = all_types()
# what the page reads: per part the dataclass of its object argument, per dataclass its keys [key, kind, required,
# nullable]
SCHEMA = {
    "dtypes": DTYPES,
    "parts": {part: None if cls is None else cls.__name__ for part, cls in PARTS.items()},
    "types": {name: [[key.name, key.kind, key.required, key.nullable] for key in type_fields(cls)]
              for name, cls in sorted(TYPES.items())},
}
JSON_TYPES = {"int": (int,), "number": (int, float), "str": (str,), "bool": (bool,), "list": (list,), "object": (dict,)}


def read_plain(cls: type, value: Any) -> Any:
    """The part (a dataclass `cls`) of its JSON (`plain`, arrays with "b64"); a ValueError where the JSON has a key the
    part does not, lacks one it must have, or holds another kind of value."""
    if not isinstance(value, dict):
        raise ValueError(f"{cls.__name__}: not an object")
    keys = type_fields(cls)
    unknown = sorted(set(value) - {key.name for key in keys})
    missing = [key.name for key in keys if key.required and key.name not in value]
    if unknown or missing:
        raise ValueError(f"{cls.__name__}: " + "; ".join(part for part in (
            unknown and f"keys it does not have: {', '.join(unknown)}", missing and f"missing: {', '.join(missing)}") if part))
    try:
        read = {key.name: read_value(key, value[key.name]) for key in keys if key.name in value}
    except ValueError as exc:
        raise ValueError(f"{cls.__name__}.{exc}") from exc
    return build(cls, read)


def read_value(key: Key, value: Any) -> Any:
    """One field's value of its JSON; a ValueError "<key>: <what is wrong>" where it is not of the key's kind."""
    if value is None and key.nullable or key.kind == "json":
        return value
    types_of_kind = JSON_TYPES.get(key.kind)
    if types_of_kind is not None:
        if not isinstance(value, types_of_kind) or (bool not in types_of_kind and isinstance(value, bool)):
            raise ValueError(f"{key.name}: not of kind {key.kind}")
        return value
    try:
        if key.kind == "array":
            return Packed.read(value)
        if not isinstance(value, dict):
            raise ValueError(f"not an object where {key.kind} is")
        if key.kind == "arrays":
            return {name: Packed.read(item) for name, item in value.items()}
        if key.kind.endswith("{}"):
            return {name: read_plain(key.inner, item) for name, item in value.items()}
        return read_plain(key.inner, value)
    except ValueError as exc:
        raise ValueError(f"{key.name}: {exc}") from exc


def build(cls: type, values: dict[str, Any]) -> Any:
    """A dataclass of its fields' values, its inline fields built from the same values."""
    hints = typing.get_type_hints(cls)
    own = {}
    for item in dataclasses.fields(cls):
        if item.metadata.get(INLINE):
            inner = hints[item.name]
            own[item.name] = build(inner, {key.name: values[key.name] for key in type_fields(inner) if key.name in values})
        elif item.name in values:
            own[item.name] = values[item.name]
    return cls(**own)
