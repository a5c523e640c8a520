"""How fast every script answers `--help` (target: under 1 s), against a bare `python -c pass`.

  python benchmarks/bench_help.py
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ("wcos_casestudies/main.py", "wcos_casestudies/casestudies.py", "wcos_casestudies/defplot.py",
           "wcos_casestudies/selected_plot.py", "neuroscope/a_dataset.py", "neuroscope/b_activations.py",
           "neuroscope/b2_recompute.py", "neuroscope/c_neuron_vis.py", "neuroscope/d_recompute_vis.py",
           "neuroscope/e_ablate.py", "neuroscope/e_frequency.py")
REPEATS = 3


def best_seconds(command: list[str]) -> float:
    """The fastest of a few runs (the others wait on the disk cache or a busy CPU)."""
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        subprocess.run(command, cwd=ROOT, capture_output=True, check=True)
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    baseline = best_seconds([sys.executable, "-c", "pass"])
    print(f"| script | --help s | ratio to `python -c pass` ({baseline:.3f} s) |\n|---|---|---|")
    for script in SCRIPTS:
        seconds = best_seconds([sys.executable, script, "--help"])
        print(f"| {script} | {seconds:.3f} | {seconds / baseline:.1f} |")


if __name__ == "__main__":
    main()
