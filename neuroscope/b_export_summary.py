"""Write statistics of b_activations.py in the form of the authors' published neuron summaries (GLUScope's
columns, one row per neuron), for others to read: DATADIR/SAVE_TO/saved (save_to_disk), SAVE_TO/parquet (parquet
files, the form the hub serves) and SAVE_TO/README.md (a dataset card). Publishing is left to you:
`datasets.load_from_disk(".../saved").push_to_hub(NAME)` with your credentials.

The published columns hold the case frequencies and each case's top examples of a; the per-case means and the top
lists of u, g and act(g), which the activation pass does not compute, are written as a case that never occurs (NaN,
value 0), unless --complete computes every published column by its definition in one more pass of the model. Columns starting `neuroscope_` hold every tensor of the statistics, so that b_import_summary.py reads an
export back exactly (the same statistics fingerprint).

  python b_export_summary.py --datadir ../data --activations activations --save_to activations_summary
  python b_export_summary.py --datadir ../data --activations activations --save_to activations_summary --complete
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from gated_core.cli import add_device, add_model, make_parser, non_negative_int, plain_name, run_main
from neuroscope.cli import add_activations, add_batch_size, add_datadir


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(__doc__)
    add_datadir(parser)
    add_activations(parser, dataset=False)
    parser.add_argument("--save_to", type=plain_name, required=True, help="folder inside --datadir for the export (output)")
    parser.add_argument("--overwrite", action="store_true", help="replace an export at --save_to")
    complete = parser.add_argument_group("--complete: every published column computed (a pass of the model over the dataset)")
    complete.add_argument("--complete", action="store_true",
                          help="also run the statistics' model over their dataset once (as long as b_activations.py's pass) for "
                               "the per-case means of a, u, g, act(g) and the top documents of each, by the published definitions")
    add_model(complete)
    add_device(complete)
    add_batch_size(complete)
    complete.add_argument("--checkpoint_every", type=non_negative_int, default=200,
                          help="batches between checkpoints of the pass (0: none); the same command resumes")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from neuroscope.summary.runs import ExportRequest, export_summary

    folder = export_summary(ExportRequest(datadir=Path(args.datadir), activations=args.activations, save_to=args.save_to,
                                          overwrite=args.overwrite, complete=args.complete, model=args.model,
                                          device=args.device, batch_size=args.batch_size,
                                          checkpoint_every=args.checkpoint_every, full_hash=args.full_hash))
    print(f"summary of {args.datadir / args.activations} -> {folder} (saved/, parquet/, README.md)")
    return 0


def cli() -> None:
    sys.exit(run_main(main))


if __name__ == "__main__":
    cli()
