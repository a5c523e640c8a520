"""Throughput of class ablations against a bare forward pass of the same model, batches and dtype.

Timings over the same batches, in one process: the model's bare forward pass (logits, no hooks),
the baseline pass (per-token metrics, no ablation), one zero ablation, one mean ablation and one
conditional ablation of the depletion class, and a whole run of several sets sharing one baseline
(`run_ablations`: baseline + sets + bootstrap summaries). Prints a Markdown table with tokens/s and
ratios to the bare forward pass.

  python benchmarks/bench_ablation.py                      # embedded SmolLM2 on the embedded text, CPU
  python benchmarks/bench_ablation.py --device cuda --mtokens 0.2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from neuroscope.classes.ablation import Ablation, evaluate
from neuroscope.classes.ablation_run import AblationStore, BootstrapSettings, Evaluation, ablation_plan, evaluation_rows, run_ablations
from neuroscope.classes.neuron_sets import class_set, parse_class
from neuroscope.core.batches import batch_plan, pad_batch

ROOT = Path(__file__).resolve().parent.parent


class Rows:
    """The slice of the datasets API that the passes use, over in-memory token rows."""

    def __init__(self, ids: list[list[int]]):
        self.ids = ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index):
        return {"input_ids": [self.ids[i] for i in index], "attention_mask": [[1] * len(self.ids[i]) for i in index]}


def bare_forward(model, data: Rows, plan, pad_id: int, device: torch.device) -> None:
    """The model's own forward pass with logits for every position, no hooks."""
    with torch.inference_mode():
        for rows in plan:
            batch = data[rows]
            ids, mask = pad_batch(batch["input_ids"], batch["attention_mask"], pad_id, device)
            model(input_ids=ids, attention_mask=mask, use_cache=False)


def timed(run, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def load_inputs(args: argparse.Namespace, device: torch.device, dtype: torch.dtype):
    """SmolLM2, its depletion neurons and dataset means (from its classes), and the embedded text's first tokens."""
    from gated_core.models.loading import load_hf_model
    from gated_core.models.sources import resolve_model
    from neuroscope.data.texts import load_texts
    from neuroscope.data.tokenization import build_dataset
    from wcos_casestudies.results import ModelResults, Settings

    source = resolve_model("smollm2-135m")
    model, tokenizer = load_hf_model(source, dtype=dtype, device=device)
    categories = ModelResults(source, Settings()).categories()
    dataset, _ = build_dataset(load_texts("pydoc"), tokenizer, None, max_length=1024)
    ids = dataset["input_ids"]
    rows = evaluation_rows([len(r) for r in ids], args.mtokens)
    data = Rows([ids[r] for r in rows])
    plan = batch_plan([len(r) for r in data.ids], args.batch_size)
    return model, tokenizer.pad_token_id or 0, class_set(categories, parse_class(args.set)), data, plan


def shared_run(model, evaluation: Evaluation, ablations, pad_id: int, device: torch.device) -> None:
    """The whole job of e_ablate.py after loading: baseline, sets, summaries, files (in a temporary folder)."""
    with tempfile.TemporaryDirectory() as folder:
        store = AblationStore(Path(folder), {"model": "bench"})
        run_ablations(lambda: (model, pad_id), evaluation, ablations, store, device, BootstrapSettings(), log=lambda _: None)


def timing_runs(model, data: Rows, plan, pad_id: int, device: torch.device, chosen, shared_sets: int):
    """name -> a callable to time; the name of the shared-baseline run and its number of passes."""
    means = torch.randn(model.config.num_hidden_layers, model.config.intermediate_size, dtype=torch.float64)
    runs = {
        "bare forward, logits, no hooks": lambda: bare_forward(model, data, plan, pad_id, device),
        "baseline pass (per-token metrics)": lambda: evaluate(model, data, plan, pad_id, device),
        f"zero ablation of {chosen.name} (n={len(chosen)})": lambda: evaluate(model, data, plan, pad_id, device, Ablation(chosen)),
        f"mean ablation of {chosen.name}": lambda: evaluate(model, data, plan, pad_id, device, Ablation(chosen, "mean"), means),
        f"conditional (gate-post+) zero ablation of {chosen.name}":
            lambda: evaluate(model, data, plan, pad_id, device, Ablation(chosen, "zero", "gate-post+")),
    }
    ablations = ablation_plan([chosen], model.config.intermediate_size, "zero", [], shared_sets - 1)
    evaluation = Evaluation(data, Path("bench"), list(range(len(data))), plan, sum(len(r) for r in data.ids), None, "")
    shared = f"{len(ablations)} sets sharing one baseline (run_ablations, bootstrap summaries included), per pass"
    runs[shared] = lambda: shared_run(model, evaluation, ablations, pad_id, device)
    return runs, shared, len(ablations) + 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None, help="default: bfloat16 on CUDA, float32 on CPU")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--mtokens", "--Mtokens", type=float, default=0.004, help="tokens timed (millions)")
    parser.add_argument("--set", default="depletion", help="the IO class ablated")
    parser.add_argument("--shared_sets", type=int, default=3, help="sets in the shared-baseline run")
    parser.add_argument("--repeats", type=int, default=2, help="timings of each run (interleaved; the best counts)")
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    model, pad_id, chosen, data, plan = load_inputs(args, device, dtype)
    n_tokens = sum(len(r) for r in data.ids)
    bare_forward(model, data, plan[:1], pad_id, device)  # warm-up
    runs, shared, passes = timing_runs(model, data, plan, pad_id, device, chosen, args.shared_sets)
    seconds = {name: float("inf") for name in runs}
    for _ in range(args.repeats):  # interleaved, best of the repeats: robust to other load on a shared machine
        for name, run in runs.items():
            seconds[name] = min(seconds[name], timed(run, device))
    seconds[shared] /= passes
    bare = seconds["bare forward, logits, no hooks"]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"\nSmolLM2-135M (embedded), pydoc text, {str(dtype).removeprefix('torch.')}; {name}; batch {args.batch_size}; "
          f"{len(plan)} batches, {n_tokens:,} tokens per pass; best of {args.repeats} interleaved timings\n")
    print("| run | tokens/s | ratio to bare forward |")
    print("|---|---|---|")
    for run, value in seconds.items():
        print(f"| {run} | {n_tokens / value:,.0f} | {bare / value:.2f} |")
    print(f"\n{passes - 1} sets with a shared baseline: {seconds[shared] * passes:.1f} s for {passes} passes; "
          f"with a baseline per set it would be {2 * (passes - 1)} passes (≈ {seconds[shared] * 2 * (passes - 1):.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
