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

from gated_core.artifacts import atomic_write_text
from gated_core.errors import UserError, first_line
from gated_core.models.readers import open_weights
from neuroscope.activations import SIGN_COMBINATIONS
from neuroscope.facts import LOGIT_BINS, LayerLogitEffects, ModelFacts, layer_logit_effects, model_facts
from neuroscope.histogram import histogram_edges
from neuroscope.pages import Histogram, NeuronPage, render_index, render_page
from neuroscope.recompute import LIST_KINDS, Example, Neuron, neuron_folder
from neuroscope.store import Statistics, statistics_notes
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


def provenance_notes(results: ModelResults) -> list[str]:
    """The lines under a page's title that say where its numbers come from."""
    notes = [results.caption]
    if results.source.is_gguf:
        notes.append(f"weights: {results.source.provenance}")
    return notes


def activation_histogram(stats: Statistics, layer: int, neuron: int, max_value: float, min_value: float) -> Histogram | None:
    """The histogram of a (non-empty bins only), with the max and min marked; None for statistics without one."""
    if stats.histogram is None:
        return None
    counts = stats.histogram[layer, neuron]
    used = torch.nonzero(counts).flatten().tolist()
    first, last = (used[0], used[-1] + 1) if used else (0, 0)
    edges = histogram_edges()
    labels = [f"[{edges[i]:.3g}, {edges[i + 1]:.3g})" for i in range(first, last)]

    def bin_of(value: float) -> int:
        index = int(torch.searchsorted(edges, torch.tensor([value], dtype=torch.float64), right=value >= 0)) - (1 if value >= 0 else 0)
        return min(max(index, first), last - 1) - first

    marks = [(bin_of(max_value), f"max {max_value:.3g}", "#c00"), (bin_of(min_value), f"min {min_value:.3g}", "#00c")]
    return Histogram(counts[first:last].tolist(), labels, marks, "a, bins of |a| on a log scale (4 per octave), height log(1 + count)")


def logit_histogram(effects: LayerLogitEffects, column: int) -> Histogram:
    """The histogram of w_out · W_U over the vocabulary, its ends marked."""
    low, high = float(effects.low[column]), float(effects.high[column])
    step = (high - low) / LOGIT_BINS
    labels = [f"[{low + i * step:.3g}, {low + (i + 1) * step:.3g})" for i in range(LOGIT_BINS)]
    marks = [(LOGIT_BINS - 1, f"most promoted {high:.3g}", "#c00"), (0, f"most suppressed {low:.3g}", "#00c")]
    return Histogram(effects.histogram[column].tolist(), labels, marks, "w_out · W_U over the vocabulary (linear bins), height log(1 + count)")


def why_interesting(facts: ModelFacts, effects: LayerLogitEffects, column: int, layer: int, neuron: int) -> list[str]:
    """Roles, kurtosis and skew of cos(w_out, W_U), and the case-study reason, as short phrases."""
    roles = facts.role_names(layer, neuron)
    kurtosis = float(facts.moments["kurtosis"][layer, neuron]) if facts.moments else float(effects.kurtosis[column])
    skew = float(facts.moments["skew"][layer, neuron]) if facts.moments else float(effects.skew[column])
    why = ["roles: " + ", ".join(r.replace("_", " ") for r in roles) if roles else "no functional role",
           f"kurtosis of cos(w_out, W_U) {kurtosis:.3g}, skew {skew:.3g}"]
    if (layer, neuron) in facts.reasons:
        why.append("case study: " + facts.reasons[(layer, neuron)])
    return why


def bos_activation(rows: list[Example], bos_id: int | None) -> float | None:
    """a at position 0 of an example document that starts with BOS (the same in every such document)."""
    return next((e.act[0] for e in rows if bos_id is not None and e.token_ids and e.token_ids[0] == bos_id), None)


def build_page(results: ModelResults, stats: Statistics, dataset_name: str, rows: list[Example], facts: ModelFacts,
               effects: LayerLogitEffects, column: int, neuron: Neuron, tokenizer: Any) -> NeuronPage:
    """The page of one neuron from its examples, the statistics, the weight facts and its logit effects."""
    layer, index = neuron
    top = effects.promoted.shape[1]
    ids = {i for e in rows for i in e.token_ids} | set(effects.promoted[column].tolist()) | set(effects.suppressed[column].tolist())
    ids |= {i for t in effects.input_tokens.values() for i in t[column].tolist()}
    text = {i: tokenizer.decode([i]) for i in ids}
    max_value, min_value = float(stats.top_values[layer, index, 0]), float(stats.bottom_values[layer, index, 0])
    left_out = stats.meta.examples_without_bos
    histograms = [h for h in (activation_histogram(stats, layer, index, max_value, min_value), logit_histogram(effects, column)) if h]
    return NeuronPage(
        model=results.source.name, dataset=dataset_name, layer=layer, neuron=index, io_class=facts.io_class(layer, index),
        cosines={key: float(value[layer, index]) for key, value in facts.cosines.items()},
        max_value=max_value, min_value=min_value,
        mean=float(stats.mean[layer, index]), gate_open=float(stats.gate_open[layer, index]),
        sign_frequencies=dict(zip(SIGN_COMBINATIONS, stats.sign_frequencies[layer, index].tolist())),
        promoted=[(text[int(i)], float(v)) for i, v in zip(effects.promoted[column, :top], effects.promoted_values[column, :top])],
        suppressed=[(text[int(i)], float(v)) for i, v in zip(effects.suppressed[column, :top], effects.suppressed_values[column, :top])],
        examples={kind: [e for e in rows if e.kind == kind] for kind in LIST_KINDS}, token_text=text,
        notes=provenance_notes(results) + statistics_notes(stats.meta) + facts.notes,
        why=why_interesting(facts, effects, column, layer, index),
        input_tables={name: [text[int(i)] for i in t[column]] for name, t in effects.input_tokens.items()},
        histograms=histograms, bos_value=bos_activation(rows, stats.meta.bos_id) if left_out else None,
    )


def write_pages(results: ModelResults, stats: Statistics, dataset_name: str, examples: dict[Neuron, list[Example]],
                tokenizer: Any, top_tokens: int, table_tokens: int = 10) -> list[Path]:
    """Write the page of every neuron in `examples` and the index; returns the pages' paths."""
    folder = neuroscope_folder(results)
    facts = model_facts(results)
    reader = open_weights(results.source, processing=results.settings.processing, loader=results.loader)
    w_u = reader.unembed()
    registry = read_registry(folder)
    names = sort_names({*(f"{layer}.{neuron}" for layer, neuron in examples), *registry})
    written = []
    for layer in sorted({layer for layer, _ in examples}):
        neurons = sorted(n for lay, n in examples if lay == layer)
        effects = layer_logit_effects(results, reader, w_u, layer, torch.tensor(neurons), top_tokens, table_tokens,
                                      moments=not facts.moments)
        for column, neuron in enumerate(neurons):
            page = build_page(results, stats, dataset_name, examples[(layer, neuron)], facts, effects, column, (layer, neuron), tokenizer)
            name = f"{layer}.{neuron}"
            page.nav = navigation(names, name)
            path = neuron_folder(folder, (layer, neuron)) / "vis.html"
            atomic_write_text(path, render_page(page))
            registry[name] = {"layer": layer, "neuron": neuron, "io_class": page.io_class,
                              "href": f"L{layer}/N{neuron}/vis.html", "note": f"max {page.max_value:.3g}, min {page.min_value:.3g}"}
            written.append(path)
    atomic_write_text(folder / "neurons.json", json.dumps(registry, indent=1))
    atomic_write_text(folder / "index.html", render_index(results.source.name, list(registry.values())))
    results.write_index()
    return written
