"""Recompute chosen neurons' gate (g), linear (u) and activation (a) values on their selected
documents: only those documents run, in batches, and each forward pass stops after the last
layer that is needed. The recomputed extreme value at the stored position must equal the
stored one, or the run fails loudly.

Used by d_recompute_vis.py; on its own it prints the check for some neurons:
  python b2_recompute.py --datadir data --save_to acts --neurons 29.78 15.714
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from neuroscope.activations import batch_plan, mlp_hooks, pad_batch, run_model
from wcos_casestudies.cli import UserError

Neuron = tuple[int, int]  # (layer, neuron)


class RecomputeMismatch(RuntimeError):
    """A recomputed activation differs from the stored one: the statistics do not belong to this model/data."""


@dataclass
class Example:
    """One selected document of a neuron, with the neuron's values at every token."""

    doc: int
    position: int  # of the extreme value
    stored: float
    kind: str  # "max" or "min"
    token_ids: list[int]
    act: list[float]
    gate: list[float]
    lin: list[float]


def parse_neuron(text: str, n_layers: int, d_mlp: int) -> Neuron:
    """'28.4737' -> (28, 4737), checked against the model's size."""
    parts = text.split(".")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise UserError(f"neuron {text!r}: write neurons as LAYER.NEURON, e.g. 28.4737")
    layer, neuron = int(parts[0]), int(parts[1])
    if layer >= n_layers or neuron >= d_mlp:
        raise UserError(f"neuron {text}: out of range; the model has layers 0..{n_layers - 1} and neurons 0..{d_mlp - 1}")
    return layer, neuron


def selected_documents(stats: dict[str, torch.Tensor], layer: int, neuron: int) -> list[tuple[str, int, int, float]]:
    """(kind, document, position, stored value) of a neuron's top-k and bottom-k documents."""
    rows = []
    for kind, prefix in (("max", "top"), ("min", "bottom")):
        for doc, pos, value in zip(stats[f"{prefix}_docs"][layer, neuron].tolist(), stats[f"{prefix}_positions"][layer, neuron].tolist(),
                                   stats[f"{prefix}_values"][layer, neuron].tolist()):
            if doc >= 0:
                rows.append((kind, doc, pos, value))
    return rows


def recompute(model: Any, dataset: Any, requests: dict[Neuron, list[int]], batch_size: int, pad_id: int,
              device: torch.device) -> dict[Neuron, dict[int, tuple[list[float], list[float], list[float]]]]:
    """For each neuron and each of its documents: (act, gate, lin) at every real token.

    Every needed document runs once, batched by length, up to the deepest layer any of its
    neurons needs.
    """
    by_doc: dict[int, list[Neuron]] = {}
    for key, docs in requests.items():
        for doc in docs:
            by_doc.setdefault(doc, []).append(key)
    docs = sorted(by_doc)
    lengths = [int(x) for x in dataset.select(docs)["length"]] if "length" in dataset.column_names else \
        [sum(m) for m in dataset.select(docs)["attention_mask"]]
    results: dict[Neuron, dict[int, tuple[list[float], list[float], list[float]]]] = {key: {} for key in requests}
    for batch in batch_plan(lengths, batch_size):
        batch_docs = [docs[i] for i in batch]
        rows = dataset[batch_docs]
        input_ids, attention_mask = pad_batch(rows["input_ids"], rows["attention_mask"], pad_id, device)
        wanted = sorted({key for doc in batch_docs for key in by_doc[doc]})
        layers = sorted({layer for layer, _ in wanted})
        captured: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

        def capture(layer: int, g: torch.Tensor, u: torch.Tensor, a: torch.Tensor) -> None:
            index = torch.tensor([n for l, n in wanted if l == layer], device=a.device)
            captured[layer] = (a.index_select(-1, index).float().cpu(), g.index_select(-1, index).float().cpu(),
                               u.index_select(-1, index).float().cpu())

        with mlp_hooks(model, capture, layers, stop_after=layers[-1]):
            run_model(model, input_ids, attention_mask)
        for row, doc in enumerate(batch_docs):
            length = int(attention_mask[row].sum())
            for key in by_doc[doc]:
                layer, neuron = key
                column = [n for l, n in wanted if l == layer].index(neuron)
                act, gate, lin = (t[row, :length, column].tolist() for t in captured[layer])
                results[key][doc] = (act, gate, lin)
    return results


def tolerance(value: float, dtype: str) -> float:
    """How far a recomputed value may be from the stored one (different batches, same dtype)."""
    relative = 1e-4 if dtype == "float32" else 3e-2
    return relative * abs(value) + (1e-5 if dtype == "float32" else 1e-2)


def recompute_examples(model: Any, dataset: Any, stats: dict[str, Any], neurons: list[Neuron], batch_size: int,
                       pad_id: int, device: torch.device) -> dict[Neuron, list[Example]]:
    """Every selected document of every neuron, recomputed and checked against the statistics."""
    selected = {key: selected_documents(stats, *key) for key in neurons}
    values = recompute(model, dataset, {key: sorted({doc for _, doc, _, _ in rows}) for key, rows in selected.items()},
                       batch_size, pad_id, device)
    dtype = stats["meta"]["dtype"]
    examples: dict[Neuron, list[Example]] = {}
    for key, rows in selected.items():
        examples[key] = []
        for kind, doc, position, stored in rows:
            act, gate, lin = values[key][doc]
            if position >= len(act) or abs(act[position] - stored) > tolerance(stored, dtype):
                got = act[position] if position < len(act) else "nothing (document too short)"
                raise RecomputeMismatch(
                    f"neuron {key[0]}.{key[1]}, document {doc}, position {position}: stored {kind} {stored:.6g}, "
                    f"recomputed {got}; the statistics were not made by this model on this dataset")
            token_ids = dataset[doc]["input_ids"][:len(act)]
            examples[key].append(Example(doc, position, stored, kind, token_ids, act, gate, lin))
    return examples


def main(argv: Sequence[str] | None = None) -> int:
    from neuroscope.d_recompute_vis import load_inputs

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--datadir", type=Path, required=True)
    parser.add_argument("--save_to", default="activations", help="statistics folder inside --datadir")
    parser.add_argument("--neurons", nargs="+", required=True, help="LAYER.NEURON ...")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    inputs = load_inputs(args)
    neurons = [parse_neuron(n, *inputs.shape) for n in args.neurons]
    examples = recompute_examples(inputs.model, inputs.dataset, inputs.stats, neurons, args.batch_size, inputs.pad_id,
                                  inputs.device)
    for (layer, neuron), rows in examples.items():
        worst = max(abs(e.act[e.position] - e.stored) for e in rows)
        print(f"{layer}.{neuron}: {len(rows)} documents recomputed; largest difference from stored values {worst:.2e}")
    return 0


if __name__ == "__main__":
    from wcos_casestudies.cli import run_main

    sys.exit(run_main(main))
