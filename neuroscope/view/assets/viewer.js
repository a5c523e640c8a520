"use strict";
// The renderer of a neuron's view (neuroscope/view/neuron_view.py), for the viewer and for single pages. The viewer's
// data files in data/ are scripts that call neuroscope.<part>(...), loaded with <script> tags (works from
// file://); a single page (vis.html) carries the same calls inline, before neuroscope.start(). Dataset text only
// ever enters the page as text nodes.
var neuroscope = (function () {
  // the data's format (neuroscope/view/parts.py: SCHEMA, written into the page): per part the type of its object, per
  // type its keys [key, kind, required, nullable], and what each array dtype is read as
  var SCHEMA = VIEW_SCHEMA;
  var PAGE_ROWS = 100;
  var NUMERIC = ["kurtosis", "skew", "max", "min", "mean", "gate_open"];
  var LABELS = {kurtosis: "kurtosis", skew: "skew", max: "max", min: "min", mean: "mean", gate_open: "gate open"};
  var KIND_TITLES = {"max": "Max activations", "min": "Min activations"};
  var data = {meta: null, index: null, vocab: null, docs: {}, layers: {}, search: {}, top: {}};
  var loading = {};
  var table = {sort: "id", descending: false, page: 0, orders: {}};

  // ---- data files: each one call neuroscope.<part>(...) that names its file (fileOf); meta.js records the checksum of
  // each (neuroscope/view/checksums.py) and of itself. A file's data is used only once it is the file that was asked for and
  // its checksum is the meta's; else `faults` says, by file, what is wrong with it, and the page shows that
  var faults = {}, arrived = {}, missing = {};
  function load(name) {  // a promise that settles once the file's script ran or failed to load (`loaded` says how)
    if (!loading[name]) {
      loading[name] = new Promise(function (resolve) {
        var script = document.createElement("script");
        script.src = "data/" + name + ".js";
        script.onload = function () { loaded(name, true); resolve(); };
        script.onerror = function () { loaded(name, false); resolve(); };
        document.head.appendChild(script);
      });
    }
    return loading[name];
  }
  function loaded(name, ran) {  // a data file's script ran (or did not load): a fault where it did not call neuroscope
    if (!ran) { missing[name] = true; fault(name, "did not load (missing or not a script)"); }
    else if (!arrived[name]) { fault(name, "cut short or does not parse (its script ran without calling neuroscope." + partOf(name) + ")"); }
  }
  function fault(name, what) { if (!faults[name]) { faults[name] = "data/" + name + ".js: " + what; } }
  function checked(names) {  // the files are here and whole: else an error naming the first one that is not
    names.forEach(function (name) {
      if (faults[name]) { throw new Error(faults[name]); }
      if (!arrived[name]) { throw new Error("data/" + name + ".js: did not load (missing or not a script)"); }
    });
  }
  function partOf(name) { return name.replace(/_.*$/, ""); }
  function fileOf(part, args) {  // the file a call belongs in (viewer.part_file)
    if (part === "docs" || part === "search" || part === "top") { return part + "_" + args[0]; }
    if (part === "layer") { return "layer_" + args[0] + (args.length > 2 ? "_" + args[2] : ""); }
    return part;
  }
  function titleOf(name) {  // what a file holds, in words (viewer.part_title)
    var m = /^(layer|docs|search|top)_(\d+)(?:_(\d+))?$/.exec(name);
    var titles = {meta: "the meta", index: "the index", vocab: "the vocabulary"};
    if (!m) { return titles[name] || name; }
    var what = {layer: "layer ", docs: "documents ", search: "the search by token, part ", top: "the search by token's strongest hits, part "}[m[1]];
    return what + m[2] + (m[3] ? " chunk " + m[3] : "");
  }
  function runningFile() {  // the data file whose script runs now (null: data inline in a single page)
    var script = document.currentScript, m = script && script.src ? /\/data\/([^\/?#]+)\.js$/.exec(script.src) : null;
    return m ? decodeURIComponent(m[1]) : null;
  }
  function callFault(part, args, file) {  // what is wrong with a call of a data file, or ""
    var what = sealFault(part, args, file), type = SCHEMA.parts[part];
    if (what || !type) { return what; }
    var shape = shapeFault(payloadOf(part, args), type, true);
    return shape ? "does not fit this page's data format (" + shape + "; a file of another version?)" : "";
  }
  function payloadOf(part, args) { return args[["layer", "docs", "search", "top"].indexOf(part) >= 0 ? 1 : 0]; }
  // what in `value` does not fit the type `type` of SCHEMA, or "" (`top`: the part itself, which may carry its arrays'
  // DEFLATE stream)
  function shapeFault(value, type, top) {
    if (!value || typeof value !== "object" || Array.isArray(value)) { return type + ": not an object"; }
    var fields = SCHEMA.types[type], known = Object.create(null), faults = [];
    fields.forEach(function (f) {
      known[f[0]] = true;
      if (value[f[0]] === undefined) { if (f[2]) { faults.push(type + ": missing " + f[0]); } return; }
      var fault = value[f[0]] === null ? (f[3] ? "" : "null") : kindFault(value[f[0]], f[1]);
      if (fault) { faults.push(type + "." + f[0] + ": " + fault); }
    });
    Object.keys(value).forEach(function (key) {
      if (!known[key] && !(top && key === "deflate")) { faults.push(type + ": a key it does not have, " + key); }
    });
    return faults.join("; ");
  }
  var JSON_KINDS = {int: Number.isSafeInteger, number: function (v) { return typeof v === "number"; },
    str: function (v) { return typeof v === "string"; }, bool: function (v) { return typeof v === "boolean"; },
    list: Array.isArray, object: function (v) { return v !== null && typeof v === "object" && !Array.isArray(v); }};
  function kindFault(value, kind) {  // one field that is not null (parts.field_kind's kinds)
    if (kind === "json") { return ""; }
    if (JSON_KINDS[kind]) { return JSON_KINDS[kind](value) ? "" : "not of kind " + kind; }
    if (!value || typeof value !== "object" || Array.isArray(value)) { return "not an object"; }
    if (kind === "array") {
      var keys = Object.keys(value).sort().join(",");
      return Object.prototype.hasOwnProperty.call(SCHEMA.dtypes, value.dtype) &&
        ((keys === "b64,dtype" && typeof value.b64 === "string") || (keys === "dtype,z" && Array.isArray(value.z))) ? "" : "not an array";
    }
    var each = kind === "arrays" ? function (v) { return kindFault(v, "array"); } :
      /\{\}$/.test(kind) ? function (v) { return shapeFault(v, kind.slice(0, -2)); } : null;
    if (!each) { return shapeFault(value, kind); }
    return Object.keys(value).map(function (key) { return each(value[key]); }).filter(Boolean).join("; ");
  }
  function sealFault(part, args, file) {  // the call names its file, and its checksum is the meta's
    var name = fileOf(part, args), sums = data.meta && data.meta.checksums;
    if (name !== file) { return "holds " + titleOf(name) + ", not " + titleOf(file) + " (the data of " + name + ".js)"; }
    if (part === "meta") { return metaFault(args[0]); }
    if (!data.meta) { return "arrived before data/meta.js, which vouches for it"; }
    if (!sums) { return ""; }  // a viewer written before checksums: unverified (begin says so)
    if (!Object.prototype.hasOwnProperty.call(sums, name)) { return "not a file of this viewer (its meta.js lists no " + name + ".js)"; }
    return sumFault(checksum([part].concat(args)), sums[name]);
  }
  function metaFault(m) {  // a meta with checksums checks itself (one without: a viewer written before them)
    if (!m || (m.checksum === undefined && m.checksums === undefined)) { return ""; }
    var rest = {};
    Object.keys(m).forEach(function (key) { if (key !== "checksum") { rest[key] = m[key]; } });
    return sumFault(checksum(["meta", rest]), m.checksum);
  }
  function sumFault(seen, recorded) {
    function hex(n) { return typeof n === "number" ? ("0000000" + n.toString(16)).slice(-8) : String(n); }
    return seen === recorded ? "" : "checksum mismatch (damaged after it was written): CRC-32 " + hex(seen) + ", its meta.js records " + hex(recorded);
  }
  // a call of a data file: `use` it where the file is the one asked for and whole, else record the fault
  function receive(part, args, use) {
    var file = runningFile() || fileOf(part, args), what = callFault(part, args, file);
    arrived[file] = true;
    if (what) { fault(file, what); return; }
    try { use(); } catch (error) { fault(file, "does not unpack (" + error.message + ")"); }
  }
  function bytes(b64) {
    if (Uint8Array.fromBase64) { return Uint8Array.fromBase64(b64).buffer; }  // native where the browser has it
    var text = atob(b64), out = new Uint8Array(text.length);
    for (var i = 0; i < text.length; i++) { out[i] = text.charCodeAt(i); }
    return out.buffer;
  }
  function half(bits) {  // IEEE binary16 -> number
    var exponent = (bits >> 10) & 31, fraction = bits & 1023, sign = bits & 32768 ? -1 : 1;
    if (exponent === 0) { return sign * fraction * Math.pow(2, -24); }
    if (exponent === 31) { return fraction ? NaN : sign * Infinity; }
    return sign * (1 + fraction / 1024) * Math.pow(2, exponent - 15);
  }
  // an array {dtype, b64}, or {dtype, z: [start, length]} within `deflatedBytes` (a data file's "deflate" stream, inflated)
  function unpack(p, deflatedBytes) {
    var buffer = p.z ? deflatedBytes.slice(p.z[0], p.z[0] + p.z[1]).buffer : bytes(p.b64), kind = SCHEMA.dtypes[p.dtype];
    if (kind !== "float16") { return new globalThis[kind](buffer); }
    var raw = new Uint16Array(buffer), out = new Float32Array(raw.length);
    for (var i = 0; i < raw.length; i++) { out[i] = half(raw[i]); }
    return out;
  }
  function decodeActs(L) {  // 8-bit activations (neuron_view.act_codes): a = code * its window's scale
    if (!L.act_codes) { return L; }
    var acts = new Float32Array(L.act_codes.length);
    for (var i = 0; i < acts.length; i++) { acts[i] = L.act_codes[i] * L.act_scales[Math.floor(i / L.width)]; }
    L.acts = acts;
    return L;
  }
  // a part (`type`: its type in SCHEMA) with its arrays unpacked into typed arrays, by the kinds of its fields
  function unpackAll(object, type, deflatedBytes) {
    var out = {};
    if (object.deflate && !deflatedBytes) { deflatedBytes = inflate(new Uint8Array(bytes(object.deflate.b64)), object.deflate.bytes); }
    function each(value, unpackOne) {
      var unpacked = {};
      Object.keys(value).forEach(function (key) { unpacked[key] = unpackOne(value[key]); });
      return unpacked;
    }
    SCHEMA.types[type].forEach(function (f) {
      var key = f[0], kind = f[1], value = object[key];
      if (value === undefined) { return; }
      out[key] = value === null || kind === "json" || JSON_KINDS[kind] ? value :
        kind === "array" ? unpack(value, deflatedBytes) :
        kind === "arrays" ? each(value, function (v) { return unpack(v, deflatedBytes); }) :
        /\{\}$/.test(kind) ? each(value, function (v) { return unpackAll(v, kind.slice(0, -2), deflatedBytes); }) :
        unpackAll(value, kind, deflatedBytes);
    });
    return out;
  }

  var el = draw.el, fmt = draw.fmt, percent = draw.percent, signed = draw.signed;
  // the classes as the run's --naming shows them (gated_core/naming.py): the data keeps the paper's words, the meta's
  // `naming_words` (where the run used another naming) says which word to show for which
  function named(text) {
    var words = data.meta && data.meta.naming_words;
    if (!words) { return text; }
    return String(text).replace(/(^|[^A-Za-z])(enrichment|depletion)(?![A-Za-z])/gi, function (all, before, word) {
      var shown = words[word.toLowerCase()] || word;
      shown = word === word.toUpperCase() ? shown.toUpperCase() : word[0] === word[0].toUpperCase() ? shown[0].toUpperCase() + shown.slice(1) : shown;
      return before + shown;
    });
  }
  function className(code) { return named(data.meta.class_names[code]); }
  function name(layer, neuron) { return layer + "." + neuron; }
  function tokenText(id) {
    var text = data.vocab[id];
    return text === undefined ? "?" : text;
  }

  // ---- the index: its columns as typed arrays, a row per neuron in ascending id (neuron_view.index_payload); each
  // order of the table (column, direction) is sorted once, natively, and kept; a filter is one pass over an order
  var ORDER_BITS = 21;  // the low bits of a packed sort key number the rows (2^21 > 352,256, the neurons of OLMo-7B)
  var FLOAT = new Float32Array(1), BITS = new Uint32Array(FLOAT.buffer);
  function buildRows() {
    var ix = data.index, d = data.meta.d_mlp, n = ix.ids.length;
    ix.layer = new Int32Array(n);
    ix.neuron = new Int32Array(n);
    for (var i = 0; i < n; i++) {
      if (i && ix.ids[i] <= ix.ids[i - 1]) { throw new Error("its neurons are not in ascending order (row " + i + ")"); }
      ix.layer[i] = Math.floor(ix.ids[i] / d);
      ix.neuron[i] = ix.ids[i] % d;
    }
    table.orders = {};
  }
  function rowCount() { return data.index.ids.length; }
  function rowAt(i) {  // one row of the index as an object
    var ix = data.index, row = {id: ix.ids[i], layer: ix.layer[i], neuron: ix.neuron[i], io_class: ix.io_class[i], roles: ix.roles[i]};
    NUMERIC.forEach(function (k) { row[k] = ix[k][i]; });
    return row;
  }
  function sortKey(value) {  // the order of a float32 as an unsigned 32-bit integer (NaN after +Infinity)
    FLOAT[0] = value;
    var bits = BITS[0];
    return bits & 0x80000000 ? (~bits) >>> 0 : (bits | 0x80000000) >>> 0;
  }
  function order(key, descending) {  // the rows sorted by column `key` (ties by id, ascending), sorted once
    var name = key + (descending ? " descending" : " ascending");
    if (!table.orders[name]) { table.orders[name] = sortedRows(key, descending); }
    return table.orders[name];
  }
  function sortedRows(key, descending) {
    var n = rowCount(), rows = new Int32Array(n), column = data.index[key], i;
    for (i = 0; i < n; i++) { rows[i] = key === "id" && descending ? n - 1 - i : i; }
    if (key === "id") { return rows; }
    if (n >= 1 << ORDER_BITS) {  // more rows than a packed key numbers: a comparison sort
      var sign = descending ? -1 : 1;
      return rows.sort(function (a, b) { return sign * (sortKey(column[a]) - sortKey(column[b])) || a - b; });
    }
    var keys = new Float64Array(n), scale = 1 << ORDER_BITS;  // (key of the value) * 2^ORDER_BITS + row: exact below 2^53
    for (i = 0; i < n; i++) { keys[i] = (descending ? 0xFFFFFFFF - sortKey(column[i]) : sortKey(column[i])) * scale + i; }
    keys.sort();
    for (i = 0; i < n; i++) { rows[i] = keys[i] % scale; }
    return rows;
  }
  function select(id, label, options) {
    var box = el("select", {id: id}, [el("option", {value: "", text: "all"})]);
    options.forEach(function (o) { box.appendChild(el("option", {value: String(o[0]), text: o[1]})); });
    return el("label", {}, [document.createTextNode(label + " "), box]);
  }
  function buildFilters() {
    var form = document.getElementById("filters"), meta = data.meta;
    form.appendChild(select("f-layer", "layer", meta.layers.map(function (l) { return [l, String(l)]; })));
    form.appendChild(select("f-class", "IO class", meta.class_names.map(function (c, i) { return [i, named(c)]; })));
    form.appendChild(select("f-role", "role", meta.role_names.map(function (r, i) { return [i, r.replace(/_/g, " ")]; })));
    NUMERIC.forEach(function (key) {
      form.appendChild(el("label", {}, [document.createTextNode(LABELS[key] + " ≥ "),
        el("input", {id: "f-" + key + "-low", type: "number", step: "any"}), document.createTextNode(" ≤ "),
        el("input", {id: "f-" + key + "-high", type: "number", step: "any"})]));
    });
    form.addEventListener("input", function () { table.page = 0; renderTable(); remember(); });
    form.addEventListener("submit", function (event) { event.preventDefault(); });
    var head = document.getElementById("table-head");
    [["id", "neuron"], ["io_class", "IO class"], ["roles", "roles"]].concat(NUMERIC.map(function (k) { return [k, LABELS[k]]; }))
      .forEach(function (column) {
        var th = el("th", {"class": "sortable", text: column[1], "data-key": column[0]});
        th.addEventListener("click", function () {
          table.descending = table.sort === column[0] ? !table.descending : NUMERIC.indexOf(column[0]) >= 0;
          table.sort = column[0];
          renderTable();
          remember();
        });
        head.appendChild(th);
      });
    document.getElementById("page-prev").addEventListener("click", function () { table.page -= 1; renderTable(); });
    document.getElementById("page-next").addEventListener("click", function () { table.page += 1; renderTable(); });
  }
  // the index's filters and order live in the hash (#?layer=3&io_class=7&kurtosis_low=5&sort=max&descending=1),
  // so that a filtered index can be linked to
  function filterIds() {
    return ["layer", "io_class", "role"].concat(NUMERIC.map(function (k) { return k + "_low"; }), NUMERIC.map(function (k) { return k + "_high"; }));
  }
  function controlOf(key) {
    return document.getElementById({layer: "f-layer", io_class: "f-class", role: "f-role"}[key] || "f-" + key.replace(/_(low|high)$/, "-$1"));
  }
  function remember() {
    var parts = filterIds().filter(function (key) { return controlOf(key).value !== ""; }).map(function (key) {
      return key + "=" + encodeURIComponent(controlOf(key).value);
    });
    if (table.sort !== "id") { parts.push("sort=" + table.sort, "descending=" + (table.descending ? 1 : 0)); }
    history.replaceState(null, "", "#?" + parts.concat(tokenParts()).join("&"));
  }
  function restore(query) {
    filterIds().forEach(function (key) { controlOf(key).value = ""; });
    query.split("&").forEach(function (pair) {
      var kv = pair.split("="), key = kv[0], text = decoded(kv[1] || "");
      if (text === null) { return; }  // a malformed %-escape: this part of the address is left out
      if (key === "sort" && ["id", "io_class", "roles"].concat(NUMERIC).indexOf(text) >= 0) { table.sort = text; }
      else if (key === "descending") { table.descending = text === "1"; }
      else if (filterIds().indexOf(key) >= 0) { controlOf(key).value = text; }
    });
    restoreTokenSearch(query);
  }
  function value(id) {
    var text = document.getElementById(id).value;
    return text === "" ? null : Number(text);
  }
  function filtered() {  // the rows that pass the filters, in the table's order
    var ix = data.index, layer = value("f-layer"), cls = value("f-class"), role = value("f-role"), bit = role === null ? 0 : 1 << role;
    var bounds = NUMERIC.map(function (k) { return [ix[k], value("f-" + k + "-low"), value("f-" + k + "-high")]; })
      .filter(function (b) { return b[1] !== null || b[2] !== null; });
    var rows = order(table.sort, table.descending), out = new Int32Array(rows.length), count = 0;
    for (var i = 0; i < rows.length; i++) {
      var r = rows[i], keep = (layer === null || ix.layer[r] === layer) && (cls === null || ix.io_class[r] === cls) && (!bit || ix.roles[r] & bit);
      for (var b = 0; keep && b < bounds.length; b++) {
        var v = bounds[b][0][r];
        keep = (bounds[b][1] === null || v >= bounds[b][1]) && (bounds[b][2] === null || v <= bounds[b][2]);
      }
      if (keep) { out[count++] = r; }
    }
    return out.subarray(0, count);
  }
  function drawOverview() {  // the model at a glance (overview.js): classes and gate-open frequency per layer
    var box = document.getElementById("overview");
    box.appendChild(el("h2", {text: "The model at a glance: the " + rowCount() + " neurons of this viewer by layer"}));
    box.appendChild(overview.draw(data.index, data.meta.layers, data.meta.class_names.map(named), CLASS_COLOURS));
  }
  function roleList(bits) {
    return data.meta.role_names.filter(function (r, i) { return bits & (1 << i); }).map(function (r) { return r.replace(/_/g, " "); });
  }
  function renderTable() {
    var rows = filtered(), key = table.sort;
    var pages = Math.max(1, Math.ceil(rows.length / PAGE_ROWS));
    table.page = Math.max(0, Math.min(table.page, pages - 1));
    document.getElementById("count").textContent = rows.length + " of " + rowCount() + " neurons";
    document.getElementById("page").textContent = "page " + (table.page + 1) + " of " + pages;
    Array.prototype.forEach.call(document.querySelectorAll("#table-head th"), function (th) {
      var label = th.textContent.replace(/ [▲▼]$/, "");
      th.textContent = th.getAttribute("data-key") === key ? label + (table.descending ? " ▼" : " ▲") : label;
    });
    var body = document.getElementById("table-body");
    body.textContent = "";
    Array.prototype.map.call(rows.subarray(table.page * PAGE_ROWS, (table.page + 1) * PAGE_ROWS), rowAt).forEach(function (r) {
      var tr = el("tr", {"class": "row"}, [el("td", {}, [el("a", {href: "#" + name(r.layer, r.neuron), text: name(r.layer, r.neuron)})]),
        el("td", {text: className(r.io_class)}), el("td", {text: roleList(r.roles).join(", ")})]);
      NUMERIC.forEach(function (k) { tr.appendChild(el("td", {"class": "num", text: k === "gate_open" ? percent(r[k]) : fmt(r[k])})); });
      body.appendChild(tr);
    });
  }

  // ---- search by token, ranked: every (neuron, token, source) hit of the vocabulary's tokens that contain the text in
  // the token box (or equal it), strongest first. A hit's strength is its value relative to the neuron's own largest
  // of that kind (search_index: |a| / the neuron's largest |a|; a table's weight / the largest over the vocabulary);
  // ties by source (in the order of `sources`: activations first), then token and neuron. One group of hits is listed
  // at a time: the activations (examples) where there are any, else every kind, or the one chosen. The hits are in
  // runs (token, group), strongest first: each run's first meta.search_top hits (a page) in data/top_<shard>.js with
  // every run's count, the rest in data/search_<shard>.js; the first page of a search is among the top hits, so it
  // loads only the top shards of the tokens searched, and a later page the other shards of the tokens that have more.
  // A hit is named by a reference (shard * 2 + 1 for the rest) * 2^32 + entry. The search lives in the hash too
  // (#?token=%20M&nocase=1&exact=1&group=all&tpage=2)
  var CONTEXT_TOKENS = [8, 3];  // tokens shown before and after an example's token
  var SHARD = 4294967296;  // 2^32
  var tokenView = {page: 0, group: "", key: ""};
  function tokenPage() { return data.meta.search_top; }  // hits a page: each run's hits in the top files
  function tokenQuery() {
    return {text: document.getElementById("token-box").value, nocase: document.getElementById("token-nocase").checked,
      exact: document.getElementById("token-exact").checked};
  }
  function tokenParts() {
    var q = tokenQuery();
    if (!q.text) { return []; }
    return ["token=" + encodeURIComponent(q.text)].concat(q.nocase ? ["nocase=1"] : [], q.exact ? ["exact=1"] : [],
      tokenView.group ? ["group=" + encodeURIComponent(tokenView.group)] : [], tokenView.page ? ["tpage=" + (tokenView.page + 1)] : []);
  }
  function restoreTokenSearch(query) {
    var q = {token: "", nocase: "", exact: "", group: "", tpage: ""};
    query.split("&").forEach(function (pair) {
      var at = pair.indexOf("="), key = at < 0 ? pair : pair.slice(0, at), text = decoded(at < 0 ? "" : pair.slice(at + 1));
      if (text !== null && Object.prototype.hasOwnProperty.call(q, key)) { q[key] = text; }
    });
    document.getElementById("token-box").value = q.token;
    document.getElementById("token-nocase").checked = q.nocase === "1";
    document.getElementById("token-exact").checked = q.exact === "1";
    tokenView.group = q.group;
    tokenView.page = /^[1-9]\d{0,6}$/.test(q.tpage) ? Number(q.tpage) - 1 : 0;
  }
  function tokenWantedAtStart() { return /^#\?(.*&)?token=[^&]/.test(location.hash); }
  function matchingTokens(q) {  // the ids of the vocabulary's tokens that contain (or equal) the text, ascending
    var wanted = q.nocase ? q.text.toLowerCase() : q.text, found = [];
    for (var id = 0; id < data.vocab.length; id++) {
      var text = q.nocase ? String(data.vocab[id]).toLowerCase() : String(data.vocab[id]);
      if (q.exact ? text === wanted : text.indexOf(wanted) >= 0) { found.push(id); }
    }
    return found;
  }
  function shardOf(firsts, token) {  // the shard whose tokens [first, next first) hold a token (firsts: the meta's)
    var low = 0, high = firsts.length - 1;
    while (low < high) { var mid = (low + high + 1) >> 1; if (firsts[mid] <= token) { low = mid; } else { high = mid - 1; } }
    return low;
  }
  function topOf(token) { var shard = shardOf(data.meta.top_shards, token); return {shard: shard, s: data.top[shard]}; }
  function restOf(token) { var shard = shardOf(data.meta.search_shards, token); return {shard: shard, s: data.search[shard]}; }
  function groupNames(s) {  // the groups in the order of their sources (search_index.GROUP_NAMES)
    var names = [];
    s.groups.forEach(function (g) { if (names.indexOf(g) < 0) { names.push(g); } });
    return names;
  }
  function unloaded(names) {
    return Object.keys(names).filter(function (f) { var m = /^(top|search)_(\d+)$/.exec(f); return !data[m[1]][Number(m[2])]; });
  }
  function topFiles(tokens) {  // the top files of the tokens not yet loaded
    var names = {};
    tokens.forEach(function (t) { names["top_" + shardOf(data.meta.top_shards, t)] = true; });
    return unloaded(names);
  }
  // each run of the tokens' hits in a group ("all": every group), in gathering order (by token, group, rank): the top
  // hits, then (`complete`) the rest; visit(s, from, to, base) for each
  function eachRun(tokens, group, complete, visit) {
    tokens.forEach(function (t) {
      var top = topOf(t), s = top.s, names = groupNames(s), local = (t - s.first) * names.length;
      names.forEach(function (g, i) {
        if (group !== "all" && g !== group) { return; }
        var from = s.offsets[local + i], to = s.offsets[local + i + 1];
        visit(s, from, to, top.shard * 2 * SHARD);
        if (complete && hasRest(s, local + i)) {
          var rest = restOf(t), r = rest.s, at = (t - r.first) * names.length + i;
          visit(r, r.offsets[at], r.offsets[at + 1], (rest.shard * 2 + 1) * SHARD);
        }
      });
    });
  }
  function hasRest(s, run) { return s.counts[run] > s.offsets[run + 1] - s.offsets[run]; }  // a top file's run has more
  function restFiles(tokens, group) {  // the other files of the tokens that have more hits in the group, not yet loaded
    var names = {};
    tokens.forEach(function (t) {
      var s = topOf(t).s, groups = groupNames(s), local = (t - s.first) * groups.length;
      groups.forEach(function (g, i) {
        if ((group === "all" || g === group) && hasRest(s, local + i)) {
          names["search_" + shardOf(data.meta.search_shards, t)] = true;
        }
      });
    });
    return unloaded(names);
  }
  function summary(tokens) {  // the hits of every group, of each group, the (neuron, token) pairs: from the top files
    var out = {count: 0, groups: {}, pairs: 0, neurons: null};
    tokens.forEach(function (t) {
      var s = topOf(t).s, names = groupNames(s), local = t - s.first;
      names.forEach(function (g, i) { var n = s.counts[local * names.length + i]; out.groups[g] = (out.groups[g] || 0) + n; out.count += n; });
      out.pairs += s.pairs[local];
    });
    if (tokens.length <= 1) { out.neurons = out.pairs; }
    return out;
  }
  function neuronCount(tokens) {  // the neurons of the tokens' hits, once every file they are in is loaded (else null)
    if (restFiles(tokens, "all").length) { return null; }
    var seen = new Uint8Array(data.meta.n_layers * data.meta.d_mlp), count = 0;
    eachRun(tokens, "all", true, function (s, from, to) {
      for (var e = from; e < to; e++) { if (!seen[s.neurons[e]]) { seen[s.neurons[e]] = 1; count += 1; } }
    });
    return count;
  }
  function gathered(tokens, group, complete) {  // references, strengths, sources of the hits in gathering order
    var total = 0, kept = 0;
    eachRun(tokens, group, complete, function (s, from, to) { total += to - from; });
    var out = {refs: new Float64Array(total), strengths: new Float32Array(total), sources: new Uint8Array(total)};
    eachRun(tokens, group, complete, function (s, from, to, base) {
      for (var e = from; e < to; e++) { out.refs[kept] = base + e; out.sources[kept] = s.source[e]; out.strengths[kept++] = s.strength[e]; }
    });
    return out;
  }
  function shownGroup(hits) {  // the group listed: the one chosen, else activations where there are any, else all
    if (tokenView.group && (tokenView.group === "all" || hits.groups[tokenView.group] !== undefined)) { return tokenView.group; }
    return hits.groups.activation ? "activation" : "all";
  }
  function rankedHits(group, complete) {  // the references of the hits of a group, strongest first (kept)
    var key = group + (complete ? "|complete" : "|top");
    if (!tokenView.ranked[key]) {
      var started = performance.now(), hits = gathered(tokenView.tokens, group, complete), gathering = performance.now();
      tokenView.ranked[key] = strongestFirst(hits.refs, hits.strengths, hits.sources);
      tokenView.ms = {gather: gathering - started, rank: performance.now() - gathering};
    }
    return tokenView.ranked[key];
  }
  // hits gathered by token (each token's by strength, source, neuron): sorted by strength, then source, stably. The
  // strengths are float16 values: as float32 their low 13 bits are 0, so the key is the top 19 bits of their order
  // (sortKey), the source's 4 bits and the place's ORDER_BITS, exact below 2^53
  function strongestFirst(refs, strengths, sources) {
    var n = refs.length, out = new Float64Array(n), i;
    if (n >= 1 << ORDER_BITS) {  // more than a packed key numbers: a comparison sort of the places
      var places = Array.from({length: n}, function (v, j) { return j; });
      places.sort(function (a, b) { return strengths[b] - strengths[a] || sources[a] - sources[b] || a - b; });
      for (i = 0; i < n; i++) { out[i] = refs[places[i]]; }
      return out;
    }
    var keys = new Float64Array(n), scale = 1 << ORDER_BITS;
    for (i = 0; i < n; i++) { keys[i] = ((0x7FFFF - (sortKey(strengths[i]) >>> 13)) * 16 + sources[i]) * scale + i; }
    keys.sort();
    for (i = 0; i < n; i++) { out[i] = refs[keys[i] % scale]; }
    return out;
  }
  function hitAt(ref) {  // a hit's shard data and entry
    var file = Math.floor(ref / SHARD), shard = file >> 1;
    return {s: file & 1 ? data.search[shard] : data.top[shard], e: ref - file * SHARD};
  }
  function hitValue(h) {  // "a +6.80" for an example, "weight +0.412" for a table
    var v = h.s.value[h.e], example = h.s.groups[h.s.source[h.e]] === "activation";
    return (example ? "a " : "weight ") + (isNaN(v) ? "not in this viewer" : plus(v, 3));
  }
  function tokenRow(ref) {  // strength · neuron · source · value · "token" · its context (examples: filled in once loaded)
    var h = hitAt(ref), s = h.s, e = h.e, d = data.meta.d_mlp, label = name(Math.floor(s.neurons[e] / d), s.neurons[e] % d);
    var token = s.first + Math.floor((sortedIndex(s.offsets, e + 1) - 1) / groupNames(s).length);  // the run that holds it
    return el("li", {"class": "token-hit", "data-ref": String(ref)}, [el("span", {"class": "num strength", text: s.strength[e].toFixed(3)}),
      document.createTextNode(" "), el("a", {href: "#" + label, text: label}), document.createTextNode(" · "),
      el("span", {"class": "source", text: s.sources[s.source[e]]}), document.createTextNode(" · "),
      el("span", {"class": "num value", text: hitValue(h)}), document.createTextNode(" "),
      el("code", {text: JSON.stringify(tokenText(token))}), el("span", {"class": "context"})]);
  }
  function fillContexts(list) {  // each example's token in its text, once the documents it lies in are here
    var rows = Array.prototype.slice.call(list.querySelectorAll("li[data-ref]")).map(function (li) {
      var h = hitAt(Number(li.getAttribute("data-ref")));
      return {box: li.querySelector(".context"), doc: h.s.doc[h.e], position: h.s.position[h.e]};
    }).filter(function (row) { return row.doc >= 0; });
    var files = {};
    rows.forEach(function (row) { files["docs_" + chunkOf(row.doc)] = true; });
    return Promise.all(Object.keys(files).map(load)).then(function () {
      rows.forEach(function (row) {
        var file = "docs_" + chunkOf(row.doc);
        if (faults[file] || !data.docs[chunkOf(row.doc)]) { row.box.textContent = " (" + (faults[file] || file + " did not load") + ")"; return; }
        row.box.appendChild(contextOf(row.doc, row.position));
      });
    });
  }
  function contextOf(doc, position) {  // "…text [token] text…", the token marked, the text as text nodes
    var tokens = docTokens(doc), from = Math.max(0, position - CONTEXT_TOKENS[0]), to = Math.min(tokens.length, position + CONTEXT_TOKENS[1] + 1);
    var parts = [document.createTextNode(" · " + (from > 0 ? "…" : ""))];
    for (var p = from; p < to; p++) {
      var text = draw.shown(tokenText(tokens[p])).replace(/\n/g, "");
      parts.push(p === position ? el("b", {"class": "peak", text: text}) : document.createTextNode(text));
    }
    parts.push(document.createTextNode(to < tokens.length ? "…" : ""));
    return el("span", {"class": "text"}, parts);
  }
  function tokenNote(text) {
    var box = document.getElementById("token-results");
    box.textContent = "";
    box.appendChild(el("p", {id: "token-count", "class": "meta", text: text}));
    return box;
  }
  function groupChoice(hits, group) {  // the groups of hits, each with its count: one group, or all of them
    var box = el("select", {id: "token-group"}, [el("option", {value: "all", text: "every kind (" + hits.count + ")"})]);
    Object.keys(hits.groups).forEach(function (g) { box.appendChild(el("option", {value: g, text: g + " (" + hits.groups[g] + ")"})); });
    box.value = group;
    box.addEventListener("change", function () { tokenView.group = box.value; tokenView.page = 0; remember(); renderTokenSearch(); });
    return el("label", {"class": "meta"}, [document.createTextNode("kind of hit "), box]);
  }
  function tokenPager(count) {
    var size = tokenPage(), pages = Math.max(1, Math.ceil(count / size)), nodes = [];
    tokenView.page = Math.max(0, Math.min(tokenView.page, pages - 1));
    [["token-prev", "← stronger", -1], ["token-next", "weaker →", 1]].forEach(function (b) {
      var button = el("button", {type: "button", id: b[0], text: b[1]});
      button.disabled = tokenView.page + b[2] < 0 || tokenView.page + b[2] >= pages;
      button.addEventListener("click", function () { tokenView.page += b[2]; remember(); renderTokenSearch(); });
      nodes.push(button);
    });
    return el("span", {"class": "pager"}, [nodes[0], el("span", {id: "token-page", text: " hits " + (count ? tokenView.page * size + 1 : 0) +
      "–" + Math.min(count, (tokenView.page + 1) * size) + " of " + count + " (page " + (tokenView.page + 1) + " of " + pages + ") "}), nodes[1]]);
  }
  function counted(n, one, many) { return n + " " + (n === 1 ? one : many || one + "s"); }
  function searchReady(q) {  // the files a search's page needs are here (else they are loaded and it runs again): true
    if (!data.meta.top_shards) {
      tokenNote("this viewer has no ranked token index of this version (data/top_*.js): write it again, or bring it up " +
        "to date with python -m neuroscope.view.viewer_refresh");
      return false;
    }
    if (!data.vocab) { return waitFor(["vocab"]); }
    var key = JSON.stringify([q.text, q.nocase, q.exact]);
    if (tokenView.key !== key) { tokenView.key = key; tokenView.tokens = matchingTokens(q); tokenView.hits = null; tokenView.ranked = {}; }
    var files = topFiles(tokenView.tokens);
    if (files.length) { return waitFor(files); }
    if (!tokenView.hits) { tokenView.hits = summary(tokenView.tokens); }
    files = tokenView.page > 0 ? restFiles(tokenView.tokens, shownGroup(tokenView.hits)) : [];
    return files.length ? waitFor(files) : true;
  }
  function waitFor(files) {
    tokenNote("loading the token index (" + counted(files.length, "file") + ")…");
    Promise.all(files.map(load)).then(function () {
      var problem = files.map(function (f) { return faults[f]; }).filter(Boolean)[0];
      if (problem) { tokenNote("error: " + problem); } else { renderTokenSearch(); }
    });
    return false;
  }
  function renderTokenSearch() {
    var q = tokenQuery(), started = performance.now();
    document.getElementById("token-results").hidden = !q.text;
    if (!q.text || !searchReady(q)) { return; }
    var tokens = tokenView.tokens, hits = tokenView.hits, group = shownGroup(hits), size = tokenPage(), matched = performance.now();
    var count = group === "all" ? hits.count : hits.groups[group] || 0;
    tokenView.page = Math.max(0, Math.min(tokenView.page, Math.ceil(count / size) - 1));
    tokenView.ms = {gather: 0, rank: 0};
    var refs = rankedHits(group, tokenView.page > 0);
    if (hits.neurons === null) { hits.neurons = neuronCount(tokens); }
    var what = (q.exact ? " equal to " : " containing ") + JSON.stringify(q.text) + (q.nocase ? " (any case)" : "");
    var box = tokenNote(counted(tokens.length, "token") + what + " · " + counted(hits.count, "hit") + ": " +
      counted(hits.pairs, "(neuron, token) pair") + (hits.neurons === null ? "" : " in " + counted(hits.neurons, "neuron")) +
      " · strongest first (strength: the value relative to the neuron's own largest of its kind)");
    box.appendChild(el("div", {"class": "token-controls"}, [groupChoice(hits, group), document.createTextNode(" "), tokenPager(count)]));
    var list = el("ol", {id: "token-list", start: String(tokenView.page * size + 1)},
      Array.prototype.map.call(refs.subarray(tokenView.page * size, (tokenView.page + 1) * size), tokenRow));
    box.appendChild(list);
    var ms = tokenView.ms;  // the times of the search's steps (benchmarks/bench_viewer_index.py reads them)
    document.body.setAttribute("data-search-ms", [matched - started, ms.gather, ms.rank, performance.now() - started].join(" "));
    fillContexts(list).catch(fail);
  }
  function tokenSearch(event) {
    event.preventDefault();
    if (document.getElementById("index-view").hidden) { history.pushState(null, "", "#?"); }  // back returns to the neuron
    tokenView.page = 0;
    remember();
    route(false).catch(fail);
  }

  // ---- one neuron
  function docTokens(doc) {
    var chunk = data.docs[chunkOf(doc)], local = chunk.ids ? sortedIndex(chunk.ids, doc) : doc - chunk.first;
    return chunk.tokens.subarray(chunk.starts[local], chunk.starts[local + 1]);
  }
  function sortedIndex(values, wanted) {  // where `wanted` is in ascending `values`
    var low = 0, high = values.length - 1;
    while (low < high) { var mid = (low + high) >> 1; if (values[mid] < wanted) { low = mid + 1; } else { high = mid; } }
    return low;
  }
  function chunkOf(doc) {
    var chunks = data.meta.doc_chunks;
    for (var i = 0; i < chunks.length; i++) { if (doc < chunks[i][1]) { return i; } }
    return chunks.length - 1;
  }
  // the data file of a neuron: "layer_<layer>", or in a layer written in chunks its chunk's "layer_<layer>_<chunk>"
  function layerPart(layer, neuron) {
    var meta = data.meta, chunked = meta.chunked_layers && meta.chunked_layers.indexOf(layer) >= 0;
    return "layer_" + layer + (chunked ? "_" + Math.floor(neuron / meta.neuron_chunk) : "");
  }
  function neuronData(layer, neuron) {
    var L = data.layers[layerPart(layer, neuron)], column = -1;
    for (var i = 0; L && i < L.neurons.length; i++) { if (L.neurons[i] === neuron) { column = i; break; } }
    return column < 0 ? null : {L: L, column: column, layer: layer, neuron: neuron};
  }
  function examplesOf(n, kind) {
    var L = n.L, slot = n.column * data.meta.list_kinds.length + kind, out = [];
    var firstWindow = L.window_offsets[n.column];
    for (var e = L.list_offsets[slot]; e < L.list_offsets[slot + 1]; e++) {
      var w = firstWindow + L.example_window[e];
      out.push({window: w, doc: L.window_doc[w], start: L.window_start[w], length: L.window_length[w], peak: L.example_peak[e],
        value: L.example_value[e], duplicates: L.example_duplicates[e], nextKnown: !!L.example_next, next: L.example_next ? L.example_next[e] : -1,
        effect: L.example_effect ? L.example_effect[e] : NaN, nextRank: L.example_rank ? L.example_rank[e] : 0,
        ablation: L.example_ablation ? L.example_ablation[e] : NaN});
    }
    return out;
  }
  // the coloured tokens of an example [start, stop): its window, or (meta.shown = [before, after]) the
  // before + after + 1 tokens from `before` before the extreme token, within the window (as neuron_view.shown_spans)
  function shownSpan(ex) {
    var shown = data.meta.shown, end = ex.start + ex.length;
    if (!shown) { return [ex.start, end]; }
    var first = Math.max(ex.start + ex.peak - shown[0], ex.start);
    return [first, Math.min(first + shown[0] + shown[1] + 1, end)];
  }
  function valuesAt(n, ex, p) {  // "a 1.2" or "a 1.2 g 0.8 u 1.5" at position p of the example's window
    var L = n.L, at = ex.window * L.width + (p - ex.start), text = "a " + fmt(L.acts[at]);
    return L.gates ? text + " g " + fmt(L.gates[at]) + " u " + fmt(L.lins[at]) : text;
  }
  function exampleText(n, ex, scale, whole) {
    var tokens = docTokens(ex.doc), context = data.meta.context, span0 = shownSpan(ex);
    var coloured = whole ? [ex.start, ex.start + ex.length] : span0;
    var from = whole ? 0 : Math.max(0, span0[0] - context[0]);
    var to = whole ? tokens.length : Math.min(tokens.length, span0[1] + context[1]);
    var box = el("div", {"class": "text"});
    if (from > 0) { box.appendChild(document.createTextNode("… ")); }
    for (var p = from; p < to; p++) {
      var text = tokenText(tokens[p]);
      if (p >= coloured[0] && p < coloured[1]) {
        var a = n.L.acts[ex.window * n.L.width + (p - ex.start)];
        var cls = "t" + (p === ex.start + ex.peak ? " peak" : "");
        var node = draw.token(text, {"class": cls}, a, scale), title = valuesAt(n, ex, p);
        if (title) { node.title = title; }
        box.appendChild(node);
      } else {
        box.appendChild(draw.token(text, {"class": "ctx"}));
      }
    }
    if (to < tokens.length) { box.appendChild(document.createTextNode(" …")); }
    return box;
  }
  function plus(value, digits) { return isNaN(value) ? "–" : (value >= 0 ? "+" : "") + fmt(value, digits); }
  // what the firing does to the token that follows it: short on the meta line, in full in its title (hover)
  function nextTokenParts(ex) {
    if (!ex.nextKnown) { return ["", ""]; }  // data of a viewer written before the next-token effects
    if (ex.next < 0) { return [" · → end of document", "no next token: the extreme token is the document's last"]; }
    var token = JSON.stringify(tokenText(ex.next)), short = " · → " + token + " · direct effect " + plus(ex.effect) +
      " (rank " + ex.nextRank + ")" + (isNaN(ex.ablation) ? "" : " · Δloss if zeroed " + plus(ex.ablation));
    var title = "next token " + token + " (id " + ex.next + ")\ndirect effect on its logit " + plus(ex.effect, 5) +
      " = a · (w_out ⊙ norm gain) / rms(r) · W_U[:, next], the final norm's scale held\nrank " + ex.nextRank +
      " of the vocabulary in w_out · W_U (1 = most promoted)" +
      (isNaN(ex.ablation) ? "" : "\nnext-token loss change with only this neuron zeroed here " + plus(ex.ablation, 5));
    return [short, title];
  }
  function exampleBlock(n, ex, rank, scale) {
    var next = nextTokenParts(ex);
    var meta = "#" + rank + " · document " + ex.doc + " · token " + (ex.start + ex.peak) + " · a " + fmt(ex.value, 4) +
      (ex.duplicates > 1 ? " · ×" + ex.duplicates + " (same text)" : "") + next[0];
    var whole = el("details", {}, [el("summary", {text: "whole document (" + docTokens(ex.doc).length + " tokens)"})]);
    whole.addEventListener("toggle", function () {
      if (whole.open && whole.childNodes.length === 1) { whole.appendChild(exampleText(n, ex, scale, true)); }
    });
    var line = el("div", {"class": "meta", text: meta});
    if (next[1]) { line.title = next[1]; }
    return el("div", {"class": "example"}, [line, exampleText(n, ex, scale, false), whole]);
  }
  // the colour scale of a section: one-sided (its own largest |a|) or, for `whole`, both signs up to the neuron's largest |a|
  function legend(n, scale, negative, whole) {
    var hover = "grey: context without values; the extreme token is outlined; hover a token for its values: activation a" +
      (n.L.gates ? ", gate g, linear u)" : data.meta.compact ? " in 8 bits, to 1/254 of its window's largest |a|)" : ")");
    if (whole) {
      return el("div", {"class": "legend"}, [el("span", {"class": "num", text: fmt(-scale)}), el("span", {"class": "bar neg"}),
        el("span", {"class": "num", text: "0"}), el("span", {"class": "bar pos"}), el("span", {"class": "num", text: fmt(scale)}),
        el("span", {text: "(the neuron's scale: its largest |a| on the dataset; " + hover})]);
    }
    return el("div", {"class": "legend"}, [el("span", {"class": "num", text: negative ? fmt(-scale) : "0"}),
      el("span", {"class": "bar " + (negative ? "neg" : "pos")}), el("span", {"class": "num", text: negative ? "0" : fmt(scale)}),
      el("span", {text: "(this section's own scale; " + hover})]);
  }
  // one example list; `neuronScale` (the neuron's largest |a|) colours it on the neuron's scale instead of its own
  function exampleSection(n, kind, title, note, neuronScale) {
    var list = examplesOf(n, kind), section = el("section", {id: "list-" + kind});
    section.appendChild(el("h2", {text: title}));
    if (note) { section.appendChild(el("p", {"class": "meta", text: note})); }
    if (!list.length) { section.appendChild(el("p", {"class": "meta", text: "no examples"})); return section; }
    var scale = neuronScale || Math.max.apply(null, list.map(function (ex) { return Math.abs(ex.value); }));
    var negative = list.every(function (ex) { return ex.value <= 0; });
    section.appendChild(legend(n, scale, negative, !!neuronScale));
    var blocks = el("div", {"class": "examples"});
    function fill(order) {  // the list's own order (its rank), or by direct effect, largest first (none last)
      var shown = list.map(function (ex, i) { return [ex, i + 1]; });
      if (order === "effect") {
        shown.sort(function (a, b) { return effectKey(b[0]) - effectKey(a[0]) || a[1] - b[1]; });
      }
      blocks.textContent = "";
      shown.forEach(function (pair) { blocks.appendChild(exampleBlock(n, pair[0], pair[1], scale)); });
    }
    if (list[0].nextKnown) { section.appendChild(orderChoice(kind, fill)); }
    fill("rank");
    section.appendChild(blocks);
    return section;
  }
  // the typical examples: per band of |a| (meta.typical_band_edges), tokens drawn evenly from the band (list kinds
  // from `firstKind` on), with the band's share of the tokens read off the neuron's histogram
  function typicalSections(n, firstKind) {
    var edges = data.meta.typical_band_edges, k = data.meta.typical_per_band, nodes = [el("h2", {text: "Typical examples, by |a|"})];
    if (!k) {
      nodes.push(el("p", {"class": "meta", text: data.meta.typical_off ? "these statistics have no typical examples (made with --typical_per_band 0)" :
        "these statistics have no typical examples (the notes at the top say why)"}));
      return nodes;
    }
    nodes.push(el("p", {"class": "meta", text: "Not the extremes: in each band of |a|, up to " + k + " tokens drawn evenly from all the " +
      "dataset's tokens in that band, whatever their sign combination (a fixed hash of document and position picks them), " +
      "coloured on the neuron's own scale. Most tokens of most neurons lie in the lowest band."}));
    var shares = bandShares(n, edges), row = rowOf(n.layer, n.neuron), scale = Math.max(Math.abs(row.max), Math.abs(row.min));
    for (var b = 0; b + 1 < edges.length; b++) {
      var share = shares ? " (" + percent(shares[b]) + " of tokens)" : "";
      nodes.push(exampleSection(n, firstKind + b, bandLabel(edges[b], edges[b + 1]) + share, null, scale));
    }
    return nodes;
  }
  function bandLabel(low, high) {
    if (!low) { return "|a| < " + fmt(high); }
    return high === null ? "|a| ≥ " + fmt(low) : fmt(low) + " ≤ |a| < " + fmt(high);
  }
  function bandShares(n, edges) {  // the fraction of the neuron's tokens in each band [band], null without a histogram
    var L = n.L, bins = data.meta.histogram_edges, shares = [], total = 0;
    if (!L.histogram) { return null; }
    for (var b = 0; b + 1 < edges.length; b++) { shares.push(0); }
    var first = L.histogram.first[n.column], from = L.histogram.offsets[n.column], to = L.histogram.offsets[n.column + 1];
    for (var i = from; i < to; i++) {
      var lower = Math.min(magnitude(bins[first + i - from]), magnitude(bins[first + i - from + 1])), band = 0;
      while (band + 2 < edges.length && lower >= edges[band + 1]) { band += 1; }
      shares[band] += L.histogram.counts[i];
      total += L.histogram.counts[i];
    }
    return shares.map(function (s) { return total ? s / total : 0; });
  }
  function magnitude(edge) { return edge === null ? Infinity : Math.abs(edge); }
  function effectKey(ex) { return isNaN(ex.effect) ? -Infinity : ex.effect; }
  function orderChoice(kind, fill) {  // the select above a list: its own order, or by direct effect on the next token
    var box = el("select", {id: "order-" + kind}, [el("option", {value: "rank", text: "rank order"}),
      el("option", {value: "effect", text: "by direct effect on the next token"})]);
    box.addEventListener("change", function () { fill(box.value); });
    return el("label", {"class": "meta"}, [document.createTextNode("order "), box]);
  }

  // ---- histograms as inline SVG
  var SVG = (function () {  // the SVG namespace, taken from the parser (so that no address is written here)
    var holder = document.createElement("div");
    holder.innerHTML = "<svg></svg>";
    return holder.firstChild.namespaceURI;
  })();
  function svg(tag, attrs) {
    var node = document.createElementNS(SVG, tag);
    Object.keys(attrs).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    return node;
  }
  function histogram(counts, labels, marks, caption) {
    var width = 520, height = 120, left = 30, bottom = 18, n = counts.length, top = 0;
    counts.forEach(function (c) { top = Math.max(top, Math.log10(1 + c)); });
    var box = svg("svg", {width: width, height: height + bottom, role: "img"});
    box.appendChild(svg("title", {})).textContent = caption;
    var bar = (width - left) / Math.max(n, 1);
    counts.forEach(function (c, i) {
      var h = top ? height * Math.log10(1 + c) / top : 0;
      var rect = svg("rect", {x: left + i * bar, y: height - h, width: Math.max(bar - 0.5, 0.5), height: h, fill: "#7a8fb5"});
      rect.appendChild(svg("title", {})).textContent = labels[i] + ": " + c;
      box.appendChild(rect);
    });
    marks.forEach(function (m) {
      var x = left + (m.bin + 0.5) * bar;
      box.appendChild(svg("line", {x1: x, x2: x, y1: 0, y2: height, stroke: m.colour, "stroke-width": 1.5}));
      var right = x > width / 2;  // the label on the side with room, with a white halo over the bars
      var label = svg("text", {x: right ? x - 3 : x + 3, y: 10 + 11 * (m.row || 0), "text-anchor": right ? "end" : "start",
        stroke: "#fff", "stroke-width": 3, "paint-order": "stroke"});
      label.textContent = m.label;
      box.appendChild(label);
    });
    var axis = svg("text", {x: 0, y: height + bottom - 4});
    axis.textContent = caption;
    box.appendChild(axis);
    return box;
  }
  function binOf(edges, v) {
    for (var i = 0; i < edges.length - 1; i++) {
      var low = edges[i] === null ? -Infinity : edges[i], high = edges[i + 1] === null ? Infinity : edges[i + 1];
      if ((v >= 0 && v >= low && v < high) || (v < 0 && v > low && v <= high)) { return i; }
    }
    return edges.length - 2;
  }
  function activationHistogram(n, max, min) {
    var L = n.L, edges = data.meta.histogram_edges.map(function (e, i) { return e === null ? (i ? Infinity : -Infinity) : e; });
    if (!L.histogram) { return el("p", {"class": "meta", text: "no histogram in these statistics"}); }
    var first = L.histogram.first[n.column], from = L.histogram.offsets[n.column], to = L.histogram.offsets[n.column + 1];
    var counts = Array.prototype.slice.call(L.histogram.counts.subarray(from, to));
    var labels = counts.map(function (c, i) { return "[" + fmt(edges[first + i]) + ", " + fmt(edges[first + i + 1]) + ")"; });
    var marks = [{bin: binOf(edges, max) - first, colour: "#c00", label: "max " + fmt(max)},
      {bin: binOf(edges, min) - first, colour: "#00c", label: "min " + fmt(min), row: 1}];
    return histogram(counts, labels, marks, "a, bins of |a| on a log scale (4 per octave), height log(1 + count)");
  }
  function logitHistogram(n) {
    var L = n.L, bins = data.meta.logit_bins, low = L.logit_low[n.column], high = L.logit_high[n.column];
    var counts = Array.prototype.slice.call(L.logit_histogram.subarray(n.column * bins, (n.column + 1) * bins));
    var step = (high - low) / bins;
    var labels = counts.map(function (c, i) { return "[" + fmt(low + i * step) + ", " + fmt(low + (i + 1) * step) + ")"; });
    var marks = [{bin: 0, colour: "#00c", label: "most suppressed " + fmt(low), row: 1},
      {bin: bins - 1, colour: "#c00", label: "most promoted " + fmt(high)}];
    return histogram(counts, labels, marks, "w_out · W_U over the vocabulary (linear bins), height log(1 + count)");
  }

  // ---- token tables and facts
  function tokenList(title, ids, values, from, count) {
    var items = [];
    for (var i = from; i < from + count; i++) {
      items.push(el("li", {}, [el("code", {text: JSON.stringify(tokenText(ids[i]))}),
        values ? el("span", {"class": "num", text: " " + signed(values[i])}) : null]));
    }
    return el("div", {"class": "tokens"}, [el("h3", {text: title}), el("ol", {}, items)]);
  }
  // ---- connections (g_connections.py): which neurons feed the gate and the linear input, which read the output
  var CONNECTION_TITLES = {gate_input: "into the gate: earlier w_out · w_gate", linear_input: "into the linear input: earlier w_out · w_in",
    gate_reader: "read by later gates: w_out · their w_gate", linear_reader: "read by later linear inputs: w_out · their w_in",
    gate_embed: "tokens into the gate: W_E · w_gate", linear_embed: "tokens into the linear input: W_E · w_in"};
  function connectionsSection(n) {
    var C = n.L.connections, nodes = [el("h2", {id: "connections", text: "Connections"})];
    if (!C) {
      nodes.push(el("p", {"class": "meta", text: "no connections here: run g_connections.py, then write this view again"}));
      return nodes;
    }
    var byExpected = C.inputs_by === "expected_contribution";
    nodes.push(el("p", {"class": "meta", text: "From the weights as Section 5 uses them (norm gains folded in): the virtual weight of " +
      "an earlier neuron into this one is its w_out · this neuron's w_gate (or w_in), the connection per unit of normalised " +
      "residual; first order: the norm's per-token scale and everything in between are left out. Bars: red > 0, blue < 0. " +
      "A negative weight into the gate closes it when the earlier neuron's a > 0; into the linear input it flips the sign of " +
      "u and so of a. Inputs ranked by " + (byExpected ? "expected contribution (virtual weight × the earlier neuron's " +
      "mean |a| on the dataset), " : "|virtual weight|, ") + "readers and tokens by |virtual weight|. The token tables " +
      "here use the embedding W_E; those above use the unembedding W_U."}));
    nodes.push(el("div", {"class": "tokenlists"}, Object.keys(C.kinds).map(function (kind) {
      return connectionList(n, kind, C.kinds[kind], C.shown, byExpected && C.kinds[kind].expected && /_input$/.test(kind));
    })));
    return nodes;
  }
  function connectionList(n, kind, part, shown, byExpected) {
    var values = byExpected ? part.expected : part.virtual_weight, items = [], top = 0, from = n.column * shown;
    var to = Math.min(from + shown, part.other.length);
    for (var i = from; i < to; i++) { if (part.other[i] >= 0) { top = Math.max(top, Math.abs(values[i])); } }
    for (var j = from; j < to; j++) {
      if (part.other[j] < 0) { continue; }
      var bar = el("span", {"class": "cbar"});
      bar.style.width = (top ? 5 * Math.abs(values[j]) / top : 0).toFixed(2) + "em";
      bar.style.background = values[j] >= 0 ? "rgb(230,60,60)" : "rgb(60,60,230)";
      var detail = "virtual weight " + signed(part.virtual_weight[j]) + ", cos " + signed(part.cosine[j]) +
        (part.expected ? ", expected contribution " + signed(part.expected[j]) : "");
      items.push(el("li", {title: detail}, [connectedName(kind, part, j), el("span", {"class": "meta", text: part.other_class ?
        " " + className(part.other_class[j]) : ""}), document.createTextNode(" "), bar,
        el("span", {"class": "num", text: " " + signed(values[j]) + " · cos " + signed(part.cosine[j])})]));
    }
    return el("div", {"class": "tokens connections", id: "connections-" + kind},
      [el("h3", {text: CONNECTION_TITLES[kind] || kind}), items.length ? el("ol", {}, items) : el("p", {"class": "meta", text: "none"})]);
  }
  function connectedName(kind, part, j) {  // a token of the embedding, or a neuron with a link where this view has it
    var other = part.other[j];
    if (!part.other_class) { return el("code", {text: JSON.stringify(tokenText(other))}); }
    var layer = Math.floor(other / data.meta.d_mlp), neuron = other % data.meta.d_mlp, label = name(layer, neuron);
    var page = data.meta.page, href = null;
    if (page) {
      if ((page.names || []).indexOf(label) >= 0) { href = "../../L" + layer + "/N" + neuron + "/vis.html"; }
    } else if (rowOf(layer, neuron)) {
      href = "#" + label;
    }
    return href ? el("a", {href: href, text: label}) : el("span", {text: label, title: "not in this " + (page ? "set of pages" : "viewer")});
  }
  function factsTable(title, rows) {
    return el("table", {}, [el("tr", {}, [el("th", {colspan: 2, text: title})])].concat(rows.map(function (r) {
      return el("tr", {}, [el("td", {text: r[0]}), el("td", {"class": "num", text: r[1]})]);
    })));
  }
  function whyInteresting(n, row) {
    var L = n.L, parts = ["IO class: " + className(row.io_class)];
    var roles = roleList(row.roles);
    parts.push(roles.length ? "roles: " + roles.join(", ") : "no functional role");
    parts.push("kurtosis of cos(w_out, W_U) " + fmt(row.kurtosis) + ", skew " + fmt(row.skew));
    var reason = L.reasons && L.reasons[String(n.neuron)];
    if (reason) { parts.push("case study: " + named(reason)); }
    return el("p", {"class": "why", text: parts.join(" · ")});
  }
  function rowOf(layer, neuron) {
    var id = layer * data.meta.d_mlp + neuron, ids = data.index.ids, at = sortedIndex(ids, id);
    return ids[at] === id ? rowAt(at) : null;
  }
  function navigation(row) {
    if (data.meta.page) { return pageNavigation(data.meta.page.nav); }
    var ids = data.index.ids, at = sortedIndex(ids, row.id), d = data.meta.d_mlp, links = [];
    if (at > 0) { links.push(el("a", {id: "prev", href: "#" + name(Math.floor(ids[at - 1] / d), ids[at - 1] % d), text: "← previous"})); }
    links.push(el("a", {id: "index", href: "#", text: "index"}));
    if (at < ids.length - 1) { links.push(el("a", {id: "next", href: "#" + name(Math.floor(ids[at + 1] / d), ids[at + 1] % d), text: "next →"})); }
    return el("nav", {}, links);
  }
  function pageNavigation(nav) {  // a single page: links to the previous and next page and the index of the pages
    var labels = {prev: "← previous", index: "index", next: "next →"};
    return el("nav", {}, ["prev", "index", "next"].filter(function (key) { return nav[key]; }).map(function (key) {
      return el("a", {id: key, href: nav[key], text: labels[key]});
    }));
  }
  function renderNeuron(layer, neuron, started) {
    var n = neuronData(layer, neuron), row = rowOf(layer, neuron), view = document.getElementById("neuron-view");
    view.textContent = "";
    var L = n.L, c = n.column, k = data.meta.k, top = L.promoted.length / L.neurons.length;
    var combos = data.meta.sign_combinations, bos = L.bos_value[c];
    view.appendChild(navigation(row));
    view.appendChild(el("h1", {id: "neuron-title", text: "Neuron " + name(layer, neuron)}));
    view.appendChild(el("div", {"class": "meta", text: data.meta.model + " · dataset " + data.meta.dataset + " · layer " + layer + " · neuron " + neuron}));
    view.appendChild(whyInteresting(n, row));
    var cos = [["IO class", className(row.io_class)]].concat(
      Object.keys(L.cosines).map(function (key) { return [key, signed(L.cosines[key][c])]; }));
    var freq = combos.map(function (s, i) { return [s, percent(L.sign_frequencies[c * 4 + i])]; });
    var none = L.nonfinite && L.nonfinite[c] >= data.meta.tokens;  // not one finite token: no max, min or mean
    function stat(value) { return none ? "none" : fmt(value, 4); }
    view.appendChild(el("div", {"class": "facts"}, [factsTable("weights", cos),
      factsTable("activation a", [["max", stat(row.max)], ["min", stat(row.min)], ["mean", stat(row.mean)],
        ["gate open (g > 0)", none ? "none" : percent(row.gate_open)], ["at BOS", fmt(bos, 4)]]),
      factsTable("signs of (gate g, linear u)", freq)]));
    if (data.meta.bos_left_out) {
      view.appendChild(el("p", {"class": "meta", text: "Position 0 (BOS) is left out of the examples: it has the same activation in " +
        "every document (a = " + fmt(bos, 4) + " here). It counts in the mean, the frequencies and the histogram; max and min are those of the other tokens."}));
    }
    if (L.nonfinite && L.nonfinite[c] > 0) {  // tokens whose a, g or u was not finite: left out of every statistic
      view.appendChild(el("p", {"class": "meta", id: "nonfinite", text: "a was not finite (inf or NaN, or g or u was) at " +
        L.nonfinite[c].toLocaleString("en-US") + " of " + data.meta.tokens.toLocaleString("en-US") + " tokens (" + data.meta.dtype +
        "), left out of every statistic here: the mean, the frequencies and the histogram are those of the other tokens, and no example is one of them."}));
    }
    view.appendChild(el("h2", {text: "Distributions"}));
    view.appendChild(activationHistogram(n, row.max, row.min));
    view.appendChild(logitHistogram(n));
    view.appendChild(el("h2", {text: "What the weights do to the logits"}));
    view.appendChild(el("p", {"class": "meta", text: "When a > 0 the neuron adds a·w_out to the residual stream: it promotes the " +
      "“promoted” tokens and suppresses the “suppressed” ones. When a < 0 it writes −w_out: it promotes its “suppressed” list."}));
    var lists = [tokenList("promoted (w_out · W_U)", L.promoted, L.promoted_values, c * top, top),
      tokenList("suppressed", L.suppressed, L.suppressed_values, c * top, top)];
    data.meta.input_tables.forEach(function (t) {
      if (L.inputs[t]) { var m = L.inputs[t].length / L.neurons.length; lists.push(tokenList(t + " · W_U", L.inputs[t], null, c * m, m)); }
    });
    view.appendChild(el("div", {"class": "tokenlists"}, lists));
    connectionsSection(n).forEach(function (node) { view.appendChild(node); });
    view.appendChild(exampleSection(n, 0, KIND_TITLES.max, "the top-" + k + " documents by their largest a"));
    view.appendChild(exampleSection(n, 1, KIND_TITLES.min, "the bottom-" + k + " documents by their smallest a; a < 0: the neuron writes −w_out here, promoting its “suppressed” tokens"));
    view.appendChild(el("h2", {text: "Sign combinations of (g, u), by |a|"}));
    combos.forEach(function (s, i) { view.appendChild(exampleSection(n, i + 2, s + " (" + percent(L.sign_frequencies[c * 4 + i]) + " of tokens)")); });
    typicalSections(n, 2 + combos.length).forEach(function (node) { view.appendChild(node); });
    document.title = "neuron " + name(layer, neuron) + " · " + data.meta.model;
    show("neuron-view");
    document.body.setAttribute("data-opened-ms", String(Math.round(performance.now() - started)));
  }

  // ---- the values of the token under the pointer, in a box that stays put
  function hover(event) {
    var box = document.getElementById("hover"), token = event.target;
    if (event.type === "mouseout" || !token.classList || !token.classList.contains("t")) { box.hidden = true; return; }
    var v = token.title.split(" "), names = {a: "activation a", g: "gate g", u: "linear u"}, lines = [JSON.stringify(token.textContent)];
    for (var i = 0; i + 1 < v.length; i += 2) { lines.push(names[v[i]] + " " + v[i + 1]); }
    box.textContent = lines.join("\n");
    box.hidden = false;
  }

  // ---- routing
  function show(id) {
    document.getElementById("index-view").hidden = id !== "index-view";
    document.getElementById("neuron-view").hidden = id !== "neuron-view";
    document.getElementById("status").textContent = data.note || "";
  }
  // the text of a part of the address with its %-escapes decoded; null where an escape is malformed (#%, %zz)
  function decoded(text) {
    try { return decodeURIComponent(text); } catch (error) { return null; }
  }
  function parseName(text) {
    var m = /^\s*(\d+)\.(\d+)\s*$/.exec(text || "");
    return m ? [Number(m[1]), Number(m[2])] : null;
  }
  function route(sinceNavigation) {
    var started = sinceNavigation ? 0 : performance.now(), raw = location.hash.slice(1), wanted = parseName(decoded(raw));
    if (!wanted) {  // no hash, the index's filters (#?...), or a hash that names no neuron: the index
      if (raw.charAt(0) === "?") { restore(raw.slice(1)); }
      renderTable();
      renderTokenSearch();
      show("index-view");
      document.title = "neurons of " + data.meta.model;
      if (decoded(raw) === null) {
        document.getElementById("status").textContent = "the address after # has a malformed %-escape: that part is left out";
      }
      return Promise.resolve();
    }
    if (!rowOf(wanted[0], wanted[1])) {
      document.getElementById("status").textContent = "neuron " + name(wanted[0], wanted[1]) + " is not in this viewer";
      return Promise.resolve();
    }
    document.getElementById("status").textContent = "loading layer " + wanted[0] + "…";
    var file = layerPart(wanted[0], wanted[1]), docs = [];
    return Promise.all([load("vocab"), load(file)]).then(function () {
      checked(["vocab", file]);
      if (!neuronData(wanted[0], wanted[1])) {
        throw new Error("data/" + file + ".js: holds no data of neuron " + name(wanted[0], wanted[1]) + ", which data/index.js lists");
      }
      docs = neededChunks(wanted).map(function (chunk) { return "docs_" + chunk; });
      return Promise.all(docs.map(load));
    }).then(function () {
      checked(docs);
      renderNeuron(wanted[0], wanted[1], started);
      window.scrollTo(0, 0);
    });
  }
  function neededChunks(wanted) {
    var n = neuronData(wanted[0], wanted[1]), needed = {};
    for (var kind = 0; n && kind < data.meta.list_kinds.length; kind++) {
      examplesOf(n, kind).forEach(function (ex) { needed[chunkOf(ex.doc)] = true; });
    }
    return Object.keys(needed);
  }
  function search(event) {
    event.preventDefault();
    var wanted = parseName(document.getElementById("search-box").value), note = document.getElementById("search-note");
    note.textContent = "";
    if (!wanted) { note.textContent = "write layer.neuron, e.g. 28.28"; return; }
    if (!rowOf(wanted[0], wanted[1])) { note.textContent = "no neuron " + name(wanted[0], wanted[1]) + " here"; return; }
    location.hash = name(wanted[0], wanted[1]);
  }
  // The first files load as parser-blocking scripts (written while the page is parsed), so that the page's
  // load event, and a headless browser's --dump-dom, wait until the neuron of a deep link is drawn.
  function wantedAtStart() { return parseName(decoded(location.hash.slice(1))); }
  function writeScripts(names) {
    names.forEach(function (name) {
      if (!loading[name]) { document.write('<script src="data/' + name + '.js"><\/script>'); loading[name] = Promise.resolve(); }
    });
  }
  function start() {
    if (data.meta) { beginPage(); return; }  // a single page: its data came inline
    var wanted = wantedAtStart(), names = ["meta", "index"].concat(wanted ? ["vocab"] : [],
      !wanted && tokenWantedAtStart() ? ["vocab"] : []);
    if (document.readyState !== "loading") {  // meta.js first: it vouches for the others
      load("meta").then(function () { return Promise.all(names.map(load)); }).then(begin).catch(fail);
      return;
    }
    ["load", "error"].forEach(function (type) {  // the scripts written below: whether each ran or did not load
      document.addEventListener(type, function (event) {
        var m = event.target.tagName === "SCRIPT" && /\/data\/([^\/?#]+)\.js$/.exec(event.target.src);
        if (m && event.target.parentNode !== document.head) { loaded(decodeURIComponent(m[1]), type === "load"); }
      }, true);
    });
    writeScripts(names);
    document.write("<script>neuroscope.part()<\/script><script>neuroscope.documents()<\/script><script>neuroscope.begin()<\/script>");
  }
  function part() {  // the data file of the deep-linked neuron, once the meta and the index are here
    var wanted = wantedAtStart();
    if (wanted && data.meta && data.index && rowOf(wanted[0], wanted[1])) { writeScripts([layerPart(wanted[0], wanted[1])]); }
  }
  function documents() {  // the document chunks of the deep-linked neuron, once its data file is here
    var wanted = wantedAtStart();
    if (wanted && data.meta && data.layers[layerPart(wanted[0], wanted[1])]) {
      writeScripts(neededChunks(wanted).map(function (chunk) { return "docs_" + chunk; }));
    }
  }
  function begin() {
    try { checked(["meta", "index"]); } catch (error) { fail(error); return; }
    var meta = data.meta;
    data.note = meta.checksums ? "" : "note: this viewer was written before viewers carried checksums: its files are not " +
      "verified (write it again with d_recompute_vis.py --viewer to have them checked)";
    document.getElementById("title").textContent = "Neurons of " + meta.model;
    document.getElementById("run").textContent = "dataset " + meta.dataset + " (" + meta.tokens + " tokens) · layers " +
      meta.layers.join(", ") + " · " + rowCount() + " neurons" + (meta.notes.length ? " · " + meta.notes.join("; ") : "");
    buildFilters();
    drawOverview();
    document.getElementById("search").addEventListener("submit", search);
    document.getElementById("token-search").addEventListener("submit", tokenSearch);
    document.getElementById("token-search").addEventListener("change", function (event) { if (event.target.type === "checkbox") { tokenSearch(event); } });
    document.getElementById("neuron-view").addEventListener("mouseover", hover);
    document.getElementById("neuron-view").addEventListener("mouseout", hover);
    window.addEventListener("hashchange", function () { route(false).catch(fail); });
    document.addEventListener("keydown", function (event) {
      if (event.target.tagName === "INPUT") { return; }
      var link = document.getElementById(event.key === "ArrowLeft" ? "prev" : event.key === "ArrowRight" ? "next" : "none");
      if (link) { location.hash = link.getAttribute("href").slice(1); }
    });
    route(true).catch(fail);
  }
  function beginPage() {  // a single page (vis.html): one neuron, its data inline, links to the other pages
    var meta = data.meta, page = meta.page, view = document.getElementById("neuron-view");
    document.getElementById("search").hidden = true;
    document.getElementById("token-search").hidden = true;
    document.getElementById("title").textContent = meta.model;
    document.getElementById("run").textContent = "dataset " + meta.dataset + " (" + meta.tokens + " tokens)" +
      (meta.notes.length ? " · " + meta.notes.join("; ") : "");
    view.addEventListener("mouseover", hover);
    view.addEventListener("mouseout", hover);
    document.addEventListener("keydown", function (event) {
      var link = document.getElementById(event.key === "ArrowLeft" ? "prev" : event.key === "ArrowRight" ? "next" : "none");
      if (link) { location.href = link.href; }
    });
    renderNeuron(page.layer, page.neuron, 0);
  }
  function fail(error) {  // an error instead of a neuron: what went wrong, with the file it is in
    document.getElementById("neuron-view").hidden = true;
    document.getElementById("status").textContent = "error: " + error.message;
  }

  return {
    meta: function (m) { receive("meta", [m], function () { data.meta = m; }); },
    index: function (ix) {
      receive("index", [ix], function () {
        data.index = unpackAll(ix, SCHEMA.parts.index);
        try { buildRows(); } catch (error) { data.index = null; throw error; }
      });
    },
    vocab: function (v) { receive("vocab", [v], function () { data.vocab = v; }); },
    docs: function (chunk, d) {
      receive("docs", [chunk, d], function () {
        var part = unpackAll(d, SCHEMA.parts.docs);
        data.docs[chunk] = {first: part.first, starts: part.starts, tokens: part.tokens, ids: part.ids || null};
      });
    },
    layer: function () {
      var args = Array.prototype.slice.call(arguments);
      receive("layer", args, function () { data.layers[fileOf("layer", args)] = decodeActs(unpackAll(args[1], SCHEMA.parts.layer)); });
    },
    search: function (shard, d) { receive("search", [shard, d], function () { data.search[shard] = unpackAll(d, SCHEMA.parts.search); }); },
    top: function (shard, d) { receive("top", [shard, d], function () { data.top[shard] = unpackAll(d, SCHEMA.parts.top); }); },
    start: start,
    part: part,
    documents: documents,
    begin: begin
  };
})();
