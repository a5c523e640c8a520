"""Time the pieces of the activation pass's per-layer reduction on one OLMo-7B-sized layer (GPU)."""

from __future__ import annotations

import torch


def timed(fn, repeat: int = 20) -> float:
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeat):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeat


def main() -> None:
    torch.manual_seed(0)
    b, t, n = 8, 1024, 11008
    a, g, u = (torch.randn(b, t, n, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    ones = torch.ones(1, b * t, device="cuda", dtype=torch.bfloat16)
    ops = {
        "a.float()": lambda: a.float(),
        "a.max(dim=1) bf16": lambda: a.max(dim=1),
        "a.float().max(dim=1)": lambda: a.float().max(dim=1),
        "a.amax(dim=1)": lambda: a.amax(dim=1),
        "a.sum((0,1)) fp32 acc": lambda: a.sum(dim=(0, 1), dtype=torch.float32),
        "(g>0).sum((0,1))": lambda: (g > 0).sum(dim=(0, 1)),
        "(g>0)&(u>0) sum": lambda: ((g > 0) & (u > 0)).sum(dim=(0, 1)),
        "ones @ (g>0).bf16": lambda: ones @ (g > 0).to(torch.bfloat16).view(b * t, n),
        "count_nonzero(g>0)": lambda: torch.count_nonzero(g > 0, dim=(0, 1)),
        "(g>0).sum(int32)": lambda: (g > 0).sum(dim=(0, 1), dtype=torch.int32),
        "ones @ [g>0, u>0, both] bf16": lambda: ones @ torch.cat([(g > 0), (u > 0), (g > 0) & (u > 0)], dim=-1).to(torch.bfloat16).view(b * t, 3 * n),
    }
    for name, fn in ops.items():
        print(f"{name:32s} {timed(fn):7.3f} ms")


if __name__ == "__main__":
    main()
