"""The flags of the neuroscope scripts: the data folder, the statistics, the neurons, batches and page tokens."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gated_core.cli import plain_name, positive_int
from neuroscope.constants import DEFAULT_ACTIVATIONS, DEFAULT_BATCH_SIZE, DEFAULT_PAGE_TOKENS


def add_batch_size(parser: argparse.ArgumentParser) -> None:
    """`--batch_size`: documents per forward pass."""
    parser.add_argument("--batch_size", type=positive_int, default=DEFAULT_BATCH_SIZE, help="documents per forward pass")


def add_datadir(parser: argparse.ArgumentParser, required: bool = True, needed_for: str = "") -> None:
    """`--datadir`: the folder of tokenized datasets and activation statistics (where not `required`: only
    `needed_for` something, None by default)."""
    parser.add_argument("--datadir", type=Path, required=required, default=None,
                        help="folder that holds the tokenized datasets and the activation statistics" +
                             (f" (only for {needed_for})" if needed_for else ""))


def add_activations(parser: argparse.ArgumentParser, dataset: bool = True) -> None:
    """`--activations`: the statistics of the activation pass (an input: `b_activations.py --save_to`); with
    `dataset`, also `--dataset`, the tokenized dataset to read instead of the statistics' own."""
    parser.add_argument("--activations", type=plain_name, default=DEFAULT_ACTIVATIONS,
                        help="statistics folder inside --datadir (input; what b_activations.py --save_to wrote)")
    if dataset:
        parser.add_argument("--dataset", type=plain_name, default=None,
                            help="tokenized dataset inside --datadir (input; default: the one the statistics were made on)")


def add_neurons(parser: argparse.ArgumentParser) -> None:
    """`--neurons` / `--neurons_from`: which neurons a neuroscope script works on."""
    parser.add_argument("--neurons", nargs="*", default=[], metavar="LAYER.NEURON", help="neurons such as 28.4737, or `all`")
    parser.add_argument("--neurons_from", type=Path, default=None,
                        help="a file of LAYER.NEURON names (input; e.g. casestudies.py's case_studies.txt)")


def add_top_tokens(parser: argparse.ArgumentParser) -> None:
    """`--top_tokens`: promoted and suppressed tokens shown on a neuron page."""
    parser.add_argument("--top_tokens", type=positive_int, default=DEFAULT_PAGE_TOKENS, help="promoted and suppressed tokens shown")


def page_request(args: argparse.Namespace) -> Any:
    """The `workflow.PageRequest` that the flags of a page script describe (the weight settings checked)."""
    from neuroscope.view.workflow import PageRequest
    from wcos_casestudies.cli import settings_from_args

    return PageRequest(model=args.model, datadir=args.datadir, activations=args.activations, neurons=args.neurons,
                       neurons_from=args.neurons_from, settings=settings_from_args(args), results_dir=args.results_dir,
                       loader=args.loader, device=args.device, dataset=getattr(args, "dataset", None),
                       whole_layers=getattr(args, "whole_layers", False), full_hash=args.full_hash)


def pass_request(args: argparse.Namespace) -> Any:
    """The `collect.PassRequest` that the flags of b_activations.py describe."""
    from neuroscope.activation_pass.collect import PassRequest

    return PassRequest(model=args.model, datadir=args.datadir, dataset=args.dataset, save_to=args.save_to,
                       examples_per_neuron=args.examples_per_neuron, batch_size=args.batch_size, device=args.device,
                       dtype=args.dtype, include_bos=args.include_bos, num_shards=args.num_shards,
                       shard_index=args.shard_index, full_hash=args.full_hash, typical_per_band=args.typical_per_band)
