"""The neuroscope pages of a model: one page per neuron from its recomputed examples, the
statistics of the activation pass and the weights, plus the index of every page written so far.

Layout: `<results>/<model>/neuroscope/L<layer>/N<neuron>/vis.html` (and `activations.pt`),
`index.html` and `neurons.json` (the index's entries).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from neuroscope.activations import SIGN_COMBINATIONS
from neuroscope.pages import NeuronPage, render_index, render_page
from neuroscope.recompute import Example, Neuron, neuron_folder
from wcos_casestudies.artifacts import atomic_write_text
from wcos_casestudies.constants import CLASS_NAMES
from wcos_casestudies.errors import UserError, first_line
from wcos_casestudies.models.glu import refactor_glu
from wcos_casestudies.models.readers import open_weights
from wcos_casestudies.results import ModelResults


def neuroscope_folder(results: ModelResults) -> Path:
    """Where a model's pages go: beside its other results, in the run's settings' folder."""
    return results.folder / "neuroscope"


def read_registry(folder: Path) -> dict[str, dict[str, Any]]:
    """The index entries of the pages written so far (`neurons.json`), by name `layer.neuron`; a file
    that is not such a table is refused (it would be overwritten)."""
    path = folder / "neurons.json"
    if not path.exists():
        return {}
    remedy = "move it away (the index is then rebuilt from the pages written next)"
    try:
        registry = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: cannot read the page index ({first_line(exc)}); {remedy}") from exc
    if not isinstance(registry, dict) or not all(isinstance(entry, dict) and re.fullmatch(r"[0-9]+\.[0-9]+", name)
                                                 for name, entry in registry.items()):
        raise UserError(f"{path}: not the page index this tool writes (LAYER.NEURON entries); {remedy}")
    return registry


def sort_names(names) -> list[str]:
    """`layer.neuron` names in (layer, neuron) order."""
    return sorted(names, key=lambda s: tuple(map(int, s.split("."))))


def navigation(names: list[str], name: str) -> dict[str, str]:
    """Relative links from one page to the previous and next page and the index."""
    position = names.index(name)
    nav = {"index": "../../index.html"}
    for key, other in (("prev", position - 1), ("next", position + 1)):
        if 0 <= other < len(names):
            layer, neuron = names[other].split(".")
            nav[key] = f"../../L{layer}/N{neuron}/vis.html"
    return nav


def output_tokens(w_out: torch.Tensor, w_u: torch.Tensor, top: int) -> tuple[list[int], list[float], list[int], list[float]]:
    """The token ids w_out promotes and suppresses most (w_out · W_U), with their values."""
    logits = w_out @ w_u  # [vocab]
    up, down = torch.topk(logits, top), torch.topk(-logits, top)
    return up.indices.tolist(), up.values.tolist(), down.indices.tolist(), (-down.values).tolist()


def provenance_notes(results: ModelResults) -> list[str]:
    """The lines under a page's title that say where its numbers come from."""
    notes = [results.caption]
    if results.source.is_gguf:
        notes.append(f"weights: {results.source.provenance}")
    return notes


def write_pages(results: ModelResults, stats: dict[str, Any], dataset_name: str, examples: dict[Neuron, list[Example]],
                tokenizer: Any, top_tokens: int) -> list[Path]:
    """Write the page of every neuron in `examples` and the index; returns the pages' paths."""
    folder = neuroscope_folder(results)
    cosines, categories = results.cosines(), results.categories()
    reader = open_weights(results.source, processing=results.settings.processing, loader=results.loader)
    w_u = reader.unembed()
    registry = read_registry(folder)
    names = sort_names({*(f"{layer}.{neuron}" for layer, neuron in examples), *registry})
    written = []
    for (layer, neuron), rows in sorted(examples.items()):
        mlp = reader.layer(layer)
        w_out = (refactor_glu(mlp) if results.settings.refactor_glu else mlp).out[neuron]
        up_ids, up_values, down_ids, down_values = output_tokens(w_out, w_u, top_tokens)
        ids = {i for e in rows for i in e.token_ids} | set(up_ids) | set(down_ids)
        text = {i: tokenizer.decode([i]) for i in ids}
        name = f"{layer}.{neuron}"
        page = NeuronPage(
            model=results.source.name, dataset=dataset_name, layer=layer, neuron=neuron,
            io_class=CLASS_NAMES[int(categories[layer, neuron])],
            cosines={key: float(value[layer, neuron]) for key, value in cosines.items() if value is not None},
            max_value=float(stats["top_values"][layer, neuron, 0]), min_value=float(stats["bottom_values"][layer, neuron, 0]),
            mean=float(stats["mean"][layer, neuron]), gate_open=float(stats["gate_open"][layer, neuron]),
            sign_frequencies=dict(zip(SIGN_COMBINATIONS, stats["sign_frequencies"][layer, neuron].tolist())),
            promoted=[(text[i], v) for i, v in zip(up_ids, up_values)],
            suppressed=[(text[i], v) for i, v in zip(down_ids, down_values)],
            max_examples=[e for e in rows if e.kind == "max"], min_examples=[e for e in rows if e.kind == "min"],
            token_text=text, nav=navigation(names, name), notes=provenance_notes(results),
        )
        path = neuron_folder(folder, (layer, neuron)) / "vis.html"
        atomic_write_text(path, render_page(page))
        registry[name] = {"layer": layer, "neuron": neuron, "io_class": page.io_class,
                          "href": f"L{layer}/N{neuron}/vis.html", "note": f"max {page.max_value:.3g}, min {page.min_value:.3g}"}
        written.append(path)
    atomic_write_text(folder / "neurons.json", json.dumps(registry, indent=1))
    atomic_write_text(folder / "index.html", render_index(results.source.name, list(registry.values())))
    results.write_index()
    return written
