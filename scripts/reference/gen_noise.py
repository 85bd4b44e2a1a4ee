"""Golden fixtures for flux-sampler's torch-compatible noise.

Writes flux-sampler/tests/fixtures/noise.safetensors with what
`torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed), dtype=dtype)` returns,
for the AVX2 kernel (this machine's default) and, by re-running itself under
`ATEN_CPU_CAPABILITY=default`, for torch's scalar kernel (what AVX-512 and non-x86 CPUs run).

Keys (values in the dtype torch produced; the Rust tests compare bit patterns):
  small.<kernel>.<dtype>.s<seed>.n<n>       every value of a flat draw of n elements
  large.<kernel>.<case>.head / .tail       first / last 4096 values of a full latent draw
  large.<kernel>.<case>.sha256             SHA-256 of the little-endian bytes of the whole draw
  large.<kernel>.<case>.shape / .seed      the drawn shape (i64) and seed (u64 as i64 bits)
  seq.<i>                                   successive draws from one generator (seed 3)
  rare.s<seed>.n<n>                         last 16 values of draws whose final block holds a uniform
                                            of exactly 0 (u1 = 1: radius 0; u2 = 0: angle 0)
Run from the repository root: .venv/bin/python scripts/reference/gen_noise.py
"""

import hashlib
import os
import subprocess
import sys
import types

import torch
from safetensors.torch import load_file, save_file

OUT = "flux-sampler/tests/fixtures/noise.safetensors"
SEEDS = [0, 1, 42, 2**32 + 5, 2**63 - 1]
SIZES = [1, 7, 15, 16, 17, 100, 1000, 4097]
DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}
EDGE = 4096


def randn(shape, seed, dtype):
    return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed), dtype=dtype)


def diffusers_latents(batch, height, width, dtype, seed):
    """FluxPipeline.prepare_latents, unpacked again: checks the shape we document."""
    from diffusers import FluxPipeline

    stub = types.SimpleNamespace(
        vae_scale_factor=8,
        _pack_latents=FluxPipeline._pack_latents,
        _prepare_latent_image_ids=FluxPipeline._prepare_latent_image_ids,
    )
    gen = torch.Generator("cpu").manual_seed(seed)
    packed, _ = FluxPipeline.prepare_latents(stub, batch, 16, height, width, dtype, "cpu", gen)
    h, w = 2 * (height // 16), 2 * (width // 16)
    direct = randn((batch, 16, h, w), seed, dtype)
    assert torch.equal(packed, FluxPipeline._pack_latents(direct, batch, 16, h, w))
    return direct


def bfl_get_noise(num_samples, height, width, dtype, seed):
    """BFL's src/flux/sampling.py get_noise with device="cpu"."""
    return torch.randn(
        num_samples,
        16,
        2 * ((height + 15) // 16),
        2 * ((width + 15) // 16),
        dtype=dtype,
        generator=torch.Generator("cpu").manual_seed(seed),
    )


# (case, seed, dtype, draw)
LARGE = [
    ("diffusers_1024_f32", 0, "f32", lambda d, s: diffusers_latents(1, 1024, 1024, d, s)),
    ("diffusers_1024_bf16", 42, "bf16", lambda d, s: diffusers_latents(1, 1024, 1024, d, s)),
    ("diffusers_768x1360_f32", 1, "f32", lambda d, s: diffusers_latents(1, 768, 1360, d, s)),
    ("diffusers_768x1360_bf16", 2**63 - 1, "bf16", lambda d, s: diffusers_latents(1, 768, 1360, d, s)),
    ("bfl_1024_bf16", 2**32 + 5, "bf16", lambda d, s: bfl_get_noise(1, 1024, 1024, d, s)),
    ("bfl_1000x1000_bf16", 7, "bf16", lambda d, s: bfl_get_noise(1, 1000, 1000, d, s)),
    ("diffusers_batch2_512x768_f16", 9, "f16", lambda d, s: diffusers_latents(2, 512, 768, d, s)),
]


def raw_bytes(t):
    """The tensor's bytes, little-endian (what the Rust test hashes)."""
    view, layout = {torch.float32: (torch.int32, "<i4"), torch.bfloat16: (torch.int16, "<i2"),
                    torch.float16: (torch.int16, "<i2")}[t.dtype]
    return t.contiguous().view(view).numpy().astype(layout).tobytes()


def kernel_tensors(kernel, seeds, large):
    out = {}
    for seed in seeds:
        for name, dtype in DTYPES.items():
            for n in SIZES:
                out[f"small.{kernel}.{name}.s{seed}.n{n}"] = randn(n, seed, dtype)
    for case, seed, name, draw in large:
        t = draw(DTYPES[name], seed)
        flat = t.flatten()
        out[f"large.{kernel}.{case}.head"] = flat[:EDGE].clone()
        out[f"large.{kernel}.{case}.tail"] = flat[-EDGE:].clone()
        digest = hashlib.sha256(raw_bytes(flat)).digest()
        out[f"large.{kernel}.{case}.sha256"] = torch.tensor(list(digest), dtype=torch.uint8)
        out[f"large.{kernel}.{case}.shape"] = torch.tensor(list(t.shape), dtype=torch.int64)
        out[f"large.{kernel}.{case}.seed"] = torch.tensor([seed], dtype=torch.uint64).view(torch.int64)
    return out


def sequence_tensors():
    """One generator, several calls: img2img's two draws, the cached normal across small calls."""
    g = torch.Generator("cpu").manual_seed(3)
    draws = [
        ((1, 16, 8, 8), torch.float32),
        ((1, 16, 8, 8), torch.float32),
        ((5,), torch.float32),
        ((3,), torch.float32),
        ((17,), torch.bfloat16),
        ((1,), torch.bfloat16),
        ((40,), torch.float16),
    ]
    return {f"seq.{i}": torch.randn(shape, generator=g, dtype=dtype) for i, (shape, dtype) in enumerate(draws)}


# Seed 1 draws a float uniform of exactly 0 at index 2753120 (first half of its block: u1 = 1),
# seed 2 at index 10427176 (second half: u2 = 0); found with torch.rand on the same streams.
RARE = [(1, 2753120 + 16), (2, 10427176 + 8)]


def rare_tensors():
    for seed, n in RARE:
        u = torch.rand(n, generator=torch.Generator("cpu").manual_seed(seed))
        assert (u[-16:] == 0).any()
    return {f"rare.s{seed}.n{n}": randn(n, seed, torch.float32)[-16:].clone() for seed, n in RARE}


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--scalar-part":
        assert torch.backends.cpu.get_cpu_capability() == "DEFAULT"
        part = kernel_tensors("scalar", [0, 42], LARGE[:1] + LARGE[4:5])
        save_file(part, sys.argv[2])
        return
    torch.set_num_threads(1)
    capability = torch.backends.cpu.get_cpu_capability()
    if capability != "AVX2":
        sys.exit(f"run this on an AVX2 (not AVX-512) x86-64 CPU; torch reports {capability}")
    tensors = kernel_tensors("avx2", SEEDS, LARGE)
    tensors.update(sequence_tensors())
    tensors.update(rare_tensors())
    tmp = OUT + ".scalar.tmp"
    env = dict(os.environ, ATEN_CPU_CAPABILITY="default")
    subprocess.run([sys.executable, __file__, "--scalar-part", tmp], check=True, env=env)
    tensors.update(load_file(tmp))
    os.remove(tmp)
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    save_file(dict(sorted(tensors.items())), OUT, metadata={"torch": torch.__version__})
    print(f"wrote {OUT}: {len(tensors)} tensors, {os.path.getsize(OUT)} bytes")


if __name__ == "__main__":
    main()
