"""Read a published neuron summary into this project's statistics (DATADIR/SAVE_TO/stats.pt), so that the pages,
the viewer of every neuron and the class experiments run on it as on b_activations.py's statistics.

The authors' summaries (GLUScope: `sjgerstner/OLMo-7B-0424-hf_neuron-activations`, one row per neuron of its
activations on `sjgerstner/dolma-small`) give each neuron's sign-combination frequencies, its mean activation and
its top documents per sign combination, from which its max and min lists; they hold no token positions (found
again when d_recompute_vis.py runs the model on the examples' documents), no histogram and no typical examples,
which every page then says. A summary that b_export_summary.py wrote is read back exactly.

  python a_dataset.py --tokenized --dataset DOLMA_SMALL --tokenizer allenai/OLMo-7B-0424-hf --datadir DIR --save_to dolma_small
  python b_import_summary.py --summary NEURON_ACTIVATIONS --model allenai/OLMo-7B-0424-hf --datadir DIR \\
         --dataset dolma_small --save_to published
  python d_recompute_vis.py --model allenai/OLMo-7B-0424-hf --datadir DIR --activations published --neurons 28.4737

The summary: a folder written by save_to_disk, a folder of .parquet files, or the hub's name where its files are
in the local cache. Its rows must be the model's neurons (row = layer * d_mlp + neuron) and its examples rows of
the text dataset (made with a_dataset.py --tokenized from the published one, rows in their order).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from gated_core.cli import add_model, make_parser, plain_name, run_main
from neuroscope.cli import add_datadir

DTYPES = ("bfloat16", "float16", "float32")


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(__doc__)
    parser.add_argument("--summary", required=True,
                        help="the neuron summary (input): a save_to_disk folder, a folder of .parquet files, or a hub name in the cache")
    parser.add_argument("--split", default="train", help="the split of a hub summary or a saved DatasetDict")
    add_model(parser)
    add_datadir(parser)
    parser.add_argument("--dataset", type=plain_name, required=True,
                        help="the text dataset the summary is of, inside --datadir (input; a_dataset.py --tokenized)")
    parser.add_argument("--save_to", type=plain_name, required=True, help="folder inside --datadir for the statistics (output)")
    parser.add_argument("--dtype", choices=DTYPES, default="float32",
                        help="the dtype the summary was computed in: recomputation runs the model in it and allows for its "
                             "rounding (default float32, what the authors' TransformerLens bridge loads by default)")
    parser.add_argument("--overwrite", action="store_true", help="replace statistics at --save_to")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from neuroscope.summary.runs import ImportRequest, import_summary

    path = import_summary(ImportRequest(summary=args.summary, model=args.model, datadir=Path(args.datadir),
                                        dataset=args.dataset, save_to=args.save_to, dtype=args.dtype, split=args.split,
                                        overwrite=args.overwrite, full_hash=args.full_hash))
    print(f"statistics of {args.summary} -> {path}")
    return 0


def cli() -> None:
    sys.exit(run_main(main))


if __name__ == "__main__":
    cli()
