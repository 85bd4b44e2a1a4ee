"""PyTorch baseline for the transformer benchmark, and a driver that compares it with ours.

Times one denoising step of diffusers' `FluxTransformer2DModel` (eager, no_grad, random
weights) at the named sizes of `examples/bench.rs` and prints `median_ms <number>` as the
last line, like the Rust example does.

    python scripts/reference/bench_torch.py --size small --threads 2
    python scripts/reference/bench_torch.py --size small --compare --backend flex --rounds 5
    python scripts/reference/bench_torch.py --size dev --device cuda --dtype bf16 --reps 10
    python scripts/reference/bench_torch.py --size medium --save-bfl medium.safetensors

`--save-bfl PATH` writes the size's random weights (the model this script times) in the BFL
layout of the released checkpoints, f32, for the other implementations' benchmarks to load
(`bench --checkpoint`, candle, stable-diffusion.cpp), and exits.

`--device cuda` builds the model straight on the GPU in `--dtype` (no f32 copy on the CPU; the
12B-parameter `dev` size takes seconds), synchronizes around each timed step, and also prints
`torch <version> cuda <device name>` and `peak_mem_gib <max_memory_allocated / 2^30>`.
`--attn sdpa` (the only choice) is diffusers' default processor, torch's
scaled_dot_product_attention.

`--compare` runs this script and the Rust example (built first with
`cargo build --release --example bench`) as child processes, alternating, `--rounds` times,
and prints both medians and the ratio ours / PyTorch. Both sides use the same number of
threads (`--threads`; the Rust side through RAYON_NUM_THREADS). `--against candle` or
`--against sdcpp-default|sdcpp-llamafile` alternates with the other native ports instead
(`candle_bench/`, `bench_sdcpp.sh`); both sides then load the same `--checkpoint`:

    python scripts/reference/bench_torch.py --size medium --save-bfl target/medium.safetensors
    python scripts/reference/bench_torch.py --size medium --compare --against sdcpp-llamafile \
        --checkpoint target/medium.safetensors --reps 3
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# The sizes of examples/bench.rs; keep the two lists identical.
# (hidden, heads, double blocks, single blocks, image tokens, text tokens, context, vec)
SIZES = {
    "tiny": (128, 4, 1, 2, 256, 64, 256, 64),
    "small": (512, 8, 2, 4, 1024, 256, 4096, 768),
    # A 512x512 image through the real FLUX.1-dev width, depth reduced (for CPU ratios).
    "medium": (3072, 24, 1, 2, 1024, 512, 4096, 768),
    "dev": (3072, 24, 19, 38, 4096, 512, 4096, 768),
}


def rope_axes(head_dim):
    """The released RoPE split (hd/8, 7hd/16, 7hd/16): [16, 56, 56] at head dim 128."""
    return (head_dim // 8, head_dim * 7 // 16, head_dim * 7 // 16)


def build(size, dtype, device="cpu"):
    import torch
    from diffusers import FluxTransformer2DModel

    hidden, heads, double, single, n_img, n_txt, context, vec = SIZES[size]
    head_dim = hidden // heads
    torch.manual_seed(0)
    config = dict(
        patch_size=1,
        in_channels=64,
        num_layers=double,
        num_single_layers=single,
        attention_head_dim=head_dim,
        num_attention_heads=heads,
        joint_attention_dim=context,
        pooled_projection_dim=vec,
        guidance_embeds=True,
        axes_dims_rope=rope_axes(head_dim),
    )
    if device == "cpu":
        model = FluxTransformer2DModel(**config).to(dtype).eval()
    else:
        # Parameters are created (and randomly initialized) on the device in `dtype`.
        default = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            with torch.device(device):
                model = FluxTransformer2DModel(**config).eval()
        finally:
            torch.set_default_dtype(default)
    side = int(n_img**0.5)
    assert side * side == n_img, "image tokens must make a square grid"
    img_ids = torch.zeros(n_img, 3)
    img_ids[:, 1] = torch.arange(side).repeat_interleave(side).float()
    img_ids[:, 2] = torch.arange(side).repeat(side).float()
    inputs = dict(
        hidden_states=torch.randn(1, n_img, 64, dtype=dtype),
        encoder_hidden_states=torch.randn(1, n_txt, context, dtype=dtype),
        pooled_projections=torch.randn(1, vec, dtype=dtype),
        timestep=torch.tensor([0.7], dtype=dtype),
        guidance=torch.tensor([3.5], dtype=dtype),
        img_ids=img_ids,
        txt_ids=torch.zeros(n_txt, 3),
    )
    inputs = {k: v.to(device) for k, v in inputs.items()}
    return model, dict(inputs, return_dict=False)


def bench(args):
    import torch

    torch.set_num_threads(args.threads)
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    if args.device == "cuda":
        return bench_cuda(args, dtype)
    model, inputs = build(args.size, dtype)
    times, cpu = [], []
    with torch.inference_mode():
        for i in range(args.warmup + args.reps):
            start, cpu_start = time.perf_counter(), time.process_time()
            out = model(**inputs)[0]
            elapsed = (time.perf_counter() - start) * 1e3
            if i >= args.warmup:
                times.append(elapsed)
                cpu.append((time.process_time() - cpu_start) * 1e3)
    assert torch.isfinite(out).all()
    print(f"torch {torch.__version__} threads {torch.get_num_threads()} dtype {args.dtype}")
    print("times_ms " + " ".join(f"{t:.1f}" for t in times))
    # CPU time of all threads (includes OpenMP spin-waiting): less sensitive to other load.
    print(f"cpu_median_ms {statistics.median(cpu):.0f}")
    print(f"median_ms {statistics.median(times):.2f}")


def bench_cuda(args, dtype):
    import torch

    start = time.perf_counter()
    model, inputs = build(args.size, dtype, "cuda")
    torch.cuda.synchronize()
    params = sum(p.numel() for p in model.parameters())
    print(f"torch {torch.__version__} cuda {torch.cuda.get_device_name()}")
    print(f"dtype {args.dtype} attn {args.attn} params {params} "
          f"build_s {time.perf_counter() - start:.1f}", flush=True)
    times = []
    with torch.inference_mode():
        for i in range(args.warmup + args.reps):
            torch.cuda.synchronize()
            start = time.perf_counter()
            out = model(**inputs)[0]
            torch.cuda.synchronize()
            elapsed = (time.perf_counter() - start) * 1e3
            if i >= args.warmup:
                times.append(elapsed)
    assert torch.isfinite(out).all() and out.ne(0).any()
    print("times_ms " + " ".join(f"{t:.2f}" for t in times))
    print(f"peak_mem_gib {torch.cuda.max_memory_allocated() / 2**30:.2f}")
    print(f"median_ms {statistics.median(times):.2f}")


def save_bfl(args):
    import torch
    from safetensors.torch import save_file

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from gen_flux import diffusers_to_bfl

    _, _, double, single, *_ = SIZES[args.size]
    model, _ = build(args.size, torch.float32)
    bfl = diffusers_to_bfl(model.state_dict(), double, single)
    save_file({k: v.contiguous() for k, v in bfl.items()}, args.save_bfl)
    print(f"wrote {args.save_bfl}: {len(bfl)} tensors, "
          f"{sum(v.numel() for v in bfl.values())} parameters")


def medians_of(cmd, env):
    """(wall median, CPU median) in ms from a child's `cpu_median_ms` / `median_ms` lines."""
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    lines = dict(line.split(maxsplit=1) for line in out.strip().splitlines() if " " in line)
    assert "median_ms" in lines, f"no median_ms line from {cmd}:\n{out}"
    return float(lines["median_ms"]), float(lines.get("cpu_median_ms", "nan"))


def reference_cmd(args, common):
    """The command timing the other side of `--compare`: this script (PyTorch), candle's
    benchmark (`candle_bench/`) or stable-diffusion.cpp (`bench_sdcpp.sh`, one variant)."""
    if args.against == "torch":
        return [sys.executable, __file__, *common, "--threads", str(args.threads),
                "--dtype", args.dtype, "--device", args.device, "--attn", args.attn]
    if not args.checkpoint:
        sys.exit(f"--against {args.against} loads its weights: give --checkpoint "
                 "(written by --save-bfl)")
    if args.against == "candle":
        return [str(ROOT / args.candle_binary), "--checkpoint", args.checkpoint, *common]
    variant = args.against.removeprefix("sdcpp-")
    # sd.cpp times every sampling step of one generation: warm-up and timed steps alike.
    os.environ.update(FLUX_MODEL=args.checkpoint, STEPS=str(args.warmup + args.reps),
                      THREADS=str(args.threads))
    return ["bash", str(ROOT / "scripts/reference/bench_sdcpp.sh"), "run", args.sdcpp_build,
            variant]


def compare(args):
    common = ["--size", args.size, "--reps", str(args.reps), "--warmup", str(args.warmup)]
    theirs_cmd = reference_cmd(args, common)
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    ours_cmd = [str(ROOT / args.binary), "transformer", *common, "--backend", args.backend]
    if args.checkpoint:
        ours_cmd += ["--checkpoint", args.checkpoint]
    name = args.against
    ours, theirs, ours_cpu, theirs_cpu = [], [], [], []
    for r in range(args.rounds):
        wall, cpu = medians_of(theirs_cmd, env)
        theirs.append(wall)
        theirs_cpu.append(cpu)
        wall, cpu = medians_of(ours_cmd, env)
        ours.append(wall)
        ours_cpu.append(cpu)
        print(f"round {r}: ours {ours[-1]:.1f} ms (cpu {ours_cpu[-1]:.0f}), "
              f"{name} {theirs[-1]:.1f} ms (cpu {theirs_cpu[-1]:.0f}), "
              f"ratio {ours[-1] / theirs[-1]:.2f}", flush=True)
    o, t = statistics.median(ours), statistics.median(theirs)
    oc, tc = statistics.median(ours_cpu), statistics.median(theirs_cpu)
    print(f"size {args.size} backend {args.backend} threads {args.threads}: "
          f"ours {o:.1f} ms, {name} {t:.1f} ms; cpu time ours {oc:.0f} ms, {name} {tc:.0f} ms, "
          f"cpu ratio {oc / tc:.2f}")
    print(f"ratio {o / t:.2f}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=SIZES, default="small")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--attn", choices=["sdpa"], default="sdpa",
                   help="attention: diffusers' default processor (scaled_dot_product_attention)")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--compare", action="store_true", help="alternate with the Rust example")
    p.add_argument("--save-bfl", metavar="PATH", help="write the size's weights (BFL layout) and exit")
    p.add_argument("--backend", default="flex", help="--compare: our backend (flex, ndarray)")
    p.add_argument("--rounds", type=int, default=3, help="--compare: alternations")
    p.add_argument("--binary", default="target/release/examples/bench",
                   help="--compare: the Rust example, relative to the repository root")
    p.add_argument("--against", default="torch",
                   choices=["torch", "candle", "sdcpp-default", "sdcpp-llamafile"],
                   help="--compare: the other side (candle and sd.cpp need --checkpoint)")
    p.add_argument("--checkpoint", help="--compare: BFL-layout weights both sides load")
    p.add_argument("--candle-binary", default="target/candle/release/candle_bench",
                   help="--against candle: candle_bench/, built with "
                        "CARGO_TARGET_DIR=target/candle")
    p.add_argument("--sdcpp-build", default="target/sdcpp/build",
                   help="--against sdcpp-*: the BUILD_DIR of bench_sdcpp.sh build")
    args = p.parse_args()
    if args.save_bfl:
        save_bfl(args)
    elif args.compare:
        compare(args)
    else:
        bench(args)


if __name__ == "__main__":
    main()
