"""Do the classes matter? Ablate whole IO classes (and roles, samples) and measure what changes per
token: loss, entropy, rank of the correct token and final-norm scale, against the unablated model
and against same-layer random sets of the same size (the "Weakening Neurons" follow-up of
Gerstner & Schütze).

  python e_ablate.py --datadir ../data --Mtokens 0.01                        # depletion neurons, zero ablation
  python e_ablate.py --datadir ../data --classes depletion conditional_depletion --conditional --random_seeds 3
  python e_ablate.py --datadir ../data --classes enrichment --mode mean --sample_size 24 243
  python e_ablate.py --model allenai/OLMo-7B-0424-hf --datadir DIR --save_to results --classes depletion --conditional

The activation a = act(g) * u of the chosen neurons is replaced (by 0, or by its dataset mean from
b_activations.py's statistics) at the activation pass's hook point, everywhere or, with
--conditional, only at tokens of one sign combination of (g, a). Differences are baseline − ablated.
Outputs: RESULTS/<model>/ablation/<dataset>/ablation.csv/.md/.pdf/.png (every set evaluated on
that folder's baseline). Finished sets are saved one by one: a killed run resumes where it stopped,
and a later run with more sets reuses the baseline and the sets it already has.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tqdm import tqdm

from neuroscope.ablation import CONDITIONS, MODES, parse_condition
from neuroscope.ablation_report import write_report
from neuroscope.ablation_run import (AblationStore, BootstrapSettings, ablation_plan, baseline_means, choose_sets,
                                     evaluation_meta, load_evaluation, run_ablations)
from neuroscope.neuron_sets import class_option_names, parse_class
from wcos_casestudies.artifacts import package_versions
from wcos_casestudies.cli import HelpFormatter, UserError, default_device, parse_device, parse_dtype, run_main
from wcos_casestudies.models import DEFAULT_MODEL, load_hf_model, load_tokenizer, read_arch, resolve_model
from wcos_casestudies.results import DEFAULT_RESULTS, ModelResults, Settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="as in main.py")
    parser.add_argument("--datadir", type=Path, required=True, help="folder of the tokenized datasets and statistics")
    parser.add_argument("--save_to", default="activations", help="statistics folder inside --datadir (b_activations.py --save_to)")
    parser.add_argument("--dataset", default=None, help="tokenized dataset inside --datadir (default: the one of the statistics)")
    parser.add_argument("--results_dir", type=Path, default=DEFAULT_RESULTS, help="root of the results tree")
    parser.add_argument("--classes", nargs="*", default=["depletion"],
                        help=f"IO classes to ablate, one set each (none named: no class): {', '.join(class_option_names())}")
    parser.add_argument("--roles", nargs="*", default=[],
                        help="functional roles of casestudies.py (roles.pt) to ablate, e.g. prediction suppression")
    parser.add_argument("--sample_size", type=int, nargs="*", default=[],
                        help="also ablate a random sample of this many neurons of each set (the authors used 24 and 243)")
    parser.add_argument("--mode", choices=MODES, default="zero", help="replace a by 0 or by its dataset mean")
    parser.add_argument("--conditional", nargs="*", default=None, metavar="COMBINATION",
                        help=f"also ablate only at tokens of these (sign g, sign a) combinations "
                             f"(none named: all four of {', '.join(CONDITIONS)}; + means > 0)")
    parser.add_argument("--random_seeds", type=int, default=3, help="same-layer random sets per ablated set")
    parser.add_argument("--Mtokens", type=float, default=None, help="evaluate on the first documents up to this many "
                        "million tokens (default: the whole dataset)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of the documents")
    parser.add_argument("--seed", type=int, default=0, help="seed of the samples and of the bootstrap")
    parser.add_argument("--batch_size", type=int, default=8, help="documents per forward pass")
    parser.add_argument("--device", default=default_device(), help="cpu, cuda or cuda:N")
    parser.add_argument("--dtype", default=None, help="float32, bfloat16 or float16 (default: bfloat16 on CUDA, float32 on CPU)")
    parser.add_argument("--overwrite", action="store_true", help="start the output folder again (baseline and sets)")
    parser.add_argument("--stop_after_sets", type=int, default=None, help=argparse.SUPPRESS)  # tests: act as if killed
    return parser


def check_numbers(args: argparse.Namespace) -> list[str]:
    """Flags that can be checked without any file; returns the sign combinations asked for."""
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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    conditions = check_numbers(args)
    device = parse_device(args.device)
    dtype = parse_dtype(args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    source = resolve_model(args.model)
    arch = read_arch(source)
    if not arch.gated:
        raise UserError(f"{source.name} is not a gated model: the IO classes and the ablations need gates")
    tokenizer = load_tokenizer(source)
    evaluation = load_evaluation(args.datadir, args.dataset, args.save_to, source.name, args.mode, args.Mtokens,
                                 args.batch_size, (len(tokenizer), arch.vocab_size))
    results = ModelResults(source, Settings(), root=args.results_dir)
    sets = choose_sets(results.categories(), args.classes, args.roles, results.folder, args.sample_size, args.seed)
    ablations = ablation_plan(sets, arch.d_mlp, args.mode, conditions, args.random_seeds)
    folder = results.folder / "ablation" / evaluation.dataset_dir.name
    bootstrap = BootstrapSettings(resamples=args.bootstrap, seed=args.seed)
    meta = {"model": source.name, "provenance": source.provenance, "gguf": source.is_gguf,
            **evaluation_meta(evaluation, args.batch_size, dtype, device, bootstrap), "classes_from": str(results.path),
            **{f"classes_{key}": value for key, value in results.settings.meta().items()}, "versions": package_versions()}
    store = AblationStore(folder, meta, overwrite=args.overwrite)
    print(f"model {source.name} [{source.provenance}]; {len(evaluation.rows)} documents, {evaluation.tokens:,} tokens; "
          f"{len(ablations)} ablations -> {folder}")

    def load_model():
        model, _ = load_hf_model(source, dtype=dtype, device=device, tokenizer=tokenizer)
        return model, tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    started = time.perf_counter()
    baseline = run_ablations(load_model, evaluation, ablations, store, device, bootstrap,
                             progress=lambda total: tqdm(total=total, desc="ablation passes", unit="batch"),
                             stop_after_sets=args.stop_after_sets)
    seconds = time.perf_counter() - started
    title = f"{source.name} on {evaluation.dataset_dir.name} ({evaluation.tokens:,} tokens)" + \
        (", dequantised from a GGUF" if source.is_gguf else "")
    frame = write_report(list(store.records.values()), baseline_means(baseline), folder / "ablation", title)
    shown = frame[["set", "mode", "condition", "neurons", "loss_mean", "loss_median", "entropy_mean"]] if len(frame) else frame
    print(shown.to_string(index=False, float_format=lambda v: f"{v:+.4f}"))
    print(f"{seconds:.1f} s -> {folder / 'ablation'}.csv/.md/.pdf/.png")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
