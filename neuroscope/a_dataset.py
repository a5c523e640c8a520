"""Tokenize a text dataset for the activation pass: shuffle (seed 2512800), take a pool of
4000 x mtokens documents, tokenize each (BOS first, truncated to --max_length) and keep
documents in order until mtokens million tokens, dropping exact duplicate documents; save with
`save_to_disk` as DATADIR/SAVE_TO. A tokenizer without BOS (OLMo's) puts its EOS first, as the
seed did. --streaming reads a hub dataset through a buffered shuffle instead of loading it whole
(another selection of documents).

  python a_dataset.py --datadir ../data --save_to pydoc                       # embedded text, offline
  python a_dataset.py --datadir ../data --save_to dolma_small --dataset emozilla/dolma-v1_7-3B \\
                      --tokenizer allenai/OLMo-7B-0424-hf                     # the paper's set-up
  python a_dataset.py --datadir ../data --save_to dolma-small --tokenized --dataset PATH/dolma-small \\
                      --tokenizer allenai/OLMo-7B-0424-hf                     # the authors' published tokens

--tokenized reads a dataset that is already tokenized (an input_ids column: the authors' sjgerstner/dolma-small, a
folder written by save_to_disk, .parquet or .arrow files) and keeps every row in its order, so that published row
numbers stay valid; its ids are checked against --tokenizer (vocabulary, and the first rows' text where it has one).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from gated_core.cli import make_parser, plain_name, positive_float, positive_int, run_main
from gated_core.constants import DEFAULT_MODEL
from neuroscope.cli import add_datadir
from neuroscope.constants import (
    DEFAULT_MAX_LENGTH,
    DEFAULT_MTOKENS,
    EMBEDDED_DATASET,
    MAX_TOKENIZE_PROCESSES,
    POOL_PER_MTOKEN,
    STREAM_BUFFER,
)


def build_parser():
    parser = make_parser(__doc__)
    add_datadir(parser)
    parser.add_argument("--save_to", type=plain_name, required=True, help="name of the tokenized dataset inside --datadir (output)")
    parser.add_argument("--dataset", default=EMBEDDED_DATASET,
                        help="text to tokenize (input): a hub dataset name, a local .txt (one document per file) / .jsonl / "
                             f".parquet file or folder, or `{EMBEDDED_DATASET}` (Python's documentation topics, offline)")
    parser.add_argument("--tokenizer", default=DEFAULT_MODEL, help="model whose tokenizer to use (any --model of main.py)")
    parser.add_argument("--text_field", default="text", help="column holding the text")
    parser.add_argument("--split", default="train", help="split of a hub dataset")
    parser.add_argument("--max_length", type=positive_int, default=DEFAULT_MAX_LENGTH, help="tokens per document at most (BOS included)")
    amount = parser.add_mutually_exclusive_group()
    amount.add_argument("--mtokens", "--Mtokens", dest="mtokens", type=positive_float, default=DEFAULT_MTOKENS,
                        help="millions of tokens to keep (--Mtokens: the seed's spelling)")
    amount.add_argument("--save_all", action="store_true", help="keep every document")
    parser.add_argument("--no_bos_token", dest="add_bos_token", action="store_false",
                        help="put nothing first in a document (by default BOS goes first; a tokenizer without BOS, such as "
                             "OLMo's, puts EOS first, as the seed did)")
    parser.add_argument("--padding", action="store_true", help="pad every document to --max_length (padding is masked later)")
    parser.add_argument("--return_overflowing_tokens", action="store_true", help="split long documents instead of truncating them")
    parser.add_argument("--keep_duplicates", action="store_true", help="keep exact duplicate documents (dropped by default)")
    speed = parser.add_argument_group("reading and speed")
    speed.add_argument("--streaming", action="store_true",
                       help="stream a hub dataset through a buffered shuffle that reads only what it needs, instead of "
                            "loading it whole; selects other documents than the seed's shuffle")
    speed.add_argument("--buffer_size", type=positive_int, default=STREAM_BUFFER, help="documents in the --streaming shuffle buffer")
    speed.add_argument("--num_proc", type=positive_int, default=None,
                       help="tokenizing processes (default: half the CPU cores, at most "
                            f"{MAX_TOKENIZE_PROCESSES}; one process already uses every core through the tokenizer's threads)")
    parser.add_argument("--tokenized", action="store_true",
                        help="--dataset is already tokenized (an input_ids column): keep every row in its order (no "
                             "shuffle, selection or duplicates dropped), checked against --tokenizer")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing dataset of that name (only a dataset that a_dataset.py wrote)")
    return parser


# flags that change how text is tokenized or selected: --tokenized keeps the rows as they are
TOKENIZING_FLAGS = ("streaming", "padding", "return_overflowing_tokens", "keep_duplicates", "save_all")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from gated_core.artifacts import remove_stale_folders
    from gated_core.cli import check_output_location
    from gated_core.errors import UserError
    from gated_core.locks import hold_lock
    from gated_core.models.loading import load_tokenizer
    from gated_core.models.sources import resolve_model
    from neuroscope.data.dataset_store import check_replaceable, save_dataset

    if args.max_length < 2:
        raise UserError(f"--max_length {args.max_length}: must be at least 2")
    given = [flag for flag in TOKENIZING_FLAGS if getattr(args, flag)] + ([] if args.add_bos_token else ["no_bos_token"])
    if args.tokenized and given:
        raise UserError(f"--tokenized keeps every row as it is: leave out --{', --'.join(given)}")
    target = args.datadir / args.save_to
    check_output_location(args.datadir, "--datadir")
    if target.exists() or target.is_symlink():
        if not args.overwrite:
            raise UserError(f"{target} exists; choose another --save_to or pass --overwrite")
        check_replaceable(target)
    source = resolve_model(args.tokenizer)
    tokenizer = load_tokenizer(source)
    make = imported_rows(args, tokenizer) if args.tokenized else tokenized_texts(args, tokenizer)
    with hold_lock(target):
        remove_stale_folders(target)
        dataset, meta = make()
        meta.update({"tokenizer": source.name, "dataset": args.dataset})
        save_dataset(dataset, meta, target, overwrite=args.overwrite)
    for line in summary_lines(meta, target):
        print(line)
    return 0


def tokenized_texts(args: argparse.Namespace, tokenizer: Any) -> Callable[[], tuple[Any, dict]]:
    """The texts of --dataset (read now), and how to tokenize and select them (`build_dataset`)."""
    from neuroscope.data.texts import load_texts, stream_texts
    from neuroscope.data.tokenization import build_dataset

    texts = (stream_texts if args.streaming else load_texts)(args.dataset, args.text_field, args.split)
    num_proc = args.num_proc or max(1, min((os.cpu_count() or 1) // 2, MAX_TOKENIZE_PROCESSES))
    return lambda: build_dataset(texts, tokenizer, None if args.save_all else args.mtokens, args.max_length,
                                 args.add_bos_token, args.return_overflowing_tokens, args.padding, args.text_field,
                                 num_proc=num_proc, drop_duplicates=not args.keep_duplicates, buffer_size=args.buffer_size)


def imported_rows(args: argparse.Namespace, tokenizer: Any) -> Callable[[], tuple[Any, dict]]:
    """The rows of the tokenized --dataset (opened now), and how to check and keep them (`import_tokenized`)."""
    from neuroscope.data.tokenized import import_tokenized, open_tokenized

    rows = open_tokenized(args.dataset, args.split)
    return lambda: import_tokenized(rows, tokenizer, args.text_field)


def summary_lines(meta: dict, target) -> list[str]:
    """What the run did, for the log: counts, the selection, BOS, duplicates, a goal not reached."""
    lines = [f"{meta['documents']} documents, {meta['tokens']:,} tokens -> {target}", f"selection: {meta['selection']}"]
    if meta["bos_is_eos"]:
        lines.append(f"note: the tokenizer has no BOS token; every document starts with its EOS token {meta['bos_token']!r} "
                     f"(id {meta['bos_token_id']}), as the seed did (the authors' Dolma subset starts every document so)")
    if meta["duplicates_dropped"]:
        lines.append(f"dropped {meta['duplicates_dropped']} exact duplicate documents (of {meta['documents_read']} read)")
    if not meta["reached_goal"]:
        lines.append(shortfall_line(meta))
    return lines


def shortfall_line(meta: dict) -> str:
    """Why there are fewer tokens than asked: the seed's shuffle pool ran out while the dataset holds more documents,
    or the dataset itself (or the stream) ran out."""
    fewer = f"{meta['tokens']:,} < {meta['goal_tokens']:,}"
    pool, documents = meta.get("pool_documents"), meta.get("source_documents")
    if pool is not None and documents is not None and pool < documents:
        return (f"note: fewer tokens than asked ({fewer}): the shuffle pool ran out after {pool:,} documents of the "
                f"dataset's {documents:,} (the seed's pool is {POOL_PER_MTOKEN} x --mtokens documents, enough at "
                f"{1_000_000 // POOL_PER_MTOKEN} tokens a document); --save_all keeps every document of the dataset")
    return f"note: the dataset has fewer tokens than asked ({fewer}); kept them all"


def cli() -> None:
    sys.exit(run_main(main))


if __name__ == "__main__":
    cli()
