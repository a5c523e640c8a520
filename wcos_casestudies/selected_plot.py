"""Figure 5: fine-plot panels (gateout vs linout, coloured by gatelin) for selected layers of one model.

Paper: Llama-3.2-3B, layers 0 14 27. Other models default to their first, middle and last layer.
  python selected_plot.py [--model meta-llama/Llama-3.2-3B] [--layers 0 14 27]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gated_core.cli import add_device, add_model, add_naming, add_results_dir, make_parser, non_negative_int, run_in_naming, run_main
from wcos_casestudies.cli import add_weight_settings

PAPER_MODEL, PAPER_LAYERS = "meta-llama/Llama-3.2-3B", (0, 14, 27)


def default_layers(model: str, n_layers: int) -> list[int]:
    """The paper's layers for Llama-3.2-3B, else first, middle and last."""
    if model == PAPER_MODEL:
        return list(PAPER_LAYERS)
    return sorted({0, n_layers // 2, n_layers - 1})


def build_parser():
    parser = make_parser(__doc__)
    add_model(parser)
    parser.add_argument("--layers", type=non_negative_int, nargs="+", default=None, help="layers to show (default: see above)")
    add_weight_settings(parser)
    add_device(parser, "where cosines are computed")
    add_results_dir(parser)
    add_naming(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_in_naming(run, build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """The script's work, the classes shown in the naming of --naming."""
    from gated_core.cli import check_output_location, parse_device
    from gated_core.errors import UserError
    from gated_core.models.arch import read_arch
    from gated_core.models.sources import resolve_model
    from wcos_casestudies.cli import settings_from_args
    from wcos_casestudies.plotting import plot_fine
    from wcos_casestudies.results import ModelResults
    from wcos_casestudies.utils import random_cosine_interval

    settings = settings_from_args(args)
    check_output_location(args.results_dir, "--results_dir")
    source = resolve_model(args.model, full_hash=args.full_hash)
    arch = read_arch(source)
    arch.require_gated(source.name, "the plot needs w_gate")
    layers = args.layers if args.layers is not None else default_layers(source.name, arch.n_layers)
    bad = [layer for layer in layers if not 0 <= layer < arch.n_layers]
    if bad:
        raise UserError(f"--layers {' '.join(map(str, bad))}: {source.name} has layers 0..{arch.n_layers - 1}")
    results = ModelResults(source, settings, root=args.results_dir, loader=args.loader, device=parse_device(args.device))
    check_output_location(results.folder, "--results_dir", inside=args.results_dir)
    paths = plot_fine(results.cosines(), results.folder / "selected", source.name, layers=layers, ncols=len(layers),
                      baseline=random_cosine_interval(arch.d_model), threshold=settings.threshold,
                      random_regions=results.random_regions(), provenance=results.provenance)
    print(f"plot: {paths[0]} (.png), layers {' '.join(map(str, layers))}; all outputs: {results.write_index()}")
    return 0


def cli() -> None:
    sys.exit(run_main(main))


if __name__ == "__main__":
    cli()
