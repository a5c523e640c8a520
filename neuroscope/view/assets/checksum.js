"use strict";
// The checksum of a viewer's data file as the page received it (neuroscope/view/checksums.py, part_checksum): CRC-32
// (zlib's) of the UTF-8 bytes of the canonical JSON of its call [part, ...arguments]: object keys sorted, no spaces,
// strings and numbers as JSON.stringify writes them. Table-driven, eight bytes a step (slicing by 8).
var checksum = (function () {
  var POLYNOMIAL = 0xEDB88320, SLICES = 8;
  var TABLES = (function () {  // TABLES[k * 256 + b]: the CRC of byte b followed by k zero bytes
    var tables = new Int32Array(SLICES * 256);
    for (var n = 0; n < 256; n++) {
      var c = n;
      for (var bit = 0; bit < 8; bit++) { c = c & 1 ? POLYNOMIAL ^ (c >>> 1) : c >>> 1; }
      tables[n] = c;
    }
    for (var k = 1; k < SLICES; k++) {
      for (n = 0; n < 256; n++) { tables[k * 256 + n] = tables[tables[(k - 1) * 256 + n] & 255] ^ (tables[(k - 1) * 256 + n] >>> 8); }
    }
    return tables;
  })();
  var ESCAPED = /["\\\u0000-\u001f\ud800-\udfff]/;  // what JSON.stringify may write otherwise than as it is
  function plain(value) { return value === null || typeof value !== "object"; }
  // the canonical JSON of a value as consecutive texts pushed to `out`: a string without ESCAPED between quotes as it
  // is (a base64 array: scanned, not copied), an array of plain values (the vocabulary) in one native call
  function canonical(value, out) {
    if (typeof value === "string" && !ESCAPED.test(value)) { out.push("\"", value, "\""); }
    else if (plain(value) || (Array.isArray(value) && value.every(plain))) { out.push(JSON.stringify(value)); }
    else if (Array.isArray(value)) {
      out.push("[");
      value.forEach(function (item, i) { if (i) { out.push(","); } canonical(item, out); });
      out.push("]");
    } else {
      out.push("{");
      Object.keys(value).sort().forEach(function (key, i) { out.push((i ? "," : "") + JSON.stringify(key) + ":"); canonical(value[key], out); });
      out.push("}");
    }
    return out;
  }
  // the running CRC `c` (before its final inversion) after bytes[0, length) (`words`: the same buffer read as 32-bit
  // little-endian words, two loads a step instead of eight; a big-endian machine takes the bytes one at a time)
  function update(c, bytes, words, length) {
    var i = 0, end = LITTLE_ENDIAN ? length - length % SLICES : 0;
    for (; i < end; i += SLICES) {
      c ^= words[i >> 2];
      var d = words[(i >> 2) + 1];
      c = TABLES[1792 + (c & 255)] ^ TABLES[1536 + ((c >>> 8) & 255)] ^ TABLES[1280 + ((c >>> 16) & 255)] ^ TABLES[1024 + (c >>> 24)] ^
        TABLES[768 + (d & 255)] ^ TABLES[512 + ((d >>> 8) & 255)] ^ TABLES[256 + ((d >>> 16) & 255)] ^ TABLES[d >>> 24];
    }
    for (; i < length; i++) { c = TABLES[(c ^ bytes[i]) & 255] ^ (c >>> 8); }
    return c;
  }
  var LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
  var PIECE = 1 << 16, utf8 = new TextEncoder(), buffer = new Uint8Array(3 * PIECE);  // UTF-8: at most 3 bytes a UTF-16 unit
  var words = new Int32Array(buffer.buffer);
  function crc32(texts) {  // of the UTF-8 bytes of texts one after the other, a piece at a time (never between the halves
    var c = -1;            // of a surrogate pair)
    texts.forEach(function (text) {
      for (var at = 0; at < text.length;) {
        var end = Math.min(at + PIECE, text.length);
        if (end < text.length && (text.charCodeAt(end - 1) & 0xFC00) === 0xD800) { end -= 1; }
        c = update(c, buffer, words, utf8.encodeInto(at === 0 && end === text.length ? text : text.slice(at, end), buffer).written);
        at = end;
      }
    });
    return (c ^ -1) >>> 0;
  }
  // the checksum of a call [part, ...arguments]: an unsigned 32-bit number
  return function (call) { return crc32(canonical(call, [])); };
})();
