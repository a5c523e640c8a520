"""The view's parts as types (`neuroscope.view.parts`): every data file a viewer and a single page hold reads back as
its part, key for key, and writes back to the same JSON; the schema written into the page is the dataclasses'; a part
of another format is refused with what does not fit."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from helpers import CONTEXT, WINDOW

from gated_core.cli import run_main
from neuroscope import d_recompute_vis
from neuroscope.view.parts import (
    DTYPES,
    PARTS,
    SCHEMA,
    ConnectionKind,
    ConnectionLists,
    ExampleArrays,
    Histograms,
    LayerPart,
    Packed,
    deflated,
    inflated,
    plain,
    read_plain,
)

CALL = re.compile(r"^neuroscope\.(\w+)\((.*)\);$", re.M)  # a call: one line of its own (`js_call`)


def calls(text: str) -> list[tuple[str, list]]:
    """Every neuroscope.<part>(...) call of a data file or of a page's inline script."""
    return [(part, json.loads(f"[{args}]")) for part, args in CALL.findall(text)]


def payload_of(part: str, args: list):
    return args[1] if part in ("layer", "docs", "search", "top") else args[0]


def check_round_trip(part: str, args: list) -> None:
    """The part's JSON reads back as its dataclass and writes back to the same JSON (`deflated` where it was)."""
    written = payload_of(part, args)
    cls = PARTS[part]
    if cls is None:
        assert part == "vocab" and isinstance(written, (list, dict))
        return
    value = read_plain(cls, inflated(written))
    assert isinstance(value, cls)
    again = deflated(value) if "deflate" in written else plain(value)
    assert json.dumps(again) == json.dumps(written), part  # key order included


def test_every_file_of_a_viewer_reads_back_as_its_part(viewer):
    data = Path(viewer["folder"]) / "data"
    seen = set()
    for path in sorted(data.glob("*.js")):
        (part, args), = calls(path.read_text())
        check_round_trip(part, args)
        seen.add(part)
    assert seen == set(PARTS)


def test_a_single_page_reads_back_as_its_parts(viewer, tiny_models, tmp_path):
    datadir = Path(viewer["folder"]).parents[4]  # <datadir>/results/local/llama/neuroscope/viewer
    assert run_main(d_recompute_vis.main, [
        "--model", str(tiny_models["llama"]), "--datadir", str(datadir), "--activations", "ref", "--results_dir",
        str(tmp_path), "--device", "cpu", "--neurons", "1.3", "--window", *map(str, WINDOW), "--context", *map(str, CONTEXT)]) == 0
    found = calls((tmp_path / "local" / "llama" / "neuroscope" / "L1" / "N3" / "vis.html").read_text())
    assert [part for part, _ in found] == ["meta", "index", "vocab", "docs", "layer"]
    for part, args in found:
        check_round_trip(part, args)


def full_layer(rng: np.random.Generator) -> LayerPart:
    """A layer part with every optional field given (random arrays of the dtypes a view uses)."""
    def arr(n: int = 6, dtype: str = "f4") -> Packed:
        return Packed.of(rng.integers(-5, 5, n) if dtype[0] == "i" else rng.integers(0, 9, n) if dtype[0] == "u"
                         else rng.standard_normal(n), dtype)

    examples = ExampleArrays(**{key: arr() for key in (
        "neurons", "window_offsets", "window_doc", "window_start", "window_length", "acts", "list_offsets", "example_window",
        "example_peak", "example_value", "example_duplicates", "bos_value", "gates", "lins", "example_next",
        "example_effect", "example_rank", "example_ablation")}, width=3, act_codes=arr(6, "i1"), act_scales=arr(2, "f2"))
    kind = ConnectionKind(other=arr(4, "i4"), virtual_weight=arr(4, "f2"), cosine=arr(4, "f2"), expected=arr(4, "f2"),
                          other_class=arr(4, "u1"))
    return LayerPart(examples=examples, **{key: arr() for key in (
        "sign_frequencies", "nonfinite", "promoted", "promoted_values", "suppressed", "suppressed_values", "logit_low",
        "logit_high", "logit_histogram")}, cosines={"gate_out": arr()}, inputs={"+w_in": arr(3, "u2")}, input_values={"+w_in": arr(3)}, reasons={"3": "why"},
        histogram=Histograms(first=arr(2, "u1"), offsets=arr(3, "i4"), counts=arr(5, "i4")),
        connections=ConnectionLists(shown=2, inputs_by="virtual_weight", kinds={"out_in": kind}))


def test_a_part_with_every_field_round_trips_and_its_keys_are_the_schemas():
    part = full_layer(np.random.default_rng(0))
    written = plain(part)
    assert read_plain(LayerPart, written) == part
    assert read_plain(LayerPart, inflated(deflated(part))) == part
    assert list(written) == [key for key, *_ in SCHEMA["types"]["LayerPart"]]  # the schema's keys, in the file's order
    assert "acts" in written and "act_codes" in written
    sparse = plain(LayerPart(**{**{k: getattr(part, k) for k in part.__dataclass_fields__}, "histogram": None,
                                "connections": None, "nonfinite": None}))
    assert not {"histogram", "connections", "nonfinite"} & set(sparse)  # optional fields left out, not null


def test_read_plain_refuses_what_does_not_fit():
    written = plain(full_layer(np.random.default_rng(1)))
    renamed = {**{k: v for k, v in written.items() if k != "promoted"}, "promotd": written["promoted"]}
    with pytest.raises(ValueError, match="LayerPart: keys it does not have: promotd; missing: promoted"):
        read_plain(LayerPart, renamed)
    with pytest.raises(ValueError, match=r"LayerPart\.width: not of kind int"):
        read_plain(LayerPart, {**written, "width": "3"})
    with pytest.raises(ValueError, match=r"LayerPart\.histogram: Histograms: missing: counts"):
        read_plain(LayerPart, {**written, "histogram": {k: v for k, v in written["histogram"].items() if k != "counts"}})
    with pytest.raises(ValueError, match=r"LayerPart\.logit_low: an array of dtype 'f8'"):
        read_plain(LayerPart, {**written, "logit_low": {**written["logit_low"], "dtype": "f8"}})
    with pytest.raises(ValueError, match=r"LayerPart\.reasons: not of kind object"):
        read_plain(LayerPart, {**written, "reasons": None})


@pytest.mark.parametrize(("values", "dtype"), [([0, 255], "u1"), ([0, 256], "u2"), ([0, 65536], "i4"), ([-1, 3], "i4"),
                                              ([0.5], "f4")])
def test_packed_takes_the_smallest_dtype_that_holds_the_values(values, dtype):
    packed = Packed.of(np.array(values))
    assert packed.dtype == dtype and packed.array().tolist() == values


def test_the_schema_is_what_the_page_reads():
    """The page carries the schema (not a copy of it) and reads each dtype as numpy does (little-endian)."""
    from neuroscope.view.html import viewer_page

    page = viewer_page()
    schema = json.loads(re.search(r"var VIEW_SCHEMA = (\{.*?\});\n", page).group(1))
    assert schema == json.loads(json.dumps(SCHEMA))
    assert set(DTYPES) == {"u1", "i1", "u2", "i4", "f4", "f2"}
    for dtype, reader in DTYPES.items():  # the typed array of each dtype has its numpy item size and signedness
        sizes = {"Uint8Array": ("u", 1), "Int8Array": ("i", 1), "Uint16Array": ("u", 2), "Int32Array": ("i", 4),
                 "Float32Array": ("f", 4), "float16": ("f", 2)}
        assert (np.dtype(dtype).kind, np.dtype(dtype).itemsize) == sizes[reader]
