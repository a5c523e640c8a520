"""Section 5 of the paper for one model: cosines, IO classes, per-layer statistics, tables and plots,
as the flags of `main.py` ask for them."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from gated_core.artifacts import write_table
from gated_core.cli import check_output_location
from gated_core.errors import UserError
from gated_core.models.arch import read_arch
from gated_core.models.registry import expand_model_names
from gated_core.models.sources import ModelSource, resolve_model
from gated_core.naming import shown
from wcos_casestudies import plotting, reference
from wcos_casestudies.constants import CLASS_NAMES, DEFAULT_THRESHOLD, QUANTILES
from wcos_casestudies.results import ModelResults, Settings
from wcos_casestudies.utils import random_cosine_interval, random_regions_table


def resolve_all(names: list[str], skip_missing: bool, full_hash: bool = False) -> list[ModelSource]:
    """Resolve every requested model before anything is written (`full_hash`: --full_hash)."""
    sources, missing = [], []
    for name in expand_model_names(names):
        try:
            sources.append(resolve_model(name, full_hash=full_hash))
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


@dataclass(frozen=True)
class Section5Request:
    """What a run of `main.py` writes (its output flags) and where its results go."""

    results_dir: Path
    fmt: str = "pt"  # --format
    overwrite: bool = False
    loader: str = "auto"
    categories: bool = False
    category_stats: bool = False
    quartiles: bool = False
    plot_fine: bool = False
    plot_coarse: bool = False
    plot_quartiles: bool = False


def run_model(source: ModelSource, request: Section5Request, settings: Settings, device) -> ModelResults:
    """Everything `request` asks for, for one model."""
    arch = read_arch(source)
    if request.plot_fine or request.plot_quartiles or settings.refactor_glu:
        arch.require_gated(source.name, "--plot_fine, --plot_quartiles and --refactor_glu need gates")
    results = ModelResults(source, settings, root=request.results_dir, fmt=request.fmt, overwrite=request.overwrite,
                           loader=request.loader, device=device)
    check_output_location(results.folder, "--results_dir", inside=request.results_dir)
    results.cosines()
    print_header(results, arch)
    if request.categories:
        results.categories()
        print(f"   categories: {results.folder / results.path.name} ['categories']")
    if request.category_stats:
        write_category_stats(results)
    if request.quartiles:
        write_quartiles(results)
    write_plots(results, request, random_cosine_interval(arch.d_model))
    print(f"   all outputs: {results.write_index()}")
    return results


def print_header(results: ModelResults, arch) -> None:
    """Model, shapes, provenance, weights and the random baseline of one run."""
    meta, settings = results.meta, results.settings
    baseline = random_cosine_interval(arch.d_model)
    how = f"reused {results.path.parent}" if results.reused else f"computed in {meta.get('seconds')} s"
    print(f"\n== {results.source.name}  [{meta['provenance']}]")
    print(f"   {arch.n_layers} layers x {arch.d_mlp} neurons, d_model {arch.d_model}, {arch.glu}; weights: {meta['processing']}"
          f"{', GLU signs refactored' if settings.refactor_glu else ''}; loader {meta['loader']}; {how}")
    print(f"   threshold {settings.threshold} ({settings.rule} rule); 95% of random cosines in d_model {arch.d_model} "
          f"lie within ±{baseline:.3f}")


def write_category_stats(results: ModelResults) -> None:
    """`category_stats.csv/.md`, the shares over all layers, and the comparison with the published counts."""
    counts, folder = results.category_stats(), results.folder
    write_table(counts_frame(counts), folder / "category_stats", title=results.caption)
    total = counts.sum(0)
    share = ", ".join(f"{shown(name)} {100 * int(n) / int(total.sum()):.1f}%" for name, n in zip(CLASS_NAMES, total) if n)
    print(f"   classes over all layers: {share}")
    print(f"   per-layer counts: {folder / 'category_stats.csv'} (.md)")
    compare_with_publication(results, counts)


def write_quartiles(results: ModelResults) -> None:
    """`quartiles.csv/.md` and, for the paper's models, the comparison of median linout with the published plot."""
    q, folder = results.quartiles(), results.folder
    rows = [{"cosine": name, "layer": layer, **{f"q{p:g}": float(values[i, layer]) for i, p in enumerate(QUANTILES)}}
            for name, values in q.items() for layer in range(values.shape[1])]
    write_table(pd.DataFrame(rows), folder / "quartiles", title=results.caption)
    write_table(random_regions_table(results.random_regions()), folder / "random_regions", title=results.caption)
    print(f"   per layer, 95% of cosines between different neurons of the layer: {folder / 'random_regions.csv'}")
    med = q["linout"][2]
    print(f"   median linout by layer: first {float(med[0]):+.3f}, middle {float(med[len(med) // 2]):+.3f}, "
          f"last {float(med[-1]):+.3f}  ({folder / 'quartiles.csv'})")
    published = reference.published_medians(results.source.name)
    if published is not None and len(published) == len(med) and results.settings.processing:
        table = reference.compare_medians(med, published)
        write_table(table, folder / "comparison_median_linout", title=results.caption)
        print(f"   median linout vs published plot: max |difference| {table['difference'].abs().max():.3f} "
              f"(published values are read off a plot, ±0.005)")


def write_plots(results: ModelResults, request: Section5Request, baseline: float) -> None:
    """The fine, coarse and box plots that `request` asks for."""
    folder, name = results.folder, results.source.name
    paths = []
    if request.plot_fine:
        paths += plotting.plot_fine(results.cosines(), folder / "fine", name, baseline=baseline,
                                    threshold=results.settings.threshold, random_regions=results.random_regions(),
                                    provenance=results.provenance)[:1]
    if request.plot_coarse:
        paths += plotting.plot_coarse(results.category_stats(), folder / "coarse", name, provenance=results.provenance)[:1]
    if request.plot_quartiles:
        paths += plotting.plot_quartiles(results.cosines(), folder / "boxplot", name, baseline=baseline,
                                         threshold=results.settings.threshold, provenance=results.provenance)[:1]
    for path in paths:
        print(f"   plot: {path} (.png)")


def compare_with_publication(results: ModelResults, counts) -> None:
    """For the paper's models: side-by-side class counts with the published ones."""
    folder = results.folder
    published = reference.published_counts(results.source.name)
    if published is None:
        return
    if not results.settings.matches_publication:
        print(f"   (published counts use TransformerLens processing, threshold {DEFAULT_THRESHOLD} and the corrected rule: no comparison)")
        return
    if published.shape != counts.shape:
        print(f"   published counts have shape {tuple(published.shape)}, ours {tuple(counts.shape)}: no comparison")
        return
    table = reference.compare_counts(counts, published)
    write_table(table, folder / "comparison_published", title=results.caption)
    print(f"   comparison with the published counts ({folder / 'comparison_published.csv'}):")
    print(reference.summarize_count_comparison(table))


def write_medians_plot(medians: dict, results_dir: Path, settings: Settings) -> None:
    """`medians.pdf/png` at the results root: median linout by relative depth, one line per model."""
    stem = "medians" + (f"_{settings.variant}" if settings.variant else "")
    provenance = plotting.provenance_line(None, settings.processing, settings.threshold, settings.rule, settings.refactor_glu)
    paths = plotting.plot_medians(medians, Path(results_dir) / stem, provenance=provenance)
    print(f"\nplot: {paths[0]} (.png), {len(medians)} model(s)")
