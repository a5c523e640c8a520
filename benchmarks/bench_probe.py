"""The probe against a bare forward pass of the same text, in one run, on the embedded model.

A text of `--tokens` tokens (the embedded pydoc documents, concatenated) is probed (`probe_pass`: the activation
pass's hooks, every layer's top |a| lists, the running maxima, the case-study neurons' g, u, a) and run bare
(the full model with logits, no hooks), alternately, `--repeats` times; then the page and probe.json are written.
Prints a Markdown table with the medians and their ratio, and the time of a 100,000-token file projected from the
per-token rate (the model runs windows of its context, so the time grows linearly with the text).

  python benchmarks/bench_probe.py                     # 1,000 tokens, 5 repeats
  python benchmarks/bench_probe.py --tokens 8000       # one whole window of SmolLM2's context
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from gated_core.models.loading import load_hf_model
from gated_core.models.sources import resolve_model
from neuroscope.data.texts import embedded_documents
from neuroscope.probe.forward import probe_pass
from neuroscope.probe.probe import write_probe
from neuroscope.probe.request import ProbeRequest, open_probe
from wcos_casestudies.results import Settings

CASE_STUDY_NEURONS = ["28.28", "29.78", "29.1089", "21.1224", "27.330"]
PROJECTED_TOKENS = 100_000


def text_of(tokenizer, tokens: int) -> str:
    """The first `tokens` tokens of the embedded documents, as text."""
    ids: list[int] = []
    for document in embedded_documents():
        ids += tokenizer(document, add_special_tokens=False)["input_ids"]
        if len(ids) >= tokens:
            break
    return tokenizer.decode(ids[:tokens])


def timed(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    source = resolve_model("smollm2-135m")
    model, tokenizer = load_hf_model(source)
    with tempfile.TemporaryDirectory() as folder:
        request = ProbeRequest(model="smollm2-135m", documents=[text_of(tokenizer, args.tokens)], settings=Settings(),
                               results_dir=Path(folder), neurons=CASE_STUDY_NEURONS, device="cpu")
        run = open_probe(request)
        ids = torch.tensor([[run.bos_id, *run.token_ids]])
        probe_times, bare_times = [], []
        with torch.inference_mode():
            model(ids)  # warm-up
            for _ in range(args.repeats):
                probe_times.append(timed(lambda: probe_pass(run, model)))
                bare_times.append(timed(lambda: model(ids)))
        values = probe_pass(run, model)
        write_seconds = timed(lambda: write_probe(run, values))
    tokens, probe, bare = len(run.token_ids), statistics.median(probe_times), statistics.median(bare_times)
    print(f"\nSmolLM2-135M (embedded, float32), {tokens:,} tokens, {len(CASE_STUDY_NEURONS)} chosen neurons, "
          f"{torch.get_num_threads()} torch threads; medians of {args.repeats} alternating repeats\n")
    print("| step | seconds | tokens/s | ratio to bare forward |\n|---|---|---|---|")
    print(f"| bare forward, logits, no hooks | {bare:.2f} | {tokens / bare:,.0f} | 1.00 |")
    print(f"| probe pass (hooks, top lists, maxima, chosen neurons) | {probe:.2f} | {tokens / probe:,.0f} | {bare / probe:.2f} |")
    print(f"| writing probe.html and probe.json | {write_seconds:.2f} | | |")
    print(f"\nprojected: a {PROJECTED_TOKENS:,}-token file ≈ {PROJECTED_TOKENS / tokens * (probe + write_seconds):.0f} s "
          "of probe and writing at this rate (plus loading the model, ~15 s)")


if __name__ == "__main__":
    main()
