"""The GPU path in one table: every step of the pipeline against a bare forward pass of the same model, same batches.

A random OLMo checkpoint of OLMo-7B-0424's shapes (32 layers x 11,008 neurons, bf16 on CUDA) is written to disk
with the byte tokenizer, and random documents of --seq_len tokens are tokenized by a_dataset.py. Then, on the
model loaded once (the same loader as the scripts), over the same timed batches after one warm-up batch:
the bare forward pass (logits, no hooks), the activation pass with every statistic (collect.run_pass), and a
zero ablation of a random 1% of the neurons with its per-token metrics (ablation.evaluate). These three are library
calls on one model in memory: the ratio is then the hooks' and statistics' cost alone, not the loading.
The scripts then run as a user runs them (main(argv), in this process, model read from disk): b_activations.py
(load + pass + save), d_recompute_vis.py of --viewer_layers layers (its recompute, weights and write times),
and g_connections.py where it exists. Rows without tokens are compared by time: bare forward over the timed
tokens / the step. Steps after --budget_s are skipped with a note.

  python benchmarks/gpu_pipeline.py --device cuda                         # OLMo-7B shapes, 8 x 1024, bf16
  python benchmarks/gpu_pipeline.py --device cpu --shape olmo-test --batch_size 2 --seq_len 64 --batches 2   # dry run
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

SHAPES = {  # d_model, d_mlp, layers, heads, vocabulary
    "olmo-7b": (4096, 11008, 32, 32, 50304),  # OLMo-7B-0424
    "olmo-test": (64, 172, 3, 4, 512),  # the same code path, small enough for a CPU dry run
}
ABLATED_SHARE = 0.01  # share of each layer's neurons in the ablated random set
BARE = "bare forward, logits, no hooks"
SEED = 0


PRINTED_RESOLUTION = 0.1  # seconds: the scripts print their step times to one decimal


@dataclass
class Row:
    """One line of the table: seconds, and the tokens it ran over (None: compared by time)."""

    name: str
    seconds: float
    tokens: int | None = None
    note: str = ""


class Tee(io.StringIO):
    """Keeps what a script prints while still printing it."""

    def write(self, text: str) -> int:
        sys.__stdout__.write(text)
        return super().write(text)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(run: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    sync(device)
    started = time.perf_counter()
    result = run()
    sync(device)
    return time.perf_counter() - started, result


def write_documents(path: Path, n_docs: int, seq_len: int) -> Path:
    """A .jsonl of random lower-case text, seq_len - 1 characters a document (one byte token each, plus BOS)."""
    import json

    gen = torch.Generator().manual_seed(SEED)
    letters = "abcdefghijklmnopqrstuvwxyz     "
    with open(path, "w") as out:
        for _ in range(n_docs):
            picks = torch.randint(len(letters), (seq_len - 1,), generator=gen).tolist()
            out.write(json.dumps({"text": "".join(letters[i] for i in picks)}) + "\n")
    return path


def run_script(module: Any, argv: list[str]) -> tuple[float, str]:
    """A script's main(argv) in this process, as its command line runs it; its seconds and what it printed."""
    from gated_core.cli import run_main

    buffer = Tee()
    started = time.perf_counter()
    with contextlib.redirect_stdout(buffer):
        code = run_main(module.main, argv)
    if code:
        raise RuntimeError(f"{module.__name__} {' '.join(argv)}: exit {code}")
    return time.perf_counter() - started, buffer.getvalue()


def setup(args: argparse.Namespace, scratch: Path, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """The checkpoint on disk, the tokenized documents, and the model loaded once."""
    from datasets import load_from_disk

    from gated_core.models.loading import load_hf_model
    from gated_core.models.sources import resolve_model
    from neuroscope import a_dataset
    from wcos_casestudies.synthetic import olmo_checkpoint

    d_model, d_mlp, layers, heads, vocab = SHAPES[args.shape]
    started = time.perf_counter()
    checkpoint = olmo_checkpoint(scratch / "checkpoint", layers, d_model, d_mlp, heads, vocab, dtype, device)
    n_docs = args.batch_size * (args.batches + 1)
    texts = write_documents(scratch / "documents.jsonl", n_docs, args.seq_len)
    run_script(a_dataset, ["--datadir", str(scratch / "data"), "--save_to", "docs", "--dataset", str(texts), "--tokenizer",
                           str(checkpoint), "--save_all", "--keep_duplicates", "--max_length", str(args.seq_len)])
    model, tokenizer = load_hf_model(resolve_model(str(checkpoint)), dtype=dtype, device=device)
    print(f"setup (checkpoint, documents, model): {time.perf_counter() - started:.1f} s", flush=True)
    return {"checkpoint": checkpoint, "data": scratch / "data", "model": model.eval(), "tokenizer": tokenizer,
            "dataset": load_from_disk(str(scratch / "data" / "docs"))}


def bare_forward(model: Any, dataset: Any, plan: list[list[int]], pad_id: int, device: torch.device) -> None:
    """The model's own forward pass with logits, no hooks, over the batches of `plan`."""
    from neuroscope.core.batches import pad_batch

    with torch.inference_mode():
        for rows in plan:
            batch = dataset[rows]
            ids, mask = pad_batch(batch["input_ids"], batch["attention_mask"], pad_id, device)
            model(input_ids=ids, attention_mask=mask, use_cache=False)


def random_set(n_layers: int, d_mlp: int) -> Any:
    """A random ABLATED_SHARE of every layer's neurons."""
    from neuroscope.classes.neuron_sets import NeuronSet

    gen = torch.Generator().manual_seed(SEED)
    per_layer = max(1, int(d_mlp * ABLATED_SHARE))
    neurons = [[layer, int(n)] for layer in range(n_layers) for n in torch.randperm(d_mlp, generator=gen)[:per_layer].sort().values]
    return NeuronSet("random 1%", torch.tensor(neurons, dtype=torch.long), "random")


def library_rows(args: argparse.Namespace, found: dict[str, Any], device: torch.device) -> tuple[list[Row], dict[str, Any]]:
    """Bare forward, activation pass, ablation pass: the same timed batches of the model in memory."""
    from neuroscope.activation_pass.activations import NeuronStats
    from neuroscope.activation_pass.collect import run_pass
    from neuroscope.classes.ablation import Ablation, evaluate
    from neuroscope.core.batches import batch_plan

    model, dataset = found["model"], found["dataset"]
    pad_id, bos_id = found["tokenizer"].pad_token_id, found["tokenizer"].bos_token_id
    n_layers, d_mlp = model.config.num_hidden_layers, model.config.intermediate_size
    plan = batch_plan(list(dataset["length"]), args.batch_size)
    timed_batches = range(1, len(plan))
    tokens = sum(dataset["length"][i] for b in timed_batches for i in plan[b])
    bare_forward(model, dataset, plan[:1], pad_id, device)  # warm-up
    rows = [Row(BARE, timed(lambda: bare_forward(model, dataset, plan[1:], pad_id, device), device)[0], tokens)]

    def one_pass() -> NeuronStats:
        stats = NeuronStats.empty(n_layers, d_mlp, args.k, device, args.typical)
        run_pass(model, dataset, stats, plan, timed_batches, pad_id, device, bos_id=bos_id)
        return stats

    run_pass(model, dataset, NeuronStats.empty(n_layers, d_mlp, args.k, device, args.typical), plan, range(0, 1), pad_id,
             device, bos_id=bos_id)  # warm-up
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds, stats = timed(one_pass, device)
    rows.append(Row("activation pass, every statistic (run_pass)", seconds, tokens))
    memory = {"stats_bytes": sum(t.numel() * t.element_size() for t in vars(stats).values() if isinstance(t, torch.Tensor)),
              "neurons": n_layers * d_mlp,
              "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None}
    chosen = Ablation(random_set(n_layers, d_mlp))
    seconds = timed(lambda: evaluate(model, dataset, plan[1:], pad_id, device, chosen), device)[0]
    rows.append(Row(f"zero ablation of a random 1% ({len(chosen.neurons):,} neurons), per-token metrics", seconds, tokens))
    return rows, memory


def pass_script_rows(args: argparse.Namespace, found: dict[str, Any], device: torch.device) -> list[Row]:
    """b_activations.py as a user runs it: load + pass + save; its own pass time as a rate."""
    from neuroscope import b_activations

    seconds, printed = run_script(b_activations, ["--model", str(found["checkpoint"]), "--datadir", str(found["data"]),
                                                  "--dataset", "docs", "--save_to", "activations", "--device", str(device),
                                                  "--batch_size", str(args.batch_size), "--examples_per_neuron", str(args.k),
                                                  "--typical_per_band", str(args.typical), "--dtype", args.dtype_name])
    rows = [Row("b_activations.py, whole script (load + pass + save)", seconds, None)]
    inner = re.search(r"([\d,]+) tokens in ([\d.]+) s", printed)
    if inner:
        rows.append(Row("b_activations.py, its pass (all documents, warm-up batch included)", float(inner.group(2)),
                        int(inner.group(1).replace(",", ""))))
    return rows


def viewer_rows(args: argparse.Namespace, found: dict[str, Any], device: torch.device, results: Path) -> list[Row]:
    """d_recompute_vis.py of the first --viewer_layers layers: recompute (a rate), weights and write (times)."""
    from neuroscope import d_recompute_vis

    layers = min(args.viewer_layers, SHAPES[args.shape][2])
    seconds, printed = run_script(d_recompute_vis, ["--model", str(found["checkpoint"]), "--datadir", str(found["data"]),
                                                    "--activations", "activations", "--results_dir", str(results),
                                                    "--device", str(device), "--batch_size", str(args.batch_size),
                                                    "--viewer", "viewer", "--neurons", *[f"{layer}.*" for layer in range(layers)]])
    neurons = layers * SHAPES[args.shape][1]
    rows = [Row(f"d_recompute_vis.py, {neurons:,} neurons ({layers} layers), whole script", seconds, None)]
    inner = re.search(r"recompute ([\d.]+) s, weights ([\d.]+) s, write ([\d.]+) s", printed)
    if inner:
        recompute, weights, write = map(float, inner.groups())
        rows += [Row("  its recompute (every document, all layers)", recompute, int(sum(found["dataset"]["length"]))),
                 Row("  its weights · W_U", weights, None, f"{weights / neurons * 1e3:.2f} ms per neuron"),
                 Row("  its viewer write", write, None, f"{write / neurons * 1e3:.2f} ms per neuron")]
    return rows


def connection_rows(found: dict[str, Any], device: torch.device, results: Path) -> list[Row]:
    """g_connections.py over every neuron, where the script exists."""
    import importlib.util

    if importlib.util.find_spec("neuroscope.g_connections") is None:
        return []
    from neuroscope import g_connections

    seconds, printed = run_script(g_connections, ["--model", str(found["checkpoint"]), "--datadir", str(found["data"]),
                                                  "--activations", "activations", "--results_dir", str(results),
                                                  "--device", str(device)])
    rows = [Row("g_connections.py, every neuron, whole script", seconds, None)]
    inner = re.search(r"lists in ([\d.]+) s", printed)
    if inner:
        rows.append(Row("  its lists", float(inner.group(1)), None))
    return rows


def table(rows: list[Row]) -> list[str]:
    """Markdown rows: tokens/s and the ratio to the bare forward (by rate, or by time where a step has no tokens)."""
    bare = next(row for row in rows if row.name == BARE)
    lines = ["| step | seconds | tokens/s | ratio to the bare forward | note |", "|---|---|---|---|---|"]
    for row in rows:
        if row.seconds <= 0:  # a script prints its times to 0.1 s: a shorter step (a dry run) counts as half of that
            row = Row(row.name, PRINTED_RESOLUTION / 2, row.tokens, f"printed as 0.0 s, taken as {PRINTED_RESOLUTION / 2} s")
        if row.tokens:
            ratio = (row.tokens / row.seconds) / (bare.tokens / bare.seconds)
            lines.append(f"| {row.name} | {row.seconds:.3g} | {row.tokens / row.seconds:,.0f} | {ratio:.3g} | {row.note} |")
        else:
            lines.append(f"| {row.name} | {row.seconds:.3g} | | {bare.seconds / row.seconds:.3g} (by time) | {row.note} |")
    return lines


def steps(args: argparse.Namespace, found: dict[str, Any], device: torch.device, scratch: Path,
          on_step: Callable[[list[Row], dict, list[str]], None]) -> tuple[list[Row], dict, list[str]]:
    """Every step in order, `on_step` called after each; once --budget_s is spent the rest are skipped (with a note)."""
    started = time.perf_counter()
    rows, memory = library_rows(args, found, device)
    on_step(rows, memory, ["(partial: the script steps had not finished)"])
    del found["model"]
    if device.type == "cuda":
        torch.cuda.empty_cache()
    results, notes = scratch / "results", []
    later = [("b_activations.py", lambda: pass_script_rows(args, found, device)),
             ("d_recompute_vis.py", lambda: viewer_rows(args, found, device, results)),
             ("g_connections.py", lambda: connection_rows(found, device, results))]
    for name, run in later:
        if time.perf_counter() - started > args.budget_s:
            notes.append(f"{name} skipped: the budget of {args.budget_s:.0f} s was spent")
            continue
        try:
            rows += run()
        except Exception as exc:  # noqa: BLE001 - one failed step leaves the table of the others, with a note
            traceback.print_exc()
            notes.append(f"{name} failed: {type(exc).__name__}: {exc}")
        on_step(rows, memory, [*notes, f"(partial: the steps after {name} had not finished)"])
    return rows, memory, notes


def report(args: argparse.Namespace, device: torch.device, dtype: torch.dtype, rows: list[Row], memory: dict,
           notes: list[str]) -> str:
    d_model, d_mlp, layers, _, vocab = SHAPES[args.shape]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    lines = [f"random OLMo, {args.shape} shapes: d_model {d_model}, {layers} x {d_mlp:,} neurons, vocabulary {vocab:,}, "
             f"{str(dtype).removeprefix('torch.')}; {name}; batch {args.batch_size} x {args.seq_len} tokens, "
             f"{args.batches} batches timed after one warm-up batch\n", *table(rows)]
    per_neuron = memory["stats_bytes"] / memory["neurons"]
    peak = f"; peak memory allocated during the pass (model included) {memory['peak_gib']:.2f} GiB" if memory["peak_gib"] is not None else ""
    lines.append(f"\nstatistics on the device: {memory['stats_bytes'] / 2**20:.1f} MiB ({per_neuron:,.0f} bytes per neuron, "
                 f"k {args.k}, {args.typical} typical examples per sign combination and band; independent of the tokens){peak}")
    lines += notes
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=list(SHAPES), default="olmo-7b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default=None, help="default: bfloat16 on CUDA, float32 on the CPU (the scripts' auto)")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--seq_len", type=int, default=1024)
    parser.add_argument("--batches", type=int, default=8, help="batches timed (after one warm-up batch)")
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--typical", type=int, default=4, help="typical examples per sign combination and band")
    parser.add_argument("--viewer_layers", type=int, default=2, help="layers whose every neuron the viewer step writes")
    parser.add_argument("--budget_s", type=float, default=360, help="skip the script steps that start after this many seconds")
    parser.add_argument("--save", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()
    device = torch.device(args.device)
    args.dtype_name = args.dtype or ("bfloat16" if device.type == "cuda" else "float32")
    dtype = getattr(torch, args.dtype_name)
    scratch = Path(tempfile.mkdtemp(prefix="gpu_pipeline."))
    try:
        found = setup(args, scratch, device, dtype)

        def save(rows: list[Row], memory: dict, notes: list[str]) -> None:  # after each step: a kill keeps what was done
            if args.save:
                args.save.write_text(report(args, device, dtype, rows, memory, notes) + "\n")

        text = report(args, device, dtype, *steps(args, found, device, scratch, save))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print("\n" + text)
    if args.save:
        args.save.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
