"""Throughput of the activation pass against a bare forward pass of the same model, batches and dtype.

Three timings over the same batches, in one process: the full model's forward pass (logits,
no hooks), the decoder alone (no unembedding, no hooks: the work the pass must do anyway),
and the pass itself (hooks + statistics). Prints a Markdown table with tokens/s and ratios.

  python benchmarks/bench_neuroscope.py                                  # embedded SmolLM2, embedded text, CPU
  python benchmarks/bench_neuroscope.py --random olmo-7b --device cuda   # OLMo-7B-0424 shapes, random bf16 weights
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

from neuroscope.activations import NeuronStats, batch_plan, pad_batch, run_pass

ROOT = Path(__file__).resolve().parent.parent

PAPER_TOKENS = 20_000_390


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--random", choices=list(SHAPES), default=None, help="random-weight model of these shapes (random tokens)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None, help="default: bfloat16 on CUDA, float32 on CPU")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--seq_len", type=int, default=1024, help="document length with --random")
    parser.add_argument("--batches", type=int, default=12, help="batches timed (after one warm-up batch)")
    parser.add_argument("--k", type=int, default=16)
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))

    if args.random:
        model = random_olmo(args.random, device, dtype)
        gen = torch.Generator().manual_seed(0)
        n_docs = args.batch_size * (args.batches + 1)
        ids = torch.randint(0, model.config.vocab_size, (n_docs, args.seq_len), generator=gen)
        bos_id = 0  # every document starts with it, so that the pass leaves position 0 out of the examples, as by default
        ids[:, 0] = bos_id
        ids = ids.tolist()
        rows = {"input_ids": ids, "attention_mask": [[1] * args.seq_len] * n_docs}
        label = f"{args.random} shapes ({SHAPES[args.random][2]} x {SHAPES[args.random][1]} neurons), random {dtype}".replace("torch.", "")
        pad_id = 1
    else:
        from neuroscope.data import build_dataset, load_texts
        from wcos_casestudies.models.loading import load_hf_model
        from wcos_casestudies.models.sources import resolve_model

        model, tokenizer = load_hf_model(resolve_model("smollm2-135m"), dtype=dtype, device=device)
        dataset, _ = build_dataset(load_texts("pydoc"), tokenizer, None, max_length=1024)
        rows = {"input_ids": dataset["input_ids"], "attention_mask": dataset["attention_mask"]}
        label = f"SmolLM2-135M (embedded), pydoc text, {dtype}".replace("torch.", "")
        pad_id = tokenizer.pad_token_id or 0
        bos_id = tokenizer.bos_token_id  # b_activations.py's default: BOS is no example

    class Rows:  # the slice of the datasets API that run_pass uses
        def __len__(self):
            return len(rows["input_ids"])

        def __getitem__(self, index):
            return {key: [values[i] for i in index] for key, values in rows.items()}

    data = Rows()
    plan = batch_plan([sum(m) for m in rows["attention_mask"]], args.batch_size)
    timed = range(1, min(len(plan), args.batches + 1))
    n_tokens = sum(len(plan[b]) and sum(sum(rows["attention_mask"][i]) for i in plan[b]) for b in timed)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def bare(decoder_only: bool) -> float:
        with torch.inference_mode():
            for b in [0, *timed]:
                if b == timed.start:
                    sync()
                    started = time.perf_counter()
                batch = data[plan[b]]
                ids, mask = pad_batch(batch["input_ids"], batch["attention_mask"], pad_id, device)
                (model.model if decoder_only else model)(input_ids=ids, attention_mask=mask, use_cache=False)
            sync()
        return time.perf_counter() - started

    def ours() -> tuple[float, float]:
        n_layers, d_mlp = model.config.num_hidden_layers, model.config.intermediate_size
        run_pass(model, data, NeuronStats.empty(n_layers, d_mlp, args.k, device), plan, range(0, 1), pad_id, device, bos_id=bos_id)
        stats = NeuronStats.empty(n_layers, d_mlp, args.k, device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        sync()
        started = time.perf_counter()
        run_pass(model, data, stats, plan, timed, pad_id, device, bos_id=bos_id)
        sync()
        stats_bytes = sum(t.numel() * t.element_size() for t in stats.state_dict().values())
        return time.perf_counter() - started, stats_bytes / 2**20

    full_s, decoder_s = bare(False), bare(True)
    pass_s, stats_mib = ours()
    peak = (torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"\n{label}; {name}; batch {args.batch_size}; {len(timed)} batches, {n_tokens:,} tokens timed\n")
    print("| run | tokens/s | ratio to bare forward (with logits) | ratio to bare decoder |")
    print("|---|---|---|---|")
    for run, seconds in (("bare forward, logits, no hooks", full_s), ("bare decoder, no hooks", decoder_s),
                         ("activation pass (hooks + statistics)", pass_s)):
        print(f"| {run} | {n_tokens / seconds:,.0f} | {full_s / seconds:.2f} | {decoder_s / seconds:.2f} |")
    print(f"\nstatistics on the device: {stats_mib:.1f} MiB (layers x neurons x k, independent of the number of tokens); "
          f"peak {'GPU memory allocated' if device.type == 'cuda' else 'process RSS'}: {peak:.2f} GiB")
    print(f"projected time for the paper's {PAPER_TOKENS:,} tokens at this rate: {PAPER_TOKENS / (n_tokens / pass_s) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
