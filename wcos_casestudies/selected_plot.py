"""Figure 5: fine-plot panels (gateout vs linout, coloured by gatelin) for selected layers of one model.

Paper: Llama-3.2-3B, layers 0 14 27. Other models default to their first, middle and last layer.
  python selected_plot.py [--model meta-llama/Llama-3.2-3B] [--layers 0 14 27]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wcos_casestudies.cli import HelpFormatter, UserError, default_device, parse_device, run_main
from wcos_casestudies.models import DEFAULT_MODEL, LOADERS, open_weights, read_arch, resolve_model
from wcos_casestudies.plotting import plot_fine, provenance_line
from wcos_casestudies.results import DEFAULT_RESULTS, ModelResults, Settings
from wcos_casestudies.utils import model_random_regions, random_cosine_interval

PAPER_MODEL, PAPER_LAYERS = "meta-llama/Llama-3.2-3B", (0, 14, 27)


def default_layers(model: str, n_layers: int) -> list[int]:
    """The paper's layers for Llama-3.2-3B, else first, middle and last."""
    if model == PAPER_MODEL:
        return list(PAPER_LAYERS)
    return sorted({0, n_layers // 2, n_layers - 1})


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="as in main.py (one model)")
    parser.add_argument("--layers", type=int, nargs="+", default=None, help="layers to show (default: see above)")
    parser.add_argument("--loader", choices=LOADERS, default="auto", help="weight reader (see main.py)")
    parser.add_argument("--device", default=default_device(), help="where cosines are computed")
    parser.add_argument("--results_dir", type=Path, default=DEFAULT_RESULTS, help="root of the results tree")
    args = parser.parse_args(argv)
    source = resolve_model(args.model)
    arch = read_arch(source)
    if not arch.gated:
        raise UserError(f"{source.name} is not a gated model: the plot needs w_gate")
    layers = args.layers if args.layers is not None else default_layers(source.name, arch.n_layers)
    bad = [layer for layer in layers if not 0 <= layer < arch.n_layers]
    if bad:
        raise UserError(f"--layers {' '.join(map(str, bad))}: {source.name} has layers 0..{arch.n_layers - 1}")
    settings = Settings()
    results = ModelResults(source, settings, root=args.results_dir, loader=args.loader, device=parse_device(args.device))
    cosines = results.cosines()
    reader = open_weights(source, processing=settings.processing, loader=args.loader, device=parse_device(args.device))
    provenance = provenance_line(results.meta["provenance"], settings.processing, settings.threshold, settings.rule)
    paths = plot_fine(cosines, results.folder / "selected", source.name, layers=layers, ncols=len(layers),
                      baseline=random_cosine_interval(arch.d_model), threshold=settings.threshold,
                      random_regions=model_random_regions(reader.layers(), reader.arch.n_layers), provenance=provenance)
    print(f"plot: {paths[0]} (.png), layers {' '.join(map(str, layers))}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
