"""The whole-model neuroscope against a bare forward pass, in one run, on the same documents and batches:

1. the activation pass with every statistic (example lists, sign-combination lists, histogram), its
   batches interleaved with bare forward passes (full model with logits, and the decoder alone) so
   that a change in the machine's load hits all three alike;
2. the recompute + write step of `d_recompute_vis.py --neurons all`: one batched pass over the
   union of the chosen documents, the weights' logit effects, and the viewer's files;
3. the viewer's size, and how long a neuron takes to open in headless Chromium (navigation start to
   the neuron drawn, as the page measures it), for several neurons;
4. a projection to OLMo-7B-0424 (32 x 11008 neurons) on the paper's 20M tokens.

  python benchmarks/bench_viewer.py                    # embedded SmolLM2, embedded pydoc text, every neuron
  python benchmarks/bench_viewer.py --mtokens 0.02     # a quick run on a subset of the documents
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from neuroscope.activation_pass.activations import STATISTICS_VERSION, NeuronStats
from neuroscope.activation_pass.reducer import BatchReducer
from neuroscope.core.batches import batch_plan, pad_batch
from neuroscope.core.hooks import mlp_hooks, run_model

ROOT = Path(__file__).resolve().parent.parent
OLMO = {"neurons": 32 * 11008, "tokens": 20_000_390, "documents": 45_734, "vocab": 50_304, "d_model": 4096}
SMOL_D_MODEL = 576
OPEN_NEURONS = 8  # neurons opened in Chromium


def interleaved_pass(model, dataset, plan, k, bos_id, pad_id) -> tuple[NeuronStats, dict[str, float], int]:
    """The activation pass over `plan`, each batch also run bare (full model, decoder alone), in rotating order."""
    n_layers, d_mlp = model.config.num_hidden_layers, model.config.intermediate_size
    stats = NeuronStats.empty(n_layers, d_mlp, k)
    reducer = BatchReducer(stats, bos_id)

    def full(ids, mask, docs):
        model(input_ids=ids, attention_mask=mask, use_cache=False)

    def decoder(ids, mask, docs):
        model.model(input_ids=ids, attention_mask=mask, use_cache=False)

    def with_statistics(ids, mask, docs):
        with mlp_hooks(model, reducer, range(n_layers)):
            reducer.start(mask, ids)
            run_model(model, ids, mask)
            reducer.apply(torch.tensor(docs))

    runs = [("full", full), ("decoder", decoder), ("pass", with_statistics)]
    seconds = {name: 0.0 for name, _ in runs}
    tokens = 0
    for index, docs in enumerate(plan):
        rows = dataset[docs]
        ids, mask = pad_batch(rows["input_ids"], rows["attention_mask"], pad_id, torch.device("cpu"))
        tokens += int(mask.sum())
        for name, run in runs[index % 3:] + runs[:index % 3]:
            started = time.perf_counter()
            with torch.inference_mode():
                run(ids, mask, docs)
            seconds[name] += time.perf_counter() - started
    return stats, seconds, tokens


def scratch_results(source, scratch: Path):
    """The model's results under `scratch`, with the weight-side files that `make demo` made copied in (the
    classes of data.pt, the roles and case studies) so that the viewer shows them; else they are computed."""
    from wcos_casestudies.results import ModelResults, Settings

    results = ModelResults(source, Settings(), root=scratch / "results")
    for name in ("data.pt", "roles.pt", "case_studies.csv"):
        made = ModelResults(source, Settings()).folder / name
        if made.exists():
            results.folder.mkdir(parents=True, exist_ok=True)
            shutil.copy(made, results.folder / name)
    return ModelResults(source, Settings(), root=scratch / "results")


def open_times(viewer: Path, names: list[str], scratch: Path) -> list[int]:
    """Milliseconds from navigation start to the neuron drawn, per neuron, in headless Chromium."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        return []
    times = []
    for name in names:
        dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                              "--disable-background-networking", f"--user-data-dir={scratch / 'chrome'}", "--dump-dom",
                              f"{(viewer / 'viewer.html').as_uri()}#{name}"], capture_output=True, text=True, timeout=300).stdout
        found = re.search(r'data-opened-ms="(\d+)"', dom)
        times.append(int(found.group(1)) if found else -1)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mtokens", type=float, default=None, help="a subset of the embedded dataset (default: all of it)")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--keep", type=Path, default=None, help="copy the viewer here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from gated_core.models.loading import load_hf_model
    from gated_core.models.sources import resolve_model
    from neuroscope.activation_pass.store import load_statistics, save_stats
    from neuroscope.data.dataset_store import save_dataset
    from neuroscope.data.texts import load_texts
    from neuroscope.data.tokenization import build_dataset
    from neuroscope.view import workflow

    source = resolve_model("smollm2-135m")
    model, tokenizer = load_hf_model(source)
    dataset, data_meta = build_dataset(load_texts("pydoc"), tokenizer, args.mtokens, max_length=1024)
    plan = batch_plan(list(dataset["length"]), args.batch_size)
    scratch = Path(tempfile.mkdtemp(prefix="bench_viewer."))
    try:
        data_meta.update({"tokenizer": source.name, "dataset": "pydoc"})
        save_dataset(dataset, data_meta, scratch / "pydoc")
        stats, seconds, tokens = interleaved_pass(model, dataset, plan, args.k, tokenizer.bos_token_id, tokenizer.pad_token_id or 0)
        meta = {"model": source.name, "dataset": str(scratch / "pydoc"), "documents": len(dataset), "tokens": tokens, "k": args.k,
                "dtype": "float32", "n_layers": stats.keys.shape[0], "d_mlp": stats.keys.shape[1],
                "statistics_version": STATISTICS_VERSION, "examples_without_bos": True, "bos_id": tokenizer.bos_token_id}
        save_stats(stats, meta, scratch / "activations" / "stats.pt")
        results = scratch_results(source, scratch)
        run = workflow.PageRun(results, load_statistics(source, scratch, "activations"),
                               [(layer, n) for layer in range(stats.keys.shape[0]) for n in range(stats.keys.shape[1])],
                               None, torch.device("cpu"))
        settings = workflow.ViewerSettings("viewer", 16, 21, (40, 12), 20, 10)
        started = time.perf_counter()
        written = workflow.write_run_viewer(run, settings, args.batch_size)
        folder, size = written.folder, written.size
        recompute_s = time.perf_counter() - started
        rng = torch.Generator().manual_seed(0)
        names = [f"{int(torch.randint(stats.keys.shape[0], (), generator=rng))}.{int(torch.randint(stats.keys.shape[1], (), generator=rng))}"
                 for _ in range(OPEN_NEURONS)]
        opened = open_times(folder, names, scratch)
        layer_bytes = sum(p.stat().st_size for p in (folder / "data").glob("layer_*.js"))
        report(seconds, tokens, recompute_s, written.seconds, size, layer_bytes, len(run.neurons), opened, len(dataset))
        if args.keep:
            shutil.copytree(folder, args.keep, dirs_exist_ok=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


def report(seconds, tokens, recompute_s, steps, size, layer_bytes, neurons, opened, documents) -> None:
    """The Markdown table, and the projection to OLMo-7B on 20M tokens."""
    full = seconds["full"]
    print(f"\nSmolLM2-135M (embedded, float32), pydoc: {documents} documents, {tokens:,} tokens, {neurons:,} neurons; "
          f"{torch.get_num_threads()} torch threads\n")
    print("| step | seconds | tokens/s | ratio to bare forward (logits) | ratio to bare decoder |")
    print("|---|---|---|---|---|")
    rows = [("bare forward, logits, no hooks", full), ("bare decoder, no hooks", seconds["decoder"]),
            ("activation pass, every statistic", seconds["pass"]), ("recompute + write, every neuron", recompute_s)]
    for name, s in rows:
        print(f"| {name} | {s:.1f} | {tokens / s:,.0f} | {full / s:.2f} | {seconds['decoder'] / s:.2f} |")
    print("\nrecompute + write, by step: " + ", ".join(f"{k} {v:.1f} s" for k, v in steps.items()))
    times = [t for t in opened if t >= 0]
    if times:
        print(f"viewer: {size / 2**20:.1f} MiB; a neuron opens in headless Chromium in {statistics.median(times)} ms "
              f"(median of {len(times)}), at most {max(times)} ms")
    else:
        print(f"viewer: {size / 2**20:.1f} MiB (chromium not found: opening not measured)")
    per_neuron = layer_bytes / neurons
    docs = OLMO["tokens"] * 2 * 4 / 3  # uint16 tokens in base64
    projected = OLMO["neurons"] * per_neuron + docs
    weights_scale = OLMO["neurons"] * OLMO["d_model"] * OLMO["vocab"] / (neurons * SMOL_D_MODEL * 49_152)
    print(f"\nprojection, OLMo-7B-0424 ({OLMO['neurons']:,} neurons) on {OLMO['tokens']:,} tokens: viewer ≈ "
          f"{projected / 2**30:.1f} GiB ({per_neuron / 1024:.1f} KiB per neuron, as here, + {docs / 2**20:.0f} MiB of documents); "
          f"the recompute is one forward pass over the 20M tokens (≈ the activation pass's time), the weights' logit effects "
          f"{weights_scale:,.0f} x this run's {steps.get('weights', 0):.0f} s of CPU (minutes on a GPU), writing ≈ "
          f"{projected / max(size, 1) * steps.get('write', 0) / 60:.0f} min at this run's rate")


if __name__ == "__main__":
    sys.exit(main())
