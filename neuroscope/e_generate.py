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
    add_device,
    add_dtype,
    add_model,
    add_naming,
    add_results_dir,
    make_parser,
    non_negative_int,
    plain_name,
    positive_int,
    run_main,
)
from neuroscope.cli import add_activations, add_batch_size, add_datadir
from wcos_casestudies.cli import add_weight_settings

FOLDER_KIND = "generations"  # the kind in the folder's marker (gated_core.output_folders)


def build_parser() -> argparse.ArgumentParser:
    from neuroscope.constants import ABLATION_MODES as MODES
    from wcos_casestudies.constants import CLASS_WORDS

    parser = make_parser(__doc__)
    add_model(parser)
    parser.add_argument("--prompts", type=Path, required=True, help="a UTF-8 text file, one prompt a line")
    parser.add_argument("--name", type=plain_name, default=None, help="the output folder's name (default: the prompts file's)")
    parser.add_argument("--max_new_tokens", type=positive_int, default=32, help="tokens to generate after each prompt at most")
    sets = parser.add_argument_group("what to ablate (as e_ablate.py)")
    sets.add_argument("--classes", nargs="*", default=["depletion"],
                      help=f"IO classes, one set each (none named: no class): {', '.join(CLASS_WORDS)}, or the follow-up's words")
    sets.add_argument("--roles", nargs="*", default=[], help="functional roles of casestudies.py (roles.pt), e.g. prediction")
    sets.add_argument("--sample_size", type=positive_int, nargs="*", default=[], help="also a random sample of this many neurons of each set")
    sets.add_argument("--mode", choices=MODES, default="zero", help="replace a by 0 or by its dataset mean (needs --datadir)")
    sets.add_argument("--conditional", nargs="*", default=None, metavar="COMBINATION",
                      help="also ablate only at tokens of these (sign g, sign a) combinations (none named: all four)")
    sets.add_argument("--random_seeds", type=non_negative_int, default=1, help="same-layer random sets per ablated set")
    sets.add_argument("--seed", type=non_negative_int, default=0, help="seed of the samples")
    add_datadir(parser, required=False, needed_for="--mode mean: the dataset means")
    add_activations(parser, dataset=False)
    add_weight_settings(parser)
    add_batch_size(parser)
    add_device(parser)
    add_dtype(parser)
    add_results_dir(parser)
    add_naming(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from gated_core.naming import naming_in_use

    with naming_in_use(args.naming):
        return run(args)


def run(args: argparse.Namespace) -> int:
    """The script's work, the classes shown in the naming of --naming."""
    from neuroscope.classes.generations import generate_all, read_prompts

    prompts = read_prompts(args.prompts)
    p = prepare(args)
    from gated_core.models.loading import load_hf_model

    model, tokenizer = load_hf_model(p.source, dtype=p.dtype, device=p.device, tokenizer=p.tokenizer)
    runs = generate_all(model, tokenizer, prompts, p.ablations, p.means, args.max_new_tokens, args.batch_size)
    write_outputs(p, prompts, runs, tokenizer)
    changed = sum(any(a != b for a, b in zip(run.tokens, runs[0].tokens)) for run in runs[1:])
    print(f"{len(prompts)} prompts, {len(runs) - 1} ablated runs ({changed} changed a continuation) -> "
          f"{p.folder}/generations.md/.html/.json; all outputs: {p.results.write_index()}")
    return 0


def prepare(args: argparse.Namespace) -> argparse.Namespace:
    """Check every input before the model loads: the model, the sets (classes computed where missing), the statistics
    for mean ablation, the output folder; returns what the run needs."""
    from gated_core.artifacts import made_from
    from gated_core.cli import check_output_location, parse_device, parse_dtype
    from gated_core.errors import UserError
    from gated_core.models.arch import read_arch
    from gated_core.models.loading import load_tokenizer
    from gated_core.models.sources import resolve_model
    from gated_core.output_folders import RESULTS_ADVICE, check_output_folder
    from gated_core.results_layout import ABLATION_FOLDER, GENERATIONS_FOLDER
    from neuroscope.activation_pass.store import load_statistics
    from neuroscope.classes.ablation import CONDITIONS, parse_condition
    from neuroscope.classes.ablation_run import ablation_plan, choose_sets
    from neuroscope.classes.neuron_sets import parse_class
    from wcos_casestudies.cli import settings_from_args
    from wcos_casestudies.results import ModelResults

    for word in args.classes:
        parse_class(word)
    conditions = [] if args.conditional is None else [parse_condition(w) for w in args.conditional] or list(CONDITIONS)
    if args.mode == "mean" and args.datadir is None:
        raise UserError("--mode mean needs the dataset means of b_activations.py: give --datadir (and --activations)")
    device = parse_device(args.device)
    check_output_location(args.results_dir, "--results_dir")
    source = resolve_model(args.model, full_hash=args.full_hash)
    arch = read_arch(source)
    arch.require_gated(source.name, "the IO classes and the ablations need gates")
    stats = load_statistics(source, args.datadir, args.activations) if args.datadir is not None else None
    results = ModelResults(source, settings_from_args(args), root=args.results_dir, loader=args.loader, device=device)
    folder = results.folder / ABLATION_FOLDER / GENERATIONS_FOLDER / output_name(args)
    for location in (results.folder, folder):
        check_output_location(location, "--results_dir", inside=args.results_dir)
    check_output_folder(folder, FOLDER_KIND, advice=RESULTS_ADVICE)
    sets = choose_sets(results, args.classes, args.roles, args.sample_size, args.seed)
    meta = {"model": source.name, "provenance": source.provenance,
            **made_from(weights=results.fingerprint, statistics=stats.fingerprint if stats is not None else None), "mode": args.mode,
            "max_new_tokens": args.max_new_tokens, "prompts": str(args.prompts.resolve())}
    return argparse.Namespace(source=source, tokenizer=load_tokenizer(source), results=results, folder=folder, meta=meta,
                              ablations=ablation_plan(sets, arch.d_mlp, args.mode, conditions, args.random_seeds),
                              means=stats.mean if stats is not None else None, device=device,
                              dtype=parse_dtype(args.dtype, device))


def output_name(args: argparse.Namespace) -> str:
    """The output folder's name: --name, or the prompts file's name where it is a plain name."""
    from gated_core.errors import UserError

    if args.name is not None:
        return args.name
    try:
        return plain_name(args.prompts.stem)
    except argparse.ArgumentTypeError as exc:
        raise UserError(f"--prompts {args.prompts}: its name is no plain folder name ({exc}); give --name") from exc


def write_outputs(p: argparse.Namespace, prompts: list[str], runs: list, tokenizer) -> None:
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
    notes = [f"{p.source.provenance}; {p.meta['mode']} ablation; at most {p.meta['max_new_tokens']} new tokens"]
    record = {"meta": p.meta, "prompts": prompts, "runs": [
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
