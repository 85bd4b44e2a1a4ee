"""Reads a GGUF written by `examples/quantize.rs` back with gguf-py and checks it against
gguf-py's own conversion of the source, tensor by tensor: architecture, names, types, shapes
and bytes (city96's rules: 1-d or <= 1024 values F32, rows not whole blocks F16, else TYPE).

    cargo run --release --example quantize -- SRC.safetensors OUT.gguf --type q8_0
    python scripts/reference/check_gguf.py SRC.safetensors OUT.gguf q8_0

SRC must be an f32/f16/bf16 BFL-layout safetensors file (no prefix).
"""

import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGUFReader
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import quantize
from safetensors.torch import load_file


def main():
    src, out, qname = sys.argv[1:4]
    qtype = T[qname.upper()]
    block = GGML_QUANT_SIZES[qtype][0]
    reader = GGUFReader(out)
    field = reader.fields["general.architecture"]
    arch = bytes(field.parts[field.data[0]]).decode()
    assert arch == "flux", arch
    stored = {t.name: t for t in reader.tensors}
    source = {k: v.float().numpy() for k, v in load_file(src).items()}
    assert sorted(stored) == sorted(source), set(stored) ^ set(source)
    counts = {}
    for name, value in source.items():
        if value.ndim == 1 or value.size <= 1024:
            kind, data = T.F32, value.astype(np.float32)
        elif value.shape[-1] % block != 0:
            kind, data = T.F16, value.astype(np.float16)
        else:
            kind, data = qtype, quantize(value, qtype)
        t = stored[name]
        assert t.tensor_type == kind, (name, t.tensor_type, kind)
        assert list(reversed([int(d) for d in t.shape])) == list(value.shape), (name, t.shape)
        assert t.data.tobytes() == np.ascontiguousarray(data).tobytes(), f"{name}: bytes differ"
        counts[kind.name] = counts.get(kind.name, 0) + 1
    print(f"{out}: architecture {arch}, {len(stored)} tensors identical to gguf-py's conversion {counts}")


if __name__ == "__main__":
    main()
