"""Recompute chosen neurons on their max/min documents and write one HTML page each:
RESULTS/<model>/neuroscope/L<layer>/N<neuron>/vis.html (with the recomputed values in
activations.pt beside it), plus an index page. b2_recompute.py and c_neuron_vis.py do the two
steps separately.

  python d_recompute_vis.py --datadir ../data --activations activations --neurons 29.78 15.714
  python d_recompute_vis.py --datadir ../data --neurons_from ../results/<model>/case_studies.txt
  python d_recompute_vis.py --model allenai/OLMo-7B-0424-hf --datadir DIR --activations results \\
         --neurons 28.4737 28.9766 31.9634 29.10900 30.10972 29.4180

Give it the same weight flags as main.py (--threshold, --legacy_copysign, --refactor_glu,
--no_processing): the pages show the classes and cosines of that run.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

from wcos_casestudies.cli import (
    add_activations,
    add_batch_size,
    add_datadir,
    add_device,
    add_model,
    add_neurons,
    add_results_dir,
    add_top_tokens,
    add_weight_settings,
    make_parser,
    run_main,
)


def build_parser():
    parser = make_parser(__doc__)
    add_model(parser)
    add_datadir(parser)
    add_activations(parser)
    add_neurons(parser)
    add_weight_settings(parser)
    add_results_dir(parser)
    add_top_tokens(parser)
    add_batch_size(parser)
    add_device(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from neuroscope import workflow

    run = workflow.open_run(args)
    with workflow.hold_pages(run):
        started = time.perf_counter()
        examples = workflow.recompute_checked(run, args.batch_size)
        seconds = time.perf_counter() - started
        workflow.save_recomputed(run, examples)
        pages = workflow.write_run_pages(run, examples, args.top_tokens)
    print(f"{len(pages)} pages in {run.folder} (index.html); recomputation {seconds:.1f} s "
          f"({seconds / max(len(pages), 1):.1f} s per neuron)")
    return 0


def cli() -> None:
    sys.exit(run_main(main))


if __name__ == "__main__":
    cli()
