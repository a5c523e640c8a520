"""Correctness of the GPU-only code paths of the activation pass (run on the device machine).

Compares the reductions on CUDA with the CPU's on random activations with padding, in float32
and bf16, over several batches (so that both ways of finding example positions run: the dense one
of the first batch and the lookup of the later ones), with and without a BOS token that is left out
of the examples: every statistic, the histogram and the sign-combination lists included.

  python benchmarks/gpu_checks.py                 # CUDA against the CPU
  python benchmarks/gpu_checks.py --device cpu    # a dry run of the script itself (CPU against the CPU)
"""

from __future__ import annotations

import argparse
import sys

import torch

from neuroscope.activation_pass.activations import NeuronStats
from neuroscope.activation_pass.reducer import BatchReducer
from neuroscope.activation_pass.store import file_tensors

BOS_ID = 1
BATCHES, ROWS, POSITIONS, NEURONS, K = 3, 8, 300, 1000, 4


def random_batches(dtype: torch.dtype, gen: torch.Generator) -> list[tuple[torch.Tensor, ...]]:
    """(g, u, a [batch pos neuron], attention_mask, input_ids [batch pos], docs [batch]) per batch, padded rows included."""
    batches = []
    docs = torch.randperm(100, generator=gen)
    for index in range(BATCHES):
        g = torch.randn(ROWS, POSITIONS, NEURONS, generator=gen).to(dtype)
        u = torch.randn(ROWS, POSITIONS, NEURONS, generator=gen).to(dtype)
        a = (torch.nn.functional.silu(g.float()) * u.float()).to(dtype)
        lengths = torch.randint(1, POSITIONS + 1, (ROWS,), generator=gen)
        lengths[0] = POSITIONS
        mask = (torch.arange(POSITIONS)[None, :] < lengths[:, None]).long()
        ids = torch.randint(2, 1000, (ROWS, POSITIONS), generator=gen)
        ids[:, 0] = BOS_ID
        batches.append((g, u, a, mask, ids, docs[index * ROWS:(index + 1) * ROWS]))
    return batches


def reduce(device: str, batches, bos_id: int | None) -> dict[str, torch.Tensor]:
    reducer = BatchReducer(NeuronStats.empty(1, NEURONS, K, device), bos_id)
    for g, u, a, mask, ids, docs in batches:
        reducer.start(mask.to(device), ids.to(device))
        reducer(0, g.to(device), u.to(device), a.to(device))
        reducer.apply(docs.to(device))
    return {k: v.cpu() for k, v in file_tensors(reducer.stats).items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="the device compared with the CPU")
    args = parser.parse_args()
    gen = torch.Generator().manual_seed(0)
    failures = 0
    for dtype in (torch.float32, torch.bfloat16):
        batches = random_batches(dtype, gen)
        for bos_id in (None, BOS_ID):
            cpu, other = reduce("cpu", batches, bos_id), reduce(args.device, batches, bos_id)
            for key in cpu:
                if key == "post_sum":
                    ok = torch.allclose(cpu[key].double(), other[key].double(), rtol=1e-5, atol=2 ** 12)
                else:
                    ok = torch.equal(cpu[key], other[key])
                failures += not ok
                print(f"{str(dtype):16s} {'BOS left out' if bos_id else 'every token':13s} {key:18s} {'ok' if ok else 'MISMATCH'}")
    print(f"{args.device} checks:", "all passed" if not failures else f"{failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
