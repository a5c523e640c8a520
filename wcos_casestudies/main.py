"""Section 5: cosines between each gated neuron's gate, linear-input and output weights, IO classes,
per-layer statistics and plots, for one model, several, or the paper's 12 (`--model all`).

Example (the paper's run):
  python main.py --categories --category_stats --quartiles --plot_fine --plot_coarse \\
                 --plot_quartiles --plot_all_medians --model all
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gated_core.cli import (
    add_device,
    add_model,
    add_naming,
    add_results_dir,
    check_output_location,
    make_parser,
    parse_device,
    run_in_naming,
    run_main,
)
from gated_core.constants import ARTIFACT_FORMATS
from wcos_casestudies.cli import add_weight_settings, settings_from_args


def build_parser():
    parser = make_parser(__doc__)
    add_model(parser, several=True)
    outputs = parser.add_argument_group("outputs (under RESULTS_DIR/<model>/)")
    outputs.add_argument("--categories", action="store_true", help="IO class code of every neuron (in data.pt)")
    outputs.add_argument("--category_stats", action="store_true",
                         help="class counts per layer (CSV, Markdown, comparison with published counts)")
    outputs.add_argument("--quartiles", action="store_true", help="0/.25/.5/.75/1 quantiles per layer of each cosine")
    outputs.add_argument("--plot_fine", action="store_true", help="fine.pdf/png: gateout vs linout per layer, coloured by gatelin")
    outputs.add_argument("--plot_coarse", action="store_true", help="coarse.pdf/png: stacked class counts per layer")
    outputs.add_argument("--plot_quartiles", action="store_true", help="boxplot.pdf/png: |gatelin|, |gateout|, linout per layer")
    outputs.add_argument("--plot_all_medians", action="store_true",
                         help="medians.pdf/png at the results root: median linout by relative depth, all models of this run")
    add_weight_settings(parser)
    add_device(parser, "where cosines are computed")
    parser.add_argument("--format", choices=ARTIFACT_FORMATS, default="pt", help="artifact format (pickle: the seed's format)")
    add_results_dir(parser)
    parser.add_argument("--overwrite", action="store_true", help="recompute even if results exist")
    parser.add_argument("--skip_missing", action="store_true",
                        help="with several models: skip those that are not available instead of stopping")
    add_naming(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_in_naming(run, build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """The script's work, the classes shown in the naming of --naming."""
    settings = settings_from_args(args)
    device = parse_device(args.device)
    check_output_location(args.results_dir, "--results_dir")
    from wcos_casestudies import section5

    sources = section5.resolve_all(args.model, args.skip_missing, args.full_hash)
    outputs = ("categories", "category_stats", "quartiles", "plot_fine", "plot_coarse", "plot_quartiles")
    request = section5.Section5Request(args.results_dir, args.format, args.overwrite, args.loader,
                                       **{name: getattr(args, name) for name in outputs})
    medians = {}
    for source in sources:
        results = section5.run_model(source, request, settings, device)
        if args.plot_all_medians:
            medians[source.name] = results.quartiles()["linout"][2]
    if args.plot_all_medians:
        section5.write_medians_plot(medians, args.results_dir, settings)
    return 0


def cli() -> None:
    sys.exit(run_main(main))


if __name__ == "__main__":
    cli()
