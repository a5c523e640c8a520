"""Do the classes matter? Ablate whole IO classes (and roles, samples) and measure what changes per
token: loss, entropy, rank of the correct token and final-norm scale, against the unablated model
and against same-layer random sets of the same size (the "Weakening Neurons" follow-up of
Gerstner & Schütze).

  python e_ablate.py --datadir ../data --mtokens 0.01                        # depletion neurons, zero ablation
  python e_ablate.py --datadir ../data --classes depletion conditional_depletion --conditional --random_seeds 3
  python e_ablate.py --datadir ../data --classes enrichment --mode mean --sample_size 24 243
  python e_ablate.py --model allenai/OLMo-7B-0424-hf --datadir DIR --activations results --classes depletion --conditional

The activation a = act(g) * u of the chosen neurons is replaced (by 0, or by its dataset mean from
b_activations.py's statistics) at the activation pass's hook point, everywhere or, with
--conditional, only at tokens of one sign combination of (g, a). Differences are baseline − ablated.
Outputs: RESULTS/<model>/ablation/<dataset>/ablation.csv/.md/.pdf/.png (every set evaluated on
that folder's baseline). Finished sets are saved one by one: a killed run resumes where it stopped,
and a later run with more sets reuses the baseline and the sets it already has, but only those
computed from the same dataset contents, weights, settings and (mean ablation) means: a folder made
from other ones is refused (--overwrite starts it again; another --results_dir keeps both).

  torchrun --nproc_per_node N e_ablate.py --datadir ../data ...     # the same flags: ranks split the documents

Under torchrun each rank evaluates its part of the batches and rank 0 gathers the per-token metrics in order and
writes the files: exactly the tables of one process (--device cuda: each rank on cuda:LOCAL_RANK).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from gated_core.cli import (
    add_device,
    add_dtype,
    add_model,
    add_naming,
    add_results_dir,
    make_parser,
    non_negative_int,
    positive_float,
    positive_int,
    run_in_naming,
    run_main,
)
from gated_core.results_layout import ABLATION_FOLDER
from neuroscope.cli import add_ablation_sets, add_activations, add_batch_size, add_datadir
from wcos_casestudies.cli import add_weight_settings


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(__doc__)
    add_model(parser)
    add_datadir(parser)
    add_activations(parser)
    add_results_dir(parser)
    add_ablation_sets(parser, random_seeds=3)
    parser.add_argument("--mtokens", "--Mtokens", dest="mtokens", type=positive_float, default=None,
                        help="evaluate on the first documents up to this many million tokens (default: the whole dataset; "
                             "--Mtokens: the seed's spelling)")
    parser.add_argument("--bootstrap", type=positive_int, default=1000, help="bootstrap resamples of the documents")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the samples and of the bootstrap")
    add_weight_settings(parser)
    add_batch_size(parser)
    add_device(parser)
    add_dtype(parser)
    parser.add_argument("--overwrite", action="store_true", help="start the output folder again (baseline and sets)")
    parser.add_argument("--stop_after_sets", type=positive_int, default=None, help=argparse.SUPPRESS)  # tests: act as if killed
    add_naming(parser)
    return parser


def check_numbers(args: argparse.Namespace) -> list[str]:
    """Flags that can be checked without any file; returns the sign combinations asked for."""
    from gated_core.errors import UserError
    from neuroscope.classes.ablation import CONDITIONS, parse_condition
    from neuroscope.classes.neuron_sets import parse_class

    for word in args.classes:
        parse_class(word)
    if args.random_seeds < 0 or args.bootstrap < 1:
        raise UserError(f"--random_seeds {args.random_seeds} --bootstrap {args.bootstrap}: need random_seeds >= 0 "
                        "and bootstrap >= 1")
    if any(size < 1 for size in args.sample_size):
        raise UserError(f"--sample_size {' '.join(map(str, args.sample_size))}: sizes must be at least 1")
    if args.conditional is None:
        return []
    return [parse_condition(word) for word in args.conditional] or list(CONDITIONS)


def ablate_and_report(args, prepared, ablations, ranks) -> None:
    """Run the ablations not yet in the output folder (sharing one baseline), then write and print the table
    (rank 0 keeps the folder's files and writes the tables; under torchrun the other ranks only evaluate)."""
    from tqdm import tqdm

    from gated_core.models.loading import load_hf_model
    from neuroscope.classes.ablation_report import write_report
    from neuroscope.classes.ablation_run import AblationStore, baseline_means, run_ablations
    from neuroscope.core.distributed import together

    p = prepared
    evaluation, source, folder = p.evaluation, p.results.source, p.folder

    def open_store():
        store = AblationStore(folder, p.meta, overwrite=args.overwrite, statistics_fingerprint=evaluation.statistics_fingerprint)
        store.remove_leftovers()  # of a killed run: this run holds the folder's lock, no other one writes there
        print(f"model {source.name} [{source.provenance}]; {len(evaluation.rows)} documents, {evaluation.tokens:,} "
              f"tokens; {len(ablations)} ablations -> {folder}" + (f" ({ranks.world} ranks)" if ranks.several else ""))
        return store

    store = together(ranks, open_store, lambda r: r.first)

    def load_model():
        model, _ = load_hf_model(source, dtype=p.dtype, device=p.device, tokenizer=p.tokenizer)
        return model, p.tokenizer.pad_token_id if p.tokenizer.pad_token_id is not None else 0

    started = time.perf_counter()
    baseline = run_ablations(load_model, evaluation, ablations, store, p.device, p.bootstrap,
                             progress=lambda total: tqdm(total=total, desc="ablation passes", unit="batch"),
                             stop_after_sets=args.stop_after_sets, ranks=ranks,
                             log=print if ranks.first else lambda line: None)
    seconds = time.perf_counter() - started
    if not ranks.first:
        return
    title = f"{source.name} on {evaluation.dataset_dir.name} ({evaluation.tokens:,} tokens)" + \
        (", dequantised from a GGUF" if source.is_gguf else "")
    frame = write_report(list(store.records.values()), baseline_means(baseline), folder / "ablation", title)
    from gated_core.naming import shown

    summary = frame[["set", "mode", "condition", "neurons", "loss_mean", "loss_median", "entropy_mean"]] if len(frame) else frame
    summary = summary.map(lambda v: shown(v) if isinstance(v, str) else v)  # before formatting: the columns stay aligned
    print(summary.to_string(index=False, float_format=lambda v: f"{v:+.4f}"))
    print(f"{seconds:.1f} s -> {folder / 'ablation'}.csv/.md/.pdf/.png; all outputs: {p.results.write_index()}")


def prepare(args: argparse.Namespace) -> argparse.Namespace:
    """Check every input and set up the run (nothing heavy is loaded): the model's source, tokenizer, evaluation,
    classes (results), output folder, the metadata its files must agree with, and the device and dtype."""
    from gated_core.artifacts import made_from, package_versions
    from gated_core.cli import check_output_location, parse_device, parse_dtype
    from gated_core.models.arch import read_arch
    from gated_core.models.loading import load_tokenizer
    from gated_core.models.sources import resolve_model
    from neuroscope.classes.ablation_run import (
        AblationStore,
        BootstrapSettings,
        check_ablation_folder,
        evaluation_meta,
        load_evaluation,
    )
    from neuroscope.core.distributed import rank_device
    from wcos_casestudies.cli import settings_from_args
    from wcos_casestudies.results import ModelResults

    settings = settings_from_args(args)
    device = parse_device(rank_device(args.device))
    dtype = parse_dtype(args.dtype, device)
    check_output_location(args.results_dir, "--results_dir")
    source = resolve_model(args.model, full_hash=args.full_hash)
    arch = read_arch(source)
    arch.require_gated(source.name, "the IO classes and the ablations need gates")
    tokenizer = load_tokenizer(source)
    evaluation = load_evaluation(args.datadir, args.dataset, args.activations, source, args.mode, args.mtokens,
                                 args.batch_size, (tokenizer, arch.vocab_size))
    results = ModelResults(source, settings, root=args.results_dir, loader=args.loader, device=device)
    folder = results.folder / ABLATION_FOLDER / evaluation.dataset_dir.name
    for location in (results.folder, folder):  # its index.html, and the ablation's files: before any work
        check_output_location(location, "--results_dir", inside=args.results_dir)
    check_ablation_folder(folder)
    bootstrap = BootstrapSettings(resamples=args.bootstrap, seed=args.seed)
    meta = {"model": source.name, "provenance": source.provenance, "gguf": source.is_gguf,
            **made_from(weights=results.fingerprint),
            **evaluation_meta(evaluation, args.batch_size, dtype, device, bootstrap), "classes_from": str(results.path),
            **{f"classes_{key}": value for key, value in results.settings.meta().items()}, "versions": package_versions()}
    # a folder of other inputs is refused now, before the classes may be computed; checked again under the lock
    AblationStore(folder, meta, overwrite=args.overwrite, statistics_fingerprint=evaluation.statistics_fingerprint)
    return argparse.Namespace(source=source, arch=arch, tokenizer=tokenizer, evaluation=evaluation, results=results,
                              folder=folder, meta=meta, bootstrap=bootstrap, device=device, dtype=dtype)


def prepare_and_choose(args: argparse.Namespace) -> tuple[argparse.Namespace, list]:
    """`prepare`, then the sets to ablate (their classes computed and cached in the results folder if need be)."""
    from neuroscope.classes.ablation_run import choose_sets

    prepared = prepare(args)
    return prepared, choose_sets(prepared.results, args.classes, args.roles, args.sample_size, args.seed)


def main(argv: Sequence[str] | None = None) -> int:
    return run_in_naming(run, build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """The script's work, the classes shown in the naming of --naming."""
    from contextlib import ExitStack

    from gated_core.locks import hold_lock
    from neuroscope.classes.ablation_run import ablation_plan
    from neuroscope.core.distributed import check_same, process_group, rank_zero_first, together

    conditions = check_numbers(args)
    with process_group(args.device) as ranks, ExitStack() as stack:
        check_same(ranks, {key: str(value) for key, value in vars(args).items()}, "flags")
        # the classes may be computed and cached in the results folder: by rank 0, then read by the others
        prepared, sets = rank_zero_first(ranks, lambda: prepare_and_choose(args))
        check_same(ranks, {key: prepared.meta[key] for key in ("weights_fingerprint", "dataset_fingerprint", "documents")},
                   "inputs")
        ablations = ablation_plan(sets, prepared.arch.d_mlp, args.mode, conditions, args.random_seeds)
        # one run per output folder: a second one stops here, naming this one
        together(ranks, lambda: stack.enter_context(hold_lock(prepared.folder)), lambda r: r.first)
        ablate_and_report(args, prepared, ablations, ranks)
    return 0


def cli() -> None:
    sys.exit(run_main(main))


if __name__ == "__main__":
    cli()
