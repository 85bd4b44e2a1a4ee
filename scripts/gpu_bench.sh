#!/usr/bin/env bash
# One-GPU measurements at FLUX.1-dev size, every row beside PyTorch's in the same call:
#   1. attention at FLUX's shape (bf16, 1x24x4608x128 = 1024x1024; `kontext` 8704 tokens):
#      PyTorch's SDPA and each of our CubeCL strategies (FLUX_GPU_ATTENTION), each checked
#      against the f32 formula on its inputs (a run above the bound fails the script);
#   2. one transformer step (random `--fill` weights, 4096 image + 512 text tokens, bf16):
#      diffusers' and ours with the default and the materialized attention, and with burn's
#      matmul autotune when BENCH_AUTOTUNE names a binary built with `autotune`;
#      then one step under cubecl's kernel profiler (profile.txt; NO_PROFILE=1 skips it);
#   3. optional (FULL=1): the quantized steps (Q8_0, Q4_0) and wgpu (Vulkan, f16).
# Each row prints its time, its stderr's notes (the attention in use, any refused flash
# launch) and the GPU's peak memory sampled every 100 ms; a table ends the run.
#
#   BENCH=target/release/examples/bench [BENCH_AUTOTUNE=...] bash scripts/gpu_bench.sh [OUT_DIR]
#
# BENCH: `cargo build --release --example bench --features cuda,wgpu`; BENCH_AUTOTUNE the same
# with `--features cuda,wgpu,autotune` (copied aside: both build to the same path). PyTorch and
# diffusers must import. About 6 minutes on an H100 without FULL (the autotuned binary tunes
# each new matmul shape on its first step: minutes on a fresh machine).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-/tmp/gpu_bench}}
mkdir -p "$OUT"
BENCH=${BENCH:-target/release/examples/bench}
REPS=${REPS:-5}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
lscpu | grep -m1 'Model name' | tee -a "$OUT/gpu.txt"
failed=0
ROWS=()

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
  grep -E '^(max_abs_err|gpu_attention|refused|error)' "$OUT/$name.txt" | head -5
  tail -2 "$OUT/$name.txt"
  local ms
  ms=$(awk '$1 == "median_ms" {print $2}' "$OUT/$name.txt" | tail -1)
  ROWS+=("| $name | ${ms:-failed (rc $rc)} | ${peak} |")
  [ "$rc" = 0 ] || failed=1
}

# 1. Attention, alternated: SDPA, then each strategy; SDPA once more at the end.
attn="attention --backend cuda --dtype bf16"
for size in dev kontext; do
  measure "sdpa_${size}" 60 python3 scripts/reference/bench_sdpa.py --size $size --dtype bf16
  for strategy in flash flash:2 flash:8 materialized; do
    FLUX_GPU_ATTENTION=$strategy measure "attn_${size}_${strategy/:/_}" 60 "$BENCH" $attn --size $size --reps 10 --warmup 2
  done
done
FLUX_GPU_ATTENTION=unit measure attn_dev_unit 60 "$BENCH" $attn --size dev --reps 3 --warmup 1
# Shapes off every tile size (partial blocks of queries and keys), for parity only.
measure attn_odd_flash 60 "$BENCH" $attn --size 2x3x333x128 --reps 1 --warmup 0
FLUX_GPU_ATTENTION=materialized measure attn_odd_materialized 60 "$BENCH" $attn --size 2x3x333x128 --reps 1 --warmup 0
measure sdpa_dev_again 60 python3 scripts/reference/bench_sdpa.py --size dev --dtype bf16

# 2. The step.
dev="transformer --size dev --reps $REPS --warmup 2 --backend cuda --dtype bf16 --fill"
measure torch_bf16 90 python3 scripts/reference/bench_torch.py --size dev --device cuda --dtype bf16 --reps "$REPS" --warmup 2
measure cuda_bf16 120 "$BENCH" $dev
FLUX_GPU_ATTENTION=materialized measure cuda_bf16_materialized 120 "$BENCH" $dev
if [ -n "${BENCH_AUTOTUNE:-}" ]; then
  measure cuda_bf16_autotune 300 "$BENCH_AUTOTUNE" $dev
fi
# Where the step's GPU time goes: cubecl's profiler times every kernel (synchronising after
# each, so the step itself is slower) and prints a table per step; the last one is kept.
if [ -z "${NO_PROFILE:-}" ]; then
  CUBECL_DEBUG_LOG="$OUT/cubecl.log" CUBECL_DEBUG_OPTION=profile \
    measure cuda_bf16_profiled 150 "$BENCH" transformer --size dev --reps 1 --warmup 1 \
    --backend cuda --dtype bf16 --fill
  [ -f "$OUT/cubecl.log" ] && tac "$OUT/cubecl.log" | sed '/| Name/q' | tac | head -42 | awk -F'|' 'NF > 5 {
      name = $2; for (i = 3; i <= NF - 4; i++) name = name "|" $i; gsub(/ +/, " ", name)
      printf "%-70.70s %14s %6s %6s\n", name, $(NF-3), $(NF-2), $(NF-1) }' >"$OUT/profile.txt"
  rm -f "$OUT/cubecl.log"
  cat "$OUT/profile.txt" 2>/dev/null
fi

# 3. Quantized weights and wgpu.
if [ -n "${FULL:-}" ]; then
  measure cuda_q8_0 120 "$BENCH" $dev --quantize q8_0
  measure cuda_q4_0 120 "$BENCH" $dev --quantize q4_0
  measure wgpu_f16 90 "$BENCH" transformer --size dev --reps "$REPS" --warmup 2 --backend wgpu --dtype f16 --fill
fi

echo
echo "| run | median ms | peak GPU MiB |"
echo "|---|---|---|"
printf '%s\n' "${ROWS[@]}"
if [ "$failed" != 0 ]; then
  echo "FAILED: a run above exited non-zero (a parity bound, a refused launch's error, a timeout)"
  exit 1
fi
