"""Correctness of the GPU-only code paths of the activation pass (run on the device machine).

Compares the reductions on CUDA with the CPU's on random activations with padding, in float32
and bf16: every statistic, the histogram and the sign-combination lists included.
"""

from __future__ import annotations

import sys

import torch

from neuroscope.activations import BatchReducer, NeuronStats


def reduce(device: str, g, u, a, mask, docs):
    reducer = BatchReducer(NeuronStats.empty(1, a.shape[-1], 4, device))
    reducer.start(mask.to(device))
    reducer(0, g.to(device), u.to(device), a.to(device))
    reducer.apply(docs.to(device))
    return {k: v.cpu() for k, v in reducer.stats.state_dict().items()}


def main() -> int:
    gen = torch.Generator().manual_seed(0)
    failures = 0
    for dtype in (torch.float32, torch.bfloat16):
        b, t, n = 8, 300, 1000
        g = torch.randn(b, t, n, generator=gen).to(dtype)
        u = torch.randn(b, t, n, generator=gen).to(dtype)
        a = (torch.nn.functional.silu(g.float()) * u.float()).to(dtype)
        lengths = torch.randint(1, t + 1, (b,), generator=gen)
        lengths[0] = t
        mask = (torch.arange(t)[None, :] < lengths[:, None]).long()
        docs = torch.randperm(100, generator=gen)[:b]
        cpu, gpu = reduce("cpu", g, u, a, mask, docs), reduce("cuda", g, u, a, mask, docs)
        for key in cpu:
            if key == "post_sum":
                ok = torch.allclose(cpu[key].double(), gpu[key].double(), rtol=1e-5, atol=2 ** 12)
            else:
                ok = torch.equal(cpu[key], gpu[key])
            failures += not ok
            print(f"{str(dtype):16s} {key:18s} {'ok' if ok else 'MISMATCH'}")
    print("GPU checks:", "all passed" if not failures else f"{failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
