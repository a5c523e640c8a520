"""Role statistics (moments of cos(w_out, W_U) over the vocabulary) on an OLMo-7B-0424-shaped model.

Random weights: 32 layers x 11008 neurons, d_model 4096, vocabulary 50304. Times
`roles.unembed_moments` on a few layers (CPU) or all of them (GPU) and extrapolates to the
whole model; reports peak memory next to the size of one layer's cosine matrix, the bound
that the seed's full [layer neuron vocab] matrix (71 GB) broke.

  python benchmarks/bench_roles.py --layers 2            # CPU: 2 layers, extrapolated
  python benchmarks/bench_roles.py --device cuda --layers 32
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import torch

from wcos_casestudies.roles import unembed_moments


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--layers", type=int, default=2, help="layers to time (of 32)")
    parser.add_argument("--chunk", type=int, default=2048, help="neurons per matrix product")
    args = parser.parse_args()
    n_layers, d_mlp, d_model, vocab = 32, 11008, 4096, 50304
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    w_u = torch.randn(d_model, vocab, generator=gen)
    outs = [torch.randn(d_mlp, d_model, generator=gen) for _ in range(min(args.layers, 2))]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        w_u = w_u.to(device)
        outs = [o.to(device) for o in outs]
        unembed_moments(iter(outs[:1]), w_u, 1, device=device, chunk=args.chunk)  # warm-up
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    unembed_moments((outs[i % len(outs)] for i in range(args.layers)), w_u, args.layers, device=device, chunk=args.chunk)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    per_layer = seconds / args.layers
    one_layer_matrix_gb = d_mlp * vocab * 4 / 1e9
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 1e9
        peak_label = "peak GPU memory allocated GB"
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
        peak_label = "peak RSS GB (process)"
    weights_gb = (w_u.numel() + sum(o.numel() for o in outs)) * 4 / 1e9
    print(f"\n| device | layers timed | s per layer | projected s for 32 layers | {peak_label} | weights held GB | one layer's cosine matrix GB | seed's full matrix GB |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'} | {args.layers} | {per_layer:.2f} | "
          f"{per_layer * n_layers:.0f} | {peak:.2f} | {weights_gb:.2f} | {one_layer_matrix_gb:.2f} | "
          f"{one_layer_matrix_gb * n_layers:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
