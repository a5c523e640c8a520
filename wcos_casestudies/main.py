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
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pandas as pd

from wcos_casestudies import plotting, reference
from wcos_casestudies.artifacts import FORMATS, write_table
from wcos_casestudies.cli import HelpFormatter, UserError, default_device, parse_device, run_main
from wcos_casestudies.models import DEFAULT_MODEL, LOADERS, ModelSource, expand_model_names, open_weights, read_arch, resolve_model
from wcos_casestudies.results import DEFAULT_RESULTS, ModelResults, Settings
from wcos_casestudies.utils import (CLASS_NAMES, DEFAULT_THRESHOLD, QUANTILES, check_threshold, model_random_regions,
                                    random_cosine_interval, random_regions_table)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--model", nargs="+", default=[DEFAULT_MODEL],
                        help="Hugging Face id, paper name or seed alias, local checkpoint folder, .gguf file, "
                             "embedded model (smollm2-135m, gemma-3-270m), or `all` for the paper's 12")
    parser.add_argument("--categories", action="store_true", help="IO class code of every neuron")
    parser.add_argument("--category_stats", action="store_true", help="class counts per layer (CSV, Markdown, comparison with published counts)")
    parser.add_argument("--quartiles", action="store_true", help="0/.25/.5/.75/1 quantiles per layer of each cosine")
    parser.add_argument("--plot_fine", action="store_true", help="fine.pdf/png: gateout vs linout per layer, coloured by gatelin")
    parser.add_argument("--plot_coarse", action="store_true", help="coarse.pdf/png: stacked class counts per layer")
    parser.add_argument("--plot_quartiles", action="store_true", help="boxplot.pdf/png: |gatelin|, |gateout|, linout per layer")
    parser.add_argument("--plot_all_medians", action="store_true", help="medians.pdf/png at the results root: median linout by relative depth, all models of this run")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, help="class threshold t, strictly between 0 and 1")
    parser.add_argument("--legacy_copysign", action="store_true", help="the first code release's typical test for (atypical) enrichment/depletion")
    parser.add_argument("--refactor_glu", action="store_true", help="flip w_in and w_out of neurons with w_gate·w_in < 0 (same function; gatelin >= 0)")
    parser.add_argument("--no_processing", action="store_true", help="raw Hugging Face weights instead of TransformerLens' default processing")
    parser.add_argument("--loader", choices=LOADERS, default="auto",
                        help="lowmem: read MLP weights layer by layer from safetensors/GGUF; tl: load the whole model in TransformerLens; auto: lowmem where supported")
    parser.add_argument("--device", default=default_device(), help="where cosines are computed")
    parser.add_argument("--format", choices=FORMATS, default="pt", help="artifact format (pickle: the seed's format)")
    parser.add_argument("--results_dir", type=Path, default=DEFAULT_RESULTS, help="root of the results tree")
    parser.add_argument("--overwrite", action="store_true", help="recompute even if results exist")
    parser.add_argument("--skip_missing", action="store_true", help="with several models: skip those that are not available instead of stopping")
    return parser


def resolve_all(names: list[str], skip_missing: bool) -> list[ModelSource]:
    """Resolve every requested model before anything is written."""
    sources, missing = [], []
    for name in expand_model_names(names):
        try:
            sources.append(resolve_model(name))
        except UserError as exc:
            if not skip_missing:
                raise
            missing.append(str(exc))
    for message in missing:
        print(f"skipped: {message}", file=sys.stderr)
    if not sources:
        raise UserError("none of the requested models is available")
    return sources


def counts_frame(counts) -> pd.DataFrame:
    """Per-layer class counts as a table with a layer column."""
    frame = pd.DataFrame(counts.numpy(), columns=list(CLASS_NAMES))
    frame.insert(0, "layer", range(len(frame)))
    return frame


def layer_random_regions(source: ModelSource, args: argparse.Namespace, settings: Settings):
    """Per layer and cosine, the central 95% of cosines between different neurons (reads the weights again)."""
    reader = open_weights(source, processing=settings.processing, loader=args.loader, device=parse_device(args.device))
    return model_random_regions(reader.layers(), reader.arch.n_layers, refactor=settings.refactor_glu)


def run_model(source: ModelSource, args: argparse.Namespace, settings: Settings) -> ModelResults:
    """Everything the flags ask for, for one model."""
    arch = read_arch(source)
    needs_gate = args.plot_fine or args.plot_quartiles or args.refactor_glu
    if needs_gate and not arch.gated:
        raise UserError(f"{source.name} is not a gated model (no w_gate): --plot_fine, --plot_quartiles and --refactor_glu need gates")
    results = ModelResults(source, settings, root=args.results_dir, fmt=args.format, overwrite=args.overwrite,
                           loader=args.loader, device=parse_device(args.device))
    cosines = results.cosines()
    meta = results.meta
    baseline = random_cosine_interval(arch.d_model)
    print(f"\n== {source.name}  [{meta['provenance']}]")
    print(f"   {arch.n_layers} layers x {arch.d_mlp} neurons, d_model {arch.d_model}, {arch.glu}; weights: {meta['processing']}"
          f"{', GLU signs refactored' if settings.refactor_glu else ''}; loader {meta['loader']}; "
          f"{'reused ' + str(results.path.parent) if results.reused else 'computed in ' + str(meta.get('seconds')) + ' s'}")
    print(f"   threshold {settings.threshold} ({settings.rule} rule); 95% of random cosines in d_model {arch.d_model} lie within ±{baseline:.3f}")
    folder = results.folder
    provenance = plotting.provenance_line(meta["provenance"], settings.processing, settings.threshold, settings.rule,
                                          settings.refactor_glu)
    regions = layer_random_regions(source, args, settings) if args.quartiles or args.plot_fine else None
    if args.categories:
        results.categories()
        print(f"   categories: {folder / results.path.name} ['categories']")
    if args.category_stats or args.plot_coarse:
        counts = results.category_stats()
        if args.category_stats:
            frame = counts_frame(counts)
            write_table(frame, folder / "category_stats")
            total = counts.sum(0)
            share = ", ".join(f"{name} {100 * int(n) / int(total.sum()):.1f}%" for name, n in zip(CLASS_NAMES, total) if n)
            print(f"   classes over all layers: {share}")
            print(f"   per-layer counts: {folder / 'category_stats.csv'} (.md)")
            compare_with_publication(source, results, counts, folder)
    if args.quartiles:
        q = results.quartiles()
        rows = []
        for name, values in q.items():
            for layer in range(values.shape[1]):
                rows.append({"cosine": name, "layer": layer, **{f"q{p:g}": float(values[i, layer]) for i, p in enumerate(QUANTILES)}})
        write_table(pd.DataFrame(rows), folder / "quartiles")
        write_table(random_regions_table(regions), folder / "random_regions")
        print(f"   per layer, 95% of cosines between different neurons: {folder / 'random_regions.csv'}")
        med = q["linout"][2]
        print(f"   median linout by layer: first {float(med[0]):+.3f}, middle {float(med[len(med) // 2]):+.3f}, last {float(med[-1]):+.3f}"
              f"  ({folder / 'quartiles.csv'})")
        published = reference.published_medians(source.name)
        if published is not None and len(published) == len(med) and settings.processing:
            table = reference.compare_medians(med, published)
            write_table(table, folder / "comparison_median_linout")
            print(f"   median linout vs published plot: max |difference| {table['difference'].abs().max():.3f} "
                  f"(published values are read off a plot, ±0.005)")
    if args.plot_fine:
        paths = plotting.plot_fine(cosines, folder / "fine", source.name, baseline=baseline, threshold=settings.threshold,
                                   random_regions=regions, provenance=provenance)
        print(f"   plot: {paths[0]} (.png)")
    if args.plot_coarse:
        paths = plotting.plot_coarse(results.category_stats(), folder / "coarse", source.name, provenance=provenance)
        print(f"   plot: {paths[0]} (.png)")
    if args.plot_quartiles:
        paths = plotting.plot_quartiles(cosines, folder / "boxplot", source.name, baseline=baseline,
                                        threshold=settings.threshold, provenance=provenance)
        print(f"   plot: {paths[0]} (.png)")
    return results


def compare_with_publication(source: ModelSource, results: ModelResults, counts, folder: Path) -> None:
    """For the paper's models: side-by-side class counts with the published ones."""
    published = reference.published_counts(source.name)
    if published is None:
        return
    if not results.settings.matches_publication:
        print("   (published counts use TransformerLens processing, threshold 0.5 and the corrected rule: no comparison)")
        return
    if published.shape != counts.shape:
        print(f"   published counts have shape {tuple(published.shape)}, ours {tuple(counts.shape)}: no comparison")
        return
    table = reference.compare_counts(counts, published)
    write_table(table, folder / "comparison_published")
    print(f"   comparison with the published counts ({folder / 'comparison_published.csv'}):")
    print(reference.summarize_count_comparison(table))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_threshold(args.threshold)
    parse_device(args.device)
    settings = Settings(processing=not args.no_processing, refactor_glu=args.refactor_glu,
                        threshold=args.threshold, rule="legacy_copysign" if args.legacy_copysign else "corrected")
    sources = resolve_all(args.model, args.skip_missing)
    medians = {}
    for source in sources:
        results = run_model(source, args, settings)
        if args.plot_all_medians:
            medians[source.name] = results.quartiles()["linout"][2]
    if args.plot_all_medians:
        stem = "medians" + (f"_{settings.variant}" if settings.variant else "")
        provenance = plotting.provenance_line(None, settings.processing, settings.threshold, settings.rule,
                                              settings.refactor_glu)
        paths = plotting.plot_medians(medians, Path(args.results_dir) / stem, provenance=provenance)
        print(f"\nplot: {paths[0]} (.png), {len(medians)} model(s)")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
