"""HTML pages for neurons: one self-contained file per neuron, plus an index.

A page needs no network access of any kind (inline CSS and SVG, a little inline JavaScript, no
external URL), opens from file://, and is readable without JavaScript: colours are inline
styles, the values of each token are in its tooltip, whole documents sit in <details> elements.
Every piece of dataset text is HTML-escaped.

What a page shows: why the neuron is interesting (IO class, roles, kurtosis and skew of
cos(w_out, W_U), the case-study reason), its statistics, the histograms of a and of w_out · W_U
(inline SVG, extremes marked), the tokens its weights promote, suppress and read, and its example
lists: max, min (each on its own colour scale) and the four sign combinations of (g, u) by |a|,
de-duplicated by text, each document once at the end.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Any

from neuroscope.recompute import LIST_KINDS, Example

CONTEXT_BEFORE, CONTEXT_AFTER = 50, 10
HISTOGRAM_SIZE = (520, 120)  # width, height of a histogram's bars in pixels
AXIS_MARGIN = (30, 18)  # room left of and below the bars
NEAR_WHITE = 0.005  # |a| / scale below which a token gets no colour
SIGN_SENTENCE = ("When a > 0 the neuron adds a·w_out to the residual stream: it promotes the “promoted” tokens and suppresses "
                 "the “suppressed” ones. When a < 0 it writes −w_out: it promotes its “suppressed” list and suppresses the “promoted” one.")


@dataclass
class Histogram:
    """Counts and the label of each bin, and marks (bin, label, colour) drawn as vertical lines."""

    counts: list[int]
    labels: list[str]
    marks: list[tuple[int, str, str]]
    caption: str


@dataclass
class NeuronPage:
    """Everything one page shows."""

    model: str
    dataset: str
    layer: int
    neuron: int
    io_class: str
    cosines: dict[str, float]
    max_value: float
    min_value: float
    mean: float
    gate_open: float
    sign_frequencies: dict[str, float]
    promoted: list[tuple[str, float]]
    suppressed: list[tuple[str, float]]
    examples: dict[str, list[Example]]  # LIST_KINDS -> examples, best first
    token_text: dict[int, str]  # token id -> its text
    nav: dict[str, str] = field(default_factory=dict)  # "prev", "next", "index" -> relative link
    notes: list[str] = field(default_factory=list)
    why: list[str] = field(default_factory=list)  # roles, kurtosis and skew, case-study reason
    input_tables: dict[str, list[str]] = field(default_factory=dict)  # "+w_in", ... -> token texts
    histograms: list[Histogram] = field(default_factory=list)
    bos_value: float | None = None  # a at BOS (the same in every document); None: not left out

    @property
    def name(self) -> str:
        return f"{self.layer}.{self.neuron}"


def colour(value: float, scale: float) -> str:
    """Diverging scale: 0 white, +scale full red, -scale full blue (as an rgb() string)."""
    t = max(-1.0, min(1.0, value / scale)) if scale > 0 else 0.0
    fade = round(255 * (1 - abs(t)))
    return f"rgb(255,{fade},{fade})" if t >= 0 else f"rgb({fade},{fade},255)"


def _token_html(text: str, act: float, gate: float, lin: float, scale: float, peak: bool) -> str:
    """One token: background by activation (none when it would be white), values in the tooltip."""
    shown = html.escape(text).replace("\n", "⏎\n") or "∅"
    style = "" if scale <= 0 or abs(act) / scale < NEAR_WHITE else f' style="background:{colour(act, scale)}"'
    return f'<span class="t{" peak" if peak else ""}"{style} title="a {act:.3g} g {gate:.3g} u {lin:.3g}">{shown}</span>'


def _tokens_html(page: NeuronPage, example: Example, start: int, stop: int, scale: float, peak: bool = True) -> str:
    return "".join(
        _token_html(page.token_text.get(example.token_ids[i], "?"), example.act[i], example.gate[i], example.lin[i],
                    scale, peak and i == example.position)
        for i in range(start, stop)
    )


def window(example: Example) -> tuple[int, int]:
    """The tokens [start, stop) shown around an example's extreme token."""
    return max(0, example.position - CONTEXT_BEFORE), min(len(example.act), example.position + CONTEXT_AFTER + 1)


def deduplicated(examples: list[Example]) -> list[tuple[Example, int]]:
    """Examples whose shown text (and place of the extreme token in it) no earlier one has, with how many share it."""
    kept: dict[tuple[Any, ...], list[Any]] = {}
    for example in examples:
        start, stop = window(example)
        key = (tuple(example.token_ids[start:stop]), example.position - start)
        kept.setdefault(key, [example, 0])[1] += 1
    return [(example, count) for example, count in kept.values()]


def _example_html(page: NeuronPage, example: Example, rank: int, scale: float, copies: int) -> str:
    start, stop = window(example)
    text = _tokens_html(page, example, start, stop, scale)
    same = f" · ×{copies} (same text)" if copies > 1 else ""
    return (f'<div class="example"><div class="meta">#{rank} · <a href="#doc{example.doc}">document {example.doc}</a> · '
            f'token {example.position} · a {example.stored:.4g}{same}</div>'
            f'<div class="text">{"… " if start else ""}{text}{" …" if stop < len(example.act) else ""}</div></div>')


def _legend(scale: float, negative: bool) -> str:
    low, high = (f"{-scale:.3g}", "0") if negative else ("0", f"{scale:.3g}")
    return (f'<div class="legend">activation <span class="num">{low}</span><span class="bar {"neg" if negative else "pos"}"></span>'
            f'<span class="num">{high}</span> (this section\'s own scale; the extreme token is outlined; hover a token for its '
            f'activation a, gate g and linear u)</div>')


def _section_html(page: NeuronPage, kind: str, title: str, note: str = "") -> str:
    examples = deduplicated(page.examples.get(kind, []))
    parts = [f'<h2 id="list-{LIST_KINDS.index(kind)}">{html.escape(title)}</h2>']
    if note:
        parts.append(f'<p class="meta">{html.escape(note)}</p>')
    if not examples:
        return "".join(parts) + '<p class="meta">no examples</p>'
    scale = max(abs(e.stored) for e, _ in examples)
    parts.append(_legend(scale, all(e.stored <= 0 for e, _ in examples)))
    parts += [_example_html(page, e, i + 1, scale, copies) for i, (e, copies) in enumerate(examples)]
    return "".join(parts)


def _documents_html(page: NeuronPage) -> str:
    """Every example document once, coloured on one scale for both signs."""
    by_doc = {e.doc: e for rows in page.examples.values() for e in rows}
    scale = max([abs(v) for e in by_doc.values() for v in e.act] + [1e-9])
    rows = [f'<details id="doc{doc}"><summary>document {doc} ({len(e.act)} tokens)</summary><div class="text">'
            f'{_tokens_html(page, e, 0, len(e.act), scale, peak=False)}</div></details>' for doc, e in sorted(by_doc.items())]
    return (f"<h2>Documents</h2><p class=\"meta\">each example document once, coloured from {-scale:.3g} (blue) to "
            f"{scale:.3g} (red)</p>{''.join(rows)}")


def histogram_svg(histogram: Histogram) -> str:
    """A bar chart as inline SVG: bar heights log(1 + count), the marks as labelled vertical lines."""
    width, height = HISTOGRAM_SIZE
    left, bottom = AXIS_MARGIN
    top = max([math.log10(1 + c) for c in histogram.counts] + [1e-9])
    bar = width / max(len(histogram.counts), 1)
    parts = [f'<svg width="{left + width}" height="{height + bottom}" role="img"><title>{html.escape(histogram.caption)}</title>']
    for i, (count, label) in enumerate(zip(histogram.counts, histogram.labels)):
        h = height * math.log10(1 + count) / top
        parts.append(f'<rect x="{left + i * bar:.1f}" y="{height - h:.1f}" width="{max(bar - 0.5, 0.5):.1f}" height="{h:.1f}" '
                     f'fill="#7a8fb5"><title>{html.escape(label)}: {count}</title></rect>')
    for row, (index, label, stroke) in enumerate(histogram.marks):
        x = left + (index + 0.5) * bar
        anchor, text_x = ("end", x - 3) if x > (left + width) / 2 else ("start", x + 3)  # the side with room
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="0" y2="{height}" stroke="{stroke}" stroke-width="1.5"/>'
                     f'<text x="{text_x:.1f}" y="{10 + 11 * row}" text-anchor="{anchor}" stroke="#fff" stroke-width="3" '
                     f'paint-order="stroke">{html.escape(label)}</text>')
    parts.append(f'<text x="0" y="{height + bottom - 4}">{html.escape(histogram.caption)}</text></svg>')
    return "".join(parts)


def _token_list(title: str, items: list[tuple[str, float | None]]) -> str:
    cells = "".join(f"<li><code>{html.escape(repr(text))}</code>" + (f' <span class="num">{value:+.3f}</span>' if value is not None else "")
                    + "</li>" for text, value in items)
    return f"<div class=\"tokens\"><h3>{html.escape(title)}</h3><ol>{cells}</ol></div>"


STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:1.5em auto;max-width:70em;color:#222;padding:0 1em}
h1{font-size:1.4em;margin-bottom:.2em} h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ccc}
h3{font-size:1em;margin:.3em 0} nav a{margin-right:1em} table{border-collapse:collapse;margin:.5em 0}
td,th{padding:.15em .7em;border-bottom:1px solid #eee;text-align:left} .num{font-variant-numeric:tabular-nums;color:#555}
.facts{display:flex;flex-wrap:wrap;gap:2em} .tokenlists{display:flex;gap:1.5em;flex-wrap:wrap}
.tokens{min-width:14em} .tokens ol{margin:0;padding-left:2.5em;font-size:.9em}
.why{background:#f6f8ff;border:1px solid #dde;padding:.4em .8em;border-radius:4px}
.example{margin:.8em 0;padding:.5em .7em;border:1px solid #ddd;border-radius:4px}
.meta{font-size:.8em;color:#666;margin-bottom:.3em} .text{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85em;line-height:1.7;white-space:pre-wrap;word-break:break-word}
.t{border-radius:2px} .t.peak{outline:2px solid #000;font-weight:bold}
details summary{cursor:pointer;font-size:.85em;color:#446} svg text{font-size:10px;fill:#444}
.legend{display:flex;align-items:center;gap:.5em;font-size:.85em;margin:.5em 0}
.bar{width:12em;height:1em;border:1px solid #aaa} .bar.pos{background:linear-gradient(to right,#fff,rgb(255,0,0))}
.bar.neg{background:linear-gradient(to right,rgb(0,0,255),#fff)}
#hover{position:fixed;right:1em;bottom:1em;background:#fffbe6;border:1px solid #cc9;padding:.4em .7em;font-size:.85em;display:none;white-space:pre}
"""

SCRIPT = """
(function(){
  var box=document.getElementById('hover');
  document.querySelectorAll('.t').forEach(function(t){
    t.addEventListener('mouseenter',function(){var v=t.title.split(' ');box.style.display='block';
      box.textContent=JSON.stringify(t.textContent)+'\\nactivation '+v[1]+'\\ngate (g) '+v[3]+'\\nlinear (u) '+v[5];});
    t.addEventListener('mouseleave',function(){box.style.display='none';});
  });
  document.querySelectorAll('a[href^="#doc"]').forEach(function(a){
    a.addEventListener('click',function(){var d=document.getElementById(a.getAttribute('href').slice(1));if(d){d.open=true;}});
  });
  document.addEventListener('keydown',function(e){
    var link=null; if(e.key==='ArrowLeft'){link=document.getElementById('prev');} if(e.key==='ArrowRight'){link=document.getElementById('next');}
    if(link){window.location.href=link.getAttribute('href');}
  });
})();
"""


def _facts_html(page: NeuronPage) -> str:
    cos = "".join(f"<tr><td>{name}</td><td class=\"num\">{value:+.3f}</td></tr>" for name, value in page.cosines.items())
    freq = "".join(f"<tr><td>{html.escape(name)}</td><td class=\"num\">{100 * value:.1f}%</td></tr>"
                   for name, value in page.sign_frequencies.items())
    bos = f'<tr><td>at BOS</td><td class="num">{page.bos_value:.4g}</td></tr>' if page.bos_value is not None else ""
    return (f'<div class="facts"><table><tr><th colspan=2>weights</th></tr><tr><td>IO class</td><td>{html.escape(page.io_class)}</td></tr>{cos}</table>'
            f'<table><tr><th colspan=2>activations</th></tr><tr><td>max</td><td class="num">{page.max_value:.4g}</td></tr>'
            f'<tr><td>min</td><td class="num">{page.min_value:.4g}</td></tr><tr><td>mean</td><td class="num">{page.mean:.4g}</td></tr>'
            f'<tr><td>gate open (g &gt; 0)</td><td class="num">{100 * page.gate_open:.1f}%</td></tr>{bos}</table>'
            f'<table><tr><th colspan=2>signs of (gate, linear)</th></tr>{freq}</table></div>')


def _bos_note(page: NeuronPage) -> str:
    if page.bos_value is None:
        return ""
    return (f'<p class="meta">Position 0 (BOS) is left out of the examples: it has the same activation in every document '
            f'(a = {page.bos_value:.4g} here). It counts in the mean, the frequencies and the histogram; max and min are '
            f'those of the other tokens.</p>')


def render_page(page: NeuronPage) -> str:
    """The whole HTML page of one neuron."""
    nav = " ".join(f'<a id="{key}" href="{html.escape(href)}">{label}</a>'
                   for key, label in (("prev", "← previous"), ("index", "index"), ("next", "next →"))
                   if (href := page.nav.get(key)))
    tables = [_token_list(name + " · W_U", [(t, None) for t in tokens]) for name, tokens in page.input_tables.items()]
    combos = [_section_html(page, kind, f"{kind} ({100 * page.sign_frequencies.get(kind, 0):.1f}% of tokens)") for kind in LIST_KINDS[2:]]
    parts = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>neuron {page.name} · {html.escape(page.model)}</title><style>{STYLE}</style></head><body>",
        f"<nav>{nav}</nav><h1>Neuron {page.name}</h1>",
        f"<div class=\"meta\">model {html.escape(page.model)} · dataset {html.escape(page.dataset)} · layer {page.layer} · neuron {page.neuron}</div>",
        *(f"<p class=\"meta\">{html.escape(note)}</p>" for note in page.notes),
        f'<p class="why">{html.escape(" · ".join([f"IO class: {page.io_class}", *page.why]))}</p>',
        _facts_html(page), _bos_note(page),
        "<h2>Distributions</h2>" + "".join(histogram_svg(h) for h in page.histograms) if page.histograms else "",
        "<h2>Output weight: tokens promoted and suppressed (w_out · W_U)</h2>",
        f'<p class="meta">{html.escape(SIGN_SENTENCE)}</p><div class="tokenlists">',
        _token_list("promoted", page.promoted), _token_list("suppressed", page.suppressed), *tables, "</div>",
        _section_html(page, "max", "Max activations", "the documents with the largest a"),
        _section_html(page, "min", "Min activations", "the documents with the smallest a; a < 0: the neuron writes −w_out here, "
                                                      "promoting its “suppressed” tokens"),
        "<h2>Sign combinations of (g, u), by |a|</h2>" + "".join(combos) if any(page.examples.get(k) for k in LIST_KINDS[2:]) else "",
        _documents_html(page),
        f"<div id=\"hover\"></div><script>{SCRIPT}</script></body></html>",
    ]
    return "\n".join(parts)


def render_index(model: str, entries: list[dict[str, Any]]) -> str:
    """Index of a model's neuron pages, grouped by layer; entries have layer, neuron, io_class, href."""
    rows = []
    for layer in sorted({e["layer"] for e in entries}):
        items = "".join(f'<li><a href="{html.escape(e["href"])}">{e["layer"]}.{e["neuron"]}</a> '
                        f'<span class="num">{html.escape(e.get("io_class", ""))}</span> '
                        f'<span class="meta">{html.escape(e.get("note", ""))}</span></li>'
                        for e in sorted(entries, key=lambda e: e["neuron"]) if e["layer"] == layer)
        rows.append(f"<h2>Layer {layer}</h2><ul>{items}</ul>")
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>neurons of {html.escape(model)}</title><style>{STYLE}</style></head><body>"
            f"<h1>Neurons of {html.escape(model)}</h1>{''.join(rows)}</body></html>")
