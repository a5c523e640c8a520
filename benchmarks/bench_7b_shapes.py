"""The whole pipeline at OLMo-7B-0424's shapes on this machine's CPU, through the real scripts, one subprocess each.

A random OLMo checkpoint with the paper's model's shapes (d_model 4096, 11,008 neurons per layer, vocabulary
50,304, 32 heads) but only --layers layers, the byte tokenizer, and the embedded pydoc text (--tokens tokens):
a_dataset.py, b_activations.py, g_connections.py where it exists, and d_recompute_vis.py --neurons all (the
viewer, which shows the connections; --compact: with its --compact). Per step: wall time, time per layer, the script's own timings, peak memory (ru_maxrss of the
step's process), sizes per neuron; the time a neuron takes to open in headless Chromium; and a projection to
32 layers on this CPU and on one H100 (assumptions printed with it).

  python benchmarks/bench_7b_shapes.py --shape test                        # tiny shapes: the code path in a minute
  python benchmarks/bench_7b_shapes.py --save benchmarks/results/pipeline_7b_shapes_cpu.txt   # 2 layers, 20k tokens
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SHAPES = {  # d_model, d_mlp, heads, vocabulary
    "olmo-7b": (4096, 11008, 32, 50304),  # OLMo-7B-0424
    "test": (128, 344, 4, 1024),  # the same code path, in a minute
}
FULL_LAYERS = 32  # OLMo-7B-0424
PAPER_TOKENS = 20_000_390
H100_PEAK_FLOPS = 989e12  # bf16 dense, SXM
H100_BARE_TOKENS_S = 33_389  # bare forward of random OLMo-7B bf16 at 8 x 1024 on one H100 (benchmarks/results/neuroscope_gpu.txt)
H100_PASS_RATIO = 0.81  # the activation pass against that bare forward, same file (before the histogram and sign lists)
OPEN_NEURONS = 6  # neurons opened in Chromium
CHROMIUM_TIMEOUT_S = 300
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Step:
    """One script run: its wall time, peak resident memory, exit status and output."""

    name: str
    seconds: float = 0.0
    peak_gib: float = 0.0
    rc: int = 0
    log: str = ""
    inner: dict[str, float] = field(default_factory=dict)  # the script's own timings (seconds)


def run_step(name: str, module: str, argv: list[str], logs: Path) -> Step:
    """`python -m neuroscope.<module> argv` in its own process; its peak RSS from wait4 (that process alone).
    A step that succeeded in an earlier run kept with --keep (its logs/<name>.json) is read back, not run again."""
    log_path, done = logs / f"{name}.log", logs / f"{name}.json"
    if done.is_file():
        step = Step(**{**json.loads(done.read_text()), "log": log_path.read_text(errors="replace")})
        print(f"{name}: reusing the earlier run's {step.seconds:.1f} s, peak {step.peak_gib:.2f} GiB", flush=True)
        return step
    with open(log_path, "w") as log:
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-m", f"neuroscope.{module}", *argv], stdout=log, stderr=subprocess.STDOUT,
                                   cwd=logs)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    text = log_path.read_text(errors="replace")
    step = Step(name, seconds, usage.ru_maxrss / 2**20, process.returncode, text)
    print(f"{name}: {seconds:.1f} s, peak {step.peak_gib:.2f} GiB, exit {step.rc}", flush=True)
    if step.rc:
        print(text[-3000:])
    else:
        done.write_text(json.dumps({"name": name, "seconds": seconds, "peak_gib": step.peak_gib, "rc": 0}))
    return step


def pass_inner(step: Step) -> None:
    """b_activations.py's own time of the pass ('N tokens in S s')."""
    found = re.search(r"([\d,]+) tokens in ([\d.]+) s", step.log)
    if found:
        step.inner = {"tokens": float(found.group(1).replace(",", "")), "pass": float(found.group(2))}


def viewer_inner(step: Step) -> None:
    """d_recompute_vis.py's own times ('recompute R s, weights W s, write X s')."""
    found = re.search(r"recompute ([\d.]+) s, weights ([\d.]+) s, write ([\d.]+) s", step.log)
    if found:
        step.inner = dict(zip(("recompute", "weights", "write"), map(float, found.groups())))


def connections_inner(step: Step) -> None:
    """g_connections.py's own times ('(neurons N s, embedding E s)')."""
    found = re.search(r"neurons ([\d.]+) s, embedding ([\d.]+) s", step.log)
    if found:
        step.inner = dict(zip(("neurons", "embedding"), map(float, found.groups())))


def open_times(viewer: Path, names: list[str], scratch: Path) -> list[int]:
    """Milliseconds from navigation start to the neuron drawn (the page's data-opened-ms), per neuron; -1 where not."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        return []
    times = []
    for name in names:
        dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                              "--disable-background-networking", "--disable-component-update",
                              f"--user-data-dir={scratch / 'chrome'}", "--dump-dom", f"{(viewer / 'viewer.html').as_uri()}#{name}"],
                             capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT_S).stdout
        found = re.search(r'data-opened-ms="(\d+)"', dom)
        times.append(int(found.group(1)) if found else -1)
    return times


def folder_bytes(folder: Path, pattern: str = "*") -> int:
    return sum(p.stat().st_size for p in folder.rglob(pattern) if p.is_file())


@dataclass
class Shape:
    """The model's shapes and this run's token layout, for the FLOP counts of the projection."""

    d_model: int
    d_mlp: int
    vocab: int
    layers: int
    tokens: int
    mean_context: float  # mean number of positions a token attends to (causal), over this dataset's tokens

    def layer_flops(self) -> float:
        """Multiply-adds x 2 per token of one decoder layer: q, k, v, o, the gated MLP, the attention scores and mix."""
        d, m = self.d_model, self.d_mlp
        return 2 * (4 * d * d + 3 * d * m) + 4 * d * self.mean_context

    def model_flops(self, layers: int) -> float:
        """FLOPs per token of the forward pass with `layers` layers and the unembedding."""
        return layers * self.layer_flops() + 2 * self.d_model * self.vocab

    def pair_flops(self, layers: int) -> float:
        """The virtual weights w_out . w_gate and w_out . w_in of every pair of layers."""
        return 2 * 2 * self.d_mlp ** 2 * self.d_model * layers * (layers - 1) / 2

    def embedding_flops(self, layers: int) -> float:
        """The embedding's token lists: W_E . w_gate and W_E . w_in of every neuron."""
        return 2 * 2 * layers * self.d_mlp * self.vocab * self.d_model


def h100_flops_per_s() -> float:
    """FLOP/s of the measured bare forward of OLMo-7B at 8 x 1024 on one H100 (mean causal context 512.5)."""
    d_model, d_mlp, _, vocab = SHAPES["olmo-7b"]
    return H100_BARE_TOKENS_S * Shape(d_model, d_mlp, vocab, FULL_LAYERS, 0, (1024 + 1) / 2).model_flops(FULL_LAYERS)


def mean_context(dataset_dir: Path) -> tuple[int, float]:
    """Tokens of the saved dataset and the mean causal context per token."""
    from datasets import load_from_disk

    lengths = [len(ids) for ids in load_from_disk(str(dataset_dir))["input_ids"]]
    return sum(lengths), sum(n * (n + 1) / 2 for n in lengths) / max(sum(lengths), 1)


def make_checkpoint(args: argparse.Namespace, folder: Path) -> Path:
    """The random checkpoint, made in a child process so that this one stays small: a child's ru_maxrss starts from
    its parent's resident size. One already in `folder` (from an earlier --keep run) is used again."""
    if (folder / "config.json").is_file():
        print(f"checkpoint: reusing {folder}")
        return folder
    d_model, d_mlp, heads, vocab = SHAPES[args.shape]
    started = time.perf_counter()
    code = ("import sys; from wcos_casestudies.synthetic import olmo_checkpoint; "
            "olmo_checkpoint(sys.argv[1], *map(int, sys.argv[2:]))")
    subprocess.run([sys.executable, "-c", code, str(folder), *map(str, (args.layers, d_model, d_mlp, heads, vocab))], check=True)
    print(f"checkpoint: {time.perf_counter() - started:.1f} s, {folder_bytes(folder) / 2**30:.2f} GiB", flush=True)
    return folder


def pipeline(args: argparse.Namespace, scratch: Path) -> tuple[dict[str, Step], Path, Path]:
    """Checkpoint, dataset, pass, connections, viewer (with the connections): one subprocess each (a failed step stops
    the ones after it)."""
    checkpoint = make_checkpoint(args, scratch / "checkpoint")
    data, results, logs = scratch / "data", scratch / "results", scratch / "logs"
    logs.mkdir(exist_ok=True)
    model = ["--model", str(checkpoint)]
    where = ["--datadir", str(data), "--device", "cpu"]
    steps: dict[str, Step] = {}
    plan = [("dataset", "a_dataset", ["--datadir", str(data), "--save_to", "docs", "--tokenizer", str(checkpoint),
                                      "--mtokens", str(args.tokens / 1e6), "--max_length", str(args.max_length)]),
            ("pass", "b_activations", [*model, *where, "--dataset", "docs", "--save_to", "activations",
                                       "--batch_size", str(args.batch_size)])]
    if importlib.util.find_spec("neuroscope.g_connections") is not None:  # before the viewer, which shows them
        embedding = [] if args.connections_embedding else ["--no_embedding"]
        plan.append(("connections", "g_connections", [*model, *where, "--results_dir", str(results), *embedding]))
    plan.append(("viewer", "d_recompute_vis", [*model, *where, "--neurons", "all", "--results_dir", str(results),
                                               "--batch_size", str(args.viewer_batch_size or args.batch_size),
                                               *(["--compact"] if args.compact else [])]))
    for name, module, argv in plan:
        steps[name] = run_step(name, module, argv, logs)
        if steps[name].rc:
            break
    pass_inner(steps.get("pass", Step("pass")))
    viewer_inner(steps.get("viewer", Step("viewer")))
    connections_inner(steps.get("connections", Step("connections")))
    return steps, data, results


def viewer_sizes(results: Path) -> dict[str, Any]:
    """Bytes of the viewer: in all, its neuron data (the layer chunks), search index, documents."""
    folder = next(results.rglob("neuroscope_viewer.json")).parent
    return {"folder": folder, "total": folder_bytes(folder), "neurons": folder_bytes(folder / "data", "layer_*.js"),
            "search": folder_bytes(folder / "data", "search*.js") + folder_bytes(folder / "data", "top_*.js"), "documents": folder_bytes(folder / "data", "docs*.js")}


def measure(args: argparse.Namespace, scratch: Path) -> dict:
    """Run the pipeline and gather what the report needs."""
    steps, data, results = pipeline(args, scratch)
    d_model, d_mlp, _, vocab = SHAPES[args.shape]
    tokens, context = mean_context(data / "docs") if (data / "docs").exists() else (0, 0.0)
    found = {"steps": steps, "shape": Shape(d_model, d_mlp, vocab, args.layers, tokens, context),
             "neurons": args.layers * d_mlp, "opened": [], "sizes": {}}
    stats_file = data / "activations" / "stats.pt"
    found["stats_bytes"] = stats_file.stat().st_size if stats_file.exists() else 0
    if steps.get("viewer") and not steps["viewer"].rc:
        found["sizes"] = viewer_sizes(results)
        rng = random.Random(0)
        names = [f"{rng.randrange(args.layers)}.{rng.randrange(d_mlp)}" for _ in range(OPEN_NEURONS)]
        found["opened"] = open_times(found["sizes"]["folder"], names, scratch)
    connections = next(results.rglob("connections.pt"), None) if results.exists() else None
    found["connections_bytes"] = connections.stat().st_size if connections else 0
    return found


def step_rows(found: dict) -> list[str]:
    """The measured table: one row per step."""
    steps, layers, neurons = found["steps"], found["shape"].layers, found["neurons"]
    sizes = found["sizes"]
    per_neuron = {"pass": f"statistics {found['stats_bytes'] / neurons:,.0f} B",
                  "viewer": (f"viewer {sizes['total'] / neurons:,.0f} B (neuron chunks {sizes['neurons'] / neurons:,.0f} B, "
                             f"search {sizes['search'] / neurons:,.0f} B)" if sizes else ""),
                  "connections": f"connections.pt {found['connections_bytes'] / neurons:,.0f} B"}
    rows = ["| step | wall s | wall s per layer | the script's own timing | peak RSS GiB | size per neuron |", "|---|---|---|---|---|---|"]
    for name, step in steps.items():
        inner = ", ".join(f"{k} {v:,.1f} s" if k != "tokens" else f"{v:,.0f} tokens" for k, v in step.inner.items())
        status = "" if not step.rc else f" (failed: exit {step.rc})"
        rows.append(f"| {name}{status} | {step.seconds:,.1f} | {step.seconds / layers:,.1f} | {inner} | {step.peak_gib:.2f} "
                    f"| {per_neuron.get(name, '')} |")
    return rows


def projection_rows(found: dict) -> list[str]:
    """Seconds at 32 layers: on this CPU for this run's tokens and for the paper's 20M, and on one H100 for 20M."""
    shape, steps = found["shape"], found["steps"]
    scale_model = shape.model_flops(FULL_LAYERS) / shape.model_flops(shape.layers)
    scale_neurons = FULL_LAYERS / shape.layers
    scale_tokens = PAPER_TOKENS / max(shape.tokens, 1)
    h100 = h100_flops_per_s()
    rows = ["| step (32 layers) | this CPU, this run's tokens | this CPU, 20M tokens | one H100, 20M tokens | scales with |",
            "|---|---|---|---|---|"]

    def row(name: str, cpu_s: float, tokens_scale: float, h100_s: float, scales: str) -> None:
        rows.append(f"| {name} | {hours(cpu_s)} | {hours(cpu_s * tokens_scale)} | {hours(h100_s)} | {scales} |")

    if "pass" in steps.get("pass", Step("pass")).inner:
        row("activation pass", steps["pass"].inner["pass"] * scale_model, scale_tokens,
            PAPER_TOKENS / (H100_BARE_TOKENS_S * H100_PASS_RATIO), "FLOPs per token x tokens")
    viewer = steps.get("viewer", Step("viewer")).inner
    if viewer:
        row("recompute (viewer windows)", viewer["recompute"] * scale_model, scale_tokens, PAPER_TOKENS / H100_BARE_TOKENS_S,
            "FLOPs per token x tokens (every document holds an example)")
        weights_flops = 2 * FULL_LAYERS * shape.d_mlp * shape.d_model * shape.vocab
        row("weights · W_U", viewer["weights"] * scale_neurons, 1, weights_flops / h100, "neurons")
        row("viewer write", viewer["write"] * scale_neurons, 1, viewer["write"] * scale_neurons, "neurons (CPU-bound; the GPU host's CPU as this one)")
    connections = steps.get("connections", Step("connections")).inner
    if connections and shape.layers > 1:
        row("connections between neurons", connections["neurons"] * shape.pair_flops(FULL_LAYERS) / shape.pair_flops(shape.layers),
            1, shape.pair_flops(FULL_LAYERS) / h100, "pairs of layers x neurons² x d_model")
        embedding_s = connections["embedding"] * scale_neurons if connections["embedding"] else (
            connections["neurons"] * shape.embedding_flops(FULL_LAYERS) / shape.pair_flops(shape.layers))
        row("connections to the embedding" + ("" if connections["embedding"] else " (not run: projected by FLOPs)"),
            embedding_s, 1, shape.embedding_flops(FULL_LAYERS) / h100, "neurons x vocabulary x d_model")
    rows.append(f"\nFLOPs per token at 32 layers: {shape.model_flops(FULL_LAYERS) / 1e9:.1f} G (mean causal context "
                f"{shape.mean_context:.0f} tokens, as in this dataset); the CPU times scale this run's by FLOPs (pass, "
                f"recompute) or by neurons (weights, write); on the H100, the pass runs at {H100_PASS_RATIO} x and the recompute "
                f"at 1 x the measured bare forward of OLMo-7B bf16 at 8 x 1024 (33,389 tokens/s), which is {h100 / 1e12:.0f} TFLOP/s, {h100 / H100_PEAK_FLOPS:.0%} of its {H100_PEAK_FLOPS / 1e12:.0f} "
                f"TFLOP/s bf16 dense peak; the weights and connections on the H100 assume that same rate")
    return rows


def hours(seconds: float) -> str:
    return f"{seconds:,.0f} s" if seconds < 600 else f"{seconds / 3600:,.1f} h" if seconds >= 3600 * 2 else f"{seconds / 60:,.0f} min"


def report(args: argparse.Namespace, found: dict) -> str:
    """The Markdown report: the measured steps, opening times, sizes at full scale, the projection."""
    shape, neurons = found["shape"], found["neurons"]
    load = os.getloadavg()
    lines = [f"# benchmarks/bench_7b_shapes.py --shape {args.shape} --layers {args.layers} --tokens {args.tokens}"
             + (" --compact" if args.compact else ""),
             f"# {os.cpu_count()} CPU cores shared with other jobs (load average {load[0]:.1f} at the end), float32, "
             f"{time.strftime('%Y-%m-%d')}",
             f"\nrandom OLMo, d_model {shape.d_model}, {shape.d_mlp:,} neurons x {shape.layers} layers ({neurons:,} neurons), "
             f"vocabulary {shape.vocab:,}; pydoc text, {shape.tokens:,} tokens; batch {args.batch_size} "
             f"(viewer's recompute: {args.viewer_batch_size or args.batch_size})\n", *step_rows(found)]
    opened = [t for t in found["opened"] if t >= 0]
    if opened:
        lines.append(f"\na neuron opens in headless Chromium in {statistics.median(opened)} ms (median of {len(opened)} random "
                     f"neurons), at most {max(opened)} ms ({len(found['opened']) - len(opened)} not drawn)")
    if found["sizes"]:
        full = FULL_LAYERS * shape.d_mlp
        docs = found["sizes"]["documents"] * PAPER_TOKENS / max(shape.tokens, 1)
        lines.append(f"at 32 layers ({full:,} neurons) on 20M tokens: statistics {found['stats_bytes'] / neurons * full / 2**30:.1f} GiB, "
                     f"viewer {(found['sizes']['total'] - found['sizes']['documents']) / neurons * full / 2**30:.1f} GiB + "
                     f"documents {docs / 2**30:.2f} GiB (the example lists' sizes per neuron do not grow with the tokens)")
    lines += ["\nprojection\n", *projection_rows(found)]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=list(SHAPES), default="olmo-7b")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=20_000, help="tokens of the dataset")
    parser.add_argument("--max_length", type=int, default=1024, help="tokens per document at most")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--viewer_batch_size", type=int, default=None,
                        help="documents per forward pass of the viewer's recompute (default: --batch_size)")
    parser.add_argument("--compact", action="store_true", help="the viewer with d_recompute_vis.py --compact (8-bit activations)")
    parser.add_argument("--connections_embedding", action="store_true",
                        help="also the connections' embedding lists (by default left out, and projected by FLOPs)")
    parser.add_argument("--save", type=Path, default=None, help="also write the report here")
    parser.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it (default: a temporary one); a checkpoint already there is used again")
    args = parser.parse_args()
    scratch = args.keep or Path(tempfile.mkdtemp(prefix="bench_7b."))
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        text = report(args, measure(args, scratch))
    finally:
        if args.keep is None:
            shutil.rmtree(scratch, ignore_errors=True)
    print("\n" + text)
    if args.save:
        args.save.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
