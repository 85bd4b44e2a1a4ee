#!/usr/bin/env python3
"""Reference fixture for the Rust Q4_K quantizer: ggml's own C quantizer, byte for byte.

gguf-py (pinned in requirements.txt) can dequantize the K-quants but not quantize them, so
the reference is ggml's `quantize_row_q4_K_ref` from the llama.cpp that llama-cpp-python
0.3.16 vendors. The script downloads that sdist from PyPI (pinned, `pip download`, no build
of the package), compiles only `ggml/src/ggml-quants.c` into a shared library with the
system C compiler (`-O2 -ffp-contract=off`: plain f32 arithmetic in source order, as on every
x86-64 build without `-mfma`; the ggml core functions it refers to but the quantizer never
calls are stubbed), and calls it through ctypes. Needs `cc` and `nm` (binutils).

Writes flux-gguf/tests/fixtures/q4_k.gguf (override with --fixtures):

  input            F32 [rows, 256]: Gaussian rows of several magnitudes, and rows with the
                   edge cases of the algorithm (all zeros, constant, all positive, all
                   negative, one outlier, sub-blocks of zeros among others, f16-subnormal
                   magnitudes, large magnitudes).
  Q4_K             the bytes `quantize_row_q4_K_ref` writes for `input`.
  Q4_K.dequantized gguf.quants.dequantize of those bytes (F32), for the error figures.

Run from the repository root:
  .venv/bin/python scripts/reference/gen_gguf_q4_k.py [--fixtures DIR] [--sdist FILE]
Seeded; rerunning reproduces the file byte for byte.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGUFWriter
from gguf.quants import dequantize

SDIST = "llama-cpp-python==0.3.16"
SDIST_SHA256 = "34ed0f9bd9431af045bb63d9324ae620ad0536653740e9bb163a2e1fcb973be6"
QK_K = 256
BLOCK_BYTES = 144


def fetch_sdist(work: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", SDIST, "--no-deps", "-q", "-d", str(work)],
        check=True,
    )
    return next(work.glob("llama_cpp_python-*.tar.gz"))


def check_sdist(sdist: Path) -> Path:
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    if digest != SDIST_SHA256:
        raise SystemExit(f"{sdist}: sha256 {digest}, expected {SDIST_SHA256} ({SDIST})")
    return sdist


def build_quantizer(sdist: Path, work: Path) -> ctypes.CDLL:
    """Extracts ggml's sources from the sdist and compiles ggml-quants.c alone."""
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers()
                   if "/vendor/llama.cpp/ggml/include/" in m.name
                   or "/vendor/llama.cpp/ggml/src/" in m.name]
        tar.extractall(work, members=members, filter="data")
    src = next(work.glob("llama_cpp_python-*/vendor/llama.cpp/ggml/src"))
    obj, lib = work / "ggml-quants.o", work / "libggml_quants.so"
    subprocess.run(
        ["cc", "-O2", "-ffp-contract=off", "-fPIC", "-std=gnu11", "-c",
         f"-I{src.parent / 'include'}", f"-I{src}", str(src / "ggml-quants.c"), "-o", str(obj)],
        check=True,
    )
    # The few ggml core functions the file refers to (type tables, abort) are never reached
    # by the reference quantizer: stubs that abort stand in for them.
    undefined = subprocess.run(["nm", "-u", str(obj)], check=True, capture_output=True,
                               text=True).stdout.split()
    stubs = work / "stubs.c"
    stubs.write_text("#include <stdlib.h>\n" + "".join(
        f"void {name}(void) {{ abort(); }}\n" for name in undefined if name.startswith("ggml_")))
    subprocess.run(["cc", "-shared", "-fPIC", str(obj), str(stubs), "-o", str(lib), "-lm"],
                   check=True)
    dll = ctypes.CDLL(str(lib))
    dll.quantize_row_q4_K_ref.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    dll.quantize_row_q4_K_ref.restype = None
    return dll


def quantize_q4_k(dll: ctypes.CDLL, x: np.ndarray) -> np.ndarray:
    """Q4_K bytes of `x` (`[rows, cols]`, cols a multiple of 256): `[rows, cols / 256 * 144]`."""
    rows = x.shape[0] if x.ndim > 1 else 1
    x = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    out = np.zeros(x.size // QK_K * BLOCK_BYTES, dtype=np.uint8)
    dll.quantize_row_q4_K_ref(x.ctypes.data, out.ctypes.data, x.size)
    return out.reshape(rows, -1)


def ggml_q4_k(work: Path, sdist: Path | None = None):
    """ggml's Q4_K quantizer built in `work`: a function from f32 `[rows, cols]` to bytes."""
    dll = build_quantizer(check_sdist(sdist or fetch_sdist(work)), work)
    return lambda x: quantize_q4_k(dll, x)


def q4_k_input(rng: np.random.Generator) -> np.ndarray:
    rows = []
    for scale in (0.02, 0.3, 1.0, 7.0):           # weight-like and activation-like magnitudes
        for _ in range(3):
            rows.append(rng.standard_normal(QK_K) * scale)
    rows.append(np.zeros(QK_K))                   # every sub-block empty: d = dmin = 0
    rows.append(np.full(QK_K, 0.75))              # constant positive: min clamps to 0
    rows.append(np.full(QK_K, -0.5))              # constant negative: max == min
    rows.append(np.abs(rng.standard_normal(QK_K)) + 0.1)   # all positive
    rows.append(-np.abs(rng.standard_normal(QK_K)) - 0.1)  # all negative
    outlier = rng.standard_normal(QK_K) * 0.05
    outlier[77] = 40.0                            # one sub-block dominates the 6-bit scales
    rows.append(outlier)
    mixed = rng.standard_normal(QK_K)
    mixed[32:96] = 0.0                            # zero sub-blocks beside live ones
    mixed[160:192] *= 1e-4                        # a sub-block whose scale rounds to 0
    rows.append(mixed)
    rows.append(rng.standard_normal(QK_K) * 1e-6)  # f16-subnormal super-block factors
    rows.append(rng.standard_normal(QK_K) * 3e3)   # large magnitudes
    skew = rng.standard_normal(QK_K) ** 3          # heavy tails
    rows.append(skew)
    return np.stack(rows).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fixtures", type=Path, default=Path("flux-gguf/tests/fixtures"))
    ap.add_argument("--sdist", type=Path, help=f"a local {SDIST} sdist (else pip downloads it)")
    args = ap.parse_args()
    rng = np.random.default_rng(20261126)
    x = q4_k_input(rng)
    with tempfile.TemporaryDirectory() as tmp:
        q = ggml_q4_k(Path(tmp), args.sdist)(x)
    back = dequantize(q, T.Q4_K).astype(np.float32).reshape(x.shape)
    w = GGUFWriter(args.fixtures / "q4_k.gguf", "fixture")
    w.add_tensor("input", x)
    w.add_tensor("Q4_K", q, raw_dtype=T.Q4_K)
    w.add_tensor("Q4_K.dequantized", back)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    rms = np.sqrt(np.mean((back - x) ** 2, axis=1) / np.maximum(np.mean(x ** 2, axis=1), 1e-30))
    print(f"wrote {args.fixtures / 'q4_k.gguf'}: {x.shape[0]} super-blocks; "
          f"relative RMS error per row {np.array2string(rms, precision=4)}")


if __name__ == "__main__":
    main()
