"""Tiled VAE references for flux-vae: the tiling scheme of `flux-vae/src/tiling.rs` written
again here (tile spans spread evenly, separable linear ramps across each overlap, the weighted
sum divided by the summed weights, all in f32), driven by diffusers' own encoder and decoder on
each tile, so the Rust tiled encode/decode are checked against an independent implementation.

Writes flux-vae/tests/fixtures/tiled.safetensors:
  latents   [1, 16, 16, 12] seeded FLUX latents; decoded: tiled decode (tile 8, overlap 2 latents)
  image     [1, 3, 128, 96] seeded image in [-1, 1]; encoded: tiled encode (same tiles), FLUX
            scaling applied to the blended mean

Run from the repository root after gen_vae.py:  .venv/bin/python scripts/reference/gen_vae_tiled.py
"""

from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "flux-vae" / "tests" / "fixtures"
SCALE, SHIFT = 0.3611, 0.1159
TILE, OVERLAP = 8, 2


def spans(length, tile, overlap):
    if length <= tile:
        return [(0, length)]
    stride = tile - overlap
    n = -(-(length - overlap) // stride)
    return [(i * (length - tile) // (n - 1), i * (length - tile) // (n - 1) + tile) for i in range(n)]


def ramps(sp, scale):
    total = np.zeros(sp[-1][1] * scale, dtype=np.float32)
    weights = []
    for i, (s, e) in enumerate(sp):
        a, b = s * scale, e * scale
        prev_end = sp[i - 1][1] * scale if i > 0 else None
        next_start = sp[i + 1][0] * scale if i + 1 < len(sp) else None
        w = []
        for p in range(a, b):
            x = np.float32(1.0)
            if prev_end is not None and p < prev_end:
                x = np.float32(x * np.float32(np.float32(p - a) + np.float32(0.5)))
                x = np.float32(x / np.float32(prev_end - a))
            if next_start is not None and p >= next_start:
                x = np.float32(x * np.float32(np.float32(b - p) - np.float32(0.5)))
                x = np.float32(x / np.float32(b - next_start))
            total[p] += x
            w.append(x)
        weights.append(np.array(w, dtype=np.float32))
    return weights, total


def tiled(fn, x, grid, in_scale, out_scale):
    rows, cols = spans(grid[0], TILE, OVERLAP), spans(grid[1], TILE, OVERLAP)
    wy, ty = ramps(rows, out_scale)
    wx, tx = ramps(cols, out_scale)
    acc = None
    for (r0, r1), wr in zip(rows, wy):
        for (c0, c1), wc in zip(cols, wx):
            with torch.no_grad():
                out = fn(x[:, :, r0 * in_scale:r1 * in_scale, c0 * in_scale:c1 * in_scale]).float()
            weight = torch.from_numpy(np.outer(wr, wc))[None, None]
            if acc is None:
                acc = torch.zeros(x.shape[0], out.shape[1], grid[0] * out_scale, grid[1] * out_scale)
            acc[:, :, r0 * out_scale:r1 * out_scale, c0 * out_scale:c1 * out_scale] += out * weight
    return acc / torch.from_numpy(np.outer(ty, tx))[None, None]


def main():
    vae = AutoencoderKL.from_pretrained(FIX / "diffusers" / "vae").eval()
    gen = torch.Generator().manual_seed(7)
    latents = torch.randn(1, 16, 16, 12, generator=gen)
    image = (torch.rand(1, 3, 128, 96, generator=gen) * 2 - 1)
    decoded = tiled(lambda z: vae.decode(z).sample, latents / SCALE + SHIFT, (16, 12), 1, 8)
    moments = tiled(vae.encoder, image, (16, 12), 8, 1)
    encoded = (moments[:, :16] - SHIFT) * SCALE
    save_file({"latents": latents, "decoded": decoded.contiguous(), "image": image,
               "encoded": encoded.contiguous()}, FIX / "tiled.safetensors")
    print("decoded", tuple(decoded.shape), "encoded", tuple(encoded.shape))


if __name__ == "__main__":
    main()
