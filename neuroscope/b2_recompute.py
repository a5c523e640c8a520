"""Recompute chosen neurons' gate (g), linear (u) and activation (a) values on their max and min
documents (only those documents run, batched, each pass stopping after the deepest layer needed),
check them against the statistics, and save them as
RESULTS/<model>/neuroscope/L<layer>/N<neuron>/activations.pt for c_neuron_vis.py. Each example also gets what it
does to the next token (neuroscope/recompute/next_token.py: direct effect and rank; with --ablation_effect, the exact loss
change with only its neuron zeroed there).

  python b2_recompute.py --datadir ../data --activations activations --neurons 29.78 15.714
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from gated_core.cli import add_device, add_model, add_results_dir, make_parser, run_main
from gated_core.neurons import NeuronId
from neuroscope.cli import add_activations, add_batch_size, add_datadir, add_neurons, page_request
from wcos_casestudies.cli import add_weight_settings


def build_parser():
    parser = make_parser(__doc__)
    add_model(parser)
    add_datadir(parser)
    add_activations(parser)
    add_neurons(parser)
    add_weight_settings(parser)
    add_results_dir(parser)
    add_batch_size(parser)
    add_device(parser)
    parser.add_argument("--ablation_effect", action="store_true",
                        help="also the exact next-token loss change of each example with only its neuron zeroed at its "
                             "extreme token (two more forward passes per batch of examples)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from neuroscope.view import workflow

    run = workflow.open_run(page_request(args))
    with workflow.hold_pages(run):  # activations.pt lies beside the pages: one page run at a time
        recomputed = workflow.recompute_checked(run, args.batch_size, args.ablation_effect)
        paths = workflow.save_recomputed(run, recomputed)
    for path in paths:
        print(f"-> {path}")
    for (layer, neuron), rows in recomputed.examples.items():
        worst = max(abs(e.act[e.position] - e.stored) for e in rows)
        print(f"{NeuronId(layer, neuron)}: {len(rows)} documents recomputed; largest difference from stored values {worst:.2e}")
    return 0


def cli() -> None:
    sys.exit(run_main(main))


if __name__ == "__main__":
    cli()
