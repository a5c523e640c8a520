"""The checksums of a viewer's data files: what `data/meta.js` records of each file and of itself, and what the page
(`assets/checksum.js`) and `--from_viewer` (`viewer.py`) check before they use a file.

A data file is one call `neuroscope.<part>(arguments)` (`neuron_view.js_call`); the page never sees its bytes, only the
arguments that the browser parsed. So the checksum is that of the call as parsed: CRC-32 (zlib's) of the UTF-8 bytes
of the canonical JSON of [part, ...arguments] (object keys sorted, no spaces, strings and numbers as JavaScript's
JSON.stringify writes them: a lone surrogate as a \\u escape, other text as it is). Any changed value, array byte (in its
base64 or its DEFLATE stream), key, or number of the call changes it; the layout of the file (spaces, escapes) does
not. The call also names its file (`viewer.part_file`: its part and numbers), so that a file holding another's data
is told apart from a damaged one.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from decimal import Decimal
from typing import Any

# meta.js's `checksum_method`: the page verifies only checksums made this way
CHECKSUM_METHOD = "crc32 of the canonical JSON of [part, ...arguments]"
JS_EXPONENT_FROM = 21  # JavaScript writes a number of 10^21 or more with an exponent (Number::toString)
JS_DECIMALS_TO = -6  # ... and one below 10^-6 too
JS_SAFE_INTEGER = 2 ** 53  # beyond this JavaScript's numbers (doubles) hold integers only approximately
LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # in a Python string a surrogate is a lone one: JSON.stringify escapes it


def js_number(value: float) -> str:
    """A number as JavaScript's JSON.stringify writes it: the shortest digits that read back as the same double (as
    Python's repr), laid out as JavaScript does (1 not 1.0, 1e-7 not 1e-07, 0.00001 not 1e-05, 1e+21); NaN and the
    infinities as null."""
    value = float(value)
    if not math.isfinite(value):
        return "null"
    if value == 0:
        return "0"
    _, digit_tuple, exponent = Decimal(repr(abs(value))).normalize().as_tuple()
    digits, count = "".join(map(str, digit_tuple)), len(digit_tuple)
    point = exponent + count  # value = 0.<digits> * 10^point
    if count <= point <= JS_EXPONENT_FROM:
        text = digits + "0" * (point - count)
    elif 0 < point <= JS_EXPONENT_FROM:
        text = f"{digits[:point]}.{digits[point:]}"
    elif JS_DECIMALS_TO < point <= 0:
        text = "0." + "0" * -point + digits
    else:
        text = digits[0] + (f".{digits[1:]}" if count > 1 else "") + f"e{'+' if point > 0 else '-'}{abs(point - 1)}"
    return ("-" if value < 0 else "") + text


def js_string(text: str) -> str:
    """A string as JavaScript's JSON.stringify writes it: control characters, quotes and backslashes escaped (as
    json.dumps does), a lone surrogate as a lower-case \\u escape, everything else as it is."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:  # a base64 array: as it is
        return f'"{text}"'
    return escaped_surrogates(json.dumps(text, ensure_ascii=False))


def escaped_surrogates(text: str) -> str:
    """JSON from json.dumps(ensure_ascii=False) with its lone surrogates as JSON.stringify writes them (\\udxxx)."""
    return LONE_SURROGATE.sub(lambda found: f"\\u{ord(found.group()):04x}", text)


def plain_json(value: Any) -> bool:
    """Whether json.dumps writes a value as JSON.stringify does, up to lone surrogates: text, true, false, null, or an
    integer that a double holds exactly."""
    return value is None or isinstance(value, (str, bool)) or (isinstance(value, int) and abs(value) < JS_SAFE_INTEGER)


def utf16_order(item: tuple[str, Any]) -> bytes:
    """The sort key of an object's (key, value): the key's UTF-16 code units, the order of JavaScript's sort() (which
    differs from code points' for keys that mix U+E000..U+FFFF with characters beyond U+FFFF)."""
    return item[0].encode("utf-16-be", "surrogatepass")


def canonical_json(value: Any) -> str:
    """The canonical JSON of a value as a browser parses it (`assets/checksum.js` writes the same): object keys sorted,
    no spaces, strings and numbers as JavaScript's JSON.stringify writes them."""
    if isinstance(value, dict):
        items = sorted(((str(key), item) for key, item in value.items()), key=utf16_order)
        return "{" + ",".join(f"{js_string(key)}:{canonical_json(item)}" for key, item in items) + "}"
    if isinstance(value, (list, tuple)):
        if all(map(plain_json, value)):  # the vocabulary: one call of the C encoder
            return escaped_surrogates(json.dumps(value, ensure_ascii=False, separators=(",", ":")))
        return "[" + ",".join(map(canonical_json, value)) + "]"
    if isinstance(value, str):
        return js_string(value)
    if isinstance(value, float) or (isinstance(value, int) and not isinstance(value, bool) and abs(value) >= JS_SAFE_INTEGER):
        return js_number(value)
    return json.dumps(value)


def part_checksum(part: str, *args: Any) -> int:
    """The checksum of the data file that calls neuroscope.<part>(*args): CRC-32 of the canonical JSON of
    [part, *args] (an unsigned 32-bit number)."""
    return zlib.crc32(canonical_json([part, *args]).encode("utf-8"))


def meta_checksum(meta: dict[str, Any]) -> int:
    """The meta's checksum of itself: that of its call without its `checksum` key."""
    return part_checksum("meta", {key: value for key, value in meta.items() if key != "checksum"})


def file_checksum(data: bytes) -> int:
    """The checksum of a file that the page does not read as data (viewer.html, the lists): CRC-32 of its bytes."""
    return zlib.crc32(data)
