"""One streaming pass of a model over a tokenized dataset, keeping for every neuron its top-k and
bottom-k documents (value, document, position), mean activation, gate-open frequency and the
four sign combinations of (gate, linear) pre-activations. Nothing per token is stored.

  python b_activations.py --datadir data --dataset pydoc --save_to acts           # embedded model
  python b_activations.py --model allenai/OLMo-7B-0424-hf --datadir data --dataset dolma_small --save_to results

Checkpoints: DATADIR/SAVE_TO/stats.partial.pt is written every --checkpoint_every batches
(and on Ctrl-C); rerunning the same command resumes and ends with exactly the result of an
uninterrupted run. Shards: --num_shards N --shard_index i (or torchrun's RANK/WORLD_SIZE)
runs a part; `--merge --num_shards N` then gives exactly the single-run result.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from tqdm import tqdm

from neuroscope.activations import NeuronStats, batch_plan, decoder_layers, run_pass, shard_range
from neuroscope.data import check_vocabulary, document_lengths, load_tokenized
from neuroscope.store import RUN_KEYS, load_stats, save_stats, stats_path
from wcos_casestudies.artifacts import package_versions
from wcos_casestudies.cli import HelpFormatter, UserError, default_device, parse_device, parse_dtype, run_main
from wcos_casestudies.models import DEFAULT_MODEL, load_hf_model, load_tokenizer, read_arch, resolve_model


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="as in main.py")
    parser.add_argument("--datadir", type=Path, required=True, help="folder of the tokenized datasets and results")
    parser.add_argument("--dataset", default="pydoc", help="tokenized dataset inside --datadir (a_dataset.py --save_to)")
    parser.add_argument("--save_to", default="activations", help="folder inside --datadir for the statistics")
    parser.add_argument("--examples_per_neuron", type=int, default=16, help="k of the top-k and bottom-k documents")
    parser.add_argument("--batch_size", type=int, default=8, help="documents per forward pass")
    parser.add_argument("--device", default=default_device(), help="cpu, cuda or cuda:N (torchrun: cuda:LOCAL_RANK)")
    parser.add_argument("--dtype", default=None, help="float32, bfloat16 or float16 (default: bfloat16 on CUDA, float32 on CPU)")
    parser.add_argument("--num_shards", type=int, default=None, help="split the dataset into this many parts (default: WORLD_SIZE or 1)")
    parser.add_argument("--shard_index", type=int, default=None, help="which part this process runs (default: RANK or 0)")
    parser.add_argument("--merge", action="store_true", help="merge the --num_shards shard files into stats.pt")
    parser.add_argument("--checkpoint_every", type=int, default=200, help="batches between checkpoints (0: none)")
    parser.add_argument("--overwrite", action="store_true", help="start again even if statistics or a checkpoint exist")
    parser.add_argument("--stop_after_batches", type=int, default=None, help=argparse.SUPPRESS)  # tests: act as if killed
    return parser


def shard_settings(args: argparse.Namespace) -> tuple[int, int]:
    """--num_shards/--shard_index, falling back to torchrun's WORLD_SIZE/RANK."""
    num = args.num_shards if args.num_shards is not None else int(os.environ.get("WORLD_SIZE", 1))
    index = args.shard_index if args.shard_index is not None else int(os.environ.get("RANK", 0))
    if num < 1 or not 0 <= index < num:
        raise UserError(f"--shard_index {index} --num_shards {num}: need 0 <= shard_index < num_shards")
    return num, index


def merge_shards(folder: Path, num_shards: int) -> Path:
    """Merge shard files in order into stats.pt; they must tile the dataset's batches exactly."""
    if num_shards < 2:
        raise UserError("--merge needs --num_shards 2 or more")
    merged, first_meta, expected_batch = None, None, 0
    for index in range(num_shards):
        path = stats_path(folder, num_shards, index)
        if not path.exists():
            partial = stats_path(folder, num_shards, index, partial=True)
            state = "is still running or was interrupted" if partial.exists() else "is missing"
            raise UserError(f"shards do not add up: {path.name} {state}")
        stats, meta, _ = load_stats(path, {key: first_meta[key] for key in RUN_KEYS} if first_meta else None)
        if meta.get("num_shards") != num_shards or meta.get("first_batch") != expected_batch:
            raise UserError(f"shards do not add up: {path.name} covers batches {meta.get('first_batch')}..{meta.get('last_batch')}, "
                            f"expected to start at {expected_batch} of a {num_shards}-way split")
        expected_batch = meta["last_batch"]
        first_meta = first_meta or meta
        if merged is None:
            merged = stats
        else:
            merged.merge(stats)
    n_batches = first_meta["batches"]
    if expected_batch != n_batches:
        raise UserError(f"shards do not add up: they cover {expected_batch} of {n_batches} batches")
    meta = {**first_meta, "num_shards": 1, "shard_index": 0, "first_batch": 0, "last_batch": n_batches,
            "merged_from": num_shards}
    path = stats_path(folder)
    save_stats(merged, meta, path)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    folder = args.datadir / args.save_to
    num_shards, shard_index = shard_settings(args)
    if args.merge:
        path = merge_shards(folder, num_shards)
        print(f"merged {num_shards} shards -> {path}")
        return 0
    if "LOCAL_RANK" in os.environ and args.device == "cuda":
        args.device = f"cuda:{os.environ['LOCAL_RANK']}"
    device = parse_device(args.device)
    dtype = parse_dtype(args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    if args.batch_size < 1:
        raise UserError(f"--batch_size {args.batch_size}: must be at least 1")
    source = resolve_model(args.model)
    arch = read_arch(source)
    if not arch.gated:
        raise UserError(f"{source.name} is not a gated model: the pass records gate and linear pre-activations")
    dataset, data_meta = load_tokenized(args.datadir / args.dataset)
    tokenizer = load_tokenizer(source)
    check_vocabulary(data_meta, len(tokenizer), arch.vocab_size, source.name)
    k = args.examples_per_neuron
    if not 1 <= k <= len(dataset):
        raise UserError(f"--examples_per_neuron {k}: must be between 1 and the dataset's {len(dataset)} documents")
    plan = batch_plan(document_lengths(dataset), args.batch_size)
    first, last = shard_range(len(plan), num_shards, shard_index)
    meta = {"model": source.name, "provenance": source.provenance, "gguf": source.is_gguf,
            "dataset": str((args.datadir / args.dataset).resolve()), "documents": len(dataset),
            "tokens": data_meta["tokens"], "k": k, "batch_size": args.batch_size, "dtype": str(dtype).removeprefix("torch."),
            "n_layers": arch.n_layers, "d_mlp": arch.d_mlp, "num_shards": num_shards, "shard_index": shard_index,
            "first_batch": first, "last_batch": last, "batches": len(plan), "versions": package_versions()}
    final = stats_path(folder, num_shards, shard_index)
    partial = stats_path(folder, num_shards, shard_index, partial=True)
    if final.exists() and not args.overwrite:
        load_stats(final, {key: meta[key] for key in RUN_KEYS})
        print(f"{final} exists for these settings; nothing to do (--overwrite recomputes)")
        return 0

    model, tokenizer = load_hf_model(source, dtype=dtype, device=device, tokenizer=tokenizer)
    decoder_layers(model)
    start = first
    if partial.exists() and not args.overwrite:
        stats, _, data = load_stats(partial, {key: meta[key] for key in (*RUN_KEYS, "shard_index", "num_shards")})
        stats = stats.to(device)
        start = int(data["next_batch"])
        print(f"resuming from the checkpoint at batch {start} of {first}..{last}")
    else:
        stats = NeuronStats.empty(arch.n_layers, arch.d_mlp, k, device)
    stop = last if args.stop_after_batches is None else min(last, start + args.stop_after_batches)

    def checkpoint(next_batch: int) -> None:
        save_stats(stats, meta, partial, next_batch=next_batch)

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    with tqdm(total=stop - start, desc=f"batches (shard {shard_index + 1}/{num_shards})", unit="batch") as progress:
        tokens = run_pass(model, dataset, stats, plan, range(start, stop), pad_id, device,
                          on_checkpoint=checkpoint, checkpoint_every=args.checkpoint_every, progress=progress)
    seconds = time.perf_counter() - started
    if stop < last:  # --stop_after_batches: leave a checkpoint, as a killed run would
        checkpoint(stop)
        print(f"stopped after batch {stop}; rerun to resume")
        return 0
    meta.update({"seconds": round(seconds, 2), "tokens_per_second": round(tokens / max(seconds, 1e-9), 1)})
    save_stats(stats, meta, final)
    partial.unlink(missing_ok=True)
    peak = (torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    print(f"{tokens:,} tokens in {seconds:.1f} s ({tokens / max(seconds, 1e-9):,.0f} tokens/s); "
          f"peak {'GPU' if device.type == 'cuda' else 'process'} memory {peak:.2f} GiB -> {final}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
