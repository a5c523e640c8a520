"""Throughput of the activation pass against a bare forward pass of the same model, batches and dtype.

Timings over the same batches, in one process: the full model's forward pass (logits, no hooks), the decoder alone
(no unembedding, no hooks: the work the pass must do anyway), and the pass itself (hooks + statistics) with and
without typical examples (`--typical`, 4 per sign combination and band; 0: only without), in two regimes:
  - from empty statistics: the first batches of a run, while every document still enters the example lists (a new
    document enters a full list of k with a chance of about k / documents seen) and the typical samples fill;
  - from warm statistics: statistics that already hold the other batches of the text (`--warm_batches`), as in
    nearly every batch of a long run (the paper's 20M tokens).
Each timing runs `--repeats` times, the runs in turn, and the best counts (this CPU is shared with other jobs).
Prints a Markdown table with tokens/s and ratios, and the statistics' memory on the device (per neuron for the
typical examples).

  python benchmarks/bench_neuroscope.py                                  # embedded SmolLM2, embedded text, CPU
  python benchmarks/bench_neuroscope.py --random olmo-7b --device cuda   # OLMo-7B-0424 shapes, random bf16 weights
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from neuroscope.activation_pass.activations import NeuronStats
from neuroscope.activation_pass.collect import run_pass
from neuroscope.constants import DEFAULT_TYPICAL
from neuroscope.core.batches import batch_plan, pad_batch

ROOT = Path(__file__).resolve().parent.parent

PAPER_TOKENS = 20_000_390
BARE, DECODER = "bare forward, logits, no hooks", "bare decoder, no hooks"
PASS, WITHOUT_TYPICAL = "activation pass (hooks + statistics)", "activation pass without typical examples"


SHAPES = {  # hidden, intermediate, layers, heads, vocab
    "olmo-7b": (4096, 11008, 32, 32, 50304),  # OLMo-7B-0424
    "olmo-test": (256, 688, 4, 4, 50304),  # same code path, small enough for a CPU dry run
}


def random_olmo(shape: str, device: torch.device, dtype: torch.dtype):
    """An OLMo model of the given shape with random weights, built directly on the device."""
    from transformers import AutoModelForCausalLM, OlmoConfig

    hidden, intermediate, layers, heads, vocab = SHAPES[shape]
    config = OlmoConfig(hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                        num_attention_heads=heads, num_key_value_heads=heads, vocab_size=vocab,
                        max_position_embeddings=4096, clip_qkv=8.0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


class Rows:
    """The slice of the datasets API that run_pass uses, over in-memory token rows."""

    def __init__(self, rows: dict[str, list[list[int]]]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows["input_ids"])

    def __getitem__(self, index):
        return {key: [values[i] for i in index] for key, values in self.rows.items()}


@dataclass
class Workload:
    """A model and its documents: what the three timings run over."""

    model: Any
    data: Rows
    label: str
    pad_id: int
    bos_id: int | None  # the pass leaves a document's first token out of the examples when it is this one


def random_workload(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> Workload:
    """A random-weight model of the chosen shapes, random documents of --seq_len tokens that start with token 0."""
    model = random_olmo(args.random, device, dtype)
    n_docs = args.batch_size * (args.batches + 1 + (args.warm_batches or 0))
    ids = torch.randint(0, model.config.vocab_size, (n_docs, args.seq_len), generator=torch.Generator().manual_seed(0))
    ids[:, 0] = 0  # a BOS, so that the pass takes its default path
    rows = {"input_ids": ids.tolist(), "attention_mask": [[1] * args.seq_len] * n_docs}
    label = f"{args.random} shapes ({SHAPES[args.random][2]} x {SHAPES[args.random][1]} neurons), random {dtype}"
    return Workload(model, Rows(rows), label.replace("torch.", ""), pad_id=1, bos_id=0)


def embedded_workload(device: torch.device, dtype: torch.dtype) -> Workload:
    """The embedded SmolLM2 on the embedded pydoc text."""
    from gated_core.models.loading import load_hf_model
    from gated_core.models.sources import resolve_model
    from neuroscope.data.texts import load_texts
    from neuroscope.data.tokenization import build_dataset

    model, tokenizer = load_hf_model(resolve_model("smollm2-135m"), dtype=dtype, device=device)
    dataset, _ = build_dataset(load_texts("pydoc"), tokenizer, None, max_length=1024)
    rows = {"input_ids": dataset["input_ids"], "attention_mask": dataset["attention_mask"]}
    label = f"SmolLM2-135M (embedded), pydoc text, {dtype}".replace("torch.", "")
    return Workload(model, Rows(rows), label, tokenizer.pad_token_id or 0, tokenizer.bos_token_id)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_seconds(work: Workload, plan, timed: range, device: torch.device, decoder_only: bool) -> float:
    """The model's own forward pass (or its decoder alone) over the timed batches, after one warm-up batch."""
    with torch.inference_mode():
        for b in [0, *timed]:
            if b == timed.start:
                sync(device)
                started = time.perf_counter()
            batch = work.data[plan[b]]
            ids, mask = pad_batch(batch["input_ids"], batch["attention_mask"], work.pad_id, device)
            (work.model.model if decoder_only else work.model)(input_ids=ids, attention_mask=mask, use_cache=False)
        sync(device)
    return time.perf_counter() - started


def stats_bytes(stats: NeuronStats, typical_only: bool = False) -> int:
    """Bytes of the statistics' tensors on the device (or of the typical examples alone)."""
    tensors = (stats.sample_tokens, stats.sample_values) if typical_only else vars(stats).values()
    return sum(t.numel() * t.element_size() for t in tensors)


def without_typical(stats: NeuronStats) -> NeuronStats:
    """The same statistics without typical examples."""
    return dataclasses.replace(stats, sample_tokens=stats.sample_tokens[..., :0].clone(),
                               sample_values=stats.sample_values[..., :0].clone())


def pass_seconds(work: Workload, plan, timed: range, device: torch.device, start: NeuronStats) -> tuple[float, NeuronStats]:
    """The activation pass over the timed batches, from a copy of the statistics `start` (after one warm-up batch
    into a throwaway copy), and the statistics it leaves."""
    run_pass(work.model, work.data, copy.deepcopy(start), plan, range(0, 1), work.pad_id, device, bos_id=work.bos_id)
    stats = copy.deepcopy(start)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    started = time.perf_counter()
    run_pass(work.model, work.data, stats, plan, timed, work.pad_id, device, bos_id=work.bos_id)
    sync(device)
    return time.perf_counter() - started, stats


def warm_statistics(work: Workload, plan, batches: range, device: torch.device, k: int, typical: int) -> tuple[NeuronStats, int]:
    """Statistics of the batches `batches` (none of the timed ones) and their number of tokens."""
    n_layers, d_mlp = work.model.config.num_hidden_layers, work.model.config.intermediate_size
    stats = NeuronStats.empty(n_layers, d_mlp, k, device, typical)
    run_pass(work.model, work.data, stats, plan, batches, work.pad_id, device, bos_id=work.bos_id)
    return stats, int(stats.n_tokens)


def timings(work: Workload, plan, timed: range, device: torch.device, starts: dict[str, NeuronStats],
            repeats: int) -> tuple[dict[str, float], NeuronStats]:
    """The best of `repeats` seconds of every run (the runs in turn), and the statistics a pass left (the last
    regime's with typical examples, where there are any)."""
    runs = {BARE: lambda: (bare_seconds(work, plan, timed, device, decoder_only=False), None),
            DECODER: lambda: (bare_seconds(work, plan, timed, device, decoder_only=True), None)}
    for label, start in starts.items():
        runs[label] = lambda start=start: pass_seconds(work, plan, timed, device, start)
    seconds: dict[str, float] = {}
    stats = None
    for _ in range(repeats):
        for label, run in runs.items():
            taken, left = run()
            seconds[label] = min(seconds.get(label, torch.inf), taken)
            if left is not None and (stats is None or left.typical_per_band):
                stats = left
    return seconds, stats


def report(label: str, device: torch.device, batch_size: int, n_batches: int, n_tokens: int,
           seconds: dict[str, float], stats: NeuronStats, regimes: dict[str, str]) -> None:
    """The Markdown table, the typical examples' cost in each regime, the statistics' memory and the projection to
    the paper's tokens (at the warm rate, where there is one)."""
    peak = (torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"\n{label}; {name}; batch {batch_size}; {n_batches} batches, {n_tokens:,} tokens timed\n")
    print("| run | tokens/s | ratio to bare forward (with logits) | ratio to bare decoder |")
    print("|---|---|---|---|")
    for run, s in seconds.items():
        print(f"| {run} | {n_tokens / s:,.0f} | {seconds[BARE] / s:.2f} | {seconds[DECODER] / s:.2f} |")
    for regime, description in regimes.items():
        with_typical, without = seconds.get(f"{PASS}, {regime}"), seconds.get(f"{WITHOUT_TYPICAL}, {regime}")
        if with_typical and without:
            print(f"\n{description}: with typical examples ({stats.typical_per_band} per sign combination and band) "
                  f"the pass takes {with_typical / without:.2f} x the time without them")
    neurons = stats.histogram.shape[0] * stats.histogram.shape[1]
    print(f"\nstatistics on the device: {stats_bytes(stats) / 2**20:.1f} MiB (layers x neurons x k, independent of the "
          f"number of tokens), of which typical examples {stats_bytes(stats, True) / 2**20:.1f} MiB "
          f"({stats_bytes(stats, True) // neurons} bytes per neuron); "
          f"peak {'GPU memory allocated' if device.type == 'cuda' else 'process RSS'}: {peak:.2f} GiB")
    regime = list(regimes)[-1]
    pass_s = seconds[f"{PASS}, {regime}"]
    print(f"projected time for the paper's {PAPER_TOKENS:,} tokens at the rate {regimes[regime]}: "
          f"{PAPER_TOKENS / (n_tokens / pass_s) / 60:.1f} min")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--random", choices=list(SHAPES), default=None, help="random-weight model of these shapes (random tokens)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None, help="default: bfloat16 on CUDA, float32 on CPU")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--seq_len", type=int, default=1024, help="document length with --random")
    parser.add_argument("--batches", type=int, default=12, help="batches timed (after one warm-up batch)")
    parser.add_argument("--warm_batches", type=int, default=None,
                        help="batches in the warm statistics (default: the rest of the embedded text; 12 with --random; 0: none)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of every timing, in turn; the best counts")
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--typical", type=int, default=DEFAULT_TYPICAL, help="typical examples per sign combination and band")
    args = parser.parse_args()
    for flag in ("batch_size", "seq_len", "batches", "repeats", "k"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be at least 1")
    if (args.warm_batches or 0) < 0 or args.typical < 0:
        parser.error("--warm_batches and --typical must not be negative")
    if args.random and args.warm_batches is None:
        args.warm_batches = 12
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    work = random_workload(args, device, dtype) if args.random else embedded_workload(device, dtype)
    masks = work.data.rows["attention_mask"]
    plan = batch_plan([sum(m) for m in masks], args.batch_size)
    timed = range(1, min(len(plan), args.batches + 1))
    n_tokens = sum(sum(masks[i]) for b in timed for i in plan[b])
    n_layers, d_mlp = work.model.config.num_hidden_layers, work.model.config.intermediate_size
    empty = NeuronStats.empty(n_layers, d_mlp, args.k, device, args.typical)
    regimes = {"empty statistics": "from empty statistics (the first batches of a run)"}
    starts = {f"{PASS}, empty statistics": empty}
    warm_batches = range(timed.stop, len(plan) if args.warm_batches is None else min(len(plan), timed.stop + args.warm_batches))
    if len(warm_batches):
        warm, warm_tokens = warm_statistics(work, plan, warm_batches, device, args.k, args.typical)
        regime = f"statistics of {warm_tokens:,} other tokens"
        regimes[regime] = f"from statistics that hold {warm_tokens:,} other tokens ({len(warm_batches)} batches)"
        starts[f"{PASS}, {regime}"] = warm
    if args.typical:
        starts = {key: value for label, start in starts.items()
                  for key, value in ((label, start), (label.replace(PASS, WITHOUT_TYPICAL), without_typical(start)))}
    seconds, stats = timings(work, plan, timed, device, starts, args.repeats)
    report(work.label, device, args.batch_size, len(timed), n_tokens, seconds, stats, regimes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
