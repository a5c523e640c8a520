"""The page's DEFLATE decoder (`assets/inflate.js`) against Python's zlib, in headless Chromium, and the viewer's
deflated data files (`parts.deflated` / `inflated`)."""

from __future__ import annotations

import base64
import json
import re
import zlib

import numpy as np
import pytest
from helpers import dump_dom

from neuroscope.view.html import ASSETS
from neuroscope.view.parts import Packed, deflated, inflated, plain


def raw_deflate(data: bytes, level: int, strategy: int = zlib.Z_DEFAULT_STRATEGY) -> bytes:
    stream = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS, 9, strategy)
    return stream.compress(data) + stream.flush()


def cases() -> dict[str, tuple[bytes, bytes]]:
    """Name -> (bytes, their raw DEFLATE stream): every block type (stored, fixed and dynamic Huffman codes),
    matches at every distance up to 32 KiB, runs, and the arrays a viewer holds."""
    rng = np.random.default_rng(0)
    text = b"the gate of a gated neuron, its linear input and its output " * 40
    far = rng.bytes(40_000)
    data = {
        "empty": b"", "one byte": b"x", "text": text, "random (stored blocks)": rng.bytes(150_000),
        "zeros (long matches)": bytes(200_000), "far repeats (distances to 32 KiB)": far + far[:30_000] + far[5_000:25_000],
        "float16": rng.standard_normal(100_000).astype(np.float16).tobytes(),
        "small ids": rng.integers(0, 300, 60_000).astype(np.uint16).tobytes(),
    }
    out = {}
    for name, raw in data.items():
        for level in (0, 1, 9):
            out[f"{name}, level {level}"] = raw, raw_deflate(raw, level)
        out[f"{name}, fixed codes"] = raw, raw_deflate(raw, 6, zlib.Z_FIXED)
        out[f"{name}, runs only"] = raw, raw_deflate(raw, 6, zlib.Z_RLE)
    return out


@pytest.mark.slow
def test_inflate_js_unpacks_what_zlib_packs(tmp_path):
    streams = {name: {"raw": base64.b64encode(raw).decode(), "z": base64.b64encode(z).decode(), "n": len(raw)}
               for name, (raw, z) in cases().items()}
    cut = raw_deflate(bytes(range(256)) * 50, 9)
    streams["cut short"] = {"raw": "", "z": base64.b64encode(cut[:len(cut) // 2]).decode(), "n": 256 * 50}
    page = tmp_path / "inflate.html"
    page.write_text("<!DOCTYPE html><html><body><pre id='out'></pre><script>" + (ASSETS / "inflate.js").read_text() + """
      function b(text) { var s = atob(text), out = new Uint8Array(s.length); for (var i = 0; i < s.length; i++) { out[i] = s.charCodeAt(i); } return out; }
      var streams = """ + json.dumps(streams) + """, results = {};
      Object.keys(streams).forEach(function (name) {
        var c = streams[name], want = b(c.raw);
        try {
          var got = inflate(b(c.z), c.n), same = got.length === want.length;
          for (var i = 0; same && i < got.length; i++) { same = got[i] === want[i]; }
          results[name] = same ? "same" : "different";
        } catch (error) { results[name] = "error: " + error.message; }
      });
      document.getElementById("out").textContent = JSON.stringify(results);
    </script></body></html>""")
    dom = dump_dom(page)
    results = json.loads(re.search(r"<pre id=\"out\">(.*?)</pre>", dom, re.S).group(1).replace("&quot;", '"'))
    assert set(results) == set(streams)
    assert results.pop("cut short") == "error: deflated data cut short"
    assert results == {name: "same" for name in results}


def test_deflated_payload_round_trips_and_is_smaller():
    rng = np.random.default_rng(1)
    parts = {"width": 21, "acts": Packed.of(rng.standard_normal((50, 21)).astype(np.float16).reshape(-1), "f2"),
             "example_next": Packed.of(rng.integers(-1, 300, 400), "i4"), "reasons": {"3": "why"},
             "histogram": {"first": [1, 2], "counts": Packed.of(rng.integers(0, 9, 300))}, "names": ["a", "b"]}
    payload, packed_payload = plain(parts), deflated(parts)
    assert inflated(packed_payload) == payload
    assert "b64" not in packed_payload["acts"] and packed_payload["acts"]["dtype"] == "f2"
    assert packed_payload["histogram"]["first"] == [1, 2] and packed_payload["reasons"] == {"3": "why"}
    assert len(json.dumps(packed_payload)) < len(json.dumps(payload))
    assert inflated(payload) is payload  # a payload without a stream is as it is
