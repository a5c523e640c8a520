"""The HTML of the neuroscope: the one page that renders a neuron's view (`assets/viewer.html` with its style
and script inline), for the viewer (its data in `data/`) and for a single neuron (`vis.html`: its data inline,
one self-contained file to share), and the index of the single pages.

No page needs network access of any kind (inline CSS and JavaScript, no external URL); it opens from file://.
Dataset text travels as escaped JSON and enters the page only as text nodes.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

ASSETS = Path(__file__).resolve().parent / "assets"


def scripts(*names: str) -> str:
    """The text of the scripts `names` of the assets, after the drawing helpers they use (`common.js`)."""
    return "\n".join((ASSETS / part).read_text(encoding="utf-8") for part in ("common.js", *names))


NO_SCRIPT = {"viewer": 'This viewer needs JavaScript. Without it, read the per-layer lists: <a href="lists/index.html">lists/index.html</a>.',
             "page": "This page needs JavaScript: it draws the neuron from the data it carries (no network needed)."}


def viewer_page(inline_data: str = "") -> str:
    """The page with its style and script inline; `inline_data`: the view's parts (`neuron_view.js_call` texts)
    for a page that carries its data itself, empty for the viewer (which loads them from `data/`)."""
    page = (ASSETS / "viewer.html").read_text(encoding="utf-8")
    return (page.replace("/*STYLE*/", (ASSETS / "viewer.css").read_text(encoding="utf-8"))
            .replace("/*NOSCRIPT*/", NO_SCRIPT["page" if inline_data else "viewer"])
            .replace("/*SCRIPT*/", scripts("inflate.js", "checksum.js", "viewer.js"))
            .replace("/*DATA*/", inline_data))


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
            f"<title>neurons of {html.escape(model)}</title><style>{(ASSETS / 'viewer.css').read_text(encoding='utf-8')}</style>"
            "</head><body>"
            f"<h1>Neurons of {html.escape(model)}</h1>{''.join(rows)}</body></html>")
