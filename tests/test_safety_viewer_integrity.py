"""Integrity of what the whole-model viewer reads (issue "data safety", the viewer's files): every data file names
itself in its call and has its checksum in `data/meta.js` (which checks itself); the page uses a file only when it is
the one it asked for and whole, else its status line names the file and the fault, and `--from_viewer` copies only
such files (one `error:` line, the tree unchanged). A viewer written before checksums still opens, with a note.

The hostile cases (a tiny Llama, its viewer of every neuron): a bit flipped in a layer file's DEFLATE stream that
still inflates, two ids swapped in the index, a layer file holding another layer, a file cut short, a documents file
deleted, a changed meta.
"""

from __future__ import annotations

import base64
import html
import json
import re
import shutil
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
from helpers import VIEWER_PAGES, call_arguments, chromium_path, copied, dump_dom, from_viewer_args, refused, succeeds, viewer_args

from neuroscope import d_recompute_vis
from neuroscope.view.checksums import part_checksum
from neuroscope.view.html import ASSETS
from neuroscope.view.neuron_view import js_call

NEURON = (1, 5)  # the neuron the deep links open (layer 1 is the one --from_viewer copies)
HASH_CHANGE_BUDGET_MS = 20_000  # virtual time Chromium gives a page to follow a hash change before it dumps the DOM


@pytest.fixture(scope="module")
def tree(work, tmp_path_factory):
    """A results tree with the viewer `viewer` of every neuron of the tiny Llama."""
    root = tmp_path_factory.mktemp("viewer_integrity")
    shutil.copytree(work["results"], root / "results")
    succeeds(d_recompute_vis.main, viewer_args(work, root / "results", "--neurons", "all"))
    return root


def status(dom: str) -> str:
    return html.unescape(re.search(r'id="status"[^>]*>([^<]*)<', dom).group(1))


def write_call(path: Path, part: str, *args) -> None:
    path.write_text(js_call(part, *args))


# ----------------------------------------------------------------------------- the damages


def flipped_stream(stream: bytes, size: int) -> bytes:
    """`stream` (raw DEFLATE) with one bit flipped such that it still inflates to `size` bytes, other ones."""
    original = zlib.decompress(stream, -zlib.MAX_WBITS)
    for at in range(len(stream) // 2, len(stream)):
        for bit in range(8):
            damaged = bytearray(stream)
            damaged[at] ^= 1 << bit
            try:
                unpacked = zlib.decompress(bytes(damaged), -zlib.MAX_WBITS)
            except zlib.error:
                continue
            if len(unpacked) == size and unpacked != original:
                return bytes(damaged)
    raise AssertionError("no single flipped bit of the stream still inflates")


def flip_a_bit(folder: Path) -> None:
    path = folder / "data" / "layer_1.js"
    layer, payload = call_arguments(path)
    stream = base64.b64decode(payload["deflate"]["b64"])
    payload["deflate"]["b64"] = base64.b64encode(flipped_stream(stream, payload["deflate"]["bytes"])).decode("ascii")
    write_call(path, "layer", layer, payload)


def swap_two_ids(folder: Path) -> None:
    path = folder / "data" / "index.js"
    index = call_arguments(path)[0]
    ids = np.frombuffer(base64.b64decode(index["ids"]["b64"]), dtype="<i4").copy()
    ids[[3, len(ids) - 3]] = ids[[len(ids) - 3, 3]]
    index["ids"]["b64"] = base64.b64encode(ids.tobytes()).decode("ascii")
    write_call(path, "index", index)


def mislabel_a_layer(folder: Path) -> None:
    shutil.copy(folder / "data" / "layer_0.js", folder / "data" / "layer_1.js")


def cut_a_layer(folder: Path) -> None:
    path = folder / "data" / "layer_1.js"
    text = path.read_text()
    path.write_text(text[:len(text) // 2])


def delete_the_documents(folder: Path) -> None:
    (folder / "data" / "docs_0.js").unlink()


def change_the_meta(folder: Path) -> None:
    path = folder / "data" / "meta.js"
    meta = call_arguments(path)[0]
    write_call(path, "meta", {**meta, "dataset": meta["dataset"] + "x"})


DEEP_LINK = f"#{NEURON[0]}.{NEURON[1]}"
# damage, the address the page opens, what its status line says, what --from_viewer's one line says
CASES = {
    "flipped bit": (flip_a_bit, DEEP_LINK, "data/layer_1.js: checksum mismatch (damaged after it was written)",
                    "data/layer_1.js: checksum mismatch (damaged after it was written)"),
    "swapped ids": (swap_two_ids, "#?layer=1", "data/index.js: checksum mismatch (damaged after it was written)",
                    "data/index.js: checksum mismatch (damaged after it was written)"),
    "mislabelled layer": (mislabel_a_layer, DEEP_LINK, "data/layer_1.js: holds layer 0, not layer 1",
                          "data/layer_1.js: holds layer 0, not layer 1"),
    "cut file": (cut_a_layer, DEEP_LINK, "data/layer_1.js: cut short or does not parse", "data/layer_1.js: cut short"),
    "missing documents": (delete_the_documents, DEEP_LINK, "data/docs_0.js: did not load (missing or not a script)",
                          "data/docs_0.js: missing"),
    "changed meta": (change_the_meta, DEEP_LINK, "data/meta.js: checksum mismatch (damaged after it was written)",
                     "data/meta.js: checksum mismatch (damaged after it was written)"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_a_damaged_file_is_named_by_the_page_and_not_copied(work, tree, tmp_path, case):
    """The page shows, instead of the neuron (or the index), one error that names the file and what is wrong with it;
    --from_viewer refuses the viewer in one line naming the file, before it writes anything."""
    damage, address, shown, refusal = CASES[case]
    root = copied(tree, tmp_path)
    folder = root / VIEWER_PAGES / "viewer"
    damage(folder)
    dom = dump_dom(f"{(folder / 'viewer.html').as_uri()}{address}")
    assert status(dom).startswith(f"error: {shown}"), status(dom)
    assert f">Neuron {NEURON[0]}.{NEURON[1]}<" not in dom and "Cannot read" not in dom
    if address.startswith("#?"):
        assert 'id="index-view" hidden' in dom or "id=\"index-view\" hidden=\"\"" in dom
    refused(d_recompute_vis.main, from_viewer_args(work, root / "results", "viewer", "part"), root,
            str(folder / refusal.split(":")[0]) + ":" + refusal.split(":", 1)[1])


def dump_after_hash_change(folder: Path, address: str, tmp_path: Path) -> str:
    """The DOM of the viewer opened at its index, then sent to `address` by a hash change (the page loads the files
    itself, as when a reader clicks a link), after Chromium's virtual time let it finish."""
    browser = chromium_path()
    if browser is None:
        pytest.skip("chromium is not installed (.ci/run installs it)")
    page = folder / "hash_change.html"
    script = f"<script>addEventListener('load', function () {{ location.hash = {json.dumps(address)}; }});</script>"
    page.write_text((folder / "viewer.html").read_text().replace("</body>", script + "</body>"))
    return subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--no-first-run", f"--user-data-dir={tmp_path / 'chrome'}",
                           f"--virtual-time-budget={HASH_CHANGE_BUDGET_MS}", "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=120).stdout


@pytest.mark.slow
@pytest.mark.parametrize("case", ["mislabelled layer", "flipped bit", "cut file"])
def test_a_damaged_file_opened_from_the_page_is_named(tree, tmp_path, case):
    """The same faults when the neuron is opened from the page (a hash change: files loaded by the page's own
    script elements, not while it is parsed)."""
    damage, _, shown, _ = CASES[case]
    root = copied(tree, tmp_path)
    folder = root / VIEWER_PAGES / "viewer"
    damage(folder)
    dom = dump_after_hash_change(folder, DEEP_LINK, tmp_path)
    assert status(dom).startswith(f"error: {shown}"), status(dom)
    assert "Cannot read" not in dom


# ----------------------------------------------------------------------------- the checksums themselves


def independent_checksums(folder: Path) -> dict[str, int]:
    """CRC-32 of each data file's call [part, ...arguments] as plain json.dumps writes it sorted and compact (the data
    files hold no floats outside their base64, so this is the JavaScript form), and of the other files' bytes."""
    sums = {}
    for path in sorted((folder / "data").glob("*.js")):
        if path.name != "meta.js":
            found = re.fullmatch(r"neuroscope\.(\w+)\((.*)\);\n", path.read_text(), re.S)
            call = [found.group(1), *json.loads(f"[{found.group(2)}]")]
            canonical = json.dumps(call, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            sums[path.stem] = zlib.crc32(canonical.encode("utf-8"))
    for path in [folder / "viewer.html", *sorted((folder / "lists").glob("*.html"))]:
        sums[path.relative_to(folder).as_posix()] = zlib.crc32(path.read_bytes())
    return sums


@pytest.mark.slow
def test_meta_checksums_match_an_independent_computation(work, tree, tmp_path):
    """meta.js lists every data file, the page and the lists with the checksum that zlib gives; so does the meta of a
    viewer copied by --from_viewer (its index, search and lists cut to the layer, the rest as in the source). Both
    open verified (the page checks the meta's own checksum too): the neuron drawn, nothing in the status line, from a
    deep link and from a hash change."""
    root = copied(tree, tmp_path)
    succeeds(d_recompute_vis.main, from_viewer_args(work, root / "results", "viewer", "part"))
    for name in ("viewer", "part"):
        folder = root / VIEWER_PAGES / name
        meta = call_arguments(folder / "data" / "meta.js")[0]
        assert {**meta["checksums"], **meta["file_checksums"]} == independent_checksums(folder), name
        for dom in (dump_dom(f"{(folder / 'viewer.html').as_uri()}{DEEP_LINK}"),
                    dump_after_hash_change(folder, DEEP_LINK, tmp_path)):
            assert f">Neuron {NEURON[0]}.{NEURON[1]}<" in dom and status(dom) == "", (name, status(dom))
    assert sorted(call_arguments(root / VIEWER_PAGES / "part" / "data" / "meta.js")[0]["checksums"]) == \
        ["docs_0", "index", "layer_1", "search_0", "top_0", "vocab"]


@pytest.mark.slow
def test_the_page_and_python_agree_on_checksums(tmp_path):
    """assets/checksum.js in Chromium and checksums.part_checksum on the values a browser parses from the same JSON:
    numbers of every magnitude, text of every kind (astral, lone surrogates, controls, separators), keys that look
    like numbers (which JavaScript orders first in an object)."""
    floats = [0.1, 1.0, -0.0, 1e21, 1e20, 123456789.125, 1e-7, 1.5e-7, 0.000001, 2.5e-5, 5e-324, 1.7976931348623157e308,
              -3.25e-300, 1 / 3, 2.0 ** 60]
    texts = ["plain", "é ü ß", "😀 astral", "\u2028\u2029", "\x7f\x00\x1f\n\t\"\\", "\ud800 lone", "</script>&"]
    cases = [["meta", {"floats": floats, "ints": [0, -7, 2 ** 53, 2 ** 53 + 2, 10 ** 22], "flags": [True, False, None]}],
             ["vocab", texts], ["layer", 3, {"10": "x", "3": "y", "b": {"z": [1, 2], "a": {}}, "a": []}, 7],
             ["index", {"\uff01": 1, "\U0001f600": 2, "\ue000": 3, "z": 4}]]  # UTF-16 order differs from code points
    cases += [["docs", 0, {"b64": text}] for text in texts]
    page = tmp_path / "checksums.html"
    page.write_text("<!DOCTYPE html><html><body><pre id='out'></pre><script>" + (ASSETS / "checksum.js").read_text() +
                    "\nvar cases = JSON.parse(" + json.dumps(json.dumps(cases)).replace("<", "\\u003c") + ");\n"
                    "document.getElementById('out').textContent = JSON.stringify(cases.map(checksum));</script></body></html>")
    dom = dump_dom(page)
    found = json.loads(html.unescape(re.search(r"<pre id=\"out\">(.*?)</pre>", dom, re.S).group(1)))
    assert found == [part_checksum(*call) for call in json.loads(json.dumps(cases))]


# ----------------------------------------------------------------------------- viewers written before checksums


@pytest.mark.slow
def test_a_viewer_without_checksums_opens_with_a_note_and_is_copied_with_one(work, tree, tmp_path):
    """A viewer of the previous version (no checksums in its meta) still opens, its status line saying that its files
    are not verified; --from_viewer copies it with a one-line note, and the copy stays unverified."""
    root = copied(tree, tmp_path)
    folder = root / VIEWER_PAGES / "viewer"
    meta = call_arguments(folder / "data" / "meta.js")[0]
    write_call(folder / "data" / "meta.js", "meta",
               {key: value for key, value in meta.items() if key not in ("checksum", "checksums", "file_checksums", "checksum_method")})
    dom = dump_dom(f"{(folder / 'viewer.html').as_uri()}{DEEP_LINK}")
    assert f">Neuron {NEURON[0]}.{NEURON[1]}<" in dom
    assert status(dom).startswith("note: this viewer was written before viewers carried checksums"), status(dom)
    out = succeeds(d_recompute_vis.main, from_viewer_args(work, root / "results", "viewer", "part")).out
    notes = [line for line in out.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "copied unverified" in notes[0] and str(folder) in notes[0]
    assert "checksums" not in call_arguments(root / VIEWER_PAGES / "part" / "data" / "meta.js")[0]
    mislabel_a_layer(folder)  # without checksums a file holding another layer is still told apart by its call
    dom = dump_dom(f"{(folder / 'viewer.html').as_uri()}{DEEP_LINK}")
    assert status(dom).startswith("error: data/layer_1.js: holds layer 0, not layer 1"), status(dom)
    refused(d_recompute_vis.main, from_viewer_args(work, root / "results", "viewer", "again"), root,
            f"{folder / 'data' / 'layer_1.js'}: holds layer 0, not layer 1")


# ----------------------------------------------------------------------------- the data's format (parts.SCHEMA)


def raw_arguments(path: Path) -> list:
    """The JSON arguments of a data file as written (arrays not inflated)."""
    text = path.read_text()
    return json.loads("[" + text[text.index("(") + 1:-len(");\n")] + "]")


def rename_a_key(folder: Path) -> None:
    layer, payload = raw_arguments(folder / "data" / "layer_1.js")
    payload["sign_frequency"] = payload.pop("sign_frequencies")
    write_call(folder / "data" / "layer_1.js", "layer", layer, payload)


def width_as_text(folder: Path) -> None:
    layer, payload = raw_arguments(folder / "data" / "layer_1.js")
    write_call(folder / "data" / "layer_1.js", "layer", layer, {**payload, "width": str(payload["width"])})


def unknown_dtype(folder: Path) -> None:
    index = raw_arguments(folder / "data" / "index.js")[0]
    write_call(folder / "data" / "index.js", "index", {**index, "mean": {**index["mean"], "dtype": "f8"}})


# damage (checksums made anew, so only the format can tell), address, what the page's status line says after
# "does not fit this page's data format ("
FORMAT_CASES = {
    "renamed key": (rename_a_key, DEEP_LINK, "data/layer_1.js", "LayerPart: missing sign_frequencies; LayerPart: a key it "
                                                                 "does not have, sign_frequency"),
    "width as text": (width_as_text, DEEP_LINK, "data/layer_1.js", "LayerPart.width: not of kind int"),
    "unknown dtype": (unknown_dtype, "#?layer=1", "data/index.js", "IndexPart.mean: not an array"),
}


def resealed(folder: Path) -> None:
    """The viewer's meta with the checksums of its files as they are now (as if written so)."""
    from neuroscope.view.checksums import meta_checksum

    meta = call_arguments(folder / "data" / "meta.js")[0]
    for path in (folder / "data").glob("*.js"):
        if path.stem != "meta":
            part, *args = [path.read_text().split("(")[0].removeprefix("neuroscope."), *raw_arguments(path)]
            meta["checksums"][path.stem] = part_checksum(part, *args)
    meta = {key: value for key, value in meta.items() if key != "checksum"}
    write_call(folder / "data" / "meta.js", "meta", {**meta, "checksum": meta_checksum(meta)})


@pytest.mark.slow
@pytest.mark.parametrize("case", list(FORMAT_CASES))
def test_a_file_of_another_format_is_named_by_the_page(tree, tmp_path, case):
    """A data file whose checksum is right but whose part does not fit the format written into the page (a key renamed,
    a number as text, an array of a dtype the page does not read) is named with what does not fit, not drawn."""
    damage, address, file, fault = FORMAT_CASES[case]
    root = copied(tree, tmp_path)
    folder = root / VIEWER_PAGES / "viewer"
    damage(folder)
    resealed(folder)
    dom = dump_dom(f"{(folder / 'viewer.html').as_uri()}{address}")
    assert status(dom) == f"error: {file}: does not fit this page's data format ({fault}; a file of another version?)", status(dom)
    assert f">Neuron {NEURON[0]}.{NEURON[1]}<" not in dom and "Cannot read" not in dom


@pytest.mark.slow
def test_a_data_file_that_runs_before_the_meta_is_not_used(tree, tmp_path):
    """The meta vouches for every other file: one whose script runs before meta.js (here index.js, written into the page
    ahead of the viewer's own loading) is refused, not used unverified."""
    root = copied(tree, tmp_path)
    folder = root / VIEWER_PAGES / "viewer"
    page = folder / "viewer.html"
    early = '<script src="data/index.js"></script>'
    page.write_text(page.read_text().replace("neuroscope.start();</script>", f"</script>{early}<script>neuroscope.start();</script>"))
    dom = dump_dom(f"{page.as_uri()}#?layer=1")
    assert status(dom) == "error: data/index.js: arrived before data/meta.js, which vouches for it", status(dom)
