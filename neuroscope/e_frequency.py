"""Activation frequency by IO class: how often the gate of each class's neurons is open (g > 0), against
same-layer random sets with the class's per-layer counts (several seeds), and the four sign
combinations of (g, u) by class (the "Weakening Neurons" follow-up of Gerstner & Schütze: depletion
neurons fire far more often than random neurons of their layers).

  python e_frequency.py --datadir ../data --activations activations
  python e_frequency.py --model allenai/OLMo-7B-0424-hf --datadir DIR --activations results --random_seeds 20

Also frequency against strength (the follow-up's freq_vs_mean.py): each neuron's gate-open frequency against its mean
activation and its largest |a|, coloured by class, on linear and log axes, and per class the medians and Spearman's
rank correlation of frequency and strength.

Needs the statistics of b_activations.py and the classes of main.py (computed when missing).
Outputs: RESULTS/<model>/frequency/frequency.csv/.md (gate-open), sign_frequencies.csv/.md,
frequency.pdf/.png, strength.csv/.md/.pdf/.png; one run writes them at a time (a lock file, frequency.lock, names the
run).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from gated_core.cli import add_model, add_naming, add_results_dir, make_parser, positive_int, run_in_naming, run_main
from gated_core.results_layout import FREQUENCY_FOLDER
from neuroscope.cli import add_activations, add_datadir
from wcos_casestudies.cli import add_weight_settings

FOLDER_KIND = "frequency"  # the kind in the folder's marker (gated_core.output_folders)
LEGACY_NAMES = r"(frequency|sign_frequencies)\.(csv|md)|frequency\.(pdf|png)"  # what earlier versions wrote


def build_parser():
    parser = make_parser(__doc__)
    add_model(parser)
    add_datadir(parser)
    add_activations(parser, dataset=False)
    add_results_dir(parser)
    parser.add_argument("--random_seeds", type=positive_int, default=10, help="same-layer random sets per class")
    add_weight_settings(parser)
    add_naming(parser)
    return parser


def write_outputs(tables, strength: dict, folder: Path, title: str, random: str) -> None:
    """The tables and the plots, written as one folder (a kill leaves the old one or the new one) while this run holds
    the folder's lock (one run at a time; what a killed run left is removed first). `strength`: the [layer neuron]
    inputs of `strength.strength_table` by name; `title`: the run, `random`: the random baseline (in the frequency's
    outputs)."""
    from gated_core.artifacts import write_table
    from gated_core.locks import hold_lock
    from gated_core.output_folders import RESULTS_ADVICE, legacy_pattern, rewrite_folder
    from neuroscope.classes.frequency import plot_frequencies
    from neuroscope.classes.strength import plot_strength, strength_table

    legacy = legacy_pattern(LEGACY_NAMES)
    with hold_lock(folder), rewrite_folder(folder, FOLDER_KIND, {}, legacy, RESULTS_ADVICE) as staging:
        write_table(tables.gate_open.round(4), staging / "frequency",
                    title=f"Gate-open frequency by IO class: {title}; {random}")
        write_table(tables.signs.round(4), staging / "sign_frequencies",
                    title=f"Sign combinations of (g, u) by IO class: {title}; {random}")
        plot_frequencies(tables, staging / "frequency", f"{title}; {random}")
        write_table(strength_table(**strength).round(4), staging / "strength",
                    title=f"Gate-open frequency against strength by IO class: {title}")
        plot_strength(**strength, stem=staging / "strength", title=f"Gate-open frequency against strength: {title}")


def main(argv: Sequence[str] | None = None) -> int:
    return run_in_naming(run, build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """The script's work, the classes shown in the naming of --naming."""
    import torch

    from gated_core.cli import check_output_location
    from gated_core.errors import UserError
    from gated_core.models.sources import resolve_model
    from gated_core.output_folders import RESULTS_ADVICE, check_output_folder, legacy_pattern
    from neuroscope.activation_pass.store import load_statistics
    from neuroscope.classes.frequency import class_frequencies
    from wcos_casestudies.cli import settings_from_args
    from wcos_casestudies.results import ModelResults

    settings = settings_from_args(args)
    check_output_location(args.results_dir, "--results_dir")
    source = resolve_model(args.model, full_hash=args.full_hash)
    stats = load_statistics(source, args.datadir, args.activations)
    results = ModelResults(source, settings, root=args.results_dir, loader=args.loader)
    folder = results.folder / FREQUENCY_FOLDER
    for location in (results.folder, folder):  # its data.pt and index.html, and the frequency files: before any work
        check_output_location(location, "--results_dir", inside=args.results_dir)
    check_output_folder(folder, FOLDER_KIND, legacy_pattern(LEGACY_NAMES), RESULTS_ADVICE)
    categories = results.categories()
    if tuple(categories.shape) != tuple(stats.gate_open.shape):
        raise UserError(f"the statistics have {tuple(stats.gate_open.shape)} neurons, the model {tuple(categories.shape)}")
    tables = class_frequencies(stats.gate_open, stats.sign_frequencies, categories, range(args.random_seeds))
    meta = stats.meta
    title = f"{source.name} on {Path(meta.dataset).name} ({int(stats.n_tokens):,} tokens)"
    strength = {"gate_open": stats.gate_open, "mean": stats.mean, "categories": categories,
                "peak": torch.maximum(stats.top_values[..., 0], -stats.bottom_values[..., 0])}
    write_outputs(tables, strength, folder, title, f"random: {args.random_seeds} same-layer seeds")
    from gated_core.naming import shown

    gate_open = tables.gate_open.map(lambda v: shown(v) if isinstance(v, str) else v)  # the columns stay aligned
    print(gate_open.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"-> {folder}/frequency.csv/.md/.pdf/.png, sign_frequencies.csv/.md, strength.csv/.md/.pdf/.png; "
          f"all outputs: {results.write_index()}")
    return 0


def cli() -> None:
    sys.exit(run_main(main))


if __name__ == "__main__":
    cli()
