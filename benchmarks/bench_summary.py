"""The published neuron summary at OLMo-7B-0424's size: 32 x 11,008 = 352,256 rows in GLUScope's columns (random
values, every quirk of the published form), read into statistics by b_import_summary.py, its statistics-only pages
(`d_recompute_vis.py --statistics_only`), against the baseline of reading the parquet files alone with pyarrow,
measured in the same run. (An export needs statistics of b_activations.py: imported ones lack parts of it.)

The model is a folder with a Llama config of OLMo-7B's shapes and a byte tokenizer, no weights (what a user without
them has); the text dataset has --documents random documents, the summary's rows index them.

  python benchmarks/bench_summary.py                        # ~3 min and ~8 GB on 2 CPU cores
  python benchmarks/bench_summary.py --save benchmarks/results/summary_cpu.txt
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

N_LAYERS, D_MLP, K = 32, 11_008, 16  # OLMo-7B-0424 and the published lists
ROWS_PER_FILE = 50_000


def model_folder(folder: Path) -> Path:
    """A Llama config of OLMo-7B's MLP shapes and a byte tokenizer, no weights."""
    from wcos_casestudies.synthetic import byte_tokenizer, tiny_config

    tiny_config("llama", d_model=256, d_mlp=D_MLP, n_layers=N_LAYERS).save_pretrained(folder)
    byte_tokenizer(folder)
    return folder


def text_dataset(datadir: Path, model: Path, documents: int) -> None:
    """`documents` random texts tokenized by the byte tokenizer, as a_dataset.py saves them."""
    import datasets

    from gated_core.models.loading import load_tokenizer
    from gated_core.models.sources import resolve_model
    from neuroscope.data.dataset_store import save_dataset
    from neuroscope.data.tokenization import build_dataset

    rng = np.random.default_rng(0)
    words = ["gate", "linear", "neuron", "weakening", "residual", "token", "layer", "output", "the", "of"]
    texts = [" ".join(rng.choice(words, size=rng.integers(20, 200))) for _ in range(documents)]
    tokenizer = load_tokenizer(resolve_model(str(model)))
    dataset, meta = build_dataset(datasets.Dataset.from_dict({"text": texts}), tokenizer, None, max_length=1024)
    save_dataset(dataset, {**meta, "tokenizer": "bytes", "dataset": "random"}, datadir / "text")


def summary_files(folder: Path, documents: int) -> None:
    """352,256 rows of random published columns, in parquet files of ROWS_PER_FILE rows."""
    import datasets

    from neuroscope.summary.schema import CASES, VALUES, freq_column, list_columns, listed, mean_column

    rng = np.random.default_rng(1)
    rows = N_LAYERS * D_MLP
    columns = {"layer": np.repeat(np.arange(N_LAYERS), D_MLP), "neuron": np.tile(np.arange(D_MLP), N_LAYERS)}
    freqs = rng.dirichlet(np.ones(len(CASES)), size=rows)
    for index, case in enumerate(CASES):
        columns[freq_column(case)] = freqs[:, index]
        for value in VALUES:
            columns[mean_column(case, value)] = rng.normal(size=rows).astype(np.float32)
        for value in (value for value in VALUES if listed(case, value)):
            values, indices = list_columns(case, value)
            columns[values] = -np.sort(-rng.exponential(size=(rows, K)).astype(np.float32), axis=1)
            columns[indices] = rng.integers(0, documents, size=(rows, K))
    table = datasets.Dataset.from_dict(columns)
    folder.mkdir(parents=True)
    for index, start in enumerate(range(0, rows, ROWS_PER_FILE)):
        table.select(range(start, min(rows, start + ROWS_PER_FILE))).to_parquet(str(folder / f"train-{index:05d}.parquet"))


def timed(label: str, call) -> tuple[str, float]:
    started = time.perf_counter()
    call()
    return label, time.perf_counter() - started


def run(scratch: Path, documents: int) -> list[tuple[str, float]]:
    import pyarrow.parquet as pq

    from gated_core.cli import run_main
    from neuroscope import b_import_summary, d_recompute_vis

    model = model_folder(scratch / "olmo-shaped")
    text_dataset(scratch / "data", model, documents)
    summary_files(scratch / "summary", documents)

    def succeed(main, argv) -> None:
        if run_main(main, [str(arg) for arg in argv]) != 0:
            raise SystemExit(f"{main.__module__} failed")

    data = ["--datadir", scratch / "data"]
    neurons = ["28.4737", "28.9766", "31.9634", "29.10900", "30.10972", "29.4180"]
    return [timed("read the parquet files (pyarrow; baseline)", lambda: pq.read_table(scratch / "summary")),
            timed("b_import_summary.py", lambda: succeed(b_import_summary.main, [
                "--summary", scratch / "summary", "--model", model, *data, "--dataset", "text", "--save_to", "published"])),
            timed("d_recompute_vis.py --statistics_only (6 neurons)", lambda: succeed(d_recompute_vis.main, [
                "--model", model, *data, "--activations", "published", "--results_dir", scratch / "results",
                "--neurons", *neurons, "--statistics_only"]))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=2_000, help="documents of the random text dataset")
    parser.add_argument("--save", type=Path, default=None, help="also write the table to this file")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench_summary_"))
    try:
        times = run(scratch, args.documents)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    baseline = times[0][1]
    lines = [f"published summary at OLMo-7B size: {N_LAYERS} x {D_MLP:,} = {N_LAYERS * D_MLP:,} rows, k = {K}",
             f"{'step':<52} {'seconds':>8} {'x baseline':>10}"]
    lines += [f"{label:<52} {seconds:>8.1f} {seconds / baseline:>10.1f}" for label, seconds in times]
    lines.append(f"peak memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB")
    print("\n".join(lines))
    if args.save:
        args.save.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
