"""Recompute chosen neurons on their example documents and write
- one self-contained HTML page each (up to --max_pages neurons):
  RESULTS/<model>/neuroscope/L<layer>/N<neuron>/vis.html (with the recomputed values in
  activations.pt beside it), plus an index page (b2_recompute.py and c_neuron_vis.py do the two
  steps separately); each example shows its direct effect on the next token and that token's rank
  (neuroscope/recompute/next_token.py), and with --ablation_effect the exact next-token loss change when only
  its neuron is zeroed there;
- with --viewer NAME (the default for `all` and for long lists: NAME = viewer), the compact viewer
  RESULTS/<model>/neuroscope/NAME/viewer.html of every chosen neuron: one batched pass over the
  union of their documents (each document once, all layers at once) keeps only windows of float16
  activations; open viewer.html#LAYER.NEURON. It replaces only a viewer that it wrote (marked by its
  neuroscope_viewer.json; never a page folder L<layer>, a file, a link or a folder of yours), written aside
  and swapped in, under the lock of the pages (neurons.json.lock).

  python d_recompute_vis.py --datadir ../data --activations activations --neurons 29.78 15.714
  python d_recompute_vis.py --datadir ../data --neurons_from ../results/<model>/case_studies.txt
  python d_recompute_vis.py --datadir ../data --neurons all                 # the viewer of every neuron
  python d_recompute_vis.py --datadir ../data --neurons 28.* 29.* --viewer late_layers
  python d_recompute_vis.py --datadir ../data --activations published --neurons 28.4737 --statistics_only   # no weights
  python d_recompute_vis.py --model allenai/OLMo-7B-0424-hf --datadir DIR --activations results \\
         --neurons 28.4737 28.9766 31.9634 29.10900 30.10972 29.4180

Under torchrun (`torchrun --nproc_per_node N d_recompute_vis.py ...`, the same flags) the viewer's recomputation
is split by documents across the ranks and rank 0 writes the viewer, exactly the one process's; vis.html pages
(at most --max_pages neurons) and --from_viewer are made by rank 0 alone.

Give it the same weight flags as main.py (--threshold, --legacy_copysign, --refactor_glu,
--no_processing): the pages show the classes and cosines of that run.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from gated_core.cli import (
    add_device,
    add_model,
    add_naming,
    add_results_dir,
    make_parser,
    non_negative_int,
    plain_name,
    positive_int,
    run_in_naming,
    run_main,
)
from gated_core.results_layout import DEFAULT_VIEWER
from neuroscope.cli import add_activations, add_batch_size, add_datadir, add_neurons, add_top_tokens, page_request
from wcos_casestudies.cli import add_weight_settings


def build_parser():
    parser = make_parser(__doc__)
    add_model(parser)
    add_datadir(parser)
    add_activations(parser)
    add_neurons(parser)
    add_weight_settings(parser)
    add_results_dir(parser)
    add_top_tokens(parser)
    add_batch_size(parser)
    add_device(parser)
    add_viewer_flags(parser)
    add_naming(parser)
    return parser


DEFAULT_MAX_PAGES = 64
VIEWER_DEFAULTS = {"window": (16, 4), "context": (40, 12), "table_tokens": 10}


def add_viewer_flags(parser) -> None:
    """The flags of the compact viewer and of the choice between pages and viewer."""
    group = parser.add_argument_group("pages and viewer")
    group.add_argument("--whole_layers", action="store_true", help="take every neuron of the chosen neurons' layers")
    group.add_argument("--max_pages", type=non_negative_int, default=DEFAULT_MAX_PAGES,
                       help="write vis.html pages only when at most this many neurons are chosen")
    group.add_argument("--viewer", type=plain_name, default=None, metavar="NAME",
                       help="also write the compact viewer into neuroscope/NAME (default: `viewer` when there are too many neurons for pages)")
    group.add_argument("--from_viewer", type=plain_name, default=None, metavar="SOURCE",
                       help="make --viewer from the whole layers of the existing viewer neuroscope/SOURCE (nothing is recomputed; "
                            "every file it copies is first checked against the checksums in SOURCE's data/meta.js)")
    group.add_argument("--window", type=non_negative_int, nargs=2, default=VIEWER_DEFAULTS["window"], metavar=("BEFORE", "AFTER"),
                       help="viewer: tokens with activations before and after an example's extreme token")
    group.add_argument("--context", type=non_negative_int, nargs=2, default=VIEWER_DEFAULTS["context"], metavar=("BEFORE", "AFTER"),
                       help="viewer: grey tokens (text only) shown around the window")
    group.add_argument("--table_tokens", type=positive_int, default=VIEWER_DEFAULTS["table_tokens"],
                       help="viewer: tokens in each of the ±w_in and ±w_gate tables")
    group.add_argument("--compact", action="store_true",
                       help="viewer: a smaller viewer for models of many neurons: activations in 8 bits (a code per token and a scale "
                            "per window, within 1/254 of the window's largest |a|), the examples' values and next-token effects in "
                            "float16 (about 30%% smaller)")
    group.add_argument("--statistics_only", action="store_true",
                       help="pages of what the statistics hold, without the model's weights (e.g. of a published summary read "
                            "by b_import_summary.py): frequencies, mean and the examples' documents as text, into "
                            "neuroscope/statistics-only/ (the model's config and tokenizer are enough)")
    group.add_argument("--ablation_effect", action="store_true",
                       help="pages: also the exact next-token loss change of each example with only its neuron zeroed at "
                            "its extreme token (two more forward passes per batch of examples)")


def main(argv: Sequence[str] | None = None) -> int:
    return run_in_naming(run, build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """The script's work, the classes shown in the naming of --naming."""
    from contextlib import ExitStack

    from neuroscope.core.distributed import check_same, process_group, rank_device, together
    from neuroscope.view import workflow

    with process_group(args.device) as ranks, ExitStack() as stack:
        check_same(ranks, {key: str(value) for key, value in vars(args).items()}, "flags")
        args.device = rank_device(args.device)  # under torchrun: cuda is this rank's GPU
        if args.from_viewer is not None:
            together(ranks, lambda: copy_layers(args), lambda r: r.first)
            return 0
        if args.statistics_only:
            together(ranks, lambda: statistics_only(args), lambda r: r.first)
            return 0
        run = together(ranks, lambda: workflow.open_run(page_request(args)))
        pages = len(run.neurons) <= args.max_pages
        viewer = args.viewer or (None if pages else DEFAULT_VIEWER)
        if viewer is not None:  # before the model loads; again under the lock when it is written
            together(ranks, lambda: workflow.checked_viewer_folder(run, viewer))
        # one lock for the pages, their index and the viewers, held by the rank that writes them
        together(ranks, lambda: stack.enter_context(workflow.hold_pages(run)), lambda r: r.first)
        if pages:
            together(ranks, lambda: write_pages(run, args), lambda r: r.first)
        elif ranks.first:
            print(f"{len(run.neurons)} neurons: no vis.html pages (at most --max_pages {args.max_pages}); the viewer has them all")
        if viewer is not None:
            write_viewer(run, args, viewer, ranks)
            stack.close()
            if ranks.first:
                run.results.write_index()
    return 0


def write_pages(run, args) -> None:
    """Recompute the chosen neurons and write their vis.html pages and the index (holding the pages lock)."""
    from neuroscope.view import workflow

    started = time.perf_counter()
    recomputed = workflow.recompute_checked(run, args.batch_size, args.ablation_effect)
    seconds = time.perf_counter() - started
    workflow.save_recomputed(run, recomputed)
    written = workflow.write_run_pages(run, recomputed, args.top_tokens)
    print(f"{len(written)} pages in {run.folder} (index.html); recomputation {seconds:.1f} s "
          f"({seconds / max(len(written), 1):.1f} s per neuron)")


def write_viewer(run, args, name: str, ranks=None) -> None:
    """Recompute the chosen neurons' windows and write the viewer `name` (holding the pages lock; under torchrun
    every rank recomputes its part of the documents and rank 0 writes)."""
    from neuroscope.view import workflow

    before, after = args.window
    settings = workflow.ViewerSettings(name, before, before + after + 1, tuple(args.context), args.top_tokens, args.table_tokens,
                                       args.compact)
    written = workflow.write_run_viewer(run, settings, args.batch_size, ranks)
    if written is None:  # a rank other than 0
        return
    steps = ", ".join(f"{step} {seconds:.1f} s" for step, seconds in written.seconds.items())
    print(f"viewer of {len(run.neurons)} neurons: {written.folder / 'viewer.html'} ({written.size / 2**20:.1f} MiB; {steps})")


def statistics_only(args) -> None:
    """--statistics_only: pages from the statistics alone, without the model's weights."""
    from neuroscope.view import workflow

    index = workflow.write_statistics_only(workflow.open_run(page_request(args), recomputes=False))
    print(f"statistics-only pages: {index}")


def copy_layers(args) -> int:
    """--from_viewer: a viewer of whole layers of an existing one, without the model."""
    from gated_core.errors import UserError
    from neuroscope.view import workflow
    from neuroscope.view.viewer_copy import extract_layers

    if args.viewer is None or args.viewer == args.from_viewer:
        raise UserError("--from_viewer SOURCE needs --viewer NAME, another folder name")
    run = workflow.open_run(page_request(args), recomputes=False)
    layers = sorted({layer for layer, _ in run.neurons})
    d_mlp = run.stats.d_mlp
    if len(run.neurons) != len(layers) * d_mlp:
        raise UserError("--from_viewer copies whole layers: give LAYER.* names, all, or --whole_layers")
    source = run.folder / args.from_viewer
    if source.is_symlink() or not (source / "data" / "meta.js").is_file():
        raise UserError(f"{source}: no viewer there; write it first (--viewer {args.from_viewer})")
    target = workflow.checked_viewer_folder(run, args.viewer)
    with workflow.hold_pages(run):
        size = extract_layers(source, target, layers, workflow.viewer_identity(run))
    print(f"viewer of layers {', '.join(map(str, layers))}: {target / 'viewer.html'} ({size / 2**20:.1f} MiB)")
    run.results.write_index()
    return 0


def cli() -> None:
    sys.exit(run_main(main))


if __name__ == "__main__":
    cli()
