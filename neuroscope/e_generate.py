"""Generations under ablation (the authors' follow-up): greedy continuations of the prompts of a file (one a line) by the
model as it is and with each set of neurons ablated, side by side, the text from the first token that differs from the
model's own marked.

  python e_generate.py --prompts prompts.txt --classes depletion conditional_depletion --random_seeds 1
  python e_generate.py --model allenai/OLMo-7B-0424-hf --prompts prompts.txt --classes depletion --device cuda \\
                       --max_new_tokens 64 --mode mean --datadir DIR --activations results

The sets are those of e_ablate.py (--classes, --roles, --sample_size, --conditional, same-layer --random_seeds; classes
from main.py's results, computed where missing); --mode mean needs the statistics of b_activations.py.
Outputs: RESULTS/<model>/ablation/generations/<prompts file's name>/generations.md, generations.html (the page) and
generations.json (every continuation's tokens and text, and what they were made from), written as one folder; one run
writes it at a time (a lock file names the run).
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

FOLDER_KIND = "generations"  # the kind in the folder's marker (gated_core.output_folders)


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(__doc__)
    add_model(parser)
    parser.add_argument("--prompts", type=Path, required=True, help="a UTF-8 text file, one prompt a line")
    parser.add_argument("--name", type=plain_name, default=None, help="the output folder's name (default: the prompts file's)")
    parser.add_argument("--max_new_tokens", type=positive_int, default=32, help="tokens to generate after each prompt at most")
    add_ablated_runs(parser, random_seeds=1)
    add_naming(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_in_naming(run, build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """The script's work, the classes shown in the naming of --naming."""
    from gated_core.models.loading import load_hf_model
    from gated_core.results_layout import GENERATIONS_FOLDER
    from neuroscope.classes.ablated_runs import output_name, prepare_runs
    from neuroscope.classes.generations import generate_all, read_prompts

    prompts = read_prompts(args.prompts)
    p = prepare_runs(runs_request(args), GENERATIONS_FOLDER, FOLDER_KIND, output_name(args.name, args.prompts, "--prompts"))
    model, tokenizer = load_hf_model(p.source, dtype=p.dtype, device=p.device, tokenizer=p.tokenizer)
    runs = generate_all(model, tokenizer, prompts, list(p.ablations), p.means, args.max_new_tokens, args.batch_size)
    meta = {**p.meta, "max_new_tokens": args.max_new_tokens, "prompts": str(args.prompts.resolve())}
    write_outputs(p, meta, prompts, runs, tokenizer)
    changed = sum(any(a != b for a, b in zip(run.tokens, runs[0].tokens)) for run in runs[1:])
    print(f"{len(prompts)} prompts, {len(runs) - 1} ablated runs ({changed} changed a continuation) -> "
          f"{p.folder}/generations.md/.html/.json; all outputs: {p.results.write_index()}")
    return 0


def write_outputs(p, meta: dict, prompts: list[str], runs: list, tokenizer) -> None:
    """generations.md, .html and .json, written as one folder while this run holds its lock."""
    import dataclasses
    import json

    from gated_core.artifacts import atomic_write_text
    from gated_core.locks import hold_lock
    from gated_core.naming import shown
    from gated_core.output_folders import RESULTS_ADVICE, rewrite_folder
    from neuroscope.classes.generations import markdown, page, table

    tables = [[dataclasses.replace(row, run=shown(row.run)) for row in table(tokenizer, runs, index)]  # run names shown
              for index in range(len(prompts))]
    title = f"Generations of {p.source.name} under ablation"
    notes = [f"{p.source.provenance}; {meta['mode']} ablation; at most {meta['max_new_tokens']} new tokens"]
    record = {"meta": meta, "prompts": prompts, "runs": [
        {"run": run.name, "neurons": run.neurons, "tokens": run.tokens, "text": [tokenizer.decode(t) for t in run.tokens]}
        for run in runs]}
    with hold_lock(p.folder), rewrite_folder(p.folder, FOLDER_KIND, {"model": p.source.name}, advice=RESULTS_ADVICE) as staging:
        atomic_write_text(staging / "generations.json", json.dumps(record, indent=1, ensure_ascii=False))
        atomic_write_text(staging / "generations.md", markdown(title, prompts, tables))
        atomic_write_text(staging / "generations.html", page(title, notes, prompts, tables))


def cli() -> None:
    sys.exit(run_main(main))


if __name__ == "__main__":
    cli()
