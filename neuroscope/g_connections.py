"""Connections between gated neurons, from the weights (processed as in Section 5): which earlier neurons write into
each neuron's gate (gate_input) and linear input (linear_input), which later neurons read its output (gate_reader,
linear_reader), and which tokens of the embedding W_E feed its gate and linear input directly (gate_embed,
linear_embed). Virtual weight w_out[l', j] · w_gate[l, i] (or w_in), and its cosine; the top --top_k of each list by
|virtual weight| and by |cosine|, signs kept. A first-order reading: it ignores the norm's per-token scale and
everything in between (attention, other neurons).

With the statistics of b_activations.py (--datadir, --activations), also the expected contribution: virtual weight x
the upstream neuron's mean |a| on the statistics' dataset (read off its histogram of a, each bin at its middle), and
the inputs ranked by it, so that a neuron that never fires does not lead a list. Mean |a| rather than a high
percentile: it weighs how often a neuron fires as well as how strongly, which is what the reading neuron receives on
average; a percentile would rank a neuron that fires once in ten thousand tokens like one that always fires.

Written to RESULTS/<model>/<settings>/connections/: connections.pt (every list of every neuron, with what it was made
from: refused when stale), connections.csv (the lists of --neurons, by default the case-study neurons of
casestudies.py), class_connections.csv/.md and .pdf/.png (per IO class, the mean |cosine| of the top inputs by the
upstream neuron's class, against same-layer random neurons).

  python g_connections.py
  python g_connections.py --datadir ../data --activations activations --neurons 28.28 20.1000
  python g_connections.py --model allenai/OLMo-7B-0424-hf --device cuda --no_embedding
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from gated_core.cli import add_device, add_model, add_naming, add_results_dir, make_parser, plain_name, run_in_naming, run_main
from neuroscope.cli import add_neurons
from wcos_casestudies.cli import add_weight_settings

DEFAULT_TOP_K = 20


def build_parser():
    parser = make_parser(__doc__)
    add_model(parser)
    add_neurons(parser)
    parser.add_argument("--top_k", type=int, default=DEFAULT_TOP_K, help="entries per list (at least 1)")
    parser.add_argument("--no_embedding", action="store_true", help="leave out the embedding's token lists (faster)")
    parser.add_argument("--datadir", type=Path, default=None,
                        help="folder of the activation statistics: expected contributions (default: none)")
    parser.add_argument("--activations", type=plain_name, default=None,
                        help="statistics folder inside --datadir (input; b_activations.py --save_to; default: activations)")
    add_weight_settings(parser)
    add_results_dir(parser)
    add_device(parser, "where the virtual weights are computed")
    add_naming(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_in_naming(run, build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """The script's work, the classes shown in the naming of --naming."""
    from gated_core.cli import check_output_location, parse_device
    from neuroscope.connections.run import ConnectionsRequest, run_connections
    from wcos_casestudies.cli import settings_from_args

    request = ConnectionsRequest(model=args.model, settings=settings_from_args(args), results_dir=args.results_dir,
                                 neurons=args.neurons, neurons_from=args.neurons_from, top_k=args.top_k,
                                 embedding=not args.no_embedding, datadir=args.datadir, activations=args.activations,
                                 loader=args.loader, device=parse_device(args.device), full_hash=args.full_hash)
    check_output_location(args.results_dir, "--results_dir")
    summary = run_connections(request)
    print(summary)
    return 0


def cli() -> None:
    sys.exit(run_main(main))


if __name__ == "__main__":
    cli()
