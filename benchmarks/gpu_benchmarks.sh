#!/usr/bin/env bash
# The GPU checks of the benchmarks, in one call (device machine: PyTorch and transformers preinstalled).
set -u
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
python3 benchmarks/gpu_checks.py 2>&1 | tee "$OUT/gpu_checks.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
python3 benchmarks/bench_neuroscope.py --random olmo-7b --device cuda --batch_size 8 --seq_len 1024 --batches 24 2>&1 \
  | grep -v "it/s]" | tee "$OUT/neuroscope_gpu.txt"
python3 benchmarks/bench_roles.py --device cuda --layers 32 2>&1 | grep -v "it/s]" | tee "$OUT/roles_gpu.txt"
python3 benchmarks/gpu_reducer_ops.py 2>&1 | tee "$OUT/reducer_ops.txt"
