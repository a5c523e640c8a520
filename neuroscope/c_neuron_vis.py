"""Write the HTML pages of chosen neurons from the values b2_recompute.py saved (no model run):
RESULTS/<model>/neuroscope/L<layer>/N<neuron>/vis.html, plus the index.

  python c_neuron_vis.py --datadir ../data --activations activations --neurons 29.78 15.714
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gated_core.cli import add_device, add_model, add_naming, add_results_dir, make_parser, run_in_naming, run_main
from neuroscope.cli import add_activations, add_datadir, add_neurons, add_top_tokens, page_request
from wcos_casestudies.cli import add_weight_settings


def build_parser():
    parser = make_parser(__doc__)
    add_model(parser)
    add_datadir(parser)
    add_activations(parser)
    add_neurons(parser)
    add_weight_settings(parser)
    add_results_dir(parser)
    add_top_tokens(parser)
    add_device(parser, "where the weights are read")
    add_naming(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_in_naming(run, build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """The script's work, the classes shown in the naming of --naming."""
    from neuroscope.view import workflow

    run = workflow.open_run(page_request(args), recomputes=False)
    with workflow.hold_pages(run):
        pages = workflow.write_run_pages(run, workflow.load_recomputed(run), args.top_tokens)
    print(f"{len(pages)} pages in {run.folder} (index.html)")
    return 0


def cli() -> None:
    sys.exit(run_main(main))


if __name__ == "__main__":
    cli()
