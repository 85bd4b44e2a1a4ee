"""GGUF fixtures for flux-text: the tiny T5 encoder of gen_text.py written as a T5 encoder GGUF in
llama.cpp's tensor names (as ComfyUI-GGUF reads city96's t5-v1_1-xxl-encoder files:
`enc.blk.N.attn_q` ... `token_embd`), quantized by gguf-py (1-D tensors and tensors of at most
1024 values stay F32, the token embedding is quantized too), and T5EncoderModel's last hidden
state on gguf-py's dequantized weights.

Writes flux-text/tests/fixtures/t5_gguf/: q8_0.gguf, q4_0.gguf, expected.safetensors
(`hidden_<type>` for the ids of ../t5_io.safetensors).

Run from the repository root after gen_text.py:  .venv/bin/python scripts/reference/gen_gguf_t5.py
"""

from pathlib import Path

import numpy as np
import torch
from gguf import GGMLQuantizationType as T
from gguf import GGUFWriter
from gguf.quants import dequantize, quantize
from safetensors.numpy import load_file
from safetensors.torch import save_file
from transformers import T5EncoderModel

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "flux-text" / "tests" / "fixtures"

# transformers key -> llama.cpp name (per block N), as ComfyUI-GGUF maps them back.
BLOCK = {
    "layer.0.SelfAttention.q.weight": "attn_q.weight",
    "layer.0.SelfAttention.k.weight": "attn_k.weight",
    "layer.0.SelfAttention.v.weight": "attn_v.weight",
    "layer.0.SelfAttention.o.weight": "attn_o.weight",
    "layer.0.SelfAttention.relative_attention_bias.weight": "attn_rel_b.weight",
    "layer.0.layer_norm.weight": "attn_norm.weight",
    "layer.1.DenseReluDense.wi_0.weight": "ffn_gate.weight",
    "layer.1.DenseReluDense.wi_1.weight": "ffn_up.weight",
    "layer.1.DenseReluDense.wo.weight": "ffn_down.weight",
    "layer.1.layer_norm.weight": "ffn_norm.weight",
}


def llama_name(key):
    if key == "shared.weight":
        return "token_embd.weight"
    if key == "encoder.final_layer_norm.weight":
        return "enc.output_norm.weight"
    _, _, n, rest = key.split(".", 3)
    return f"enc.blk.{n}.{BLOCK[rest]}"


def main():
    sd = {k: v.astype(np.float32) for k, v in load_file(FIX / "t5" / "model.safetensors").items()}
    ids = torch.from_numpy(load_file(FIX / "t5_io.safetensors")["ids"])
    model = T5EncoderModel.from_pretrained(FIX / "t5").eval()
    out = FIX / "t5_gguf"
    out.mkdir(exist_ok=True)
    expected = {}
    for qtype in [T.Q8_0, T.Q4_0]:
        w = GGUFWriter(str(out / f"{qtype.name.lower()}.gguf"), arch="t5encoder")
        dequant = {}
        for key, value in sd.items():
            if value.ndim == 1 or value.size <= 1024:
                w.add_tensor(llama_name(key), value)
                dequant[key] = value
            else:
                data = quantize(value, qtype)
                w.add_tensor(llama_name(key), data, raw_shape=data.shape, raw_dtype=qtype)
                dequant[key] = dequantize(data, qtype).reshape(value.shape).astype(np.float32)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in dequant.items()}, strict=False)
        model.encoder.embed_tokens.weight = model.shared.weight
        with torch.no_grad():
            expected[f"hidden_{qtype.name.lower()}"] = model(input_ids=ids).last_hidden_state
    save_file({k: v.contiguous() for k, v in expected.items()}, out / "expected.safetensors")
    print({k: tuple(v.shape) for k, v in expected.items()})


if __name__ == "__main__":
    main()
