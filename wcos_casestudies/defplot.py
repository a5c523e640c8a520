"""Figure 2, the definition plot: prototype neurons of each IO class on the (gateout, linout) plane,
coloured by gatelin.

  python defplot.py [--out ../results/defplot]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from gated_core.cli import add_naming, make_parser, run_in_naming, run_main
from gated_core.constants import DEFAULT_RESULTS
from wcos_casestudies.constants import DEFAULT_THRESHOLD


def build_parser():
    parser = make_parser(__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_RESULTS / "defplot",
                        help="output path without suffix (.pdf and .png are written)")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, help="class threshold drawn as dotted lines")
    add_naming(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_in_naming(run, build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """The script's work, the classes shown in the naming of --naming."""
    from gated_core.cli import check_output_location
    from wcos_casestudies.plotting import plot_definition
    from wcos_casestudies.utils import check_threshold

    check_threshold(args.threshold)
    check_output_location(args.out.parent, "--out")
    paths = plot_definition(args.out, threshold=args.threshold)
    print(f"plot: {paths[0]} (.png)")
    return 0


def cli() -> None:
    sys.exit(run_main(main))


if __name__ == "__main__":
    cli()
