"""Activation frequency by IO class: how often the gate of each class's neurons is open (g > 0), against
same-layer random sets with the class's per-layer counts (several seeds), and the four sign
combinations of (g, u) by class (the "Weakening Neurons" follow-up of Gerstner & Schütze: depletion
neurons fire far more often than random neurons of their layers).

  python e_frequency.py --datadir ../data --save_to activations
  python e_frequency.py --model allenai/OLMo-7B-0424-hf --datadir DIR --save_to results --random_seeds 20

Needs the statistics of b_activations.py and the classes of main.py (computed when missing).
Outputs: RESULTS/<model>/frequency/frequency.csv/.md (gate-open), sign_frequencies.csv/.md,
frequency.pdf/.png.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from neuroscope.ablation_run import checked_statistics
from neuroscope.frequency import class_frequencies, plot_frequencies
from neuroscope.store import stats_path
from wcos_casestudies.artifacts import write_table
from wcos_casestudies.cli import HelpFormatter, UserError, run_main
from wcos_casestudies.models import DEFAULT_MODEL, resolve_model
from wcos_casestudies.results import DEFAULT_RESULTS, ModelResults, Settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="as in main.py")
    parser.add_argument("--datadir", type=Path, required=True, help="folder of the statistics")
    parser.add_argument("--save_to", default="activations", help="statistics folder inside --datadir (b_activations.py --save_to)")
    parser.add_argument("--results_dir", type=Path, default=DEFAULT_RESULTS, help="root of the results tree")
    parser.add_argument("--random_seeds", type=int, default=10, help="same-layer random sets per class")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.random_seeds < 1:
        raise UserError(f"--random_seeds {args.random_seeds}: need at least 1")
    source = resolve_model(args.model)
    stats = checked_statistics(stats_path(args.datadir / args.save_to), source.name, None)
    results = ModelResults(source, Settings(), root=args.results_dir)
    categories = results.categories()
    if tuple(categories.shape) != tuple(stats["gate_open"].shape):
        raise UserError(f"the statistics have {tuple(stats['gate_open'].shape)} neurons, the model {tuple(categories.shape)}")
    tables = class_frequencies(stats["gate_open"], stats["sign_frequencies"], categories, range(args.random_seeds))
    folder = results.folder / "frequency"
    meta = stats["meta"]
    title = (f"{source.name} on {Path(meta['dataset']).name} ({int(stats['n_tokens']):,} tokens); "
             f"random: {args.random_seeds} same-layer seeds")
    write_table(tables.gate_open.round(4), folder / "frequency", title=f"Gate-open frequency by IO class: {title}")
    write_table(tables.signs.round(4), folder / "sign_frequencies", title=f"Sign combinations of (g, u) by IO class: {title}")
    plot_frequencies(tables, folder / "frequency", title)
    print(tables.gate_open.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"-> {folder}/frequency.csv/.md/.pdf/.png, sign_frequencies.csv/.md")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
