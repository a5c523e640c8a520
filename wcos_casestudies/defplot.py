"""Figure 2, the definition plot: prototype neurons of each IO class on the (gateout, linout) plane,
coloured by gatelin.

  python defplot.py [--out ../results/defplot]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wcos_casestudies.cli import HelpFormatter, run_main
from wcos_casestudies.plotting import plot_definition
from wcos_casestudies.results import DEFAULT_RESULTS


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_RESULTS / "defplot", help="output path without suffix (.pdf and .png are written)")
    parser.add_argument("--threshold", type=float, default=0.5, help="class threshold drawn as dotted lines")
    args = parser.parse_args(argv)
    paths = plot_definition(args.out, threshold=args.threshold)
    print(f"plot: {paths[0]} (.png)")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
