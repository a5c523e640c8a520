"""The notebook's probe: one text, chosen neurons, a model the notebook loaded once — the values of `forward.probe_pass`
and the text as HTML coloured on the viewer's scale (`interactive.ipynb`, its last cells)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gated_core.errors import UserError
from gated_core.html import render
from gated_core.neurons import NeuronId, neuron_name
from neuroscope.core.hooks import decoder_layers
from neuroscope.data.tokenization import document_start
from neuroscope.probe.forward import probe_pass
from neuroscope.probe.request import ProbeRequest, ProbeRun, tokenize_documents
from neuroscope.view.neuron_view import token_texts
from wcos_casestudies.results import Settings

NEAR_WHITE = 0.005  # |a| / scale at or below which a token gets no colour (assets/common.js: NEAR_WHITE, the same)


@dataclass
class TextValues:
    """g, u and a of chosen neurons at every token of one text (BOS run, not shown)."""

    tokens: list[str]  # [token] each token's text
    neurons: dict[str, dict[str, torch.Tensor]]  # "LAYER.NEURON" -> "g", "u", "a": [token] float32


def text_run(model: Any, tokenizer: Any, text: str, names: list[str]) -> ProbeRun:
    """A run of `probe_pass` over one text with BOS first, for the named neurons only (their layers alone run, the
    forward pass stops after the last): no results folder, no statistics, no top lists beyond those neurons (its
    source, results and folder are None: probe_pass reads none of them)."""
    blocks = decoder_layers(model)
    n_layers, d_mlp = len(blocks), blocks[0].mlp.down_proj.in_features
    neurons = sorted({NeuronId.parse(name.strip(), n_layers, d_mlp) for name in names})
    if not neurons:
        raise UserError("no neuron given; name one as LAYER.NEURON, e.g. 28.28")
    token_ids, doc_starts = tokenize_documents(tokenizer, [text])
    allowed = torch.zeros(n_layers, d_mlp, dtype=torch.bool)
    allowed[[layer for layer, _ in neurons], [neuron for _, neuron in neurons]] = True
    parameter = next(model.parameters())
    request = ProbeRequest(model=type(model).__name__, documents=[text], settings=Settings(), results_dir=Path("."),
                           neurons=[neuron_name(*n) for n in neurons], top=1)
    return ProbeRun(request, None, None, None, tokenizer, neurons, allowed, token_ids, doc_starts,
                    document_start(tokenizer, True)["bos_token_id"], parameter.device, parameter.dtype)


def probe_text(model: Any, tokenizer: Any, text: str, names: list[str]) -> TextValues:
    """g, u and a of the named neurons (LAYER.NEURON) at every token of `text`, by `probe_pass` with `model` (a
    Hugging Face gated model, loaded once by the caller); a bad name or an empty text is a UserError."""
    run = text_run(model, tokenizer, text, names)
    values = probe_pass(run, model)
    return TextValues(token_texts(tokenizer, run.token_ids),
                      {neuron_name(*neuron): found for neuron, found in values.chosen.items()})


def token_colour(value: float, scale: float) -> str:
    """The viewer's diverging scale (assets/common.js, draw.colour): 0 white, +scale full red, -scale full blue
    (JavaScript's Math.round: halves round up)."""
    t = max(-1.0, min(1.0, value / scale)) if scale > 0 else 0.0
    fade = math.floor(255 * (1 - abs(t)) + 0.5)
    return f"rgb(255,{fade},{fade})" if t >= 0 else f"rgb({fade},{fade},255)"


def token_background(value: float, scale: float) -> str:
    """A token's background on the viewer's scale, "" where it would be (almost) white: |value| / scale at most
    NEAR_WHITE (assets/common.js, draw.background; tests/test_structure.py compares the two)."""
    return token_colour(value, scale) if abs(value) / (scale or 1) > NEAR_WHITE else ""


def shown_token(text: str) -> str:
    """A token as the pages show it (draw.shown): a newline marked ⏎, an empty token ∅."""
    return text.replace("\n", "⏎\n") or "∅"


def coloured_html(tokens: list[str], a: Any, g: Any, u: Any) -> str:
    """The text as HTML (`templates/coloured_text.html`), each token coloured by a on the viewer's scale (±max |a| over
    the text), with a, g and u in its title. `a`, `g`, `u`: [token] (lists or tensors)."""
    a, g, u = ([float(v) for v in values] for values in (a, g, u))
    scale = max((abs(v) for v in a), default=0.0)
    shown = [(shown_token(token), f"{json.dumps(token, ensure_ascii=False)}: a {a_i:.3g} · g {g_i:.3g} · u {u_i:.3g}",
              token_background(a_i, scale))
             for token, a_i, g_i, u_i in zip(tokens, a, g, u)]
    return render("neuroscope.probe", "coloured_text.html", tokens=shown, low=f"{-scale:.3g}", high=f"{scale:.3g}",
                  low_colour=token_colour(-scale, scale), high_colour=token_colour(scale, scale))
