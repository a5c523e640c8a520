"""The HTML of the neuroscope: the one page that renders a neuron's view (`templates/viewer.html` with the style and
scripts of `assets/` inline), for the viewer (its data in `data/`) and for a single neuron (`vis.html`: its data
inline, one self-contained file to share), and the index of the single pages (`templates/neuron_index.html`).

No page needs network access of any kind (inline CSS and JavaScript, no external URL); it opens from file://.
Dataset text travels as escaped JSON (`neuron_view.js_call`) and enters the page only as text nodes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gated_core.html import Markup, render
from gated_core.naming import shown
from neuroscope.view.neuron_view import to_json
from neuroscope.view.parts import SCHEMA
from wcos_casestudies.utils import CLASS_COLORS

ASSETS = Path(__file__).resolve().parent / "assets"


def asset(name: str) -> str:
    """The text of one file of the assets (a script or the style)."""
    return (ASSETS / name).read_text(encoding="utf-8")


def scripts(*names: str) -> str:
    """The text of the scripts `names` of the assets, after the drawing helpers they use (`common.js`)."""
    return "\n".join(asset(part) for part in ("common.js", *names))


def viewer_page(inline_data: str = "") -> str:
    """The page with its style and script inline; `inline_data`: the view's parts (`neuron_view.js_call` texts, safe
    in a script) for a page that carries its data itself, empty for the viewer (which loads them from `data/`); the data's
format (`parts.SCHEMA`) is written into the page, which unpacks and checks every part by it, and the IO classes'
    colours of main.py's plots (`CLASS_COLORS`, the index's overview)."""
    return render("neuroscope.view", "viewer.html", style=Markup(asset("viewer.css")), schema=Markup(to_json(SCHEMA)),
                  colours=Markup(to_json([list(c) for c in CLASS_COLORS])),
                  script=Markup(scripts("inflate.js", "checksum.js", "overview.js", "viewer.js")), data=Markup(inline_data))


def render_index(model: str, entries: list[dict[str, Any]]) -> str:
    """Index of a model's neuron pages, grouped by layer; entries have layer, neuron, href and may have io_class, note."""
    entries = [{**e, "io_class": shown(e["io_class"])} if "io_class" in e else e for e in entries]
    layers = [(layer, sorted((e for e in entries if e["layer"] == layer), key=lambda e: e["neuron"]))
              for layer in sorted({e["layer"] for e in entries})]
    return render("neuroscope.view", "neuron_index.html", model=model, style=Markup(asset("viewer.css")), layers=layers)
