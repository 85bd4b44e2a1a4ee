"""Golden fixtures for flux-core: tiny random FluxTransformer2DModels run by diffusers.

Writes flux-core/tests/fixtures/<case>/ with the same weights in every layout we load (BFL,
ComfyUI scaled fp8, diffusers single file and sharded folder, bf16 / f16 stored) plus the
inputs and the reference outputs. The BFL layout is derived from the diffusers weights and
checked by a round trip through diffusers' own BFL->diffusers converter.

Run from the repository root:  python scripts/reference/gen_flux.py
"""

import inspect
import json
import shutil
from pathlib import Path

import torch
from diffusers import FluxTransformer2DModel
from diffusers.loaders import single_file_utils
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "flux-core" / "tests" / "fixtures"


def diffusers_to_bfl(sd, num_layers, num_single_layers):
    """Inverse of diffusers' convert_flux_transformer_checkpoint_to_diffusers."""
    sd = dict(sd)
    out = {}

    def take(dst, src):
        out[dst] = sd.pop(src)

    for w in ("weight", "bias"):
        take(f"time_in.in_layer.{w}", f"time_text_embed.timestep_embedder.linear_1.{w}")
        take(f"time_in.out_layer.{w}", f"time_text_embed.timestep_embedder.linear_2.{w}")
        take(f"vector_in.in_layer.{w}", f"time_text_embed.text_embedder.linear_1.{w}")
        take(f"vector_in.out_layer.{w}", f"time_text_embed.text_embedder.linear_2.{w}")
        if f"time_text_embed.guidance_embedder.linear_1.{w}" in sd:
            take(f"guidance_in.in_layer.{w}", f"time_text_embed.guidance_embedder.linear_1.{w}")
            take(f"guidance_in.out_layer.{w}", f"time_text_embed.guidance_embedder.linear_2.{w}")
        take(f"txt_in.{w}", f"context_embedder.{w}")
        take(f"img_in.{w}", f"x_embedder.{w}")
        take(f"final_layer.linear.{w}", f"proj_out.{w}")
        scale, shift = sd.pop(f"norm_out.linear.{w}").chunk(2, dim=0)
        out[f"final_layer.adaLN_modulation.1.{w}"] = torch.cat([shift, scale], dim=0)
    for i in range(num_layers):
        b, d = f"double_blocks.{i}.", f"transformer_blocks.{i}."
        for w in ("weight", "bias"):
            take(b + f"img_mod.lin.{w}", d + f"norm1.linear.{w}")
            take(b + f"txt_mod.lin.{w}", d + f"norm1_context.linear.{w}")
            out[b + f"img_attn.qkv.{w}"] = torch.cat([sd.pop(d + f"attn.to_{x}.{w}") for x in "qkv"])
            out[b + f"txt_attn.qkv.{w}"] = torch.cat([sd.pop(d + f"attn.add_{x}_proj.{w}") for x in "qkv"])
            take(b + f"img_attn.proj.{w}", d + f"attn.to_out.0.{w}")
            take(b + f"txt_attn.proj.{w}", d + f"attn.to_add_out.{w}")
            take(b + f"img_mlp.0.{w}", d + f"ff.net.0.proj.{w}")
            take(b + f"img_mlp.2.{w}", d + f"ff.net.2.{w}")
            take(b + f"txt_mlp.0.{w}", d + f"ff_context.net.0.proj.{w}")
            take(b + f"txt_mlp.2.{w}", d + f"ff_context.net.2.{w}")
        take(b + "img_attn.norm.query_norm.scale", d + "attn.norm_q.weight")
        take(b + "img_attn.norm.key_norm.scale", d + "attn.norm_k.weight")
        take(b + "txt_attn.norm.query_norm.scale", d + "attn.norm_added_q.weight")
        take(b + "txt_attn.norm.key_norm.scale", d + "attn.norm_added_k.weight")
    for i in range(num_single_layers):
        b, d = f"single_blocks.{i}.", f"single_transformer_blocks.{i}."
        for w in ("weight", "bias"):
            out[b + f"linear1.{w}"] = torch.cat(
                [sd.pop(d + f"attn.to_{x}.{w}") for x in "qkv"] + [sd.pop(d + f"proj_mlp.{w}")]
            )
            take(b + f"linear2.{w}", d + f"proj_out.{w}")
            take(b + f"modulation.lin.{w}", d + f"norm.linear.{w}")
        take(b + "norm.query_norm.scale", d + "attn.norm_q.weight")
        take(b + "norm.key_norm.scale", d + "attn.norm_k.weight")
    assert not sd, f"unconverted diffusers keys: {sorted(sd)}"
    return out


def diffusers_converter(inner_dim, mlp_ratio):
    """diffusers' BFL->diffusers converter with its hard-coded 3072 width replaced."""
    src = inspect.getsource(single_file_utils.convert_flux_transformer_checkpoint_to_diffusers)
    src = src.replace("mlp_ratio = 4.0", f"mlp_ratio = {mlp_ratio}").replace(
        "inner_dim = 3072", f"inner_dim = {inner_dim}"
    )
    scope = dict(vars(single_file_utils))
    exec(src, scope)
    return scope["convert_flux_transformer_checkpoint_to_diffusers"]


def check_round_trip(bfl, reference, inner_dim, mlp_ratio):
    convert = diffusers_converter(inner_dim, mlp_ratio)
    back = convert({k: v.clone() for k, v in bfl.items()})
    assert set(back) == set(reference), set(back) ^ set(reference)
    for k in reference:
        assert torch.equal(back[k], reference[k]), k


def img_ids(rows, cols):
    ids = torch.zeros(rows, cols, 3)
    ids[..., 1] = torch.arange(rows)[:, None]
    ids[..., 2] = torch.arange(cols)[None, :]
    return ids.reshape(rows * cols, 3)


def run(model, inputs):
    with torch.no_grad():
        return model(
            hidden_states=inputs["img"],
            encoder_hidden_states=inputs["txt"],
            pooled_projections=inputs["y"],
            timestep=inputs["timesteps"],
            img_ids=inputs["img_ids"][0],
            txt_ids=inputs["txt_ids"][0],
            guidance=inputs.get("guidance"),
            return_dict=False,
        )[0]


def with_state(model, sd):
    """A copy of `model` holding `sd` (used for weights rounded through a storage dtype)."""
    clone = FluxTransformer2DModel.from_config(model.config).eval()
    clone.load_state_dict({k: v.float() for k, v in sd.items()})
    return clone


def to_fp8_scaled(bfl):
    """ComfyUI 'scaled fp8': 2-D weights as e4m3fn with a per-tensor scale_weight; the rest bf16."""
    out, dequant = {}, {}
    for k, v in bfl.items():
        if v.ndim == 2:
            scale = v.abs().max() / 448.0
            q = (v / scale).to(torch.float8_e4m3fn)
            out["model.diffusion_model." + k] = q
            out["model.diffusion_model." + k.replace(".weight", ".scale_weight")] = scale.reshape(1)
            dequant[k] = q.float() * scale
        else:
            out["model.diffusion_model." + k] = v.to(torch.bfloat16)
            dequant[k] = v.to(torch.bfloat16).float()
    out["model.diffusion_model.scaled_fp8"] = torch.zeros(2, dtype=torch.float8_e4m3fn)
    # An all-in-one file also carries the other components: they must be ignored, not loaded.
    out["first_stage_model.decoder.conv_in.weight"] = torch.zeros(4, 4)
    return out, dequant


def make_case(name, cfg, batch, grid, n_txt, timesteps, guidance, layouts, seed):
    torch.manual_seed(seed)
    model = FluxTransformer2DModel(**cfg).eval()
    # diffusers initialises some layers to zero (e.g. norm_out); randomise every tensor so that
    # no mapping mistake can hide behind a zero. Weights get a 1/sqrt(fan_in) scale, as trained
    # models have, so activations and outputs stay O(1) like the real model's velocities.
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm_q" in n or "norm_k" in n or "norm_added" in n:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif p.ndim == 2:
                p.copy_(torch.randn_like(p) / p.shape[1] ** 0.5)
            else:
                p.copy_(0.1 * torch.randn_like(p))
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    inner = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    bfl = diffusers_to_bfl(sd, cfg["num_layers"], cfg["num_single_layers"])
    check_round_trip(bfl, sd, inner, 4.0)

    rows, cols = grid
    inputs = {
        "img": torch.randn(batch, rows * cols, cfg["in_channels"]),
        "img_ids": img_ids(rows, cols)[None].repeat(batch, 1, 1),
        "txt": torch.randn(batch, n_txt, cfg["joint_attention_dim"]),
        "txt_ids": torch.zeros(batch, n_txt, 3),
        "timesteps": torch.tensor(timesteps, dtype=torch.float32),
        "y": torch.randn(batch, cfg["pooled_projection_dim"]),
    }
    if guidance is not None:
        inputs["guidance"] = torch.tensor(guidance, dtype=torch.float32)
    outputs = {"out": run(model, inputs)}

    d = OUT / name
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    if "bfl" in layouts:
        save_file(bfl, d / "bfl.safetensors")
    if "diffusers_sharded" in layouts:
        model.save_pretrained(d / "diffusers", max_shard_size="400KB", safe_serialization=True)
        assert len(list((d / "diffusers").glob("*.safetensors"))) > 1, "expected several shards"
    if "bf16" in layouts:
        rounded = {k: v.to(torch.bfloat16) for k, v in bfl.items()}
        save_file(rounded, d / "bfl_bf16.safetensors")
        outputs["out_bf16"] = run(with_state(model, {k: v.to(torch.bfloat16) for k, v in sd.items()}), inputs)
    if "f16" in layouts:
        rounded = {k: v.to(torch.float16) for k, v in sd.items()}
        save_file(rounded, d / "diffusers_f16.safetensors")
        outputs["out_f16"] = run(with_state(model, rounded), inputs)
    if "fp8" in layouts:
        fp8, dequant = to_fp8_scaled(bfl)
        save_file(fp8, d / "comfy_fp8_scaled.safetensors")
        convert = diffusers_converter(inner, 4.0)
        outputs["out_fp8"] = run(with_state(model, convert(dequant)), inputs)
    save_file({k: v.contiguous() for k, v in {**inputs, **outputs}.items()}, d / "io.safetensors")
    (d / "case.json").write_text(json.dumps({"diffusers_config": cfg, "batch": batch, "grid": grid}, indent=1))
    print(name, {k: tuple(v.shape) for k, v in outputs.items()})


def main():
    base = dict(
        patch_size=1,
        in_channels=64,
        out_channels=None,
        num_layers=1,
        num_single_layers=2,
        attention_head_dim=32,
        num_attention_heads=2,
        joint_attention_dim=48,
        pooled_projection_dim=32,
        guidance_embeds=True,
        axes_dims_rope=(4, 14, 14),
    )
    # [dev]-like: guidance, batch 2 with different timesteps and guidance, non-square grid;
    # every stored layout and dtype.
    make_case(
        "dev_tiny", base, batch=2, grid=(4, 6), n_txt=8, timesteps=[0.3, 0.85], guidance=[3.5, 2.0],
        layouts={"bfl", "diffusers_sharded", "bf16", "f16", "fp8"}, seed=0,
    )
    # [schnell]-like: no guidance embedding.
    make_case(
        "schnell_tiny", {**base, "guidance_embeds": False, "num_single_layers": 1}, batch=1,
        grid=(6, 4), n_txt=5, timesteps=[1.0], guidance=None, layouts={"bfl"}, seed=1,
    )
    # Several heads of 16 with a RoPE split only config.json can tell (4, 6, 6); two double blocks.
    make_case(
        "heads4", {**base, "num_layers": 2, "num_single_layers": 1, "attention_head_dim": 16,
                   "num_attention_heads": 4, "joint_attention_dim": 32, "pooled_projection_dim": 16,
                   "axes_dims_rope": (4, 6, 6)},
        batch=1, grid=(3, 5), n_txt=7, timesteps=[0.5], guidance=[4.0], layouts={"diffusers_sharded"}, seed=2,
    )


if __name__ == "__main__":
    main()
