"""Token positions that statistics imported from a published summary do not hold (`summary.reading.UNKNOWN_POSITION`),
found again: each example's document runs through the model, and its position is the token whose activation a is
closest to the stored value (the value of the document's most extreme token in that list). Recomputation then
checks that value as for any statistics (`examples.RecomputeMismatch`), so a summary of another model or dataset
is still refused.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from neuroscope.activation_pass.store import Statistics
from neuroscope.core.batches import padded_batches, subset_plan
from neuroscope.core.hooks import mlp_hooks, run_model
from neuroscope.data.dataset_store import document_lengths

Neuron = tuple[int, int]  # (layer, neuron)
LIST_NAMES = ("top", "bottom", "combo")  # the example lists whose positions may be unknown


def position_tensors(stats: Statistics) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(signed values, documents, positions) of each example list, [layer neuron slots] (sign-combination lists
    flattened over their combinations)."""
    from neuroscope.activation_pass.activations import COMBINATION_SIGNS

    lists = {"top": (stats.top_values, stats.top_docs, stats.top_positions),
             "bottom": (stats.bottom_values, stats.bottom_docs, stats.bottom_positions)}
    if stats.combo_docs is not None:
        signs = torch.tensor(COMBINATION_SIGNS, dtype=stats.combo_values.dtype)[:, None]
        lists["combo"] = tuple(t.flatten(2) for t in (stats.combo_values * signs, stats.combo_docs, stats.combo_positions))
    return lists


def unknown_entries(stats: Statistics, neurons: Sequence[Neuron]) -> list[tuple[str, int, int, int, int, float]]:
    """(list, layer, neuron, slot, document, stored value) of every example of `neurons` with a document and no position."""
    entries = []
    chosen = torch.tensor([list(key) for key in neurons], dtype=torch.long).reshape(-1, 2)
    for name, (values, docs, positions) in position_tensors(stats).items():
        picked = (docs[chosen[:, 0], chosen[:, 1]] >= 0) & (positions[chosen[:, 0], chosen[:, 1]] < 0)
        for row, slot in picked.nonzero().tolist():
            layer, neuron = chosen[row].tolist()
            entries.append((name, layer, neuron, slot, int(docs[layer, neuron, slot]), float(values[layer, neuron, slot])))
    return entries


def located(stats: Statistics, model: Any, dataset: Any, neurons: Sequence[Neuron], batch_size: int, pad_id: int,
            device: torch.device) -> Statistics:
    """`stats` with the unknown positions of `neurons`' examples found (the same statistics where none is unknown)."""
    entries = unknown_entries(stats, neurons)
    if not entries:
        return stats
    by_doc: dict[int, list[int]] = {}
    for index, entry in enumerate(entries):
        by_doc.setdefault(entry[4], []).append(index)
    docs = sorted(by_doc)
    lengths = document_lengths(dataset.select(docs))
    found = np.full(len(entries), -1, dtype=np.int64)
    for batch in padded_batches(dataset, subset_plan(docs, lengths, batch_size), pad_id, device):
        wanted = [index for doc in batch.docs for index in by_doc[doc]]
        found[wanted] = batch_positions(model, batch, [entries[i] for i in wanted])
    positions = {name: lists[2].clone() for name, lists in position_tensors(stats).items()}
    for (name, layer, neuron, slot, _, _), position in zip(entries, found.tolist()):
        positions[name][layer, neuron, slot] = position
    combo = {} if "combo" not in positions else {"combo_positions": positions["combo"].reshape(stats.combo_positions.shape)}
    return dataclasses.replace(stats, top_positions=positions["top"], bottom_positions=positions["bottom"], **combo)


def batch_positions(model: Any, batch: Any, entries: list[tuple[str, int, int, int, int, float]]) -> list[int]:
    """Each entry's position in its document of `batch`: the real token whose a is closest to the stored value."""
    rows = {doc: row for row, doc in enumerate(batch.docs)}
    chosen: dict[int, set[int]] = {}
    for _, layer, neuron, _, _, _ in entries:
        chosen.setdefault(layer, set()).add(neuron)
    columns = {layer: sorted(neurons) for layer, neurons in chosen.items()}
    column_of = {(layer, neuron): index for layer, neurons in columns.items() for index, neuron in enumerate(neurons)}
    captured: dict[int, torch.Tensor] = {}

    def capture(layer: int, g: torch.Tensor, u: torch.Tensor, a: torch.Tensor) -> None:
        captured[layer] = a.index_select(-1, torch.tensor(columns[layer], device=a.device)).float().cpu()

    with mlp_hooks(model, capture, sorted(columns)):
        run_model(model, batch.input_ids, batch.attention_mask)
    real = batch.attention_mask.bool().cpu()
    result = []
    for _, layer, neuron, _, doc, stored in entries:
        row = rows[doc]
        values = captured[layer][row, :, column_of[(layer, neuron)]]
        distance = torch.where(real[row], (values - stored).abs(), torch.inf)
        result.append(int(distance.argmin()))
    return result
