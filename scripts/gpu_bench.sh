#!/usr/bin/env bash
# One-GPU measurements at FLUX.1-dev size (random weights, 1024x1024: 4096 image + 512 text
# tokens): our transformer step on CUDA in bf16, Q8_0 and Q4_0 (weights kept quantized), on
# wgpu (Vulkan), and diffusers' step in bf16 on the same card, each with the GPU's peak memory.
#
#   BENCH=path/to/bench bash scripts/gpu_bench.sh [OUT_DIR]
#
# BENCH: `cargo build --release --example bench --features cuda,wgpu` (target/release/examples/
# bench by default). PyTorch and diffusers must import (`--device cuda` in bench_torch.py).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-/tmp/gpu_bench}}
mkdir -p "$OUT"
BENCH=${BENCH:-target/release/examples/bench}
REPS=${REPS:-5}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
lscpu | grep -m1 'Model name' | tee -a "$OUT/gpu.txt"

# One measurement: the command's output, and the peak of the GPU's used memory sampled every
# 100 ms while it runs (the idle baseline is printed first).
measure() {
  local name=$1 limit=$2
  shift 2
  local base
  base=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 >"$OUT/mem_$name.txt" &
  local sampler=$!
  local start=$SECONDS
  timeout "$limit" "$@" >"$OUT/$name.txt" 2>&1
  local rc=$?
  kill "$sampler" 2>/dev/null
  wait "$sampler" 2>/dev/null
  local peak
  peak=$(sort -n "$OUT/mem_$name.txt" | tail -1)
  echo "== $name: rc $rc, $((SECONDS - start)) s, GPU memory idle ${base} MiB, peak ${peak} MiB"
  tail -4 "$OUT/$name.txt"
}

dev="transformer --size dev --reps $REPS --warmup 2"
if [ -n "${CUDA_SWEEP:-}" ]; then
  for size in tiny small medium; do
    measure "cuda_${size}_f32" 40 "$BENCH" transformer --size $size --reps 2 --warmup 1 --backend cuda
  done
fi
measure cuda_bf16 100 "$BENCH" $dev --backend cuda --dtype bf16 --fill
measure torch_bf16 60 python3 scripts/reference/bench_torch.py --size dev --device cuda --dtype bf16 --reps "$REPS" --warmup 2
measure cuda_q8_0 100 "$BENCH" $dev --backend cuda --dtype bf16 --fill --quantize q8_0
measure cuda_q4_0 100 "$BENCH" $dev --backend cuda --dtype bf16 --fill --quantize q4_0
[ -z "${SKIP_WGPU_DENSE:-}" ] && measure wgpu_f16 75 "$BENCH" $dev --backend wgpu --dtype f16 --fill
[ -z "${SKIP_WGPU_Q:-}" ] && measure wgpu_f16_q8_0 90 "$BENCH" $dev --backend wgpu --dtype f16 --fill --quantize q8_0
