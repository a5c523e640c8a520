"""Pages of what statistics hold, made without the model's weights (`d_recompute_vis.py --statistics_only`): for
statistics imported from a published neuron summary (`b_import_summary.py`) by a user without the weights, or any
statistics. Per neuron: its mean activation, gate-open and sign-combination frequencies, and each example list's
documents as text, the example token marked where the statistics know its position (else the document's first
tokens, said so); an index of the neurons. No activation per token, IO class, role or token table: those need the
weights. Written as one folder (`rewrite_folder`), `templates/statistics_page.html` and `statistics_index.html`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gated_core.html import render
from gated_core.neurons import NeuronId
from gated_core.output_folders import rewrite_folder
from neuroscope.activation_pass.activations import SIGN_COMBINATIONS
from neuroscope.activation_pass.store import Statistics, statistics_notes
from neuroscope.recompute.examples import Neuron, selected_documents, stored_lists

STATISTICS_PAGES_KIND = "statistics-only pages"
BEFORE, AFTER = 24, 8  # tokens shown before and after an example token whose position is known
FIRST_TOKENS = 48  # tokens shown of a document whose example position is unknown


@dataclass(frozen=True)
class ExampleText:
    """One example as text: its value a, document row, and the text around its token (`position` None: unknown)."""

    value: str
    doc: int
    position: int | None
    before: str
    token: str
    after: str


def example_text(value: float, doc: int, position: int, ids: list[int], tokenizer: Any) -> ExampleText:
    """An example's text: BEFORE tokens, the token, AFTER tokens; the first FIRST_TOKENS where its position is unknown."""
    if position < 0:
        return ExampleText(f"{value:.4g}", doc, None, tokenizer.decode(ids[:FIRST_TOKENS]), "",
                           "…" if len(ids) > FIRST_TOKENS else "")
    return ExampleText(f"{value:.4g}", doc, position, tokenizer.decode(ids[max(0, position - BEFORE):position]),
                       tokenizer.decode(ids[position:position + 1]), tokenizer.decode(ids[position + 1:position + 1 + AFTER]))


def neuron_lists(stats: Statistics, neuron: Neuron, dataset: Any,
                 tokenizer: Any) -> list[tuple[str, list[ExampleText], bool]]:
    """Each example list of `neuron` that the statistics have (max, min, the sign combinations; typical examples where
    they have them) as text, and whether some of its positions are unknown; its documents read once."""
    examples = selected_documents(stats, *neuron)  # (kind, document, position, value), list by list
    documents = sorted({doc for _, doc, _, _ in examples})
    ids = dict(zip(documents, dataset.select(documents)["input_ids"] if documents else []))
    kinds = [kind for kind, _, _, _ in stored_lists(stats, neuron[0])]
    lists = []
    for kind in kinds:
        texts = [example_text(value, doc, position, ids[doc], tokenizer) for listed, doc, position, value in examples
                 if listed == kind]
        lists.append((kind, texts, any(text.position is None for text in texts)))
    return lists


def neuron_numbers(stats: Statistics, neuron: Neuron) -> dict[str, Any]:
    """The neuron's numbers as its page and the index print them."""
    layer, index = neuron
    top, bottom = stats.top_values[layer, index, 0].item(), stats.bottom_values[layer, index, 0].item()
    return {"mean": f"{stats.mean[layer, index].item():.4g}", "gate_open": f"{stats.gate_open[layer, index].item():.2%}",
            "max": f"{top:.4g}" if stats.top_docs[layer, index, 0] >= 0 else "–",
            "min": f"{bottom:.4g}" if stats.bottom_docs[layer, index, 0] >= 0 else "–",
            "frequencies": [(name, f"{value:.2%}") for name, value in
                            zip(SIGN_COMBINATIONS, stats.sign_frequencies[layer, index].tolist())]}


def page_name(neuron: Neuron) -> str:
    return f"L{neuron[0]}N{neuron[1]}.html"


def write_statistics_pages(stats: Statistics, dataset: Any, dataset_name: str, tokenizer: Any, neurons: list[Neuron],
                           folder: Path, model: str) -> Path:
    """The pages of `neurons` and their index into `folder` (replaced as one unit; hold its lock)."""
    notes = statistics_notes(stats.meta)
    rows = []
    with rewrite_folder(folder, STATISTICS_PAGES_KIND, {"model": model, "statistics": stats.fingerprint}) as staging:
        for neuron in neurons:
            numbers = neuron_numbers(stats, neuron)
            name = str(NeuronId(*neuron))
            page = render("neuroscope.view", "statistics_page.html", model=model, dataset=dataset_name, name=name,
                          notes=notes, lists=neuron_lists(stats, neuron, dataset, tokenizer), **numbers)
            (staging / page_name(neuron)).write_text(page, encoding="utf-8")
            rows.append({"name": name, "href": page_name(neuron), **numbers})
        index = render("neuroscope.view", "statistics_index.html", model=model, dataset=dataset_name, notes=notes, rows=rows)
        (staging / "index.html").write_text(index, encoding="utf-8")
    return folder / "index.html"
