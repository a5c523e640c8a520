#!/usr/bin/env bash
# The GPU checks and benchmarks in one call, on one GPU (device machine: PyTorch and transformers preinstalled):
#   bash benchmarks/gpu_benchmarks.sh                     # outputs in $OUT (default /tmp/out)
#   DEVICE=cpu bash benchmarks/gpu_benchmarks.sh          # dry run on the CPU: the checks and the table, tiny shapes
# 1. the correctness checks of the GPU code paths (gpu_checks.py);
# 2. THE table (gpu_pipeline.py): the activation pass, an ablation pass, b_activations.py, the recompute + viewer
#    write and the connections, each against a bare forward pass of a random OLMo-7B bf16 at 8 x 1024;
# 3. if time is left: the reducer's pieces, the weight-side roles, the pass with and without typical examples.
# A total budget (BUDGET_S, default 540 s) bounds the whole: each step gets at most what is left and the steps
# that no longer fit are skipped with a note. Every step's output is teed into $OUT/<step>.txt.
set -u
cd "$(dirname "$0")/.." || exit 2
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-/tmp/out}
DEVICE=${DEVICE:-cuda}
BUDGET_S=${BUDGET_S:-540}
MIN_STEP_S=30  # a step is not started with less than this left
mkdir -p "$OUT"
START=$(date +%s)

left() { echo $((BUDGET_S - ($(date +%s) - START))); }

# step NAME COMMAND...: run COMMAND with what is left of the budget, tee its output into $OUT/NAME.txt
step() {
  local name=$1; shift
  local remaining; remaining=$(left)
  if [ "$remaining" -lt "$MIN_STEP_S" ]; then
    echo "$name: skipped (${remaining} s of the ${BUDGET_S} s budget left)" | tee -a "$OUT/skipped.txt"
    return 0
  fi
  echo "== $name (at most ${remaining} s)"
  timeout --kill-after=10 "$remaining" "$@" 2>&1 | grep --line-buffered -v "it/s]" | tee "$OUT/$name.txt"
  local status=${PIPESTATUS[0]}
  [ "$status" -eq 0 ] || echo "$name: exit $status" | tee -a "$OUT/failed.txt"
}

PYTHON=${PYTHON:-python3}
{
  [ "$DEVICE" = cpu ] || nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$PYTHON" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
} 2>&1 | tee "$OUT/environment.txt"
step gpu_checks "$PYTHON" benchmarks/gpu_checks.py --device "$DEVICE"
if [ "$DEVICE" = cpu ]; then  # the dry run: tiny shapes, and nothing that needs CUDA
  SHAPE=(--shape olmo-test --batch_size 2 --seq_len 32 --batches 2 --k 2 --typical 1)
else
  SHAPE=(--shape olmo-7b --batch_size 8 --seq_len 1024 --batches 8)
fi
# the pipeline's own budget: what is left, less a margin for it to print its table
step pipeline_gpu "$PYTHON" benchmarks/gpu_pipeline.py --device "$DEVICE" "${SHAPE[@]}" \
  --budget_s $(( $(left) - 120 )) --save "$OUT/pipeline_gpu_table.md"
if [ "$DEVICE" = cpu ]; then
  echo "total $(( $(date +%s) - START )) s (dry run)" | tee "$OUT/total.txt"
  exit 0
fi
step reducer_ops "$PYTHON" benchmarks/gpu_reducer_ops.py
step roles_gpu "$PYTHON" benchmarks/bench_roles.py --device cuda --layers 32
step neuroscope_gpu "$PYTHON" benchmarks/bench_neuroscope.py --random olmo-7b --device cuda --batch_size 8 --seq_len 1024 --batches 12
echo "total $(( $(date +%s) - START )) s of the ${BUDGET_S} s budget" | tee "$OUT/total.txt"
