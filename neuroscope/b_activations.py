"""One streaming pass of a model over a tokenized dataset, keeping for every neuron its top-k and
bottom-k documents (value, document, position), the top-k documents by |a| in each of the four
sign combinations of (gate, linear) pre-activations, the mean activation, the gate-open and
sign-combination frequencies, a histogram of the activation, and typical examples: per sign
combination and band of |a| (below 1/4, 1/4 to 1, 1 to 4, 4 and up), --typical_per_band tokens
drawn uniformly by a fixed hash of (document, position). Nothing per token is stored.
Position 0 is no example when it is BOS (--include_bos: it is); it counts everywhere else. Tokens whose a, g or u is
not finite (inf or NaN: a float16 run that overflows) are counted per neuron and left out of its other statistics
(its mean and frequencies are over its finite tokens), and the run ends with a warning that names the neurons.

  python b_activations.py --datadir ../data --dataset pydoc --save_to activations      # embedded model
  python b_activations.py --model allenai/OLMo-7B-0424-hf --datadir DIR --dataset dolma_small --save_to results

Checkpoints: DATADIR/SAVE_TO/stats.partial.pt is written every --checkpoint_every batches
(and on Ctrl-C); rerunning the same command resumes and ends with exactly the result of an
uninterrupted run. Shards: --num_shards N --shard_index i (or torchrun's RANK/WORLD_SIZE)
runs a part; `--merge --num_shards N` then gives exactly the single-run result.
torchrun: `torchrun --nproc_per_node N b_activations.py ...` (no --num_shards) runs shard r on rank r, and rank 0
merges the shards into stats.pt once all are written: one command, exactly the result of one process; rerunning
it after a rank was killed resumes every rank from its checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gated_core.cli import add_device, add_dtype, add_model, make_parser, non_negative_int, plain_name, positive_int, run_main
from neuroscope.cli import add_batch_size, add_datadir, pass_request
from neuroscope.constants import DEFAULT_ACTIVATIONS, DEFAULT_EXAMPLES, DEFAULT_TYPICAL, EMBEDDED_DATASET


def build_parser():
    parser = make_parser(__doc__)
    add_model(parser)
    add_datadir(parser)
    parser.add_argument("--dataset", type=plain_name, default=EMBEDDED_DATASET, help="tokenized dataset inside --datadir (input; a_dataset.py --save_to)")
    parser.add_argument("--save_to", type=plain_name, default=DEFAULT_ACTIVATIONS, help="folder inside --datadir for the statistics (output)")
    parser.add_argument("--examples_per_neuron", type=positive_int, default=DEFAULT_EXAMPLES,
                        help="k of the top-k, bottom-k and sign-combination documents")
    parser.add_argument("--typical_per_band", type=non_negative_int, default=DEFAULT_TYPICAL,
                        help="typical examples per neuron, sign combination of (g, u) and band of |a| (0: none)")
    parser.add_argument("--include_bos", action="store_true",
                        help="let position 0 (BOS, the same activation in every document) be an example, as the seed did")
    add_batch_size(parser)
    add_device(parser, "where the model runs (torchrun: cuda becomes cuda:LOCAL_RANK)")
    add_dtype(parser)
    shards = parser.add_argument_group("shards, checkpoints")
    shards.add_argument("--num_shards", type=positive_int, default=None, help="split the dataset into this many parts (default: WORLD_SIZE or 1)")
    shards.add_argument("--shard_index", type=non_negative_int, default=None, help="which part this process runs (default: RANK or 0)")
    shards.add_argument("--merge", action="store_true", help="merge the --num_shards shard files into stats.pt")
    shards.add_argument("--checkpoint_every", type=non_negative_int, default=200, help="batches between checkpoints (0: none)")
    shards.add_argument("--overwrite", action="store_true", help="start again even if statistics or a checkpoint exist")
    shards.add_argument("--stop_after_batches", type=positive_int, default=None, help=argparse.SUPPRESS)  # tests: act as if killed
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from gated_core.errors import UserError
    from gated_core.locks import hold_lock
    from neuroscope.activation_pass import collect
    from neuroscope.activation_pass.store import stats_path
    from neuroscope.core.distributed import launched_by_torchrun, process_group

    if args.merge:
        num_shards, _ = collect.shard_settings(args.num_shards, args.shard_index)
        folder = args.datadir / args.save_to
        if not folder.is_dir():
            raise UserError(f"{folder}: no such folder of shard statistics (the --save_to of the shards)")
        with hold_lock(stats_path(folder)):
            path = collect.merge_shards(folder, num_shards)
        print(f"merged {num_shards} shards -> {path}")
        return 0
    if args.num_shards is None and args.shard_index is None and launched_by_torchrun():  # one command, merged
        with process_group(args.device) as ranks:
            return collect.pass_by_ranks(pass_request(args), ranks, args.overwrite, args.checkpoint_every,
                                         args.stop_after_batches)
    run = collect.plan_pass(pass_request(args))
    collect.run_or_reuse(run, args.overwrite, args.checkpoint_every, args.stop_after_batches)
    return 0


def cli() -> None:
    sys.exit(run_main(main))


if __name__ == "__main__":
    cli()
