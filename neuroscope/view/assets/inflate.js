"use strict";
// A raw DEFLATE decoder (RFC 1951): the viewer's neuron data files hold their arrays in one deflated stream
// (neuron_view.deflated). It runs synchronously, so that a deep link's first files still load as
// parser-blocking scripts and the page is drawn before its load event (DecompressionStream is asynchronous).
// Canonical Huffman codes are decoded a bit at a time against the count of codes of each length.
var inflate = (function () {
  var LENGTH_BASE = [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258];
  var LENGTH_EXTRA = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0];
  var DISTANCE_BASE = [1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
    2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577];
  var DISTANCE_EXTRA = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13];
  var CODE_LENGTH_ORDER = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15];
  var MAX_BITS = 15;

  // A canonical code from the code length of each symbol (0: unused): how many codes of each length, and the
  // symbols in code order.
  function huffman(lengths) {
    var counts = new Uint16Array(MAX_BITS + 1), starts = new Uint16Array(MAX_BITS + 2), symbols = new Uint16Array(lengths.length);
    for (var s = 0; s < lengths.length; s++) { counts[lengths[s]]++; }
    counts[0] = 0;
    for (var len = 1; len <= MAX_BITS; len++) { starts[len + 1] = starts[len] + counts[len]; }
    for (s = 0; s < lengths.length; s++) { if (lengths[s]) { symbols[starts[lengths[s]]++] = s; } }
    return {counts: counts, symbols: symbols};
  }
  var FIXED = (function () {
    var literal = new Uint8Array(288), distance = new Uint8Array(30).fill(5);
    literal.fill(8, 0, 144); literal.fill(9, 144, 256); literal.fill(7, 256, 280); literal.fill(8, 280, 288);
    return {literal: huffman(literal), distance: huffman(distance)};
  })();

  // `source` (Uint8Array): a raw DEFLATE stream; `size`: the bytes it holds. Returns them as a Uint8Array.
  return function (source, size) {
    var out = new Uint8Array(size), written = 0, at = 0, held = 0, count = 0;
    function bits(n) {  // the next n (<= 16) bits, least significant first
      while (count < n) {
        if (at >= source.length) { throw new Error("deflated data cut short"); }
        held |= source[at++] << count;
        count += 8;
      }
      var value = held & ((1 << n) - 1);
      held >>>= n;
      count -= n;
      return value;
    }
    function symbol(code) {
      var value = 0, first = 0, index = 0;
      for (var len = 1; len <= MAX_BITS; len++) {
        value |= bits(1);
        var n = code.counts[len];
        if (value - first < n) { return code.symbols[index + value - first]; }
        index += n;
        first = (first + n) << 1;
        value <<= 1;
      }
      throw new Error("bad deflate code");
    }
    function stored() {
      held = 0;
      count = 0;  // the rest of the byte is padding
      if (at + 4 > source.length) { throw new Error("deflated data cut short"); }
      var length = source[at] | (source[at + 1] << 8);
      if ((source[at + 2] | (source[at + 3] << 8)) !== (~length & 0xffff)) { throw new Error("bad stored block"); }
      at += 4;
      if (at + length > source.length || written + length > size) { throw new Error("bad stored block"); }
      out.set(source.subarray(at, at + length), written);
      at += length;
      written += length;
    }
    function dynamic() {
      var literals = bits(5) + 257, distances = bits(5) + 1, lengthCodes = bits(4) + 4;
      var codeLengths = new Uint8Array(19);
      for (var i = 0; i < lengthCodes; i++) { codeLengths[CODE_LENGTH_ORDER[i]] = bits(3); }
      var lengthCode = huffman(codeLengths), lengths = new Uint8Array(literals + distances);
      for (i = 0; i < lengths.length;) {
        var s = symbol(lengthCode), repeat = 0, value = 0;
        if (s < 16) { lengths[i++] = s; continue; }
        if (s === 16) {
          if (i === 0) { throw new Error("bad deflate lengths"); }
          value = lengths[i - 1];
          repeat = 3 + bits(2);
        } else { repeat = s === 17 ? 3 + bits(3) : 11 + bits(7); }
        if (i + repeat > lengths.length) { throw new Error("bad deflate lengths"); }
        lengths.fill(value, i, i + repeat);
        i += repeat;
      }
      return {literal: huffman(lengths.subarray(0, literals)), distance: huffman(lengths.subarray(literals))};
    }
    function block(codes) {
      for (;;) {
        var s = symbol(codes.literal);
        if (s < 256) {
          if (written >= size) { throw new Error("deflated data longer than said"); }
          out[written++] = s;
          continue;
        }
        if (s === 256) { return; }
        s -= 257;
        if (s >= 29) { throw new Error("bad deflate length"); }
        var length = LENGTH_BASE[s] + bits(LENGTH_EXTRA[s]), d = symbol(codes.distance);
        if (d >= 30) { throw new Error("bad deflate distance"); }
        var distance = DISTANCE_BASE[d] + bits(DISTANCE_EXTRA[d]);
        if (distance > written || written + length > size) { throw new Error("bad deflate match"); }
        for (var end = written + length; written < end; written++) { out[written] = out[written - distance]; }
      }
    }
    for (var last = 0; !last;) {
      last = bits(1);
      var type = bits(2);
      if (type === 0) { stored(); } else if (type === 1) { block(FIXED); } else if (type === 2) { block(dynamic()); } else {
        throw new Error("bad deflate block");
      }
    }
    if (written !== size) { throw new Error("deflated data shorter than said"); }
    return out;
  };
})();
