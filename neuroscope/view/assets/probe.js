// The probe's page: a text of one's own, coloured by a chosen neuron's activation a, with g, u, a, the sign
// combination of (g, u) and the percentile of a on the dataset under the pointer; each token's top neurons by |a|;
// the neurons that fire most on the whole text. Everything comes from the data given to probe.start (probe.json's
// payload, or, for a long text, that of the tokens in meta.page.ranges); text enters the page only as text nodes
// (textContent), never as markup. Arrays are indexed by the page's own positions; `globals` turns one into the
// token's index in the whole text (what meta, the whole-text table and the non-finite maps use). A non-finite value
// is null in the arrays, its kind ("inf", "-inf", "nan") beside it (meta.non_finite.encoding).
var probe = (function () {
  "use strict";
  var data = null, current = null, picked = 0, spans = [], globals = [], local = {}, flagged = {};
  var el = draw.el, fmt = draw.fmt;

  function positions() {  // globals[position] and local[global] from the ranges of the text that the page holds
    var ranges = data.meta.page ? data.meta.page.ranges : [[0, data.tokens.length]];
    ranges.forEach(function (range) {
      for (var g = range[0]; g < range[1]; g++) { local[g] = globals.length; globals.push(g); }
    });
    ((data.meta.non_finite || {}).tokens || []).forEach(function (g) { flagged[g] = true; });
  }
  function kindOf(name, key, i) {  // the kind of a chosen neuron's non-finite value at position i
    var map = (data.neurons[name].non_finite || {})[key] || {};
    return map[String(globals[i])] || "non-finite";
  }
  function valueText(name, key, i) {
    var v = data.neurons[name][key][i];
    return v === null ? "= " + kindOf(name, key, i) : fmt(v);
  }
  function colourValue(name, i, scale) {  // what colours the token: ±inf as the scale's end, NaN as nothing
    var v = data.neurons[name].a[i];
    if (v !== null) { return v; }
    var kind = kindOf(name, "a", i);
    return kind === "inf" ? scale : kind === "-inf" ? -scale : 0;
  }
  function pairText(pair) { return pair[1] === null ? "= " + pair[2] + " (non-finite)" : fmt(pair[1], 4); }
  // an entry's strength, |a| over the neuron's largest |a| on the dataset (with the statistics; "" otherwise)
  function strengthText(pair) { return pair[1] !== null && typeof pair[2] === "number" ? pair[2].toFixed(3) : ""; }
  function rankedBy() {  // what the per-token lists are ranked by
    return data.meta.dataset ? "strength (|a| over the neuron's largest |a| on " + data.meta.dataset + ", as the viewer's search ranks)" : "|a|";
  }

  function ordinal(p) {
    if (p === null || p === undefined) { return ""; }
    if (p >= 100) { return "100th percentile (above all)"; }
    var text = p >= 99.95 ? p.toFixed(2) : p.toFixed(1);
    text = text.replace(/\.?0+$/, "");
    var whole = /\./.test(text) ? -1 : Number(text) % 100;  // 1st, 2nd, 3rd, 11th, 21st; 99.7th
    var suffix = whole % 10 === 1 && whole !== 11 ? "st" : whole % 10 === 2 && whole !== 12 ? "nd" :
      whole % 10 === 3 && whole !== 13 ? "rd" : "th";
    return text + suffix + " percentile";
  }
  function neuronLink(name) {
    var href = data.links[name];
    return href ? el("a", {href: href, text: name}) : el("span", {text: name});
  }
  function percentileText(name, p) {
    return p === null || p === undefined ? "" : ordinal(p) + " of " + name + " on " + data.meta.dataset;
  }

  // ---- the run
  function header() {
    var m = data.meta, parts = [m.model, m.tokens + " tokens", m.windows.length + " forward pass" + (m.windows.length > 1 ? "es" : "") +
      " of up to " + m.window_tokens + " tokens" + (m.bos !== null ? " (BOS first, not shown)" : ""), m.dtype];
    parts.push(m.dataset ? "percentiles on " + m.dataset + " (" + m.dataset_tokens + " tokens)" : "no statistics: no percentiles");
    document.getElementById("title").textContent = "Probe · " + m.name;
    document.title = "probe · " + m.name + " · " + m.model;
    var run = document.getElementById("run");
    run.appendChild(el("div", {text: parts.join(" · ")}));
    [m.caption].concat(m.notes).forEach(function (note) { run.appendChild(el("div", {text: note})); });
    if (m.page && m.page.note) { run.appendChild(el("p", {"class": "note", id: "page-note", text: "This page: " + m.page.note})); }
  }

  // ---- the text, coloured by the chosen neuron
  function controls() {
    var names = Object.keys(data.neurons), box = el("div", {"class": "controls"});
    if (!names.length) {
      box.appendChild(el("span", {"class": "meta",
        text: "no --neurons chosen: the text is not coloured; hover or click a token for its top neurons"}));
      return box;
    }
    var chooser = el("select", {id: "neuron"});
    names.forEach(function (name) { chooser.appendChild(el("option", {value: name, text: name})); });
    chooser.addEventListener("change", function () { colourBy(chooser.value); });
    box.appendChild(el("label", {}, [document.createTextNode("colour by neuron "), chooser]));
    box.appendChild(el("span", {id: "neuron-link"}));
    box.appendChild(el("span", {"class": "legend"}, [el("span", {id: "scale-low"}), el("span", {"class": "bar neg"}),
      el("span", {"class": "bar pos"}), el("span", {id: "scale-high"})]));
    return box;
  }
  function textBox() {
    var box = el("div", {"class": "text probe-text", id: "text"}), starts = {};
    data.meta.documents.slice(1, -1).forEach(function (g) { starts[g] = true; });
    data.tokens.forEach(function (token, i) {
      var g = globals[i], before = i > 0 ? globals[i - 1] : -1;
      if (g !== before + 1) {
        box.appendChild(el("span", {"class": "gap", text: " … " + (g - before - 1) + " tokens not on this page … "}));
      }
      if (starts[g]) { box.appendChild(el("span", {"class": "doc-break"})); }
      var s = draw.token(token, {"class": flagged[g] ? "t nonfinite" : "t", "data-i": String(i)});
      if (flagged[g]) { s.title = "non-finite values (inf or NaN) here"; }
      spans.push(s);
      box.appendChild(s);
    });
    box.addEventListener("mouseover", hover);
    box.addEventListener("mouseout", hover);
    box.addEventListener("click", function (event) {
      var i = event.target.getAttribute && event.target.getAttribute("data-i");
      if (i !== null && i !== undefined) { pick(Number(i)); }
    });
    return box;
  }
  function colourBy(name) {
    current = name;
    var a = data.neurons[name].a, scale = 0;
    a.forEach(function (v) { if (v !== null) { scale = Math.max(scale, Math.abs(v)); } });
    spans.forEach(function (s, i) { draw.paint(s, colourValue(name, i, scale), scale); });
    document.getElementById("scale-low").textContent = fmt(-scale);
    document.getElementById("scale-high").textContent = fmt(scale);
    var link = document.getElementById("neuron-link");
    link.textContent = "";
    if (data.links[name]) { link.appendChild(el("a", {href: data.links[name], text: "open " + name})); }
    var strongest = 0, best = -1;
    a.forEach(function (v, i) {
      var size = v !== null ? Math.abs(v) : kindOf(name, "a", i) === "nan" ? -1 : Infinity;
      if (size > best) { strongest = i; best = size; }
    });
    pick(strongest);
  }

  // ---- one token: the chosen neuron's values and the token's top neurons
  function valuesAt(name, i) {
    var n = data.neurons[name], p = n.percentile ? n.percentile[i] : null;
    var line = name + ": a " + valueText(name, "a", i) + " · g " + valueText(name, "g", i) + " · u " +
      valueText(name, "u", i) + " · " + (n.combination[i] < 0 ? "signs undefined (NaN)" : data.meta.sign_combinations[n.combination[i]]);
    return p === null || p === undefined ? line : line + " · " + percentileText(name, p);
  }
  function hover(event) {
    var box = document.getElementById("hover"), target = event.target, i = target.getAttribute && target.getAttribute("data-i");
    if (event.type === "mouseout" || i === null || i === undefined) { box.hidden = true; return; }
    i = Number(i);
    var lines = [JSON.stringify(data.tokens[i]) + " · token " + globals[i]];
    if (flagged[globals[i]]) { lines.push("non-finite values (inf or NaN) at this token"); }
    if (current !== null) { lines.push(valuesAt(current, i)); }
    lines.push(data.meta.dataset ? "strongest here (|a| / the neuron's largest):" : "largest |a| here:");
    data.top[i].slice(0, 5).forEach(function (pair) {
      lines.push("  " + pair[0] + "  a " + pairText(pair) + (strengthText(pair) ? "  strength " + strengthText(pair) : ""));
    });
    box.textContent = lines.join("\n");
    box.hidden = false;
  }
  function pick(i) {
    if (spans[picked]) { spans[picked].classList.remove("picked"); }
    picked = i;
    spans[i].classList.add("picked");
    var view = document.getElementById("token");
    view.textContent = "";
    view.appendChild(el("h2", {text: "Token " + globals[i] + ": " + JSON.stringify(data.tokens[i])}));
    if (current !== null) { view.appendChild(el("p", {text: valuesAt(current, i)})); }
    view.appendChild(el("p", {"class": "meta",
      text: "its top " + data.top[i].length + " neurons by " + rankedBy() + filterText() + " (click another token)"}));
    var body = el("tbody"), strengths = !!data.meta.dataset;
    data.top[i].forEach(function (pair, rank) {
      body.appendChild(el("tr", {}, [el("td", {"class": "num", text: String(rank + 1)}), el("td", {}, [neuronLink(pair[0])]),
        el("td", {"class": "num", text: pairText(pair)})].concat(strengths ? [el("td", {"class": "num", text: strengthText(pair)})] : [])));
    });
    var head = ["#", "neuron", "a"].concat(strengths ? ["strength"] : []);
    view.appendChild(el("table", {}, [el("thead", {}, [el("tr", {}, head.map(function (h) { return el("th", {text: h}); }))]), body]));
  }
  function filterText() {
    var f = data.meta.filters, parts = [];
    if (f.layers) { parts.push("layers " + f.layers.join(", ")); }
    if (f.classes.length) { parts.push("classes " + f.classes.join(", ")); }
    if (f.roles.length) { parts.push("roles " + f.roles.join(", ")); }
    return parts.length ? " among " + parts.join("; ") : "";
  }

  // ---- the whole text
  function wholeText() {
    var box = el("section", {id: "whole"}), m = data.meta;
    box.appendChild(el("h2", {text: m.dataset ? "Neurons that fire most on this text, relative to " + m.dataset :
      "Neurons with the largest a on this text"}));
    box.appendChild(el("p", {"class": "meta", text: (m.dataset ? "ranked by the percentile of their largest a here among " +
      "their activations on " + m.dataset + " (the middle of its histogram bin), then by that a over the dataset's largest" :
      "ranked by their largest a (give --datadir for percentiles)") + filterText()}));
    var head = ["neuron", "largest a", "at token"].concat(m.dataset ? ["percentile on " + m.dataset, "dataset's largest a"] : []);
    var body = el("tbody");
    data.text_top.forEach(function (row) {
      var at = local[row.token], token = at === undefined ? el("span", {text: row.token + " (not on this page)"}) :
        el("a", {href: "#", text: row.token + " " + JSON.stringify(data.tokens[at])});
      if (at !== undefined) { token.addEventListener("click", function (event) { event.preventDefault(); pick(at); }); }
      var a = row.a === null ? "= " + row.non_finite + " (non-finite)" : fmt(row.a);
      var cells = [el("td", {}, [neuronLink(row.neuron)]), el("td", {"class": "num", text: a}), el("td", {}, [token])];
      if (m.dataset) {
        cells.push(el("td", {"class": "num", text: ordinal(row.percentile)}));
        cells.push(el("td", {"class": "num", text: fmt(row.dataset_max)}));
      }
      body.appendChild(el("tr", {}, cells));
    });
    box.appendChild(el("table", {}, [el("thead", {}, [el("tr", {}, head.map(function (h) { return el("th", {text: h}); }))]), body]));
    return box;
  }

  function start(payload) {
    data = payload;
    positions();
    header();
    var main = document.getElementById("probe"), names = Object.keys(data.neurons);
    main.appendChild(controls());
    main.appendChild(textBox());
    main.appendChild(el("section", {id: "token"}));
    main.appendChild(wholeText());
    if (names.length) { colourBy(names[0]); } else if (spans.length) { pick(0); }
    document.getElementById("status").textContent = "";
  }

  return {start: start};
})();
