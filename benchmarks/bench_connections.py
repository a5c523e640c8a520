"""Connections between neurons (g_connections.py's computation): speed and memory, in one run.

1. All 46,080 neurons of the embedded SmolLM2-135M (30 layers x 1,536), top 20: the neuron lists (inputs and readers,
   by |virtual weight| and |cosine|), then the embedding's token lists alone; against the dense matmuls of the same
   layer pairs alone (every W_out[l' < l] @ W_gate[l].T and W_in[l].T, nothing kept), measured in the same run.
2. OLMo-7B shapes (d_model 4,096, 11,008 neurons), 2 layers of random weights (one layer pair), top 20, neuron lists
   only; projected to 32 layers: the work grows with the layer pairs, L(L-1)/2 = 496 for L = 32, so
   t(32) = 496 x t(one pair).
Peak memory: the process's maximum resident set (ru_maxrss) after each part; the CPU is shared with other jobs.

  python benchmarks/bench_connections.py                 # writes benchmarks/results/connections_cpu.txt
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import torch

from gated_core.models.arch import ArchInfo
from gated_core.models.readers import LayerMLP, WeightReader, open_weights
from gated_core.models.sources import resolve_model
from wcos_casestudies.connections import ConnectionInputs, compute_connections

TOP_K = 20
OLMO_SHAPE = {"d_model": 4096, "d_mlp": 11008, "n_layers": 2}
PROJECTED_LAYERS = 32
OUTPUT = Path(__file__).resolve().parent / "results" / "connections_cpu.txt"


class RandomReader(WeightReader):
    """Random float32 weights of the given shape, one layer at a time (seeded by the layer)."""

    loader = "random"

    def __init__(self, n_layers: int, d_model: int, d_mlp: int):
        self.arch = ArchInfo("llama", n_layers, d_model, d_mlp, 0, "silu", True)

    def layer(self, index: int) -> LayerMLP:
        generator = torch.Generator().manual_seed(index)
        shape = (self.arch.d_mlp, self.arch.d_model)
        return LayerMLP(*(torch.randn(shape, generator=generator) for _ in range(3)))


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def dense_matmuls(reader: WeightReader) -> float:
    """Seconds for the matmuls of every layer pair alone (weights read beforehand)."""
    layers = [reader.layer(index) for index in range(reader.arch.n_layers)]
    started = time.perf_counter()
    for reading in range(1, len(layers)):
        upstream = torch.cat([layers[i].out for i in range(reading)])
        for w_read in (layers[reading].gate, layers[reading].lin):
            _ = upstream @ w_read.T
    return time.perf_counter() - started


def timed(reader: WeightReader, embed: bool) -> tuple[float, dict[str, float]]:
    started = time.perf_counter()
    found = compute_connections(reader, ConnectionInputs(top_k=TOP_K, embed=embed))
    return time.perf_counter() - started, found.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    lines = [f"# Connections on the CPU ({torch.get_num_threads()} threads, shared with other jobs), top {TOP_K}", ""]
    reader = open_weights(resolve_model("smollm2-135m", allow_download=False))
    arch = reader.arch
    total, _ = timed(reader, embed=False)
    matmuls = dense_matmuls(reader)
    memory = peak_gib()
    with_embed, seconds = timed(reader, embed=True)
    lines += ["| run | neurons | seconds | dense matmuls of the same pairs (s) | ratio | peak RSS (GiB) |",
              "|---|---|---|---|---|---|",
              f"| SmolLM2-135M neuron lists | {arch.n_layers * arch.d_mlp:,} | {total:.1f} | {matmuls:.1f} | "
              f"{total / matmuls:.2f} | {memory:.2f} |",
              f"| SmolLM2-135M embedding token lists alone | {arch.n_layers * arch.d_mlp:,} | {seconds['embedding']:.1f} | | "
              f"| {peak_gib():.2f} |"]
    olmo = RandomReader(**OLMO_SHAPE)
    pair, _ = timed(olmo, embed=False)
    olmo_matmuls = dense_matmuls(olmo)
    pairs = PROJECTED_LAYERS * (PROJECTED_LAYERS - 1) // 2
    lines += [f"| OLMo-7B shapes, 2 layers (1 pair) | {2 * OLMO_SHAPE['d_mlp']:,} | {pair:.1f} | {olmo_matmuls:.1f} | "
              f"{pair / olmo_matmuls:.2f} | {peak_gib():.2f} |",
              "", f"OLMo-7B, {PROJECTED_LAYERS} layers, projected: {pairs} pairs x {pair:.1f} s = {pairs * pair / 3600:.1f} h "
              f"on this CPU (the work grows as L(L-1)/2 layer pairs; memory stays at one block of layers)."]
    text = "\n".join(lines) + "\n"
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)


if __name__ == "__main__":
    main()
