"""The neuroscope pages of a model: one page per neuron from its recomputed examples, the
statistics of the activation pass and the weights, plus the index of every page written so far. A page
is the viewer's page with that neuron's view inline (`neuron_view`), its example documents whole with
a, g and u at every token.

Layout: `<results>/<model>/neuroscope/L<layer>/N<neuron>/vis.html` (and `activations.pt`),
`index.html` and `neurons.json` (the index's entries).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gated_core.artifacts import atomic_write_text
from gated_core.errors import UserError, first_line
from gated_core.models.readers import open_weights
from gated_core.neurons import NeuronId, is_neuron_name, sort_names
from gated_core.results_layout import NEUROSCOPE_FOLDER
from neuroscope.activation_pass.store import Statistics, statistics_notes
from neuroscope.recompute.examples import LIST_KINDS, Example, Neuron, neuron_folder
from neuroscope.recompute.windows import LayerExamples
from neuroscope.view.facts import LayerLogitEffects, ModelFacts, layer_logit_effects
from neuroscope.view.html import render_index, viewer_page
from neuroscope.view.neuron_view import (
    Documents,
    ViewRun,
    connection_tokens,
    documents_payload,
    index_payload,
    js_call,
    layer_moments,
    layer_payload,
    meta_payload,
    offsets,
    token_texts,
)
from wcos_casestudies.results import ModelResults

PAGE_SHOWN = (50, 10)  # coloured tokens before and after an example's extreme token on a page


def neuroscope_folder(results: ModelResults) -> Path:
    """Where a model's pages go: beside its other results, in the run's settings' folder."""
    return results.folder / NEUROSCOPE_FOLDER


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
    if not isinstance(registry, dict) or not all(isinstance(entry, dict) and is_neuron_name(name)
                                                 for name, entry in registry.items()):
        raise UserError(f"{path}: not the page index this tool writes (LAYER.NEURON entries); {remedy}")
    return registry


def navigation(names: list[str], name: str) -> dict[str, str]:
    """Relative links from one page to the previous and next page and the index."""
    position = names.index(name)
    nav = {"index": "../../index.html"}
    for key, other in (("prev", position - 1), ("next", position + 1)):
        if 0 <= other < len(names):
            layer, neuron = NeuronId.from_name(names[other])
            nav[key] = f"../../L{layer}/N{neuron}/vis.html"
    return nav


def provenance_notes(results: ModelResults) -> list[str]:
    """The lines under a page's title that say where its numbers come from."""
    notes = [results.caption]
    if results.source.is_gguf:
        notes.append(f"weights: {results.source.provenance}")
    return notes


def page_examples(layer: int, neuron: int, rows: list[Example], bos_value: float | None) -> LayerExamples:
    """The examples of one neuron's page as a view's examples: each example document is one window of the whole
    document, with a, g and u at every token (float16, as the view carries them), and each example's next token,
    direct effect, rank and (where computed) ablation effect."""
    kinds = np.array([LIST_KINDS.index(e.kind) for e in rows], dtype=np.int64)
    rank = np.zeros(len(rows), dtype=np.int64)  # place in its list (rows come list by list, best first)
    for kind in set(kinds.tolist()):
        rank[kinds == kind] = np.arange(int((kinds == kind).sum()))
    docs = np.array(sorted({e.doc for e in rows}), dtype=np.int64)
    first = {e.doc: e for e in reversed(rows)}  # each document's values (the same in every example of it)
    lengths = np.array([len(first[d].act) for d in docs], dtype=np.int64)
    width = max(int(lengths.max(initial=0)), 1)

    def values(name: str) -> np.ndarray:
        table = np.zeros((len(docs), width), dtype=np.float16)
        for row, doc in enumerate(docs.tolist()):
            table[row, :lengths[row]] = getattr(first[doc], name)
        return table

    def per_example(name: str, dtype: type) -> np.ndarray:  # None (no value) -> nan
        return np.array([np.nan if getattr(e, name) is None else getattr(e, name) for e in rows], dtype=dtype)

    zeros = np.zeros(len(rows), dtype=np.int64)
    ablated = per_example("ablation_effect", np.float32)
    return LayerExamples(layer, np.array([neuron], dtype=np.int64), zeros, kinds, rank, per_example("doc", np.int64),
                         per_example("position", np.int64), per_example("stored", np.float32),
                         np.searchsorted(docs, [e.doc for e in rows]),
                         np.zeros(len(docs), dtype=np.int64), docs, np.zeros(len(docs), dtype=np.int64), lengths,
                         acts=values("act"), gates=values("gate"), lins=values("lin"),
                         bos_value=np.array([np.nan if bos_value is None else bos_value], dtype=np.float32),
                         next_token=per_example("next_token", np.int64), direct_effect=per_example("direct_effect", np.float32),
                         next_rank=per_example("next_rank", np.int64),
                         ablation_effect=ablated if not np.isnan(ablated).all() else None)


def page_documents(rows: list[Example]) -> Documents:
    """The example documents of one page, each once, by dataset id."""
    first = {e.doc: e for e in reversed(rows)}
    ids = sorted(first)
    tokens = [np.asarray(first[d].token_ids, dtype=np.int64) for d in ids]
    return Documents(np.concatenate(tokens) if tokens else np.zeros(0, dtype=np.int64),
                     offsets(np.array([len(t) for t in tokens], dtype=np.int64)), np.array(ids, dtype=np.int64))


def bos_activation(rows: list[Example], bos_id: int | None) -> float | None:
    """a at position 0 of an example document that starts with BOS (the same in every such document)."""
    return next((e.act[0] for e in rows if bos_id is not None and e.token_ids and e.token_ids[0] == bos_id), None)


@dataclass(frozen=True)
class PageSet:
    """What the pages of one run share: the run, its statistics and weight facts, the names of every page."""

    results: ModelResults
    stats: Statistics
    dataset_name: str
    facts: ModelFacts
    tokenizer: Any
    names: list[str]  # `layer.neuron` of every page, this run's and earlier ones, in order


def page_html(pages: PageSet, layer: int, neuron: int, rows: list[Example], effects: LayerLogitEffects) -> str:
    """The page of one neuron: the viewer's page with this neuron's view inline (`effects`: of this neuron only)."""
    stats, facts = pages.stats, pages.facts
    documents = page_documents(rows)
    ids = set(documents.tokens.tolist()) | set(effects.promoted.flatten().tolist()) | set(effects.suppressed.flatten().tolist())
    ids |= {i for table in effects.input_tokens.values() for i in table.flatten().tolist()}
    ids |= connection_tokens(facts, layer, np.array([neuron]))
    vocab = dict(zip(sorted(ids), token_texts(pages.tokenizer, sorted(ids))))
    notes = provenance_notes(pages.results) + statistics_notes(stats.meta) + facts.notes
    run = ViewRun(Path(), pages.results.source.name, pages.dataset_name, stats, facts, {layer: np.array([neuron])}, vocab,
                  documents, (0, 0), notes, shown=PAGE_SHOWN)
    bos = bos_activation(rows, stats.meta.bos_id) if stats.meta.examples_without_bos else None
    examples = page_examples(layer, neuron, rows, bos)
    moments = {name: {layer: values} for name, values in layer_moments(facts, effects, layer, np.array([neuron])).items()}
    meta = meta_payload(run, [(0, stats.meta.documents)], stats.k, page={
        "layer": layer, "neuron": neuron, "nav": navigation(pages.names, NeuronId(layer, neuron).name), "names": pages.names})
    return viewer_page("".join([js_call("meta", meta), js_call("index", index_payload(run, moments)), js_call("vocab", vocab),
                                js_call("docs", 0, documents_payload(documents, 0, len(documents.starts) - 1)),
                                js_call("layer", layer, layer_payload(run, examples, effects))]))


def write_pages(results: ModelResults, stats: Statistics, facts: ModelFacts, dataset_name: str,
                examples: dict[Neuron, list[Example]], tokenizer: Any, top_tokens: int, table_tokens: int = 10) -> list[Path]:
    """Write the page of every neuron in `examples` and the index (`facts`: `model_facts` of `results` for the
    statistics `stats`); returns the pages' paths."""
    folder = neuroscope_folder(results)
    reader = open_weights(results.source, processing=results.settings.processing, loader=results.loader)
    w_u = reader.unembed()
    registry = read_registry(folder)
    pages = PageSet(results, stats, dataset_name, facts, tokenizer,
                    sort_names({*(NeuronId(layer, neuron).name for layer, neuron in examples), *registry}))
    written = []
    for layer in sorted({layer for layer, _ in examples}):
        neurons = sorted(n for lay, n in examples if lay == layer)
        effects = layer_logit_effects(results, reader, w_u, layer, torch.tensor(neurons), top_tokens, table_tokens,
                                      moments=not facts.moments)
        for column, neuron in enumerate(neurons):
            path = neuron_folder(folder, (layer, neuron)) / "vis.html"
            atomic_write_text(path, page_html(pages, layer, neuron, examples[(layer, neuron)], effects.columns([column])))
            registry[NeuronId(layer, neuron).name] = {
                "layer": layer, "neuron": neuron, "io_class": facts.io_class(layer, neuron), "href": f"L{layer}/N{neuron}/vis.html",
                "note": f"max {float(stats.top_values[layer, neuron, 0]):.3g}, min {float(stats.bottom_values[layer, neuron, 0]):.3g}"}
            written.append(path)
    atomic_write_text(folder / "neurons.json", json.dumps(registry, indent=1))
    atomic_write_text(folder / "index.html", render_index(results.source.name, list(registry.values())))
    results.write_index()
    return written
