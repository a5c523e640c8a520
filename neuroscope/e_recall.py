"""Factual recall under ablation (the authors' follow-up): does ablating a set of neurons hurt the model's recall of the
facts it knows? Facts in the format of ROME's known_1000.json (subject, prompt, attribute); per fact the probability
and rank of the attribute's first token after the prompt, for the model as it is and under each ablated set.

  python e_recall.py --facts known_1000.json --classes depletion conditional_depletion --random_seeds 3
  python e_recall.py --model allenai/OLMo-7B-0424-hf --facts known_1000.json --classes depletion --device cuda

Facts the model does not know (baseline rank above --known_rank) are counted and left out. The sets are those of
e_ablate.py (--classes, --roles, --sample_size, --conditional, same-layer --random_seeds; --mode mean needs --datadir).
Outputs: RESULTS/<model>/ablation/recall/<facts file's name>/recall.csv/.md (per set: mean baseline - ablated
probability and log probability with bootstrap intervals over the facts, median rank, share still at rank 1) and
facts.csv (every fact, every run), written as one folder under its lock.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from gated_core.cli import (
    add_model,
    add_naming,
    make_parser,
    plain_name,
    positive_int,
    run_in_naming,
    run_main,
)
from neuroscope.cli import add_ablated_runs, runs_request

FOLDER_KIND = "recall"  # the kind in the folder's marker (gated_core.output_folders)


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(__doc__)
    add_model(parser)
    parser.add_argument("--facts", type=Path, required=True, help="facts in known_1000.json's format (a JSON list)")
    parser.add_argument("--name", type=plain_name, default=None, help="the output folder's name (default: the facts file's)")
    parser.add_argument("--known_rank", type=positive_int, default=1,
                        help="a fact is known when the attribute's first token is at most this rank in the baseline")
    add_ablated_runs(parser, random_seeds=3)
    parser.add_argument("--bootstrap", type=positive_int, default=1000, help="bootstrap resamples of the facts")
    add_naming(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_in_naming(run, build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """The script's work, the classes shown in the naming of --naming."""
    from gated_core.models.loading import load_hf_model
    from gated_core.results_layout import RECALL_FOLDER
    from neuroscope.classes.ablated_runs import output_name, prepare_runs
    from neuroscope.classes.recall import read_facts, score_all

    facts = read_facts(args.facts)
    p = prepare_runs(runs_request(args), RECALL_FOLDER, FOLDER_KIND, output_name(args.name, args.facts, "--facts"))
    model, tokenizer = load_hf_model(p.source, dtype=p.dtype, device=p.device, tokenizer=p.tokenizer)
    runs = score_all(model, tokenizer, facts, list(p.ablations), p.means, args.batch_size)
    known = runs[0].ranks <= args.known_rank
    meta = {**p.meta, "facts": str(args.facts.resolve()), "known_rank": args.known_rank, "bootstrap": args.bootstrap,
            "seed": args.seed}
    table = write_outputs(p.folder, meta, facts, runs, known, args)
    print(f"{int(known.sum())} of {len(facts)} facts known (baseline rank <= {args.known_rank}); "
          f"{len(facts) - int(known.sum())} left out")
    print(summary(table))
    print(f"-> {p.folder}/recall.csv/.md, facts.csv; all outputs: {p.results.write_index()}")
    return 0


def write_outputs(folder: Path, meta: dict, facts: list, runs: list, known, args: argparse.Namespace):
    """recall.csv/.md and facts.csv (and the marker, with what they were made from), as one folder under its lock."""
    from gated_core.artifacts import atomic_write_text, write_table
    from gated_core.locks import hold_lock
    from gated_core.output_folders import RESULTS_ADVICE, rewrite_folder
    from neuroscope.classes.recall import facts_table, recall_table

    table = recall_table(runs, known, args.bootstrap, args.seed, 0.95)
    title = f"Factual recall of {meta['model']} under ablation: {int(known.sum())} known facts of {len(facts)}"
    with hold_lock(folder), rewrite_folder(folder, FOLDER_KIND, meta, advice=RESULTS_ADVICE) as staging:
        write_table(table.round(6), staging / "recall", title=title)
        atomic_write_text(staging / "facts.csv", facts_table(facts, runs, known).to_csv(index=False))
    return table


def summary(table) -> str:
    """The per-set table as printed: its set names in the naming in use, the columns aligned."""
    from gated_core.naming import shown

    columns = ["set", "neurons", "facts", "prob_diff_mean", "log_prob_diff_mean", "median_rank", "top1_share"]
    shown_table = table[columns].map(lambda v: shown(v) if isinstance(v, str) else v) if len(table) else table
    signed = {name: (lambda v: f"{v:+.4f}") for name in ("prob_diff_mean", "log_prob_diff_mean")}
    return shown_table.to_string(index=False, formatters=signed, float_format=lambda v: f"{v:.4g}")


def cli() -> None:
    sys.exit(run_main(main))


if __name__ == "__main__":
    cli()
