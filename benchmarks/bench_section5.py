"""Section 5 speed and memory: `main.py` with every flag, low-memory loader vs TransformerLens.

Each measurement is a fresh `main.py` process (fresh results folder) whose wall time and
peak resident memory are read from the operating system. Prints a Markdown table.

  python benchmarks/bench_section5.py                 # embedded SmolLM2 + Llama-2-7B shapes
  python benchmarks/bench_section5.py --skip_7b       # quick
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

FLAGS = ["--categories", "--category_stats", "--quartiles", "--plot_fine", "--plot_coarse", "--plot_quartiles",
         "--plot_all_medians"]
# Llama-shaped sizes: name -> (layers, d_model, d_mlp, vocab)
SIZES = {
    "llama-2-7b": (32, 4096, 11008, 32000),
    "llama-270m": (16, 1024, 2816, 32000),
    "llama-1b": (16, 2048, 5632, 32000),
}


def measure(argv: list[str]) -> tuple[float, float, int]:
    """Run a command; return (wall seconds, peak RSS in GB, exit status)."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        print(f"  [exit {proc.returncode}] {err.strip().splitlines()[-1] if err.strip() else ''}", file=sys.stderr)
    return seconds, usage.ru_maxrss / 1024 / 1024, proc.returncode


def run_main(model: str, loader: str, results: Path) -> tuple[float, float, int]:
    shutil.rmtree(results, ignore_errors=True)
    return measure([sys.executable, str(ROOT / "wcos_casestudies" / "main.py"), *FLAGS, "--model", model,
                    "--loader", loader, "--results_dir", str(results), "--device", "cpu"])


def ensure_checkpoint(name: str, folder: Path, full: bool) -> Path:
    """Write a random bf16 Llama-shaped checkpoint once (reused by later runs)."""
    from wcos_casestudies.synthetic import byte_tokenizer, large_llama_checkpoint

    if (folder / "config.json").exists():
        return folder
    layers, d_model, d_mlp, vocab = SIZES[name]
    started = time.perf_counter()
    large_llama_checkpoint(folder, n_layers=layers, d_model=d_model, d_mlp=d_mlp, vocab_size=vocab, mlp_only=not full)
    if full:
        byte_tokenizer(folder)
    print(f"  wrote {name} checkpoint to {folder} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench_out", help="checkpoints and results")
    parser.add_argument("--skip_7b", action="store_true", help="leave out the Llama-2-7B-shaped checkpoint")
    parser.add_argument("--tl_sizes", nargs="*", default=["llama-270m", "llama-1b"],
                        help="Llama-shaped sizes on which both loaders are compared")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows = []

    seconds, peak, code = run_main("smollm2-135m", "auto", args.workdir / "res_smollm2")
    rows.append(("SmolLM2-135M (embedded GGUF)", "lowmem", seconds, peak, code, ""))
    tl_seconds, tl_peak, tl_code = run_main("smollm2-135m", "tl", args.workdir / "res_smollm2_tl")
    rows.append(("SmolLM2-135M (embedded GGUF)", "tl", tl_seconds, tl_peak, tl_code, f"lowmem {tl_seconds / seconds:.1f}x faster"))

    for name in args.tl_sizes:
        folder = ensure_checkpoint(name, args.workdir / name, full=True)
        lo = run_main(str(folder), "lowmem", args.workdir / f"res_{name}")
        tl = run_main(str(folder), "tl", args.workdir / f"res_{name}_tl")
        rows.append((f"{name} (random bf16)", "lowmem", *lo, ""))
        ratio = f"lowmem {tl[0] / lo[0]:.1f}x faster, {tl[1] / lo[1]:.1f}x less memory" if tl[2] == 0 else "tl failed"
        rows.append((f"{name} (random bf16)", "tl", *tl, ratio))

    if not args.skip_7b:
        folder = ensure_checkpoint("llama-2-7b", args.workdir / "llama-2-7b", full=False)
        rows.append(("Llama-2-7B shapes (random bf16, MLP + norms)", "lowmem",
                     *run_main(str(folder), "lowmem", args.workdir / "res_llama-2-7b"), "target < 300 s, < 4 GB"))

    print("\n| model | loader | wall s | peak RSS GB | exit | note |")
    print("|---|---|---|---|---|---|")
    for model, loader, seconds, peak, code, note in rows:
        print(f"| {model} | {loader} | {seconds:.1f} | {peak:.2f} | {code} | {note} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
