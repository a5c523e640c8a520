"""The flags of the neuroscope scripts: the data folder, the statistics, the neurons, batches and page tokens."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gated_core.cli import non_negative_int, plain_name, positive_int
from neuroscope.constants import (
    ABLATION_CONDITIONS,
    ABLATION_MODES,
    DEFAULT_ACTIVATIONS,
    DEFAULT_BATCH_SIZE,
    DEFAULT_PAGE_TOKENS,
)


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


def add_ablation_sets(parser: argparse.ArgumentParser, random_seeds: int) -> None:
    """What to ablate, the same in every script that ablates (e_ablate.py, e_generate.py, e_recall.py): --classes,
    --roles, --sample_size, --mode, --conditional and --random_seeds (same-layer random sets per set, default
    `random_seeds`)."""
    from wcos_casestudies.constants import CLASS_WORDS

    sets = parser.add_argument_group("what to ablate")
    sets.add_argument("--classes", nargs="*", default=["depletion"],
                      help=f"IO classes to ablate, one set each (none named: no class): {', '.join(CLASS_WORDS)}; or in the "
                           "follow-up's words (strengthening, weakening, conditional_weakening, ...)")
    sets.add_argument("--roles", nargs="*", default=[],
                      help="functional roles of casestudies.py (roles.pt) to ablate, e.g. prediction suppression")
    sets.add_argument("--sample_size", type=positive_int, nargs="*", default=[],
                      help="also ablate a random sample of this many neurons of each set (the authors used 24 and 243)")
    sets.add_argument("--mode", choices=ABLATION_MODES, default="zero", help="replace a by 0 or by its dataset mean")
    sets.add_argument("--conditional", nargs="*", default=None, metavar="COMBINATION",
                      help=f"also ablate only at tokens of these (sign g, sign a) combinations "
                           f"(none named: all four of {', '.join(ABLATION_CONDITIONS)}; + means > 0)")
    sets.add_argument("--random_seeds", type=non_negative_int, default=random_seeds,
                      help="same-layer random sets per ablated set")


def add_ablated_runs(parser: argparse.ArgumentParser, random_seeds: int) -> None:
    """The flags of a run of one's own inputs under e_ablate.py's sets (e_generate.py, e_recall.py): the sets, the
    samples' seed, the statistics for mean ablation, the weight settings, batches, device, dtype, results."""
    from gated_core.cli import add_device, add_dtype, add_results_dir
    from wcos_casestudies.cli import add_weight_settings

    add_ablation_sets(parser, random_seeds)
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the samples (and of a bootstrap)")
    add_datadir(parser, required=False, needed_for="--mode mean: the dataset means")
    add_activations(parser, dataset=False)
    add_weight_settings(parser)
    add_batch_size(parser)
    add_device(parser)
    add_dtype(parser)
    add_results_dir(parser)


def runs_request(args: argparse.Namespace) -> Any:
    """The `ablated_runs.RunsRequest` that the flags of `add_ablated_runs` describe (the weight settings checked)."""
    from neuroscope.classes.ablated_runs import RunsRequest
    from wcos_casestudies.cli import settings_from_args

    return RunsRequest(model=args.model, full_hash=args.full_hash, classes=tuple(args.classes), roles=tuple(args.roles),
                       sample_size=tuple(args.sample_size), seed=args.seed, mode=args.mode,
                       conditional=None if args.conditional is None else tuple(args.conditional),
                       random_seeds=args.random_seeds, datadir=args.datadir, activations=args.activations,
                       settings=settings_from_args(args), results_dir=args.results_dir, loader=args.loader,
                       device=args.device, dtype=args.dtype)
