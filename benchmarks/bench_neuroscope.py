"""Throughput of the activation pass against a bare forward pass of the same model, batches and dtype.

Four timings over the same batches, in one process: the full model's forward pass (logits,
no hooks), the decoder alone (no unembedding, no hooks: the work the pass must do anyway),
and the pass itself (hooks + statistics) with and without typical examples (`--typical`, 4 per
sign combination and band; 0: only without). Prints a Markdown table with tokens/s and ratios,
and the statistics' memory on the device (per neuron for the typical examples).

  python benchmarks/bench_neuroscope.py                                  # embedded SmolLM2, embedded text, CPU
  python benchmarks/bench_neuroscope.py --random olmo-7b --device cuda   # OLMo-7B-0424 shapes, random bf16 weights
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from neuroscope.activations import NeuronStats
from neuroscope.batches import batch_plan, pad_batch
from neuroscope.collect import run_pass
from neuroscope.constants import DEFAULT_TYPICAL

ROOT = Path(__file__).resolve().parent.parent

PAPER_TOKENS = 20_000_390
PASS = "activation pass (hooks + statistics)"
PASS_WITHOUT_TYPICAL = "activation pass without typical examples"


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
    n_docs = args.batch_size * (args.batches + 1)
    ids = torch.randint(0, model.config.vocab_size, (n_docs, args.seq_len), generator=torch.Generator().manual_seed(0))
    ids[:, 0] = 0  # a BOS, so that the pass takes its default path
    rows = {"input_ids": ids.tolist(), "attention_mask": [[1] * args.seq_len] * n_docs}
    label = f"{args.random} shapes ({SHAPES[args.random][2]} x {SHAPES[args.random][1]} neurons), random {dtype}"
    return Workload(model, Rows(rows), label.replace("torch.", ""), pad_id=1, bos_id=0)


def embedded_workload(device: torch.device, dtype: torch.dtype) -> Workload:
    """The embedded SmolLM2 on the embedded pydoc text."""
    from gated_core.models.loading import load_hf_model
    from gated_core.models.sources import resolve_model
    from neuroscope.texts import load_texts
    from neuroscope.tokenization import build_dataset

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


def pass_seconds(work: Workload, plan, timed: range, device: torch.device, k: int, typical: int) -> tuple[float, NeuronStats]:
    """The activation pass over the timed batches (after one warm-up batch) and its statistics."""
    n_layers, d_mlp = work.model.config.num_hidden_layers, work.model.config.intermediate_size
    run_pass(work.model, work.data, NeuronStats.empty(n_layers, d_mlp, k, device, typical), plan, range(0, 1), work.pad_id,
             device, bos_id=work.bos_id)
    stats = NeuronStats.empty(n_layers, d_mlp, k, device, typical)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    started = time.perf_counter()
    run_pass(work.model, work.data, stats, plan, timed, work.pad_id, device, bos_id=work.bos_id)
    sync(device)
    return time.perf_counter() - started, stats


def report(label: str, device: torch.device, batch_size: int, n_batches: int, n_tokens: int,
           seconds: dict[str, float], stats: NeuronStats) -> None:
    """The Markdown table, the statistics' memory and the projection to the paper's tokens."""
    peak = (torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    full_s, decoder_s = seconds["bare forward, logits, no hooks"], seconds["bare decoder, no hooks"]
    print(f"\n{label}; {name}; batch {batch_size}; {n_batches} batches, {n_tokens:,} tokens timed\n")
    print("| run | tokens/s | ratio to bare forward (with logits) | ratio to bare decoder |")
    print("|---|---|---|---|")
    for run, s in seconds.items():
        print(f"| {run} | {n_tokens / s:,.0f} | {full_s / s:.2f} | {decoder_s / s:.2f} |")
    if len(seconds) > 3:
        with_typical, without = seconds[PASS], seconds[PASS_WITHOUT_TYPICAL]
        print(f"\ntypical examples ({stats.typical_per_band} per sign combination and band): the pass takes "
              f"{with_typical / without:.2f} x the time without them")
    neurons = stats.histogram.shape[0] * stats.histogram.shape[1]
    print(f"\nstatistics on the device: {stats_bytes(stats) / 2**20:.1f} MiB (layers x neurons x k, independent of the "
          f"number of tokens), of which typical examples {stats_bytes(stats, True) / 2**20:.1f} MiB "
          f"({stats_bytes(stats, True) // neurons} bytes per neuron); "
          f"peak {'GPU memory allocated' if device.type == 'cuda' else 'process RSS'}: {peak:.2f} GiB")
    pass_s = seconds[PASS]
    print(f"projected time for the paper's {PAPER_TOKENS:,} tokens at this rate: {PAPER_TOKENS / (n_tokens / pass_s) / 60:.1f} min")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--random", choices=list(SHAPES), default=None, help="random-weight model of these shapes (random tokens)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None, help="default: bfloat16 on CUDA, float32 on CPU")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--seq_len", type=int, default=1024, help="document length with --random")
    parser.add_argument("--batches", type=int, default=12, help="batches timed (after one warm-up batch)")
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--typical", type=int, default=DEFAULT_TYPICAL, help="typical examples per sign combination and band")
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    work = random_workload(args, device, dtype) if args.random else embedded_workload(device, dtype)
    masks = work.data.rows["attention_mask"]
    plan = batch_plan([sum(m) for m in masks], args.batch_size)
    timed = range(1, min(len(plan), args.batches + 1))
    n_tokens = sum(sum(masks[i]) for b in timed for i in plan[b])
    seconds = {"bare forward, logits, no hooks": bare_seconds(work, plan, timed, device, decoder_only=False),
               "bare decoder, no hooks": bare_seconds(work, plan, timed, device, decoder_only=True)}
    seconds[PASS], stats = pass_seconds(work, plan, timed, device, args.k, args.typical)
    if args.typical:
        seconds[PASS_WITHOUT_TYPICAL] = pass_seconds(work, plan, timed, device, args.k, 0)[0]
    report(work.label, device, args.batch_size, len(timed), n_tokens, seconds, stats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
