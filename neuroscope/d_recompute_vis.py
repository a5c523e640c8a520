"""Recompute chosen neurons on their max/min documents and write one HTML page each,
RESULTS/<model>/neuroscope/L<layer>/N<neuron>/vis.html, plus an index page.

  python d_recompute_vis.py --datadir data --save_to acts --neurons 29.78 15.714
  python d_recompute_vis.py --datadir data --save_to acts --neurons_from ../results/<model>/case_studies.txt
  python d_recompute_vis.py --model allenai/OLMo-7B-0424-hf --datadir DIR --save_to results \\
         --neurons 28.4737 28.9766 31.9634 29.10900 30.10972 29.4180
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from neuroscope.activations import SIGN_COMBINATIONS
from neuroscope.b2_recompute import RecomputeMismatch, parse_neuron, recompute_examples
from neuroscope.c_neuron_vis import NeuronPage, render_index, render_page
from neuroscope.data import load_tokenized
from neuroscope.store import stats_path
from wcos_casestudies.artifacts import atomic_write_text, load_artifact
from wcos_casestudies.cli import HelpFormatter, UserError, default_device, parse_device, parse_dtype, run_main
from wcos_casestudies.models import DEFAULT_MODEL, load_hf_model, open_weights, read_arch, resolve_model
from wcos_casestudies.results import DEFAULT_RESULTS, ModelResults, Settings
from wcos_casestudies.utils import CLASS_NAMES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="as in main.py")
    parser.add_argument("--datadir", type=Path, required=True, help="folder of the dataset and statistics")
    parser.add_argument("--save_to", default="activations", help="statistics folder inside --datadir (b_activations.py --save_to)")
    parser.add_argument("--dataset", default=None, help="tokenized dataset inside --datadir (default: the one of the statistics)")
    parser.add_argument("--neurons", nargs="*", default=[], help="LAYER.NEURON ... or `all`")
    parser.add_argument("--neurons_from", type=Path, default=None, help="a file of LAYER.NEURON names (e.g. case_studies.txt)")
    parser.add_argument("--results_dir", type=Path, default=DEFAULT_RESULTS, help="root of the results tree")
    parser.add_argument("--top_tokens", type=int, default=20, help="promoted and suppressed tokens shown")
    parser.add_argument("--batch_size", type=int, default=8, help="documents per forward pass")
    parser.add_argument("--device", default=default_device(), help="cpu, cuda or cuda:N")
    return parser


@dataclass
class Inputs:
    """What recomputation needs: model, tokenizer, dataset, statistics."""

    source: Any
    model: Any
    tokenizer: Any
    dataset: Any
    dataset_name: str
    stats: dict[str, Any]
    pad_id: int
    device: torch.device
    shape: tuple[int, int]


def load_inputs(args: argparse.Namespace, source: Any = None) -> Inputs:
    """Check the model (resolved here unless given), the statistics and the dataset, then load the model."""
    source = source if source is not None else resolve_model(args.model)
    arch = read_arch(source)
    path = stats_path(args.datadir / args.save_to)
    if not path.exists():
        raise UserError(f"{path}: no statistics; run b_activations.py --datadir {args.datadir} --save_to {args.save_to} first")
    stats = load_artifact(path)
    if stats["meta"]["model"] != source.name:
        raise UserError(f"{path}: statistics of {stats['meta']['model']}, not of {source.name}; pass --model {stats['meta']['model']}")
    dataset_dir = args.datadir / args.dataset if getattr(args, "dataset", None) else Path(stats["meta"]["dataset"])
    dataset, _ = load_tokenized(dataset_dir)
    if len(dataset) != stats["meta"]["documents"]:
        raise UserError(f"{dataset_dir} has {len(dataset)} documents, the statistics were made on {stats['meta']['documents']}")
    device = parse_device(args.device)
    model, tokenizer = load_hf_model(source, dtype=parse_dtype(stats["meta"]["dtype"]), device=device)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return Inputs(source, model, tokenizer, dataset, dataset_dir.name, stats, pad_id, device, (arch.n_layers, arch.d_mlp))


def requested_neurons(args: argparse.Namespace, n_layers: int, d_mlp: int) -> list[tuple[int, int]]:
    """The neurons named on the command line or in --neurons_from, checked and deduplicated."""
    names = list(args.neurons)
    if args.neurons_from is not None:
        if not args.neurons_from.is_file():
            raise UserError(f"--neurons_from {args.neurons_from}: no such file")
        names += args.neurons_from.read_text().split()
    if names == ["all"]:
        return [(layer, neuron) for layer in range(n_layers) for neuron in range(d_mlp)]
    if not names:
        raise UserError("no neurons given; use --neurons LAYER.NEURON ... (or all) or --neurons_from FILE")
    return sorted({parse_neuron(name, n_layers, d_mlp) for name in names})


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    source = resolve_model(args.model)
    arch = read_arch(source)
    neurons = requested_neurons(args, arch.n_layers, arch.d_mlp)  # checked before anything is loaded
    inputs = load_inputs(args, source)
    started = time.perf_counter()
    try:
        examples = recompute_examples(inputs.model, inputs.dataset, inputs.stats, neurons, args.batch_size,
                                      inputs.pad_id, inputs.device)
    except RecomputeMismatch as exc:
        print(f"error: recomputation does not match the statistics: {exc}", file=sys.stderr)
        return 1
    recompute_seconds = time.perf_counter() - started

    results = ModelResults(source, Settings(), root=args.results_dir)
    cosines, categories = results.cosines(), results.categories()
    reader = open_weights(source)
    w_u = reader.unembed()
    folder = results.folder / "neuroscope"
    registry_path = folder / "neurons.json"
    registry = json.loads(registry_path.read_text()) if registry_path.exists() else {}
    names = sorted({*(f"{l}.{n}" for l, n in neurons), *registry}, key=lambda s: tuple(map(int, s.split("."))))
    stats = inputs.stats
    token_ids = {i for rows in examples.values() for e in rows for i in e.token_ids}

    written = []
    for layer, neuron in neurons:
        logits = reader.layer(layer).out[neuron] @ w_u
        top, bottom = torch.topk(logits, args.top_tokens), torch.topk(-logits, args.top_tokens)
        ids = token_ids | set(top.indices.tolist()) | set(bottom.indices.tolist())
        text = {i: inputs.tokenizer.decode([i]) for i in ids}
        name = f"{layer}.{neuron}"
        position = names.index(name)
        nav = {"index": "../../index.html"}
        if position > 0:
            prev_layer, prev_neuron = names[position - 1].split(".")
            nav["prev"] = f"../../L{prev_layer}/N{prev_neuron}/vis.html"
        if position + 1 < len(names):
            next_layer, next_neuron = names[position + 1].split(".")
            nav["next"] = f"../../L{next_layer}/N{next_neuron}/vis.html"
        rows = examples[(layer, neuron)]
        page = NeuronPage(
            model=source.name, dataset=inputs.dataset_name, layer=layer, neuron=neuron,
            io_class=CLASS_NAMES[int(categories[layer, neuron])],
            cosines={key: float(value[layer, neuron]) for key, value in cosines.items()},
            max_value=float(stats["top_values"][layer, neuron, 0]), min_value=float(stats["bottom_values"][layer, neuron, 0]),
            mean=float(stats["mean"][layer, neuron]), gate_open=float(stats["gate_open"][layer, neuron]),
            sign_frequencies=dict(zip(SIGN_COMBINATIONS, stats["sign_frequencies"][layer, neuron].tolist())),
            promoted=[(text[int(i)], float(v)) for v, i in zip(top.values, top.indices)],
            suppressed=[(text[int(i)], -float(v)) for v, i in zip(bottom.values, bottom.indices)],
            max_examples=[e for e in rows if e.kind == "max"], min_examples=[e for e in rows if e.kind == "min"],
            token_text=text, nav=nav,
            notes=[f"weights: {source.provenance}"] if source.is_gguf else [],
        )
        path = folder / f"L{layer}" / f"N{neuron}" / "vis.html"
        atomic_write_text(path, render_page(page))
        registry[name] = {"layer": layer, "neuron": neuron, "io_class": page.io_class,
                          "href": f"L{layer}/N{neuron}/vis.html", "note": f"max {page.max_value:.3g}, min {page.min_value:.3g}"}
        written.append(path)
    atomic_write_text(registry_path, json.dumps(registry, indent=1))
    atomic_write_text(folder / "index.html", render_index(source.name, list(registry.values())))
    print(f"{len(written)} pages in {folder} (index.html); recomputation {recompute_seconds:.1f} s "
          f"({recompute_seconds / max(len(neurons), 1):.1f} s per neuron)")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
