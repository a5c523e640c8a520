"use strict";
// Drawing helpers shared by the renderer of a neuron's view (viewer.js) and the probe's page (probe.js). Text enters
// the page only through textContent; colours follow one diverging scale: 0 white, +scale full red, -scale full blue.
var draw = (function () {
  var NEAR_WHITE = 0.005;  // |value| / scale below which a token gets no colour
  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      if (key === "text") { node.textContent = attrs[key]; } else { node.setAttribute(key, attrs[key]); }
    });
    (children || []).forEach(function (child) { if (child) { node.appendChild(child); } });
    return node;
  }
  function fmt(value, digits) {
    if (value === null || value === undefined || isNaN(value)) { return "–"; }
    return Number(value).toPrecision(digits || 3).replace(/\.?0+$/, "").replace(/\.?0+e/, "e");
  }
  function percent(value) { return (100 * value).toFixed(1) + "%"; }
  function signed(value) { return (value >= 0 ? "+" : "") + Number(value).toFixed(3); }
  function shown(text) { return text.replace(/\n/g, "⏎\n") || "∅"; }
  function colour(value, scale) {
    var t = scale > 0 ? Math.max(-1, Math.min(1, value / scale)) : 0;
    var fade = Math.round(255 * (1 - Math.abs(t)));
    return t >= 0 ? "rgb(255," + fade + "," + fade + ")" : "rgb(" + fade + "," + fade + ",255)";
  }
  function background(value, scale) {  // a token's background, or "" where it would be (almost) white
    return Math.abs(value) / (scale || 1) > NEAR_WHITE ? colour(value, scale) : "";
  }
  // The one renderer of a coloured token (the viewer's examples, the probe's text): a span of the token's shown text
  // (`attrs`: its class and data-* attributes), coloured by `value` on the scale ±scale (none: no colour).
  function token(text, attrs, value, scale) {
    var node = el("span", Object.assign({}, attrs, {text: shown(text)}));
    paint(node, value, scale);
    return node;
  }
  function paint(node, value, scale) {  // (re)colour a token; (almost) white leaves it without a background
    var fill = background(value, scale);
    if (fill || node.style.background) { node.style.background = fill; }
  }
  return {el: el, fmt: fmt, percent: percent, signed: signed, shown: shown, colour: colour, background: background,
          token: token, paint: paint};
})();
