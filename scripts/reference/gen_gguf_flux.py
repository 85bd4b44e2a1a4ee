"""GGUF fixtures for flux-core: the tiny [dev] transformer of gen_flux.py written as GGUF files the
way city96's ComfyUI-GGUF converter writes FLUX (BFL keys, `general.architecture = "flux"`,
1-D tensors and tensors of at most 1024 values kept F32), quantized by gguf-py, and the
transformer's output computed by diffusers on gguf-py's *dequantized* weights.

Writes flux-core/tests/fixtures/dev_tiny/gguf/:
  <type>.gguf        one file per type: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K
                     (a weight whose row length is not a multiple of the type's block is stored
                     F16, as the converters fall back; the K-types' 256-value blocks fit only the
                     256-wide rows of the tiny model, and since gguf-py has no K-quant encoder
                     those weights are seeded random blocks of realistic scale, to test reading).
  q4_k_ggml.gguf     Q4_K encoded from the weights by ggml's own quantizer
                     (`quantize_row_q4_K_ref`, built by gen_gguf_q4_k.py from the pinned
                     llama-cpp-python sdist): what our Q4_K writer must reproduce. Q8_0 is also written with the ComfyUI
                     prefix `model.diffusion_model.` and one tensor stored reshaped with a
                     `comfy.gguf.orig_shape` entry (q8_0_comfy.gguf).
  expected.safetensors  `out_<type>`: diffusers' output on the same inputs as ../io.safetensors
                     with the dequantized weights; `out` (f32 weights) for the error table.

Run from the repository root after gen_flux.py:  .venv/bin/python scripts/reference/gen_gguf_flux.py
"""

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from diffusers import FluxTransformer2DModel
from gguf import GGMLQuantizationType as T
from gguf import GGUFWriter
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize, quantize
from safetensors.numpy import load_file
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gen_flux import diffusers_converter, run  # noqa: E402
from gen_gguf_q4_k import ggml_q4_k  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CASE = ROOT / "flux-core" / "tests" / "fixtures" / "dev_tiny"
TYPES = [T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q4_K]


# Byte offsets of the f16 super-block scales of the K-types, and their range: gguf-py has no
# K-quant encoder, so K-type weights are random blocks whose scales give values of the size of
# the model's weights (|w| up to ~0.2); every block byte is valid input.
K_SCALES = {T.Q4_K: ([0, 2], 2e-4)}


def encode(name, value, qtype, rng, ggml=None):
    """(stored type, bytes or array, dequantized f32) for one BFL tensor, as city96 stores it;
    `ggml`: ggml's quantizer for the type, else gguf-py's (random blocks for the K-types)."""
    block, size = GGML_QUANT_SIZES[qtype]
    if value.ndim == 1 or value.size <= 1024:
        return T.F32, value, value
    if value.shape[-1] % block != 0:
        # Not a whole number of blocks: kept in half precision, as the converters do.
        half = value.astype(np.float16)
        return T.F16, half, half.astype(np.float32)
    if ggml is not None:
        data = ggml(value)
    elif qtype in K_SCALES:
        offsets, scale = K_SCALES[qtype]
        nblocks = value.size // block
        raw = rng.integers(0, 256, (nblocks, size), dtype=np.uint8)
        for off in offsets:
            d = rng.uniform(0.2 * scale, scale, nblocks).astype(np.float16)
            raw[:, off:off + 2] = d.view(np.uint8).reshape(nblocks, 2)
        data = raw.reshape(value.shape[0], value.shape[1] // block * size)
    else:
        data = quantize(value, qtype)
    return qtype, data, dequantize(data, qtype).reshape(value.shape).astype(np.float32)


def write(path, bfl, qtype, prefix="", reshape=None, ggml=None):
    w = GGUFWriter(str(path), arch="flux")
    w.add_string("general.file_type_name", qtype.name)
    dequant, stored = {}, {}
    rng = np.random.default_rng(list(T).index(qtype))
    for name, value in bfl.items():
        kind, data, deq = encode(name, value, qtype, rng, ggml)
        dequant[name] = deq
        stored[name] = kind.name
        key = prefix + name
        if reshape == name:
            # ComfyUI-GGUF stores some tensors reshaped and records the original shape.
            w.add_array(f"comfy.gguf.orig_shape.{key}", list(value.shape))
            data = data.reshape(value.size // 32, 32)
        if kind in (T.F32, T.F16):
            w.add_tensor(key, np.ascontiguousarray(data))
        else:
            w.add_tensor(key, data, raw_shape=data.shape, raw_dtype=kind)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return dequant, stored


def main():
    cfg = json.loads((CASE / "case.json").read_text())["diffusers_config"]
    bfl = {k: v.astype(np.float32) for k, v in load_file(CASE / "bfl.safetensors").items()}
    io = {k: torch.from_numpy(v) for k, v in load_file(CASE / "io.safetensors").items()}
    inputs = {k: io[k] for k in ["img", "img_ids", "txt", "txt_ids", "timesteps", "y", "guidance"]}
    model = FluxTransformer2DModel(**cfg).eval()
    inner = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    convert = diffusers_converter(inner, 4.0)
    out_dir = CASE / "gguf"
    out_dir.mkdir(exist_ok=True)
    expected, table = {}, {}
    for qtype in TYPES:
        dequant, stored = write(out_dir / f"{qtype.name.lower()}.gguf", bfl, qtype)
        sd = convert({k: torch.from_numpy(v.copy()) for k, v in dequant.items()})
        model.load_state_dict(sd)
        expected[f"out_{qtype.name.lower()}"] = run(model, inputs)
        table[qtype.name] = sum(1 for t in stored.values() if t == qtype.name)
    with tempfile.TemporaryDirectory() as tmp:
        dequant, stored = write(out_dir / "q4_k_ggml.gguf", bfl, T.Q4_K, ggml=ggml_q4_k(Path(tmp)))
    sd = convert({k: torch.from_numpy(v.copy()) for k, v in dequant.items()})
    model.load_state_dict(sd)
    expected["out_q4_k_ggml"] = run(model, inputs)
    table["Q4_K (ggml)"] = sum(1 for t in stored.values() if t == "Q4_K")
    # ComfyUI's prefix and a reshaped tensor (txt_in.weight: [64, 48] stored as [96, 32]).
    write(out_dir / "q8_0_comfy.gguf", bfl, T.Q8_0, prefix="model.diffusion_model.", reshape="txt_in.weight")
    save_file({k: v.contiguous() for k, v in expected.items()}, out_dir / "expected.safetensors")
    print("quantized tensors per type:", table)


if __name__ == "__main__":
    main()
