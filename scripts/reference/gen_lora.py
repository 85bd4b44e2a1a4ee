"""Golden fixtures for LoRA support: the tiny FLUX.1-dev pipeline with LoRAs in every community format.

Writes flux/tests/fixtures/lora/:
  peft_diffusers.safetensors    LoRA A (transformer + CLIP) as FluxPipeline.save_lora_weights writes it
  peft_diffusers_b.safetensors  LoRA B (transformer only), same format
  kohya.safetensors             LoRA A in kohya sd-scripts FLUX naming (BFL layout, fused qkv / linear1)
  bfl_comfy.safetensors         LoRA A's transformer part in BFL/ComfyUI naming, plus .diff / .diff_b deltas
  xlabs.safetensors             the attention part of LoRA A in XLabs naming
  lokr.safetensors              LyCORIS LoKr on four BFL modules (kohya naming)
  loha.safetensors              LyCORIS LoHa on the same modules
  expected.safetensors          transformer inputs, base output, every format's output at two strengths,
                                two LoRAs at once, and end-to-end images
  meta.json                     what every file holds and which reference produced each output

The base model is the committed flux/tests/fixtures/tiny_pipeline/ (gen_pipeline.py); nothing here
rewrites it. Where diffusers loads a format on the tiny model, its loader is the reference and the
format's formula (applied to the weights by this script) is asserted to agree with it; otherwise the
formula is the reference (ComfyUI's semantics, cross-checked against PEFT / diffusers helpers).

Run from the repository root:  python scripts/reference/gen_lora.py
"""

import contextlib
import copy
import importlib.util
import inspect
import json
import re
import shutil
import sys
import warnings
from pathlib import Path
from unittest import mock

import numpy as np
import torch
import diffusers
import peft
import transformers
from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline
from diffusers.loaders import lora_conversion_utils, lora_pipeline
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.loha.layer import make_weight as peft_loha_weight
from peft.tuners.lokr.layer import make_kron as peft_make_kron
from peft.tuners.lora import LoraLayer
from peft.utils import get_peft_model_state_dict
from safetensors import safe_open
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gen_flux as gf  # noqa: E402
import gen_pipeline as gp  # noqa: E402

OUT = gp.FIXTURES / "lora"

NUM_LAYERS, NUM_SINGLE = 1, 2  # the tiny dev transformer
WIDTH, MLP = 64, 256
RANK_A, ALPHA_A = 4, 8  # LoRA A, transformer: alpha/r = 2
RANK_CLIP, ALPHA_CLIP = 4, 2  # LoRA A, CLIP: alpha/r = 0.5
RANK_B, ALPHA_B = 2, 3  # LoRA B: alpha/r = 1.5
REL_DELTA = 0.2  # every LoRA module's effective delta (alpha/r)·B@A has this share of ‖W‖_F
REL_LYCORIS = 0.3
CLIP_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]
SCALES = {"s100": 1.0, "s060": 0.6}
TWO_LORAS = {"a": 0.7, "b": 0.4}
E2E = dict(prompt=gp.PROMPTS[0], height=32, width=32, num_inference_steps=3, guidance_scale=3.5)
E2E_SEED = 5
TOL_OUT = 1e-5  # formula vs diffusers, transformer outputs
TOL_IMAGE = 1e-4  # formula vs diffusers, e2e images in [0, 1]
MIN_EFFECT = 0.05  # every LoRA must move the output by more than this


# ---------------------------------------------------------------------------------------------
# the base model


def load_base():
    pipe = FluxPipeline.from_pretrained(gp.DEV_DIR, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def fresh(base, transformer_sd=None, clip_sd=None):
    """A pipeline sharing base's VAE, T5 and tokenizers, with its own transformer and CLIP copies
    (optionally holding other weights, in diffusers / transformers key names)."""
    transformer, clip = copy.deepcopy(base.transformer), copy.deepcopy(base.text_encoder)
    if transformer_sd is not None:
        transformer.load_state_dict(transformer_sd, strict=True)
    if clip_sd is not None:
        clip.load_state_dict(clip_sd, strict=True)
    pipe = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler.from_config(base.scheduler.config),
        vae=base.vae,
        text_encoder=clip,
        tokenizer=base.tokenizer,
        text_encoder_2=base.text_encoder_2,
        tokenizer_2=base.tokenizer_2,
        transformer=transformer,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def transformer_inputs(seed):
    gen = torch.Generator().manual_seed(seed)
    return {
        "img": torch.randn((1, 16, 64), generator=gen),
        "img_ids": gf.img_ids(4, 4),
        "txt": torch.randn((1, 8, 32), generator=gen),
        "txt_ids": torch.zeros(8, 3),
        "pooled": torch.randn((1, 32), generator=gen),
        "timestep": torch.tensor([0.7]),
        "guidance": torch.tensor([3.5]),
    }


def forward(model, x, scale=None):
    kwargs = {} if scale is None else {"joint_attention_kwargs": {"scale": scale}}
    with torch.no_grad():
        return model(
            hidden_states=x["img"],
            encoder_hidden_states=x["txt"],
            pooled_projections=x["pooled"],
            timestep=x["timestep"],
            img_ids=x["img_ids"],
            txt_ids=x["txt_ids"],
            guidance=x["guidance"],
            return_dict=False,
            **kwargs,
        )[0]


def linear_names(model):
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]


# ---------------------------------------------------------------------------------------------
# diffusers <-> BFL


class Layout:
    """The tiny transformer's weights in both layouts, and where every BFL row comes from.

    The row map is found by running gen_flux.diffusers_to_bfl on tensors whose entries name their
    own diffusers key and row, so the fusions (qkv, linear1) and the final layer's (scale, shift)
    -> (shift, scale) swap all come from that one table."""

    def __init__(self, transformer):
        self.diffusers = {k: v.clone() for k, v in transformer.state_dict().items()}
        self.bfl = gf.diffusers_to_bfl(self.diffusers, NUM_LAYERS, NUM_SINGLE)
        self.to_diffusers = gf.diffusers_converter(WIDTH, MLP / WIDTH)
        gf.check_round_trip(self.bfl, self.diffusers, WIDTH, MLP / WIDTH)
        keys = sorted(self.diffusers)
        probe = {}
        for i, k in enumerate(keys):
            n = self.diffusers[k].shape[0]
            probe[k] = torch.stack([torch.full((n,), float(i), dtype=torch.float64), torch.arange(n, dtype=torch.float64)], 1)
        rows = gf.diffusers_to_bfl(probe, NUM_LAYERS, NUM_SINGLE)
        self.rows = {bk: [(keys[int(a)], int(b)) for a, b in v.tolist()] for bk, v in rows.items()}
        # BFL linear modules (2-D weights), in a fixed order
        self.modules = sorted(k[: -len(".weight")] for k, v in self.bfl.items() if k.endswith(".weight") and v.ndim == 2)

    def diffusers_state(self, bfl):
        return self.to_diffusers({k: v.clone() for k, v in bfl.items()})

    def fuse(self, lora):
        """{diffusers module: (down [r,in], up [out,r], scale)} -> {BFL module: (down, up, alpha)}.

        A BFL module made of several diffusers modules gets down = cat(downs) [sum r, in] and a
        block-diagonal up (each part's rows hold its own up in its own rank columns, in the BFL row
        order, so the final layer's halves come out swapped); alpha = scale * total rank keeps
        alpha / rank equal to the parts' scale."""
        fused = {}
        for module in self.modules:
            rows = self.rows[module + ".weight"]
            parts = [p for p in dict.fromkeys(k[: -len(".weight")] for k, _ in rows) if p in lora]
            if not parts:
                continue
            scales = {lora[p][2] for p in parts}
            assert len(scales) == 1, (module, scales)
            offsets, rank = {}, 0
            for p in parts:
                offsets[p] = rank
                rank += lora[p][0].shape[0]
            down = torch.cat([lora[p][0] for p in parts])
            up = torch.zeros(len(rows), rank)
            for j, (k, row) in enumerate(rows):
                p = k[: -len(".weight")]
                if p in lora:
                    up[j, offsets[p] : offsets[p] + lora[p][0].shape[0]] = lora[p][1][row]
            fused[module] = (down, up, scales.pop() * rank)
        return fused


def kohya_unet_name(bfl_module):
    return "lora_unet_" + bfl_module.replace(".", "_")


def kohya_te_name(clip_module):
    # sd-scripts names CLIP modules as transformers 4 did, under `text_model.`
    # (transformers 5 and diffusers 0.42 drop that level: `encoder.layers.0...`).
    if not clip_module.startswith("text_model."):
        clip_module = "text_model." + clip_module
    return "lora_te1_" + clip_module.replace(".", "_")


# ---------------------------------------------------------------------------------------------
# building the LoRAs


def build_peft_lora(model, targets, rank, alpha, seed, adapter):
    """PEFT LoraConfig injected into a copy of `model`; lora_A and lora_B redrawn from one seeded
    generator (PEFT starts B at zero) and B rescaled so that (alpha/r)·B@A = REL_DELTA·‖W‖_F.

    Returns the PEFT state dict (keys `<module>.lora_A.weight`, adapter name removed), the config
    as diffusers' training scripts serialise it, and {module: (A, B, alpha/r)}."""
    work = copy.deepcopy(model)
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, init_lora_weights=False)
    metadata = adapter_metadata(config)  # before injection, which rewrites target_modules to a suffix set
    inject_adapter_in_model(config, work, adapter_name=adapter)
    gen = torch.Generator().manual_seed(seed)
    lora = {}
    with torch.no_grad():
        for name, module in work.named_modules():
            if not isinstance(module, LoraLayer) or adapter not in module.lora_A:
                continue
            w = module.get_base_layer().weight
            a, b = module.lora_A[adapter].weight, module.lora_B[adapter].weight
            scale = module.scaling[adapter]
            assert scale == alpha / rank
            new_a = torch.randn(a.shape, generator=gen) / a.shape[1] ** 0.5
            new_b = torch.randn(b.shape, generator=gen)
            new_b *= REL_DELTA * w.norm() / (scale * new_b @ new_a).norm()
            a.copy_(new_a)
            b.copy_(new_b)
            lora[name] = (new_a.clone(), new_b.clone(), scale)
    sd = {k: v.detach().clone().contiguous() for k, v in get_peft_model_state_dict(work, adapter_name=adapter).items()}
    assert len(sd) == 2 * len(lora)
    return sd, metadata, lora


def adapter_metadata(config):
    """LoraConfig.to_dict() with its sets as sorted lists (diffusers turns sets into lists in
    set order, which changes between runs)."""
    meta = config.to_dict()
    return {k: sorted(v) if isinstance(v, set) else v for k, v in meta.items()}


def lora_delta(down, up, alpha):
    return (alpha / down.shape[0]) * (up @ down)


def write_kohya(path, fused, clip_lora):
    sd = {}
    for module, (down, up, alpha) in fused.items():
        name = kohya_unet_name(module)
        sd[f"{name}.lora_down.weight"] = down
        sd[f"{name}.lora_up.weight"] = up
        sd[f"{name}.alpha"] = torch.tensor(float(alpha))  # sd-scripts: a 0-d buffer
    for module, (a, b, scale) in clip_lora.items():
        name = kohya_te_name(module)
        sd[f"{name}.lora_down.weight"] = a
        sd[f"{name}.lora_up.weight"] = b
        sd[f"{name}.alpha"] = torch.tensor(float(scale * a.shape[0]))
    save(path, sd)
    return sd


def write_bfl_comfy(path, fused, layout, seed):
    """LoRA A's transformer part as `diffusion_model.<bfl module>.lora_A/lora_B/alpha`, except
    final_layer.linear, which carries full `.diff` / `.diff_b` deltas instead (ComfyUI keeps one patch
    per weight: a `.diff` replaces a LoRA on the same key), plus a `.diff` on an RMSNorm scale."""
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for module, (down, up, alpha) in fused.items():
        if module == "final_layer.linear":
            continue
        sd[f"diffusion_model.{module}.lora_A.weight"] = down
        sd[f"diffusion_model.{module}.lora_B.weight"] = up
        sd[f"diffusion_model.{module}.alpha"] = torch.tensor(float(alpha))
    w = layout.bfl["final_layer.linear.weight"]
    diff = torch.randn(w.shape, generator=gen)
    sd["diffusion_model.final_layer.linear.diff"] = diff * (REL_DELTA * w.norm() / diff.norm())
    sd["diffusion_model.final_layer.linear.diff_b"] = 0.1 * torch.randn(w.shape[0], generator=gen)
    norm = layout.bfl["double_blocks.0.img_attn.norm.key_norm.scale"]
    sd["diffusion_model.double_blocks.0.img_attn.norm.key_norm.scale.diff"] = 0.2 * torch.randn(norm.shape, generator=gen)
    save(path, sd)
    return sd


XLABS_DOUBLE = {"qkv_lora1": "img_attn.qkv", "qkv_lora2": "txt_attn.qkv", "proj_lora1": "img_attn.proj", "proj_lora2": "txt_attn.proj"}
XLABS_SINGLE = {"qkv_lora": "linear1", "proj_lora": "linear2"}


def write_xlabs(path, fused):
    """The attention part of LoRA A as XLabs stores it: `<block>.processor.<name>.down/up.weight`,
    no alpha (alpha/r baked into up). A single block's qkv_lora covers only linear1's q,k,v rows."""
    sd = {}
    for i in range(NUM_LAYERS):
        for name, module in XLABS_DOUBLE.items():
            down, up, alpha = fused[f"double_blocks.{i}.{module}"]
            sd[f"double_blocks.{i}.processor.{name}.down.weight"] = down
            sd[f"double_blocks.{i}.processor.{name}.up.weight"] = up * (alpha / down.shape[0])
    for i in range(NUM_SINGLE):
        down, up, alpha = fused[f"single_blocks.{i}.linear1"]
        rank = 3 * RANK_A  # q, k, v parts come first in linear1's fused LoRA
        assert torch.count_nonzero(up[: 3 * WIDTH, rank:]) == 0 and torch.count_nonzero(up[3 * WIDTH :, :rank]) == 0
        sd[f"single_blocks.{i}.processor.qkv_lora.down.weight"] = down[:rank].clone()
        sd[f"single_blocks.{i}.processor.qkv_lora.up.weight"] = up[: 3 * WIDTH, :rank] * (alpha / down.shape[0])
        down, up, alpha = fused[f"single_blocks.{i}.linear2"]
        sd[f"single_blocks.{i}.processor.proj_lora.down.weight"] = down
        sd[f"single_blocks.{i}.processor.proj_lora.up.weight"] = up * (alpha / down.shape[0])
    save(path, sd)
    return sd


# LyCORIS modules: (BFL module, factor shapes, alpha or None). LoKr: w1 = full [a, c] or (w1_a [a, r],
# w1_b [r, c]); w2 = full [b, d] or (w2_a [b, r], w2_b [r, d]); kron(w1, w2) is [a*b, c*d].
# The factorizations are ones LyCORIS itself produces (factor 4 for the first, -1 = near-square for
# the others), so that its own modules can load them back in the optional cross-check.
LOKR = [
    ("double_blocks.0.img_attn.proj", {"lokr_w1": (4, 4), "lokr_w2": (16, 16)}, 5.0),  # both full: alpha ignored
    ("single_blocks.1.linear2", {"lokr_w1": (8, 16), "lokr_w2_a": (8, 2), "lokr_w2_b": (2, 20)}, 1.0),
    ("double_blocks.0.txt_mlp.0", {"lokr_w1_a": (16, 2), "lokr_w1_b": (2, 8), "lokr_w2_a": (16, 2), "lokr_w2_b": (2, 8)}, 3.0),
    ("double_blocks.0.img_attn.qkv", {"lokr_w1": (12, 8), "lokr_w2_a": (16, 4), "lokr_w2_b": (4, 8)}, None),  # no alpha
]
LOHA = [
    ("double_blocks.0.img_attn.proj", 4, 2.0),
    ("single_blocks.1.linear2", 2, 4.0),
    ("double_blocks.0.txt_mlp.0", 4, None),  # no alpha: scale 1
    ("double_blocks.0.img_attn.qkv", 3, 1.5),
]


def lokr_delta(t, alpha):
    """ComfyUI (comfy/weight_adapter/lokr.py): w1 = w1_a@w1_b if decomposed, w2 = w2_a@w2_b if
    decomposed; scale = alpha/dim with dim = w2_b.shape[0] if w2 is decomposed, else w1_b.shape[0]
    if w1 is decomposed, else 1 (alpha ignored when both are full); also 1 without alpha.
    Returns scale · kron(w1, w2) (to be reshaped to the weight's shape)."""
    dim = None
    w1 = t.get("lokr_w1")
    if w1 is None:
        dim = t["lokr_w1_b"].shape[0]
        w1 = t["lokr_w1_a"] @ t["lokr_w1_b"]
    w2 = t.get("lokr_w2")
    if w2 is None:
        dim = t["lokr_w2_b"].shape[0]
        w2 = t["lokr_w2_a"] @ t["lokr_w2_b"]
    scale = alpha / dim if alpha is not None and dim is not None else 1.0
    return scale * torch.kron(w1, w2)


def loha_delta(t, alpha):
    """ComfyUI (comfy/weight_adapter/loha.py): (w1_a@w1_b) ⊙ (w2_a@w2_b) · alpha / w1_b.shape[0]
    (1 without alpha)."""
    scale = alpha / t["hada_w1_b"].shape[0] if alpha is not None else 1.0
    return scale * ((t["hada_w1_a"] @ t["hada_w1_b"]) * (t["hada_w2_a"] @ t["hada_w2_b"]))


def write_lycoris(path_lokr, path_loha, layout, seed):
    gen = torch.Generator().manual_seed(seed)
    lokr, loha = {}, {}
    for module, shapes, alpha in LOKR:
        w = layout.bfl[module + ".weight"]
        t = {k: torch.randn(s, generator=gen) for k, s in shapes.items()}
        grow = "lokr_w2" if "lokr_w2" in t else "lokr_w2_a"
        t[grow] *= REL_LYCORIS * w.norm() / lokr_delta(t, alpha).norm()
        assert lokr_delta(t, alpha).numel() == w.numel()
        name = kohya_unet_name(module)
        lokr.update({f"{name}.{k}": v for k, v in t.items()})
        if alpha is not None:
            lokr[f"{name}.alpha"] = torch.tensor(alpha)
    for module, rank, alpha in LOHA:
        w = layout.bfl[module + ".weight"]
        out, inp = w.shape
        t = {
            "hada_w1_a": torch.randn((out, rank), generator=gen),
            "hada_w1_b": torch.randn((rank, inp), generator=gen),
            "hada_w2_a": torch.randn((out, rank), generator=gen),
            "hada_w2_b": torch.randn((rank, inp), generator=gen),
        }
        t["hada_w2_a"] *= REL_LYCORIS * w.norm() / loha_delta(t, alpha).norm()
        name = kohya_unet_name(module)
        loha.update({f"{name}.{k}": v for k, v in t.items()})
        if alpha is not None:
            loha[f"{name}.alpha"] = torch.tensor(alpha)
    save(path_lokr, lokr)
    save(path_loha, loha)


def sort_header_metadata(path):
    """safetensors writes its `__metadata__` map in hash order, so a file with two metadata entries
    (diffusers writes `format` and `lora_adapter_metadata`) differs between runs. Rewrite the header
    in place with the entries sorted (same bytes otherwise, same length)."""
    raw = bytearray(path.read_bytes())
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n].decode("utf-8"), object_pairs_hook=lambda pairs: dict(pairs))
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    assert len(text) <= n and raw[8 + len(text) : 8 + n].strip() == b"", "header layout"
    raw[8 : 8 + len(text)] = text
    path.write_bytes(bytes(raw))


def save(path, sd, metadata=None):
    save_file({k: v.detach().contiguous() for k, v in sd.items()}, path, metadata=metadata)


# ---------------------------------------------------------------------------------------------
# reading the files back and applying each format's formula (deltas are added as W + s·delta)


def kohya_names(layout, clip_modules):
    unet = {kohya_unet_name(m): m for m in layout.modules}
    te = {kohya_te_name(m): m for m in clip_modules}
    assert len(unet) == len(layout.modules) and len(te) == len(clip_modules)
    return unet, te


def read_peft(path):
    """{'transformer'|'text_encoder': {diffusers param: delta}} from a diffusers/PEFT file: alpha and
    r come from the `lora_adapter_metadata` JSON (`<component>.lora_alpha`, `<component>.r`)."""
    sd = load_file(path)
    with safe_open(path, "pt") as f:
        meta = json.loads(f.metadata()["lora_adapter_metadata"])
    out = {}
    for key in sorted(sd):
        if not key.endswith(".lora_A.weight"):
            continue
        component, module = key.split(".", 1)
        module = module[: -len(".lora_A.weight")]
        assert not meta[f"{component}.rank_pattern"] and not meta[f"{component}.alpha_pattern"]
        r, alpha = meta[f"{component}.r"], meta[f"{component}.lora_alpha"]
        down, up = sd[key], sd[key.replace(".lora_A.", ".lora_B.")]
        assert down.shape[0] == r
        out.setdefault(component, {})[module + ".weight"] = lora_delta(down, up, alpha)
    return out


def read_kohya(path, layout, clip_modules, blocks_only=False):
    """{'bfl'|'clip': {param: delta}}: (alpha / rank) · up @ down, rank = down.shape[0], alpha
    defaulting to rank. `blocks_only` keeps only double/single block modules (and CLIP): what
    diffusers 0.42's kohya loader applies (used only for the cross-check against it)."""
    sd = load_file(path)
    unet, te = kohya_names(layout, clip_modules)
    out = {"bfl": {}, "clip": {}}
    for key in sorted(sd):
        if not key.endswith(".lora_down.weight"):
            continue
        name = key[: -len(".lora_down.weight")]
        down, up = sd[key], sd[f"{name}.lora_up.weight"]
        alpha = sd[f"{name}.alpha"].item() if f"{name}.alpha" in sd else down.shape[0]
        if blocks_only and name.startswith("lora_unet_") and "_blocks_" not in name:
            continue
        if name in unet:
            out["bfl"][unet[name] + ".weight"] = lora_delta(down, up, alpha)
        else:
            out["clip"][te[name] + ".weight"] = lora_delta(down, up, alpha)
    return out


def read_bfl_comfy(path, layout):
    """LoRA parts as kohya; `<p>.diff` adds to `<p>.weight` when <p> is a module, else to the
    parameter <p> itself (a norm scale); `<p>.diff_b` adds to `<p>.bias`."""
    sd = load_file(path)
    out = {}
    for key in sorted(sd):
        body = key.removeprefix("diffusion_model.")
        if body.endswith(".lora_A.weight"):
            module = body[: -len(".lora_A.weight")]
            down, up = sd[key], sd[key.replace(".lora_A.", ".lora_B.")]
            alpha = sd[f"diffusion_model.{module}.alpha"].item()
            out[module + ".weight"] = lora_delta(down, up, alpha)
        elif body.endswith(".diff"):
            p = body[: -len(".diff")]
            out[p if p in layout.bfl else p + ".weight"] = sd[key]
        elif body.endswith(".diff_b"):
            out[body[: -len(".diff_b")] + ".bias"] = sd[key]
    return out


def read_xlabs(path, layout):
    """up @ down (scale 1: XLabs files carry no alpha); a single block's qkv_lora adds to linear1's
    first 3·width rows only."""
    sd = load_file(path)
    out = {}
    for key in sorted(sd):
        if not key.endswith(".down.weight"):
            continue
        block, name = re.fullmatch(r"((?:double|single)_blocks\.\d+)\.processor\.(\w+)\.down\.weight", key).groups()
        table = XLABS_DOUBLE if block.startswith("double") else XLABS_SINGLE
        param = f"{block}.{table[name]}.weight"
        delta = sd[key.replace(".down.", ".up.")] @ sd[key]
        full = torch.zeros_like(layout.bfl[param])
        full[: delta.shape[0]] = delta
        out[param] = out.get(param, 0) + full
    return out


def read_lycoris(path, layout):
    sd = load_file(path)
    modules = {}
    for key in sd:
        name, field = key.split(".", 1)
        modules.setdefault(name, {})[field] = sd[key]
    unet = {kohya_unet_name(m): m for m in layout.modules}
    out = {}
    for name in sorted(modules):
        t = dict(modules[name])
        alpha = t.pop("alpha").item() if "alpha" in t else None
        param = unet[name] + ".weight"
        delta = lokr_delta(t, alpha) if "lokr_w1" in t or "lokr_w1_a" in t else loha_delta(t, alpha)
        out[param] = delta.reshape(layout.bfl[param].shape)
    return out


def apply(sd, deltas, strength):
    out = dict(sd)
    for key, delta in deltas.items():
        assert out[key].shape == delta.shape, (key, out[key].shape, delta.shape)
        out[key] = out[key] + strength * delta
    return out


# ---------------------------------------------------------------------------------------------
# cross-checks of the LyCORIS formulas against other implementations


def check_lycoris_formulas(path_lokr, path_loha, layout):
    """LoKr: diffusers' _bake_lokr_alpha_ (which folds ComfyUI's alpha rule into w1) + PEFT's
    make_kron with scale 1. LoHa: PEFT's make_weight with scale alpha/rank. LyCORIS (lycoris-lora,
    not pinned) module forwards too, when it is importable."""
    notes = []
    lokr, loha = load_file(path_lokr), load_file(path_loha)
    ours = read_lycoris(path_lokr, layout)
    baked = dict(lokr)
    lora_conversion_utils._bake_lokr_alpha_(baked)
    for name in {k.split(".")[0] for k in lokr}:
        g = {f: baked.get(f"{name}.{f}") for f in lora_conversion_utils._LOKR_SUFFIXES}
        w1 = g["lokr_w1"] if g["lokr_w1"] is not None else g["lokr_w1_a"] @ g["lokr_w1_b"]
        w2 = g["lokr_w2"] if g["lokr_w2"] is not None else g["lokr_w2_a"] @ g["lokr_w2_b"]
        param = next(m for m in layout.modules if kohya_unet_name(m) == name) + ".weight"
        theirs = peft_make_kron(w1, w2, 1.0).reshape(layout.bfl[param].shape)
        assert torch.allclose(theirs, ours[param], rtol=1e-5, atol=1e-6), name
    notes.append("LoKr deltas == kron after diffusers' _bake_lokr_alpha_ (PEFT make_kron)")
    ours = read_lycoris(path_loha, layout)
    for module, rank, alpha in LOHA:
        name = kohya_unet_name(module)
        scale = (alpha if alpha is not None else rank) / rank
        t = [loha[f"{name}.hada_{f}"] for f in ("w1_a", "w1_b", "w2_a", "w2_b")]
        theirs = peft_loha_weight(*t, scale=torch.tensor(scale))
        assert torch.allclose(theirs, ours[module + ".weight"], rtol=1e-5, atol=1e-6), name
    notes.append("LoHa deltas == PEFT loha make_weight(scale=alpha/rank)")
    if importlib.util.find_spec("lycoris") is not None:  # printed only: meta.json must not depend on it
        print("  " + check_with_lycoris(lokr, loha, layout))
    else:
        print("  lycoris-lora not importable: LyCORIS cross-check skipped")
    return notes


def check_with_lycoris(lokr, loha, layout):
    """y = W x + delta x through LyCORIS' own modules (its forward: get_diff_weight applies the scale
    twice in lycoris-lora 4.1.3, so the forward is what is compared). LyCORIS cannot build a LoKr
    whose w1 is decomposed while w2 is full, nor accept the layouts its constructor would not pick;
    modules it refuses are skipped and named."""
    from lycoris.modules.loha import LohaModule
    from lycoris.modules.lokr import LokrModule

    checked, skipped = [], []
    ours = {**read_lycoris_dict(lokr, layout), **{("loha", k): v for k, v in read_lycoris_dict(loha, layout).items()}}
    for kind, sd in (("lokr", lokr), ("loha", loha)):
        for module in layout.modules:
            name = kohya_unet_name(module)
            t = {k.split(".", 1)[1]: v for k, v in sd.items() if k.split(".")[0] == name}
            if not t:
                continue
            w = layout.bfl[module + ".weight"]
            lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
            with torch.no_grad():
                lin.weight.copy_(w)
                alpha = t.get("alpha", torch.tensor(0.0))  # LyCORIS: 0 / None means alpha = rank
                try:
                    if kind == "lokr":
                        m = LokrModule.make_module_from_state_dict(
                            name, lin, t.get("lokr_w1"), t.get("lokr_w1_a"), t.get("lokr_w1_b"), t.get("lokr_w2"),
                            t.get("lokr_w2_a"), t.get("lokr_w2_b"), None, None, alpha, None,
                        )
                    else:
                        m = LohaModule.make_module_from_state_dict(
                            name, lin, t["hada_w1_a"], t["hada_w1_b"], t["hada_w2_a"], t["hada_w2_b"], None, None, alpha, None,
                        )
                except (AttributeError, RuntimeError, TypeError):
                    skipped.append(f"{kind}:{module}")
                    continue
                m.apply_to()
                x = torch.eye(w.shape[1])
                delta = (lin(x) - m.org_forward(x)).T
            key = module + ".weight" if kind == "lokr" else ("loha", module + ".weight")
            assert torch.allclose(delta, ours[key], rtol=1e-4, atol=1e-5), (kind, module)
            checked.append(f"{kind}:{module}")
    return f"LyCORIS module forwards agree on {checked}; skipped {skipped}"


def read_lycoris_dict(sd, layout):
    tmp = OUT / ".lycoris_check.safetensors"
    save(tmp, sd)
    try:
        return read_lycoris(tmp, layout)
    finally:
        tmp.unlink()


# ---------------------------------------------------------------------------------------------
# end to end


def e2e(pipe, scale=None):
    """The tiny dev pipeline from fixed latents (as gen_pipeline.run_text_to_image with fixed_latents)."""
    noise = torch.randn((1, 16, E2E["height"] // 8, E2E["width"] // 8), generator=gp.torch_generator(E2E_SEED), dtype=torch.float32)
    call = dict(E2E, max_sequence_length=gp.T5_MAX_LEN, latents=gp.pack(noise))
    if scale is not None:
        call["joint_attention_kwargs"] = {"scale": scale}
    image, rec, (_, (latents_in, _)) = gp.generate(pipe, dict(call), "np")
    assert torch.equal(latents_in, gp.pack(noise)), "the pipeline started from other latents"
    pil, rec_pil, _ = gp.generate(pipe, dict(call), "pil")
    assert torch.equal(rec_pil.steps[-1], rec.steps[-1]), "the PIL call diverged"
    return {
        "latents_in": noise,
        "image": torch.from_numpy(image),
        "image_u8": torch.from_numpy(np.stack([np.asarray(p) for p in pil])),
    }


def text(pipe, lora_scale=None):
    with torch.no_grad():
        _, pooled, _ = pipe.encode_prompt(E2E["prompt"], prompt_2=None, device="cpu", max_sequence_length=gp.T5_MAX_LEN, lora_scale=lora_scale)
    return pooled


def clip_hidden(pipe):
    ids = gp.clip_ids(pipe, [E2E["prompt"]])
    with torch.no_grad():
        return pipe.text_encoder(ids, output_hidden_states=False).last_hidden_state


def max_diff(a, b):
    return (a.float() - b.float()).abs().max().item()


# ---------------------------------------------------------------------------------------------


def patched_kohya_converter():
    """diffusers' kohya FLUX converter with its hard-coded FLUX.1 linear1 split (3072·3 + 12288)
    replaced by the tiny model's (64·3 + 256). Only for a cross-check."""
    src = inspect.getsource(lora_conversion_utils._convert_kohya_flux_lora_to_diffusers)
    new = src.replace("dims=[3072, 3072, 3072, 12288]", f"dims=[{WIDTH}, {WIDTH}, {WIDTH}, {MLP}]")
    assert new != src
    scope = dict(vars(lora_conversion_utils))
    exec(new, scope)
    return scope["_convert_kohya_flux_lora_to_diffusers"]


def file_keys(path):
    with safe_open(path, "pt") as f:
        return sorted(f.keys()), f.metadata()


def main():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    diffusers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")  # the second adapter
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)

    base = load_base()
    layout = Layout(base.transformer)
    clip_sd = {k: v.clone() for k, v in base.text_encoder.state_dict().items()}
    x = transformer_inputs(seed=10)
    tensors = {**x, "base_out": forward(base.transformer, x)}
    meta_files, checks = {}, {}

    # --- LoRA A (transformer + CLIP) and LoRA B (transformer), PEFT -----------------------------
    t_targets = linear_names(base.transformer)
    sd_ta, meta_ta, lora_ta = build_peft_lora(base.transformer, t_targets, RANK_A, ALPHA_A, seed=20, adapter="a")
    sd_ca, meta_ca, lora_ca = build_peft_lora(base.text_encoder, CLIP_TARGETS, RANK_CLIP, ALPHA_CLIP, seed=21, adapter="a")
    b_targets = [n for n in t_targets if re.search(r"attn\.(to_[qkv]|add_[qkv]_proj|to_out\.0|to_add_out)$|single_transformer_blocks\.\d+\.(proj_out|proj_mlp)$", n)]
    sd_tb, meta_tb, lora_tb = build_peft_lora(base.transformer, b_targets, RANK_B, ALPHA_B, seed=22, adapter="b")
    clip_modules = [k[: -len(".weight")] for k in clip_sd if any(f".{t}.weight" in k for t in CLIP_TARGETS)]
    assert sorted(clip_modules) == sorted(lora_ca), "CLIP LoRA targets"
    FluxPipeline.save_lora_weights(
        OUT, transformer_lora_layers=sd_ta, text_encoder_lora_layers=sd_ca, weight_name="peft_diffusers.safetensors",
        transformer_lora_adapter_metadata=meta_ta, text_encoder_lora_adapter_metadata=meta_ca,
    )
    FluxPipeline.save_lora_weights(
        OUT, transformer_lora_layers=sd_tb, weight_name="peft_diffusers_b.safetensors", transformer_lora_adapter_metadata=meta_tb,
    )
    for name in ("peft_diffusers.safetensors", "peft_diffusers_b.safetensors"):
        sort_header_metadata(OUT / name)

    # the canonical BFL form of LoRA A: fused factors, checked against the dense deltas
    fused_a = layout.fuse(lora_ta)
    dense = {m + ".weight": lora_delta(*fused_a[m]) for m in fused_a}
    dense_diffusers = {k: torch.zeros_like(v) for k, v in layout.diffusers.items()}
    for m, (a, b, s) in lora_ta.items():
        dense_diffusers[m + ".weight"] = s * b @ a
    reference_dense = gf.diffusers_to_bfl(dense_diffusers, NUM_LAYERS, NUM_SINGLE)
    assert set(dense) == {k for k in reference_dense if k.endswith(".weight") and reference_dense[k].ndim == 2}
    for k in dense:
        assert torch.allclose(dense[k], reference_dense[k], atol=1e-6), k

    kohya_path, bfl_path, xlabs_path = OUT / "kohya.safetensors", OUT / "bfl_comfy.safetensors", OUT / "xlabs.safetensors"
    lokr_path, loha_path = OUT / "lokr.safetensors", OUT / "loha.safetensors"
    write_kohya(kohya_path, fused_a, lora_ca)
    write_bfl_comfy(bfl_path, fused_a, layout, seed=30)
    write_xlabs(xlabs_path, fused_a)
    write_lycoris(lokr_path, loha_path, layout, seed=40)

    def formula_out(bfl_deltas, s):
        model = gf.with_state(base.transformer, layout.diffusers_state(apply(layout.bfl, bfl_deltas, s)))
        return forward(model, x)

    def diffusers_out(files, s=None, adapters=None, patch_kohya=False):
        pipe = fresh(base)
        with mock.patch.object(lora_pipeline, "_convert_kohya_flux_lora_to_diffusers", patched_kohya_converter()) if patch_kohya else contextlib.nullcontext():
            for name, f in files.items():
                pipe.load_lora_weights(str(OUT), weight_name=f, adapter_name=name)
        if adapters:
            pipe.set_adapters(list(adapters), list(adapters.values()))
        return forward(pipe.transformer, x, scale=s), pipe

    # --- per-format outputs --------------------------------------------------------------------
    peft_deltas = read_peft(OUT / "peft_diffusers.safetensors")
    kohya_deltas = read_kohya(kohya_path, layout, clip_modules)
    formats = {
        "peft_diffusers": dict(deltas=None, diffusers="peft_diffusers.safetensors"),
        "kohya": dict(deltas=kohya_deltas["bfl"], diffusers=None),
        "bfl_comfy": dict(deltas=read_bfl_comfy(bfl_path, layout), diffusers=None),
        "xlabs": dict(deltas=read_xlabs(xlabs_path, layout), diffusers="xlabs.safetensors"),
        "lokr": dict(deltas=read_lycoris(lokr_path, layout), diffusers=None),
        "loha": dict(deltas=read_lycoris(loha_path, layout), diffusers=None),
    }
    for fmt, spec in formats.items():
        for tag, s in SCALES.items():
            if fmt == "peft_diffusers":
                out, _ = diffusers_out({"a": spec["diffusers"]}, s)
                model = gf.with_state(base.transformer, apply(layout.diffusers, peft_deltas["transformer"], s))
                checks[f"{fmt}_{tag}: diffusers vs formula"] = d = max_diff(out, forward(model, x))
                assert d < TOL_OUT, (fmt, tag, d)
                checks[f"{fmt}_{tag}: diffusers vs kohya formula (same LoRA, fused)"] = d = max_diff(out, formula_out(kohya_deltas["bfl"], s))
                assert d < TOL_OUT, (fmt, tag, d)
            elif spec["diffusers"]:
                out, _ = diffusers_out({"x": spec["diffusers"]}, s)
                checks[f"{fmt}_{tag}: diffusers vs formula"] = d = max_diff(out, formula_out(spec["deltas"], s))
                assert d < TOL_OUT, (fmt, tag, d)
            else:
                out = formula_out(spec["deltas"], s)
            tensors[f"{fmt}_{tag}"] = out
        effect = max_diff(tensors[f"{fmt}_s100"], tensors["base_out"])
        checks[f"{fmt}_s100: max |out - base_out|"] = effect
        assert effect > MIN_EFFECT, (fmt, effect)

    # diffusers' own kohya loader (its linear1 split patched to the tiny width) agrees with the
    # formula restricted to the blocks: it returns img_in, txt_in, time_in, vector_in, guidance_in
    # and final_layer LoRAs without the 'transformer.' prefix, so load_lora_weights drops them
    out, pipe = diffusers_out({"k": "kohya.safetensors"}, 1.0, patch_kohya=True)
    blocks = read_kohya(kohya_path, layout, clip_modules, blocks_only=True)
    checks["kohya_s100: patched diffusers loader vs formula on the blocks only"] = d = max_diff(out, formula_out(blocks["bfl"], 1.0))
    assert d < TOL_OUT, d
    checks["kohya_s100: patched diffusers loader vs fixture (all modules)"] = d = max_diff(out, tensors["kohya_s100"])
    assert d > MIN_EFFECT, d
    pooled_formula = text(fresh(base, clip_sd=apply(clip_sd, kohya_deltas["clip"], 1.0)))
    checks["kohya CLIP: patched diffusers pooled vs formula pooled"] = d = max_diff(text(pipe), pooled_formula)
    assert d < TOL_OUT, d
    check_notes = check_lycoris_formulas(lokr_path, loha_path, layout)

    # what diffusers 0.42 does with the files it has no converter for
    unsupported = {}
    for f in ("bfl_comfy.safetensors", "lokr.safetensors", "loha.safetensors"):
        pipe = fresh(base)
        before = forward(pipe.transformer, x)
        try:
            pipe.load_lora_weights(str(OUT), weight_name=f, adapter_name="u")
            changed = max_diff(forward(pipe.transformer, x), before)
            adapters = pipe.get_list_adapters()
            unsupported[f] = (
                "load_lora_weights raises nothing, injects no adapter and the output stays bit-identical (silently ignored)"
                if changed == 0 and not any(adapters.values())
                else f"loads: adapters {adapters}, output moves by {changed:.3g}"
            )
        except Exception as e:  # noqa: BLE001 - recorded, not hidden
            unsupported[f] = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"

    # --- two LoRAs at once -----------------------------------------------------------------------
    out, _ = diffusers_out({"a": "peft_diffusers.safetensors", "b": "peft_diffusers_b.safetensors"}, adapters=TWO_LORAS)
    tensors["two_loras_out"] = out
    b_deltas = read_peft(OUT / "peft_diffusers_b.safetensors")["transformer"]
    both = apply(apply(layout.diffusers, peft_deltas["transformer"], TWO_LORAS["a"]), b_deltas, TWO_LORAS["b"])
    checks["two_loras: diffusers set_adapters vs formula"] = d = max_diff(out, forward(gf.with_state(base.transformer, both), x))
    assert d < TOL_OUT, d
    for other in ("base_out", "peft_diffusers_s100"):
        assert max_diff(out, tensors[other]) > MIN_EFFECT, other

    # --- end to end ------------------------------------------------------------------------------
    base_run = e2e(fresh(base))
    pipe_a = fresh(base)
    pipe_a.load_lora_weights(str(OUT), weight_name="peft_diffusers.safetensors", adapter_name="a")
    runs = {"base": base_run, "s100": e2e(pipe_a, 1.0), "s060": e2e(pipe_a, 0.6)}
    tensors["e2e_latents_in"] = base_run["latents_in"]
    for tag, run in runs.items():
        assert torch.equal(run["latents_in"], base_run["latents_in"])
        tensors[f"e2e_{tag}_image"] = run["image"]
        tensors[f"e2e_{tag}_image_u8"] = run["image_u8"]
    tensors["e2e_base_pooled"] = text(fresh(base))
    tensors["e2e_s100_pooled"] = text(pipe_a, 1.0)
    tensors["e2e_s060_pooled"] = text(pipe_a, 0.6)
    tensors["e2e_s100_clip_hidden"] = clip_hidden(pipe_a)
    tensors["e2e_base_clip_hidden"] = clip_hidden(fresh(base))
    with torch.no_grad():
        tensors["e2e_prompt_embeds"] = base.encode_prompt(E2E["prompt"], device="cpu", max_sequence_length=gp.T5_MAX_LEN)[0]
    tensors["e2e_clip_ids"] = gp.clip_ids(base, [E2E["prompt"]])
    tensors["e2e_t5_ids"] = gp.t5_ids(base, [E2E["prompt"]], gp.T5_MAX_LEN)
    # formula cross-checks: the CLIP LoRA follows the same strength as the transformer's
    for tag, s in SCALES.items():
        formula_pipe = fresh(
            base,
            transformer_sd=apply(layout.diffusers, peft_deltas["transformer"], s),
            clip_sd=apply(clip_sd, peft_deltas["text_encoder"], s),
        )
        checks[f"e2e_{tag}: diffusers vs formula (transformer and CLIP both at {s})"] = d = max_diff(runs[tag]["image"], e2e(formula_pipe)["image"])
        assert d < TOL_IMAGE, (tag, d)
        checks[f"e2e_{tag}_pooled: diffusers vs formula CLIP at {s}"] = d = max_diff(tensors[f"e2e_{tag}_pooled"], text(formula_pipe))
        assert d < TOL_OUT, (tag, d)
    checks["e2e_s060_pooled vs CLIP LoRA at 1.0 (shows the CLIP LoRA is scaled)"] = d = max_diff(tensors["e2e_s060_pooled"], tensors["e2e_s100_pooled"])
    assert d > 1e-3, d
    kohya_pipe = fresh(
        base,
        transformer_sd=layout.diffusers_state(apply(layout.bfl, kohya_deltas["bfl"], 1.0)),
        clip_sd=apply(clip_sd, kohya_deltas["clip"], 1.0),
    )
    kohya_run = e2e(kohya_pipe)
    tensors["e2e_kohya_s100_image"] = kohya_run["image"]
    tensors["e2e_kohya_s100_image_u8"] = kohya_run["image_u8"]
    checks["e2e_kohya_s100 vs e2e_s100 (same LoRA A)"] = d = max_diff(kohya_run["image"], runs["s100"]["image"])
    assert d < TOL_IMAGE, d
    for tag in ("s100", "s060", "kohya_s100"):
        checks[f"e2e_{tag}_image: max |image - base image|"] = d = max_diff(tensors[f"e2e_{tag}_image"], tensors["e2e_base_image"])
        assert d > MIN_EFFECT, (tag, d)

    # --- write -------------------------------------------------------------------------------------
    tensors = {k: v.detach().clone().contiguous() for k, v in sorted(tensors.items())}
    for k, v in tensors.items():
        if v.is_floating_point():
            assert torch.isfinite(v).all(), k
    save_file(tensors, OUT / "expected.safetensors")
    meta = build_meta(tensors, checks, check_notes, unsupported, t_targets, b_targets, meta_ta, meta_ca, meta_tb)
    text_json = json.dumps(meta, indent=2, ensure_ascii=False)
    text_json = re.sub(r"\[\s*(-?[\d.]+(?:,\s*-?[\d.]+)*)\s*\]", lambda m: "[" + re.sub(r",\s*", ", ", m[1]) + "]", text_json)
    (OUT / "meta.json").write_text(text_json + "\n")
    total = sum(p.stat().st_size for p in OUT.iterdir())
    assert total < 1.5e6, total
    print(f"wrote {OUT} ({total / 1e3:.0f} kB)")
    for k, v in checks.items():
        print(f"  {k}: {v:.2e}")
    for n in check_notes:
        print("  " + n)


def build_meta(tensors, checks, check_notes, unsupported, t_targets, b_targets, meta_ta, meta_ca, meta_tb):
    def keys_of(name):
        keys, md = file_keys(OUT / name)
        return keys, md

    files = {}
    peft_keys, peft_md = keys_of("peft_diffusers.safetensors")
    files["peft_diffusers.safetensors"] = {
        "format": "diffusers / PEFT, as FluxPipeline.save_lora_weights writes it (with the adapter metadata diffusers' training scripts pass)",
        "lora": "A: transformer (every nn.Linear) + CLIP text encoder",
        "keys": len(peft_keys),
        "key_pattern": ["transformer.<diffusers module>.lora_A.weight [r, in]", "transformer.<diffusers module>.lora_B.weight [out, r]",
                        "text_encoder.<CLIP module>.lora_A.weight", "text_encoder.<CLIP module>.lora_B.weight"],
        "alpha": {
            "where": "safetensors header __metadata__['lora_adapter_metadata']: a JSON string of a flat object whose keys are "
                     "'<component>.<LoraConfig field>' (component = transformer | text_encoder), e.g. 'transformer.r', "
                     "'transformer.lora_alpha', 'transformer.rank_pattern', 'transformer.alpha_pattern', 'transformer.target_modules'. "
                     "No '.alpha' tensors. diffusers reads it back (lora_base._fetch_state_dict -> _load_sft_state_dict_metadata), "
                     "strips the component prefix and builds LoraConfig(**metadata).",
            "scale": "per module lora_alpha / r (alpha_pattern / rank_pattern override by module name; empty here)",
            "without_metadata": "diffusers takes alpha from '<component>.<module>.alpha' tensors if the file has them "
                                "(network_alphas), else alpha = rank (scale 1)",
            "values": {"transformer": {"r": RANK_A, "lora_alpha": ALPHA_A, "scale": ALPHA_A / RANK_A},
                       "text_encoder": {"r": RANK_CLIP, "lora_alpha": ALPHA_CLIP, "scale": ALPHA_CLIP / RANK_CLIP}},
            "file_metadata_keys": sorted(peft_md),
        },
        "reference": "diffusers: pipe.load_lora_weights(file), transformer(..., joint_attention_kwargs={'scale': s}); "
                     "asserted equal (< 1e-5) to W + s·(alpha/r)·B@A applied to the diffusers weights, and to the kohya file's fused formula",
        "expected": ["peft_diffusers_s100", "peft_diffusers_s060"],
    }
    b_keys, _ = keys_of("peft_diffusers_b.safetensors")
    files["peft_diffusers_b.safetensors"] = {
        "format": "as peft_diffusers.safetensors (transformer only)",
        "lora": "B",
        "keys": len(b_keys),
        "alpha": {"where": "lora_adapter_metadata, as above", "values": {"transformer": {"r": RANK_B, "lora_alpha": ALPHA_B, "scale": ALPHA_B / RANK_B}}},
        "reference": "used with LoRA A for two_loras_out",
    }
    k_keys, _ = keys_of("kohya.safetensors")
    files["kohya.safetensors"] = {
        "format": "kohya sd-scripts FLUX (networks/lora_flux.py naming) on the BFL layout",
        "lora": "A (transformer + CLIP), same effective deltas as peft_diffusers.safetensors",
        "keys": len(k_keys),
        "key_pattern": ["lora_unet_<bfl module, '.'->'_'>.lora_down.weight [R, in]", "….lora_up.weight [out, R]", "….alpha (0-d f32)",
                        "lora_te1_text_model_<CLIP module, '.'->'_'>.lora_down.weight / .lora_up.weight / .alpha"],
        "fusion": "double_blocks.N.{img,txt}_attn.qkv: down = cat(A_q, A_k, A_v) [3r, in], up = block-diag(B_q, B_k, B_v) [3·64, 3r]; "
                  "single_blocks.N.linear1: 4 parts (q, k, v, proj_mlp) [4r, in] / [448, 4r]; fused alpha = (alpha/r)·R, so alpha/R is unchanged; "
                  "final_layer.adaLN_modulation.1 = norm_out.linear with the up's two row halves swapped",
        "alpha": {"where": "'<name>.alpha' 0-d tensors", "scale": "alpha / down.shape[0] (rank 4 → alpha 8, fused qkv rank 12 → 24, linear1 rank 16 → 32; CLIP 2 with rank 4)"},
        "reference": "formula W + s·(alpha/R)·up@down on the BFL weights (and the CLIP weights), converted to diffusers and run; equals "
                     "peft_diffusers_* to < 1e-5. diffusers 0.42's own kohya converter hard-codes FLUX.1's linear1 split (3072·3 + 12288); "
                     "with that patched to the tiny width it agrees (< 1e-5) with the formula restricted to double/single blocks: it silently drops "
                     "the LoRAs on img_in, txt_in, time_in, vector_in, guidance_in and final_layer (its converter returns those keys without the "
                     "'transformer.' prefix, which load_lora_adapter(prefix='transformer') skips; it would also ignore the final_layer alphas). "
                     "The fixture applies every module, as sd-scripts and ComfyUI do",
        "expected": ["kohya_s100", "kohya_s060", "e2e_kohya_s100_image"],
    }
    c_keys, _ = keys_of("bfl_comfy.safetensors")
    files["bfl_comfy.safetensors"] = {
        "format": "BFL / ComfyUI naming: 'diffusion_model.<bfl module>.lora_A.weight' (down) / '.lora_B.weight' (up) / '.alpha' (0-d), fused as kohya",
        "lora": "A's transformer part, except final_layer.linear (its LoRA left out), plus full deltas",
        "keys": len(c_keys),
        "diff": {
            "diffusion_model.final_layer.linear.diff": "[64, 64]: weight += s · diff",
            "diffusion_model.final_layer.linear.diff_b": "[64]: bias += s · diff_b",
            "diffusion_model.double_blocks.0.img_attn.norm.key_norm.scale.diff": "[32]: the RMSNorm scale += s · diff "
                "(ComfyUI's model_lora_keys_unet maps every non-'.weight' parameter to itself, so '<param>.diff' patches it)",
            "why_no_lora_on_final_layer.linear": "ComfyUI's load_lora keeps one patch per weight key; a '.diff' on the same key replaces the LoRA",
        },
        "alpha": {"where": "'.alpha' 0-d tensors", "scale": "alpha / rank, as kohya"},
        "reference": "formula (ComfyUI semantics). diffusers 0.42 maps 'diffusion_model.' FLUX.1 keys only for lora_down/lora_up names "
                     "(its kohya path, which would also filter out .diff_b and norm .diff keys); with lora_A/lora_B names: " + unsupported["bfl_comfy.safetensors"],
        "expected": ["bfl_comfy_s100", "bfl_comfy_s060"],
    }
    x_keys, _ = keys_of("xlabs.safetensors")
    files["xlabs.safetensors"] = {
        "format": "XLabs (x-flux) processor LoRA",
        "lora": "A on the attention: double qkv (both streams), attention proj (both streams), single-block q,k,v (first 3·64 rows of linear1) and linear2",
        "keys": len(x_keys),
        "key_names": {
            "double_blocks.N.processor.qkv_lora1.{down,up}.weight": "img_attn.qkv (image stream)",
            "double_blocks.N.processor.qkv_lora2.{down,up}.weight": "txt_attn.qkv (text stream)",
            "double_blocks.N.processor.proj_lora1.{down,up}.weight": "img_attn.proj",
            "double_blocks.N.processor.proj_lora2.{down,up}.weight": "txt_attn.proj",
            "single_blocks.N.processor.qkv_lora.{down,up}.weight": "linear1 rows [0, 3·width) (q, k, v; not the MLP rows); up is [3·width, r]",
            "single_blocks.N.processor.proj_lora.{down,up}.weight": "linear2 (diffusers proj_out, input = attn ⊕ mlp)",
            "prefix": "diffusers also accepts a leading 'diffusion_model.'",
        },
        "alpha": {"where": "none (no alpha keys)", "scale": "1: delta = up @ down (diffusers: alphas=None → lora_alpha = rank); "
                  "LoRA A's alpha/r = 2 is baked into the up weights here"},
        "reference": "diffusers: pipe.load_lora_weights(file) (its _convert_xlabs_flux_lora_to_diffusers copies the qkv down to q, k, v and "
                     "splits up in 3; works at any width) with joint_attention_kwargs scale; asserted equal (< 1e-5) to the formula",
        "expected": ["xlabs_s100", "xlabs_s060"],
    }
    lokr_keys, _ = keys_of("lokr.safetensors")
    files["lokr.safetensors"] = {
        "format": "LyCORIS LoKr, kohya naming (lora_unet_<bfl module>)",
        "keys": len(lokr_keys),
        "modules": {kohya_unet_name(m): {"shapes": {k: list(s) for k, s in sh.items()}, "alpha": a} for m, sh, a in LOKR},
        "formula": "delta = kron(w1, w2).reshape(W.shape), w1 = lokr_w1 or lokr_w1_a@lokr_w1_b, w2 = lokr_w2 or lokr_w2_a@lokr_w2_b; "
                   "scale = alpha/dim with dim = w2_b.shape[0] if w2 is decomposed, else w1_b.shape[0] if w1 is decomposed; "
                   "scale = 1 when both are full (alpha ignored) or when there is no alpha; W' = W + s·scale·delta (ComfyUI comfy/weight_adapter/lokr.py)",
        "scales_used": {"lora_unet_double_blocks_0_img_attn_proj": "1 (both full, alpha 5 ignored)", "lora_unet_single_blocks_1_linear2": "1/2",
                        "lora_unet_double_blocks_0_txt_mlp_0": "3/2 (dim = w2_b rank)", "lora_unet_double_blocks_0_img_attn_qkv": "1 (no alpha)"},
        "reference": "formula; diffusers 0.42 loads LoKr only for Flux2 / Z-Image / LyCORIS-Flux2 naming: " + unsupported["lokr.safetensors"],
        "expected": ["lokr_s100", "lokr_s060"],
    }
    loha_keys, _ = keys_of("loha.safetensors")
    files["loha.safetensors"] = {
        "format": "LyCORIS LoHa, kohya naming",
        "keys": len(loha_keys),
        "modules": {kohya_unet_name(m): {"rank": r, "alpha": a} for m, r, a in LOHA},
        "formula": "delta = (hada_w1_a@hada_w1_b) ⊙ (hada_w2_a@hada_w2_b), w*_a [out, r], w*_b [r, in]; scale = alpha / hada_w1_b.shape[0] "
                   "(1 without alpha); W' = W + s·scale·delta (ComfyUI comfy/weight_adapter/loha.py)",
        "reference": "formula; diffusers 0.42 has no LoHa loader: " + unsupported["loha.safetensors"],
        "expected": ["loha_s100", "loha_s060"],
    }
    return {
        "generator": "scripts/reference/gen_lora.py",
        "versions": {"torch": torch.__version__.split("+")[0], "diffusers": diffusers.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
        "base_pipeline": "flux/tests/fixtures/tiny_pipeline (dev, f32)",
        "transformer_inputs": {
            "img": "[1,16,64] randn (a 4x4 token grid, packed latents)",
            "img_ids": "[16,3] (0, row, col) row-major, as FluxPipeline._prepare_latent_image_ids",
            "txt": "[1,8,32] randn", "txt_ids": "[8,3] zeros", "pooled": "[1,32] randn (pooled_projections)",
            "timestep": "[1] = 0.7: the value passed to FluxTransformer2DModel (FluxPipeline passes t/1000, i.e. sigma); the model multiplies "
                        "by 1000 itself (time embedding of 700). BFL's Flux.forward takes the same 0.7 (its timestep_embedding uses time_factor 1000)",
            "guidance": "[1] = 3.5, passed as is (the model also multiplies by 1000)",
            "seed": "torch.Generator().manual_seed(10), drawn in the order img, txt, pooled",
            "call": "transformer(hidden_states=img, encoder_hidden_states=txt, pooled_projections=pooled, timestep, img_ids, txt_ids, guidance)",
        },
        "loras": {
            "A": {"transformer": {"r": RANK_A, "lora_alpha": ALPHA_A, "target_modules": t_targets, "seed": 20},
                  "text_encoder": {"r": RANK_CLIP, "lora_alpha": ALPHA_CLIP, "target_modules": CLIP_TARGETS, "seed": 21},
                  "init": f"PEFT LoraConfig(init_lora_weights=False), then A ~ N(0, 1/in), B ~ N(0,1) rescaled so that ‖(alpha/r)·B@A‖_F = {REL_DELTA}·‖W‖_F per module"},
            "B": {"transformer": {"r": RANK_B, "lora_alpha": ALPHA_B, "target_modules": b_targets, "seed": 22}},
            "adapter_metadata": {"transformer (A)": meta_ta, "text_encoder (A)": meta_ca, "transformer (B)": meta_tb},
        },
        "files": files,
        "strengths": {"s100": 1.0, "s060": 0.6, "meaning": "final weight = W + s · scale · delta; for diffusers files s is joint_attention_kwargs['scale']"},
        "two_loras": {
            "expected": "two_loras_out",
            "call": "load_lora_weights(peft_diffusers.safetensors, adapter_name='a'); load_lora_weights(peft_diffusers_b.safetensors, adapter_name='b'); "
                    "set_adapters(['a', 'b'], [0.7, 0.4]); transformer forward without a scale",
            "formula": "W + 0.7·(8/4)·B_a@A_a + 0.4·(3/2)·B_b@A_b (asserted < 1e-5)",
        },
        "e2e": {
            "pipeline": "tiny_pipeline (FluxPipeline.from_pretrained, f32)",
            "call": dict(E2E, max_sequence_length=gp.T5_MAX_LEN, latents="pack(e2e_latents_in)"),
            "runs": {
                "base": "no LoRA → e2e_base_image, e2e_base_image_u8",
                "s100": "load_lora_weights(peft_diffusers.safetensors) and joint_attention_kwargs={'scale': 1.0} → e2e_s100_image(_u8)",
                "s060": "same with scale 0.6 → e2e_s060_image(_u8)",
                "kohya_s100": "kohya.safetensors by formula on the transformer and CLIP weights, no scale kwarg → e2e_kohya_s100_image(_u8)",
            },
            "clip_lora_scale": "FluxPipeline.__call__ passes joint_attention_kwargs['scale'] to encode_prompt as lora_scale, which "
                               "scale_lora_layers(text_encoder, s) before CLIP runs and unscales after: the CLIP LoRA follows the same "
                               "strength as the transformer's (checked: diffusers s060 == formula with both at 0.6)",
            "text_tensors": {
                "e2e_clip_ids": "[1,77] the ids CLIP gets", "e2e_t5_ids": "[1,32]",
                "e2e_prompt_embeds": "[1,32,32] T5 output (no LoRA on T5)",
                "e2e_{base,s100,s060}_pooled": "[1,32] CLIP pooled with the CLIP LoRA at 0 / 1.0 / 0.6 (pipe.encode_prompt(lora_scale=s))",
                "e2e_{base,s100}_clip_hidden": "[1,77,32] CLIP last_hidden_state (final layer norm applied) without / with the CLIP LoRA at 1.0",
            },
            "image": "e2e_*_image f32 [1,32,32,3] in [0,1] (output_type='np'); e2e_*_image_u8 u8 (output_type='pil')",
            "seed": E2E_SEED,
            "noise": dict(gp.noise_note(E2E_SEED, [1, 16, 4, 4]), used_as="latents=pack(e2e_latents_in) passed to every e2e call"),
        },
        "diffusers_on_unsupported_files": unsupported,
        "checks": {k: f"{v:.2e}" for k, v in checks.items()},
        "check_notes": check_notes,
        "tensors": {k: {"dtype": str(v.dtype).removeprefix("torch."), "shape": list(v.shape)} for k, v in tensors.items()},
    }


if __name__ == "__main__":
    main()
