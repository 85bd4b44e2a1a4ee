"""Bare f32 matrix products at FLUX.1's shapes: PyTorch's against our `bench matmul`, alternated.

    python scripts/reference/bench_matmul.py --threads 2 --rounds 3
    python scripts/reference/bench_matmul.py --shapes 4608x3072x3072 --backends flex ndarray

Each round times every shape with PyTorch (`torch.mm`, `--threads` threads) in this process,
then with the Rust example as a child (`RAYON_NUM_THREADS=--threads`, once per backend), each
the median of `--reps` products after one warm-up. Prints GFLOP/s per round and the medians.
"""
import argparse
import os
import statistics
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# FLUX.1 at 1024x1024: 4096 image + 512 text tokens, width 3072.
SHAPES = ["4608x3072x3072", "4608x3072x9216", "4608x3072x12288", "4608x12288x3072",
          "4608x15360x3072"]


def torch_gflops(shape, reps, threads):
    import torch

    torch.set_num_threads(threads)
    m, k, n = map(int, shape.split("x"))
    a, b = torch.rand(m, k), torch.rand(k, n)
    times = []
    with torch.inference_mode():
        for i in range(reps + 1):
            start = time.perf_counter()
            torch.mm(a, b)
            if i:
                times.append(time.perf_counter() - start)
    return 2 * m * k * n / statistics.median(times) / 1e9


def ours_gflops(shape, reps, threads, backend, binary):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    cmd = [str(ROOT / binary), "matmul", "--size", shape, "--reps", str(reps), "--warmup", "1",
           "--backend", backend]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    lines = dict(line.split(maxsplit=1) for line in out.strip().splitlines() if " " in line)
    return float(lines["gflops"])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", nargs="+", default=SHAPES)
    p.add_argument("--backends", nargs="+", default=["flex"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--binary", default="target/release/examples/bench")
    args = p.parse_args()
    import torch

    print(f"torch {torch.__version__}, capability {torch.backends.cpu.get_cpu_capability()}, "
          f"threads {args.threads}")
    results = {}
    for r in range(args.rounds):
        for shape in args.shapes:
            row = {"torch": torch_gflops(shape, args.reps, args.threads)}
            for backend in args.backends:
                row[backend] = ours_gflops(shape, args.reps, args.threads, backend, args.binary)
            for who, g in row.items():
                results.setdefault((shape, who), []).append(g)
            print(f"round {r} {shape}: " + ", ".join(f"{w} {g:.1f}" for w, g in row.items()),
                  flush=True)
    print("| shape (m x k x n) | " + " | ".join(["torch", *args.backends]) + " | ours / torch |")
    for shape in args.shapes:
        med = {w: statistics.median(results[(shape, w)]) for w in ["torch", *args.backends]}
        ratio = med[args.backends[0]] / med["torch"]
        print(f"| {shape} | " + " | ".join(f"{g:.1f}" for g in med.values()) + f" | {ratio:.2f} |")


if __name__ == "__main__":
    main()
