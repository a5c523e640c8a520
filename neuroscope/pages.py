"""HTML pages for neurons: one self-contained file per neuron, plus an index.

A page needs no network access of any kind (inline CSS, a little inline JavaScript, no
external URL), opens from file://, and is readable without JavaScript: colours are inline
styles, the values of each token are in its tooltip, the whole document sits in a
<details> element. Every piece of dataset text is HTML-escaped.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

from neuroscope.recompute import Example

CONTEXT_BEFORE, CONTEXT_AFTER = 50, 10


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
    max_examples: list[Example]
    min_examples: list[Example]
    token_text: dict[int, str]  # token id -> its text
    nav: dict[str, str] = field(default_factory=dict)  # "prev", "next", "index" -> relative link
    notes: list[str] = field(default_factory=list)

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
    background = colour(act, scale)
    style = "" if background == "rgb(255,255,255)" else f' style="background:{background}"'
    return f'<span class="t{" peak" if peak else ""}"{style} title="a {act:.3g} g {gate:.3g} u {lin:.3g}">{shown}</span>'


def _tokens_html(page: NeuronPage, example: Example, start: int, stop: int, scale: float) -> str:
    return "".join(
        _token_html(page.token_text.get(example.token_ids[i], "?"), example.act[i], example.gate[i], example.lin[i],
                    scale, i == example.position)
        for i in range(start, stop)
    )


def _example_html(page: NeuronPage, example: Example, rank: int, scale: float) -> str:
    start = max(0, example.position - CONTEXT_BEFORE)
    stop = min(len(example.act), example.position + CONTEXT_AFTER + 1)
    window = _tokens_html(page, example, start, stop, scale)
    whole = _tokens_html(page, example, 0, len(example.act), scale)
    return (f'<div class="example"><div class="meta">#{rank} · document {example.doc} · token {example.position} · '
            f'{example.kind} {example.stored:.4g}</div>'
            f'<div class="text">{"… " if start else ""}{window}{" …" if stop < len(example.act) else ""}</div>'
            f'<details><summary>whole document ({len(example.act)} tokens)</summary><div class="text">{whole}</div></details></div>')


def _token_list(title: str, items: list[tuple[str, float]]) -> str:
    cells = "".join(f"<li><code>{html.escape(repr(text))}</code> <span class=\"num\">{value:+.3f}</span></li>" for text, value in items)
    return f"<div class=\"tokens\"><h3>{html.escape(title)}</h3><ol>{cells}</ol></div>"


STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:1.5em auto;max-width:70em;color:#222;padding:0 1em}
h1{font-size:1.4em;margin-bottom:.2em} h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ccc}
h3{font-size:1em;margin:.3em 0} nav a{margin-right:1em} table{border-collapse:collapse;margin:.5em 0}
td,th{padding:.15em .7em;border-bottom:1px solid #eee;text-align:left} .num{font-variant-numeric:tabular-nums;color:#555}
.facts{display:flex;flex-wrap:wrap;gap:2em} .tokenlists{display:flex;gap:2em;flex-wrap:wrap}
.tokens{min-width:26em} .tokens ol{margin:0;padding-left:2.5em;columns:2;column-gap:2.5em;font-size:.9em}
.example{margin:.8em 0;padding:.5em .7em;border:1px solid #ddd;border-radius:4px}
.meta{font-size:.8em;color:#666;margin-bottom:.3em} .text{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85em;line-height:1.7;white-space:pre-wrap;word-break:break-word}
.t{border-radius:2px} .t.peak{outline:2px solid #000;font-weight:bold}
details summary{cursor:pointer;font-size:.8em;color:#446}
.legend{display:flex;align-items:center;gap:.5em;font-size:.85em;margin:.5em 0}
.bar{width:16em;height:1em;background:linear-gradient(to right,rgb(0,0,255),rgb(255,255,255),rgb(255,0,0));border:1px solid #aaa}
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
  document.addEventListener('keydown',function(e){
    var link=null; if(e.key==='ArrowLeft'){link=document.getElementById('prev');} if(e.key==='ArrowRight'){link=document.getElementById('next');}
    if(link){window.location.href=link.getAttribute('href');}
  });
})();
"""


def render_page(page: NeuronPage) -> str:
    """The whole HTML page of one neuron."""
    examples = page.max_examples + page.min_examples
    scale = max([abs(v) for e in examples for v in e.act] + [1e-9])
    nav = " ".join(f'<a id="{key}" href="{html.escape(href)}">{label}</a>'
                   for key, label in (("prev", "← previous"), ("index", "index"), ("next", "next →"))
                   if (href := page.nav.get(key)))
    cos = "".join(f"<tr><td>{name}</td><td class=\"num\">{value:+.3f}</td></tr>" for name, value in page.cosines.items())
    freq = "".join(f"<tr><td>{html.escape(name)}</td><td class=\"num\">{100 * value:.1f}%</td></tr>"
                   for name, value in page.sign_frequencies.items())
    facts = (f'<div class="facts"><table><tr><th colspan=2>weights</th></tr><tr><td>IO class</td><td>{html.escape(page.io_class)}</td></tr>{cos}</table>'
             f'<table><tr><th colspan=2>activations</th></tr><tr><td>max</td><td class="num">{page.max_value:.4g}</td></tr>'
             f'<tr><td>min</td><td class="num">{page.min_value:.4g}</td></tr><tr><td>mean</td><td class="num">{page.mean:.4g}</td></tr>'
             f'<tr><td>gate open (g &gt; 0)</td><td class="num">{100 * page.gate_open:.1f}%</td></tr></table>'
             f'<table><tr><th colspan=2>signs of (gate, linear)</th></tr>{freq}</table></div>')
    legend = (f'<div class="legend">activation <span class="num">{-scale:.3g}</span><span class="bar"></span>'
              f'<span class="num">{scale:.3g}</span> (0 is white; the extreme token is outlined; hover a token for its activation a, gate g and linear u)</div>')
    parts = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>neuron {page.name} · {html.escape(page.model)}</title><style>{STYLE}</style></head><body>",
        f"<nav>{nav}</nav><h1>Neuron {page.name}</h1>",
        f"<div class=\"meta\">model {html.escape(page.model)} · dataset {html.escape(page.dataset)} · layer {page.layer} · neuron {page.neuron}</div>",
        *(f"<p class=\"meta\">{html.escape(note)}</p>" for note in page.notes),
        facts,
        "<h2>Output weight: tokens promoted and suppressed (w_out · W_U)</h2><div class=\"tokenlists\">",
        _token_list("promoted", page.promoted), _token_list("suppressed", page.suppressed), "</div>",
        f"<h2>Max activations</h2>{legend}",
        *(_example_html(page, e, i + 1, scale) for i, e in enumerate(page.max_examples)),
        f"<h2>Min activations</h2>{legend}",
        *(_example_html(page, e, i + 1, scale) for i, e in enumerate(page.min_examples)),
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
