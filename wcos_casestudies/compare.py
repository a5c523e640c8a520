"""Classes across checkpoints: how the IO classes (and the functional roles) of one architecture change between two
models of the same shapes, neuron by neuron (the authors' follow-up compares OLMo's first and last checkpoints).

  python compare.py --model smollm2-135m --other HuggingFaceTB/SmolLM2-135M          # instruct against base
  python compare.py --model allenai/OLMo-7B-0424-hf --other PATH/OLMo-7B-0424-step1000 --refactor_glu

Both models' classes come from main.py's results (computed and cached where missing) with the same weight flags.
Outputs, from each model's point of view (rows: its classes; columns: the other's), in
RESULTS/<model>/compare/<other>/ and RESULTS/<other>/compare/<model>/: transitions.csv/.md/.pdf/.png (all layers),
transitions_by_layer.csv, changed.csv (each neuron whose class changed, with the three cosines before and after),
roles.csv/.md where casestudies.py ran for both; both models' index pages link them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gated_core.cli import add_device, add_model, add_naming, add_results_dir, check_output_location, make_parser, run_in_naming, run_main
from wcos_casestudies.cli import add_weight_settings

FOLDER_KIND = "comparison"  # the kind in the folder's marker (gated_core.output_folders)


def build_parser():
    parser = make_parser(__doc__)
    add_model(parser)
    parser.add_argument("--other", required=True, help="the model to compare with (any --model; same shapes)")
    add_weight_settings(parser)
    add_device(parser, "where the cosines are computed")
    add_results_dir(parser)
    add_naming(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_in_naming(run, build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """The script's work, the classes shown in the naming of --naming."""
    from gated_core.cli import parse_device
    from gated_core.models.arch import read_arch
    from gated_core.models.sources import resolve_model
    from gated_core.output_folders import RESULTS_ADVICE, check_output_folder
    from wcos_casestudies.cli import settings_from_args
    from wcos_casestudies.comparison import check_same_shapes, comparison_folder
    from wcos_casestudies.results import ModelResults

    settings = settings_from_args(args)
    check_output_location(args.results_dir, "--results_dir")
    sources = [resolve_model(name, full_hash=args.full_hash) for name in (args.model, args.other)]
    check_same_shapes(sources[0].name, read_arch(sources[0]), sources[1].name, read_arch(sources[1]))
    first = ModelResults(sources[0], settings, root=args.results_dir, loader=args.loader, device=parse_device(args.device))
    second = ModelResults(sources[1], settings, root=args.results_dir, loader=args.loader, device=parse_device(args.device))
    results = [first] if second.folder == first.folder else [first, second]  # a model against itself: once
    folders = [comparison_folder(owner.folder, other.source.name) for owner, other in zip(results, results[::-1])]
    for folder in folders:
        check_output_folder(folder, FOLDER_KIND, advice=RESULTS_ADVICE)
    models = [model_classes(r) for r in results]
    for model, other, folder, owner in zip(models, models[::-1], folders, results):
        tables = write_outputs(model, other, folder)
        print(f"{owner.source.name} -> {other.name}: {summary_line(tables['transitions'])}; {folder}")
        owner.write_index()
    return 0


def model_classes(results):
    """The classes, cosines and roles of one model (main.py's results, computed where missing; roles.pt if any)."""
    from wcos_casestudies.comparison import ModelClasses
    from wcos_casestudies.section6 import read_roles

    stored = read_roles(results)
    return ModelClasses(results.source.name, results.caption, results.categories(), results.cosines(),
                        None if stored is None or not stored.roles else stored.roles)


def write_outputs(model, other, folder):
    """The comparison's folder, written as one unit while this run holds its lock."""
    from gated_core.locks import hold_lock
    from gated_core.output_folders import RESULTS_ADVICE, rewrite_folder
    from wcos_casestudies.comparison import write_comparison

    with hold_lock(folder), rewrite_folder(folder, FOLDER_KIND, {"model": model.name, "other": other.name},
                                           advice=RESULTS_ADVICE) as staging:
        return write_comparison(model, other, staging)


def summary_line(transitions) -> str:
    """How many neurons changed class, and the most common change."""
    from gated_core.naming import shown
    from wcos_casestudies.constants import CLASS_NAMES

    counts = transitions[list(CLASS_NAMES)].to_numpy()
    total, same = int(counts.sum()), int(counts.trace())
    off = counts.copy()
    off[range(len(CLASS_NAMES)), range(len(CLASS_NAMES))] = 0
    line = f"{total - same:,} of {total:,} neurons changed class ({100 * (total - same) / max(total, 1):.1f}%)"
    if off.max() > 0:
        b, a = divmod(int(off.argmax()), len(CLASS_NAMES))
        line += f", most often {shown(CLASS_NAMES[b])} -> {shown(CLASS_NAMES[a])} ({int(off.max()):,})"
    return line


def cli() -> None:
    sys.exit(run_main(main))


if __name__ == "__main__":
    cli()
