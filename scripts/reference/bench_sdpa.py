"""PyTorch's attention at FLUX's shapes on a GPU: the reference for `bench attention`.

Times `torch.nn.functional.scaled_dot_product_attention` (what diffusers' FLUX attention
processor calls, its backend chosen by PyTorch) on the same shapes and inputs as our
`bench attention` workload (q ~ N(0, 9), k, v ~ N(0, 1); `dev` = 1x24x4608x128, `kontext` =
1x24x8704x128, or BxHxSxD), prints its max abs error against the f32 product formula, and
`median_ms <number>` last, like the Rust example.

    python scripts/reference/bench_sdpa.py --size dev --dtype bf16 --reps 20
"""

import argparse
import statistics

SIZES = {"dev": (1, 24, 4608, 128), "kontext": (1, 24, 8704, 128)}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="dev", help="dev, kontext or BxHxSxD")
    p.add_argument("--dtype", choices=["bf16", "f16", "f32"], default="bf16")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    args = p.parse_args()

    import torch
    import torch.nn.functional as F

    b, h, s, d = SIZES.get(args.size) or tuple(int(x) for x in args.size.split("x"))
    dtype = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}[args.dtype]
    gen = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(b, h, s, d, device="cuda", generator=gen) * std
               for std in (3.0, 1.0, 1.0))
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    print(f"torch {torch.__version__} cuda {torch.cuda.get_device_name()}")
    print(f"sdpa [{b}, {h}, {s}, {d}] {args.dtype}")

    with torch.inference_mode():
        out = F.scaled_dot_product_attention(q, k, v).float()
        err = 0.0
        for head in range(h):  # the f32 formula a head at a time, as ours
            qh, kh, vh = (t[:, head:head + 1].float() for t in (q, k, v))
            want = torch.softmax(qh @ kh.transpose(-1, -2) / d ** 0.5, dim=-1) @ vh
            err = max(err, (out[:, head:head + 1] - want).abs().max().item())
        print(f"max_abs_err {err:.3e}")
        times = []
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        for i in range(args.warmup + args.reps):
            start.record()
            F.scaled_dot_product_attention(q, k, v)
            end.record()
            torch.cuda.synchronize()
            if i >= args.warmup:
                times.append(start.elapsed_time(end))
    ms = statistics.median(times)
    print("times_ms " + " ".join(f"{t:.3f}" for t in times))
    print(f"tflops {4 * b * h * s * s * d / ms / 1e9:.2f}")
    print(f"median_ms {ms:.3f}")


if __name__ == "__main__":
    main()
