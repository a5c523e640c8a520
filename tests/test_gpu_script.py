"""The GPU benchmarks' dry run on the CPU: benchmarks/gpu_benchmarks.sh with DEVICE=cpu runs the GPU checks against
the CPU and benchmarks/gpu_pipeline.py with tiny OLMo shapes, whose table must have every row and sane numbers."""

from __future__ import annotations

import importlib.util
import math
import os
import re
import subprocess
import sys

import pytest
from helpers import ROOT

pytestmark = pytest.mark.slow  # the whole script, in processes of its own
BATCH, SEQ_LEN, BATCHES = 2, 32, 2  # what gpu_benchmarks.sh gives gpu_pipeline.py in a dry run
TIMED_TOKENS = BATCH * SEQ_LEN * BATCHES  # every random document is full length
TOKEN_ROWS = ("bare forward, logits, no hooks", "activation pass, every statistic", "zero ablation of a random 1%")
SCRIPT_ROWS = ("b_activations.py, whole script", "b_activations.py, its pass", "d_recompute_vis.py,", "its recompute",
               "its weights · W_U", "its viewer write")
CONNECTION_ROWS = ("g_connections.py, every neuron, whole script", "its lists")


def table_rows(text: str) -> dict[str, list[str]]:
    """name -> cells of the Markdown table (header and rule left out)."""
    rows = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] not in ("step", "---"):
            rows[cells[0]] = cells[1:]
    return rows


def row_of(rows: dict[str, list[str]], start: str) -> list[str]:
    found = [cells for name, cells in rows.items() if name.startswith(start)]
    assert len(found) == 1, (start, list(rows))
    return found[0]


def test_gpu_benchmarks_dry_run(tmp_path):
    """DEVICE=cpu bash benchmarks/gpu_benchmarks.sh: the GPU checks against the CPU, then the whole table."""
    out = tmp_path / "out"
    env = {**os.environ, "DEVICE": "cpu", "PYTHON": sys.executable, "OUT": str(out), "BUDGET_S": "3000"}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_benchmarks.sh")], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not (out / "failed.txt").exists() and not (out / "skipped.txt").exists(), proc.stdout[-3000:]
    assert "cpu checks: all passed" in (out / "gpu_checks.txt").read_text()
    saved = out / "pipeline_gpu_table.md"
    text = saved.read_text()
    rows = table_rows(text)
    expected = TOKEN_ROWS + SCRIPT_ROWS
    if importlib.util.find_spec("neuroscope.g_connections") is not None:
        expected += CONNECTION_ROWS
    assert len(rows) == len(expected), list(rows)
    for start in expected:
        seconds, rate, ratio, _ = row_of(rows, start)
        assert float(seconds) > 0
        assert 0 < float(ratio.split()[0]) < math.inf, (start, ratio)
    for start in TOKEN_ROWS:  # the library rows run over exactly the timed batches
        seconds, rate, ratio, _ = row_of(rows, start)
        rate_value, seconds_value = float(rate.replace(",", "")), float(seconds)
        # seconds shown to 3 significant digits, rates to whole tokens/s
        assert abs(rate_value * seconds_value - TIMED_TOKENS) <= 0.006 * TIMED_TOKENS + 0.5 * seconds_value + 1e-6
    bare = float(row_of(rows, TOKEN_ROWS[0])[1].replace(",", ""))
    for start in TOKEN_ROWS[1:]:
        rate, ratio = row_of(rows, start)[1:3]
        assert math.isclose(float(ratio), float(rate.replace(",", "")) / bare, abs_tol=0.01 + 1 / bare)
    memory = re.search(r"statistics on the device: ([\d.]+) MiB \(([\d,]+) bytes per neuron", text)
    assert memory and float(memory.group(1)) > 0 and int(memory.group(2).replace(",", "")) > 0
    assert "skipped" not in text and "partial" not in text


def test_gpu_benchmarks_budget_skips_with_a_note(tmp_path):
    """With no budget left every step is skipped, each with a line, and the script still ends cleanly."""
    out = tmp_path / "out"
    env = {**os.environ, "DEVICE": "cpu", "PYTHON": sys.executable, "OUT": str(out), "BUDGET_S": "0"}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_benchmarks.sh")], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    skipped = (out / "skipped.txt").read_text().splitlines()
    assert [line.split(":")[0] for line in skipped] == ["gpu_checks", "pipeline_gpu"]
