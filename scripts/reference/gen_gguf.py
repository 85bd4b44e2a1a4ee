#!/usr/bin/env python3
"""Reference fixtures for the Rust GGUF module, made with gguf-py.

Writes into flux-gguf/tests/fixtures (override with --fixtures):

  dequant.gguf    For each of the 13 supported types, `<type>.raw`: random
                  encoded blocks (random payload bytes, f16 scale fields set
                  to finite values of modest size), and `<type>.expected`:
                  gguf.quants.dequantize of those bytes, as F32.
  quantize.gguf   `input` (F32 rows with edge cases) and `<type>`: the bytes
                  gguf.quants.quantize makes of it, for every type gguf-py
                  can quantize that the Rust module supports; also
                  `float_specials` with NaN/inf/rounding-tie cases and its
                  F16 and BF16 encodings.
  flux_like.gguf  A small FLUX-like file (general.architecture = "flux",
                  BFL tensor names, a comfy.gguf.orig_shape entry).
  aligned64.gguf  Two tensors with general.alignment = 64.

Then, if present, it checks `ours_written.gguf` (written by the Rust
GgufWriter; see tests/reference.rs) with gguf-py's GGUFReader: names,
shapes, types, metadata, values, quantized bytes, and that the Rust
dequantization stored beside each K-quant tensor equals gguf-py's bit for bit.

Run from the repository root:  .venv/bin/python scripts/reference/gen_gguf.py [--fixtures DIR] [--check-only]
Everything is seeded; rerunning with the pinned versions in
requirements.txt reproduces the files byte for byte.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf import GGUFReader, GGUFWriter
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize, quantize

SUPPORTED = [T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0,
             T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K]
QUANTIZABLE = [T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0]
# Byte offsets of the f16 scale fields (d, and dmin/m where present) in a block.
SCALE_FIELDS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
}


def formula(n: int) -> np.ndarray:
    """Values both sides can compute exactly: multiples of 1/256 in [-1000/256, 1000/256]."""
    i = np.arange(n, dtype=np.int64)
    return (((i * 7919) % 2001 - 1000) / 256.0).astype(np.float32)


def random_scales(rng: np.random.Generator, n: int) -> np.ndarray:
    """Finite f16 values from subnormal to ~4 in size, both signs, some zeros."""
    mag = rng.uniform(-1.0, 1.0, n) * 2.0 ** rng.integers(-20, 3, n)
    s = mag.astype(np.float16)
    s[rng.random(n) < 0.03] = np.float16(0.0)
    s[rng.random(n) < 0.03] = np.float16(-0.0)
    return s


def random_encoded(rng: np.random.Generator, qtype: T, rows: int, cols: int) -> np.ndarray:
    block, size = GGML_QUANT_SIZES[qtype]
    nblocks = rows * cols // block
    if qtype == T.F32:
        vals = rng.standard_normal(rows * cols).astype(np.float32) * 3
        vals[:4] = [np.inf, -np.inf, -0.0, 1e-42]
        vals[4] = np.float32(np.nan)
        return vals.view(np.uint8).reshape(rows, cols * 4)
    raw = rng.integers(0, 256, (nblocks, size), dtype=np.uint8)
    if qtype == T.F16:
        bits = raw.view(np.uint16).reshape(-1)
        # NaN halves are replaced: whether numpy keeps their payload or quiets
        # them depends on the CPU's conversion instructions.
        nan = ((bits & 0x7C00) == 0x7C00) & ((bits & 0x03FF) != 0)
        bits[nan] &= 0xFC00  # -> +-inf
    for off in SCALE_FIELDS.get(qtype, []):
        raw[:, off:off + 2] = random_scales(rng, nblocks).view(np.uint8).reshape(nblocks, 2)
    return raw.reshape(rows, cols // block * size)


def gen_dequant(path: Path, rng: np.random.Generator) -> None:
    w = GGUFWriter(path, "fixture")
    for qtype in SUPPORTED:
        block, _ = GGML_QUANT_SIZES[qtype]
        rows, cols = (3, 4 * block) if block == 256 else (4, 256)
        raw = random_encoded(rng, qtype, rows, cols)
        expected = dequantize(raw, qtype).astype(np.float32, copy=False)
        assert expected.shape == (rows, cols), (qtype, expected.shape)
        if qtype != T.F32 and qtype != T.BF16:
            assert np.isfinite(expected).all() or qtype == T.F16, qtype
        w.add_tensor(f"{qtype.name}.raw", raw, raw_dtype=qtype)
        w.add_tensor(f"{qtype.name}.expected", np.ascontiguousarray(expected))
    finish(w)


def quant_input(rng: np.random.Generator) -> np.ndarray:
    rows = [
        rng.standard_normal(256),                  # ordinary weights
        rng.uniform(-1000, 1000, 256),             # large
        rng.standard_normal(256) * 1e-6,           # scales fall in f16 subnormals
        rng.standard_normal(256) * 0.01 + 5.0,     # offset: Q4_1/Q5_1 min far from 0
        rng.standard_normal(256) * 3e5,            # Q8_0/Q4_1 scales overflow f16 to inf
    ]
    edge = np.zeros(256)
    blk = np.arange(32, dtype=np.float64)
    edge[32:64] = blk - 16                               # Q8_0 d=16/127
    edge[64:96] = np.where(blk % 2 == 0, 3.0, -3.0)      # tied |max|, + first
    edge[96:128] = np.where(blk % 2 == 0, -3.0, 3.0)     # tied |max|, - first
    edge[128:160] = 7.25                                 # constant block: d = 0 for Q4_1
    edge[160:192] = (blk - 15.5) * 8.0                   # halfway points
    q8 = (blk - 16) + 0.5
    q8[0] = 127.0
    edge[192:224] = q8                                   # Q8_0 d=1: exact .5 ties
    edge[224:256] = (blk - 16) / 8.0                     # Q4_0 ties around 8.5
    rows.append(edge)
    return np.stack(rows).astype(np.float32)


def float_specials() -> np.ndarray:
    u = np.array([
        0x7FC00000, 0xFFC00000, 0x7FC00001, 0x7F800000, 0xFF800000, 0x00000000, 0x80000000,
        0x477FE000, 0x477FF000, 0x477FEFFF, 0x38800000, 0x33800000, 0x33000000, 0x33000001,
        0x3F808000, 0x3F818000, 0x3F808001, 0x7F7FFFFF, 0x00000001, 0x807FFFFF, 0x3F800000,
        0xBF7FFFFF, 0x387FC000, 0x38000000, 0x33C00000, 0x3E99999A, 0xC2F6E979, 0x4B800001,
        0x3F7FFFFF, 0x3F7FF000, 0x3F7FE000, 0x3F801000,
    ], dtype=np.uint32)
    rest = np.random.default_rng(7).integers(0, 2**32, 256 - u.size, dtype=np.uint64)
    rest = rest.astype(np.uint32)
    # keep NaNs in the random part quiet (see random_encoded)
    nan = ((rest & 0x7F800000) == 0x7F800000) & ((rest & 0x007FFFFF) != 0)
    rest[nan] |= 0x00400000
    return np.concatenate([u, rest]).view(np.float32).reshape(2, 128)


def gen_quantize(path: Path, rng: np.random.Generator) -> None:
    w = GGUFWriter(path, "fixture")
    x = quant_input(rng)
    w.add_tensor("input", x)
    for qtype in QUANTIZABLE:
        with np.errstate(over="ignore"):  # row 4 overflows f16 scales on purpose
            q = np.ascontiguousarray(quantize(x, qtype)).view(np.uint8)
        w.add_tensor(qtype.name, q, raw_dtype=qtype)
    f = float_specials()
    w.add_tensor("float_specials", f)
    with np.errstate(all="ignore"):
        for qtype in (T.F16, T.BF16):
            q = np.ascontiguousarray(quantize(f, qtype)).view(np.uint8)
            w.add_tensor(f"float_specials.{qtype.name}", q, raw_dtype=qtype)
    finish(w)


def gen_flux_like(path: Path) -> None:
    w = GGUFWriter(path, "flux")
    w.add_name("flux-like fixture")
    w.add_uint32("fixture.u32", 123456)
    w.add_float32("fixture.f32", 0.5)
    w.add_bool("fixture.bool", True)
    w.add_array("fixture.strings", ["a", "bc", "d\u00e9f"])
    w.add_uint64("fixture.u64", 2**40 + 1)
    w.add_int8("fixture.i8", -5)
    # ComfyUI-GGUF records the original torch shape of reshaped tensors like this.
    w.add_array("comfy.gguf.orig_shape.img_in.weight", [32, 4, 16])
    qkv = formula(96 * 32).reshape(96, 32)
    w.add_tensor("double_blocks.0.img_attn.qkv.weight", quantize(qkv, T.Q8_0), raw_dtype=T.Q8_0)
    i = np.arange(32 * 64)
    w.add_tensor("img_in.weight", (((i * 31) % 97 - 48) / 16.0).astype(np.float16).reshape(32, 64))
    scale = ((np.arange(16) + 1) / 8.0).astype(np.float32)
    w.add_tensor("double_blocks.0.img_attn.norm.query_norm.scale", scale)
    finish(w)


def gen_aligned64(path: Path) -> None:
    w = GGUFWriter(path, "flux")
    w.add_custom_alignment(64)
    w.add_tensor("a", np.arange(3, dtype=np.float32))
    w.add_tensor("b", np.arange(5, dtype=np.float32) * -1.5)
    finish(w)


def finish(w: GGUFWriter) -> None:
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def field_value(reader: GGUFReader, key: str):
    f = reader.fields[key]
    return f.contents()


def check_ours(path: Path) -> None:
    """Reads a file written by the Rust GgufWriter and checks it (see tests/reference.rs)."""
    r = GGUFReader(path)
    expect = lambda cond, what: cond or sys.exit(f"ours_written.gguf: {what}")  # noqa: E731
    expect(field_value(r, "general.architecture") == "flux", "architecture")
    expect(field_value(r, "general.name") == "written by the Rust GgufWriter", "name")
    expect(field_value(r, "test.u32") == 42, "u32")
    expect(field_value(r, "test.f32") == np.float32(1.5), "f32")
    expect(field_value(r, "test.strings") == ["x", "yy", "\u00fcnic\u00f6de"], "string array")
    expect(field_value(r, "comfy.gguf.orig_shape.q8") == [4, 2, 32], "orig_shape array")
    expect(r.alignment == 32, "alignment")
    tensors = {t.name: t for t in r.tensors}
    expected = {
        "f32": (T.F32, [3, 5]), "f16": (T.F16, [2, 16]), "bf16": (T.BF16, [2, 16]),
        "q8": (T.Q8_0, [4, 64]), "q4_0": (T.Q4_0, [2, 32]), "q4_1": (T.Q4_1, [2, 32]),
        "q5_0": (T.Q5_0, [2, 64]), "q5_1": (T.Q5_1, [1, 32]), "vec": (T.F32, [7]),
        "q4_k": (T.Q4_K, [2, 256]), "q6_k": (T.Q6_K, [1, 512]),
        "q4_k.rust_dequantized": (T.F32, [2, 256]), "q6_k.rust_dequantized": (T.F32, [1, 512]),
    }
    expect([t.name for t in r.tensors] == list(expected), f"tensor order {[t.name for t in r.tensors]}")
    for name, (qtype, shape) in expected.items():
        t = tensors[name]
        expect(t.tensor_type == qtype, f"{name}: type {t.tensor_type!r}")
        expect(list(reversed(t.shape.tolist())) == shape, f"{name}: shape {t.shape}")
        expect(t.data_offset % 32 == 0, f"{name}: offset {t.data_offset}")
        n = int(np.prod(shape))
        raw = np.ascontiguousarray(t.data).view(np.uint8).reshape(-1)
        if name.endswith("rust_dequantized") or name.endswith("_k"):
            continue
        want = formula(n).reshape(shape)
        ours = raw.reshape(*shape[:-1], -1)
        if qtype == T.F32:
            expect(np.array_equal(ours.view(np.float32).reshape(shape), want), f"{name}: values")
        else:
            ref = np.ascontiguousarray(quantize(want, qtype)).view(np.uint8).reshape(ours.shape)
            expect(np.array_equal(ours, ref), f"{name}: bytes differ from gguf-py's quantize")
    for name in ("q4_k", "q6_k"):
        t = tensors[name]
        ref = dequantize(np.ascontiguousarray(t.data).view(np.uint8).reshape(t.data.shape), t.tensor_type)
        rust = np.ascontiguousarray(tensors[f"{name}.rust_dequantized"].data)
        expect(np.array_equal(ref.reshape(-1).view(np.uint32), rust.reshape(-1).view(np.uint32)),
               f"{name}: Rust dequantization differs from gguf-py's")
    print(f"ours_written.gguf: OK ({len(expected)} tensors checked with gguf {gguf_version()})")


def gguf_version() -> str:
    from importlib.metadata import version
    return version("gguf")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fixtures", type=Path, default=Path(__file__).resolve().parents[2] / "flux-gguf" / "tests" / "fixtures")
    ap.add_argument("--check-only", action="store_true", help="only check ours_written.gguf")
    args = ap.parse_args()
    fx: Path = args.fixtures
    fx.mkdir(parents=True, exist_ok=True)
    if not args.check_only:
        rng = np.random.default_rng(20240601)
        gen_dequant(fx / "dequant.gguf", rng)
        gen_quantize(fx / "quantize.gguf", rng)
        gen_flux_like(fx / "flux_like.gguf")
        gen_aligned64(fx / "aligned64.gguf")
        print(f"fixtures written to {fx} with gguf {gguf_version()}, numpy {np.__version__}")
    ours = fx / "ours_written.gguf"
    if ours.exists():
        check_ours(ours)
    else:
        print(f"{ours} not found: run `cargo test` with GGUF_UPDATE_FIXTURES=1 to write it")


if __name__ == "__main__":
    main()
