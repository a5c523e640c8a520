"use strict";
// The model at a glance, on top of the viewer's index: per layer, the shares of the IO classes among the viewer's
// neurons (a stacked bar in the classes' colours of main.py's plots) and how the neurons' gate-open frequencies are
// distributed (GATE_BINS bins of 0-100% of tokens, small multiples), drawn here as SVG from the index's columns. Each
// segment and bin is a link that filters the index to it (#?layer=L&io_class=C, #?layer=L&gate_open_low=..&gate_open_high=..).
var overview = (function () {
  var GATE_BINS = 10;
  var GAP = 1e-7;  // a bin's upper bound in its link: the next bin's lower bound less this (the index's bounds are inclusive)
  var ROW = 16, LABEL = 56, BAR = 420, GATES_AT = LABEL + BAR + 40, BIN = 16, TOP = 30, WIDTH = GATES_AT + 10 * BIN + 140;
  var SVG_NS = (function () {  // the SVG namespace, taken from the parser (so that no address is written here)
    var holder = document.createElement("div");
    holder.innerHTML = "<svg></svg>";
    return holder.firstChild.namespaceURI;
  })();
  function node(tag, attrs, children) {
    var n = document.createElementNS(SVG_NS, tag);
    Object.keys(attrs).forEach(function (k) { if (k === "text") { n.textContent = attrs[k]; } else { n.setAttribute(k, attrs[k]); } });
    (children || []).forEach(function (c) { n.appendChild(c); });
    return n;
  }
  var BOUNDS = [];  // [low, high] of each gate-open bin as the index's filter reads them (the numbers of its link)
  for (var b = 0; b < GATE_BINS; b++) {
    BOUNDS.push([b / GATE_BINS, b === GATE_BINS - 1 ? 1 : Number(((b + 1) / GATE_BINS - GAP).toPrecision(9))]);
  }
  function gateBin(value) {  // the bin whose bounds hold a gate-open frequency; -1 for NaN or a value between two bins
    if (!(value === value)) { return -1; }
    var b = Math.max(0, Math.min(GATE_BINS - 1, Math.floor(value * GATE_BINS)));
    if (b > 0 && value < BOUNDS[b][0]) { b -= 1; }
    return value >= BOUNDS[b][0] && value <= BOUNDS[b][1] ? b : -1;
  }
  // per layer of `layers`: neurons, count per class [class], count per gate-open bin [bin], from the index's columns
  function counts(ix, layers, classes) {
    var out = {};
    layers.forEach(function (l) { out[l] = {total: 0, classes: new Int32Array(classes), gates: new Int32Array(GATE_BINS)}; });
    for (var i = 0; i < ix.ids.length; i++) {
      var row = out[ix.layer[i]], bin = gateBin(ix.gate_open[i]);
      if (!row) { continue; }
      row.total += 1;
      row.classes[ix.io_class[i]] += 1;
      if (bin >= 0) { row.gates[bin] += 1; }
    }
    return out;
  }
  function colour(rgba) { return "rgba(" + rgba.slice(0, 3).map(function (c) { return Math.round(255 * c); }).join(",") + "," + rgba[3] + ")"; }
  function link(href, title, shape) {
    return node("a", {href: href, "class": "ov-link"}, [node("title", {text: title}), shape]);
  }
  function classBar(layer, row, y, names, colours) {
    var x = LABEL, parts = [];
    names.forEach(function (name, c) {
      var n = row.classes[c], w = row.total ? BAR * n / row.total : 0;
      if (!n) { return; }
      parts.push(link("#?layer=" + layer + "&io_class=" + c, "layer " + layer + " · " + name + ": " + n + " of " + row.total +
        " neurons (" + (100 * n / row.total).toFixed(1) + "%)", node("rect", {x: x.toFixed(2), y: y, width: Math.max(w, 0.5).toFixed(2),
        height: ROW - 3, fill: colour(colours[c]), stroke: "#888", "stroke-width": 0.3, "data-layer": layer, "data-class": c, "data-count": n})));
      x += w;
    });
    return parts;
  }
  function gateBars(layer, row, y, top) {
    var parts = [];
    for (var b = 0; b < GATE_BINS; b++) {
      var n = row.gates[b], h = top ? (ROW - 3) * n / top : 0, bounds = BOUNDS[b];
      parts.push(link("#?layer=" + layer + "&gate_open_low=" + bounds[0] + "&gate_open_high=" + bounds[1],
        "layer " + layer + " · gate open on " + (100 * b / GATE_BINS) + "–" + (100 * (b + 1) / GATE_BINS) + "% of tokens: " + n + " of " +
        row.total + " neurons", node("rect", {x: GATES_AT + b * BIN, y: (y + ROW - 3 - h).toFixed(2), width: BIN - 2,
        height: Math.max(h, n ? 0.5 : 0).toFixed(2), fill: "#4a7", "data-layer": layer, "data-bin": b, "data-count": n})));
      parts.push(node("rect", {x: GATES_AT + b * BIN, y: y + ROW - 3, width: BIN - 2, height: 0.6, fill: "#bbb"}));
    }
    return parts;
  }
  function legend(names, colours, y) {
    var x = LABEL, parts = [];
    names.forEach(function (name, c) {
      parts.push(node("rect", {x: x, y: y, width: 10, height: 10, fill: colour(colours[c]), stroke: "#888", "stroke-width": 0.3}));
      parts.push(node("text", {x: x + 13, y: y + 9, text: name}));
      x += 22 + 6 * name.length;
      if (c + 1 < names.length && x + 22 + 6 * names[c + 1].length > WIDTH) { x = LABEL; y += 14; }
    });
    return parts;
  }
  // the overview as an SVG element: `ix` the index's columns (ids, layer, io_class, gate_open), `names` the classes'
  // names as shown, `colours` their [r, g, b, alpha]
  function draw(ix, layers, names, colours) {
    var table = counts(ix, layers, names.length), top = 1;
    layers.forEach(function (l) { for (var b = 0; b < GATE_BINS; b++) { top = Math.max(top, table[l].gates[b]); } });
    var height = TOP + layers.length * ROW + 14 + 14 * Math.ceil(names.length / 4);
    var svg = node("svg", {id: "overview-chart", width: WIDTH, height: height, role: "img"});
    svg.appendChild(node("text", {x: LABEL, y: 12, text: "IO classes: share of the layer's neurons (click a part: those neurons)"}));
    svg.appendChild(node("text", {x: GATES_AT, y: 12, text: "gate open: neurons by % of tokens (click a bin)"}));
    svg.appendChild(node("text", {x: GATES_AT, y: 24, text: "0%"}));
    svg.appendChild(node("text", {x: GATES_AT + GATE_BINS * BIN - 24, y: 24, text: "100%"}));
    layers.forEach(function (l, i) {
      var y = TOP + i * ROW, row = table[l];
      svg.appendChild(node("text", {x: 0, y: y + ROW - 5, text: "L" + l + " (" + row.total + ")"}));
      classBar(l, row, y, names, colours).concat(gateBars(l, row, y, top)).forEach(function (p) { svg.appendChild(p); });
    });
    legend(names, colours, TOP + layers.length * ROW + 8).forEach(function (p) { svg.appendChild(p); });
    return svg;
  }
  return {draw: draw};
})();
