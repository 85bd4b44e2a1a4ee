"""Golden fixtures for flux-vae: a tiny FLUX-like diffusers `AutoencoderKL`.

Writes flux-vae/tests/fixtures/:
  diffusers/vae/config.json + diffusion_pytorch_model.safetensors   (save_pretrained, f32)
  ae_tiny.safetensors        the same weights in BFL `ae.safetensors` key layout (f32)
  ae_tiny_bf16.safetensors   BFL layout stored in bf16
  io.safetensors             inputs and diffusers outputs:
      image            [1,3,64,48] in [-1,1]
      latents          encode(image): FLUX scaling, scale * (mode - shift)
      latents_in       [1,16,8,6] random latents (scaled space)
      decoded          decode(latents_in): vae.decode(latents_in / scale + shift)
      decoded_bf16     the same with the bf16-rounded weights (computed in f32)

The model is configured like FLUX.1's VAE (16 latent channels, no quant convs, mid-block
attention, 4 blocks of 2 resnets, scale 0.3611, shift 0.1159) at tiny width: block_out_channels
(8, 16, 24, 24) with GroupNorm of 4 groups (FLUX uses 128..512 channels and 32 groups).

The BFL layout is derived from the diffusers state dict by the inverse of diffusers'
`convert_ldm_vae_checkpoint`, and checked by a round trip through that converter.

Run from the repository root: .venv/bin/python scripts/reference/gen_vae.py
"""

import json
import os

import torch
from diffusers import AutoencoderKL
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
from safetensors.torch import save_file

OUT = "flux-vae/tests/fixtures"
SCALE, SHIFT = 0.3611, 0.1159
BLOCKS = (8, 16, 24, 24)
GROUPS = 4


def build():
    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=BLOCKS,
        layers_per_block=2,
        latent_channels=16,
        norm_num_groups=GROUPS,
        sample_size=64,
        scaling_factor=SCALE,
        shift_factor=SHIFT,
        use_quant_conv=False,
        use_post_quant_conv=False,
        mid_block_add_attention=True,
    )
    # Non-trivial norm affines and biases so a mis-mapped parameter shows.
    with torch.no_grad():
        for name, p in vae.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
    return vae.eval()


def resnet_to_bfl(rest):
    return rest.replace("conv_shortcut", "nin_shortcut")


def attn_to_bfl(rest, tensor):
    names = {
        "group_norm": "norm",
        "to_q": "q",
        "to_k": "k",
        "to_v": "v",
        "to_out.0": "proj_out",
    }
    for d, b in names.items():
        if rest.startswith(d + "."):
            leaf = rest[len(d) + 1 :]
            if leaf == "weight" and tensor.ndim == 2:
                tensor = tensor[:, :, None, None]
            return f"{b}.{leaf}", tensor
    raise KeyError(rest)


def to_bfl(sd, levels):
    """Inverse of diffusers' convert_ldm_vae_checkpoint (no quant convs)."""
    out = {}
    for key, t in sd.items():
        part, rest = key.split(".", 1)
        if rest.startswith("conv_norm_out."):
            new = f"{part}.norm_out." + rest.split(".", 1)[1]
        elif rest.startswith(("conv_in.", "conv_out.")):
            new = key
        elif rest.startswith("down_blocks."):
            _, i, kind, rest2 = rest.split(".", 3)
            if kind == "resnets":
                new = f"encoder.down.{i}.block.{resnet_to_bfl(rest2)}"
            else:  # downsamplers.0.conv.x
                new = f"encoder.down.{i}.downsample." + rest2.split(".", 1)[1]
        elif rest.startswith("up_blocks."):
            _, i, kind, rest2 = rest.split(".", 3)
            b = levels - 1 - int(i)
            if kind == "resnets":
                new = f"decoder.up.{b}.block.{resnet_to_bfl(rest2)}"
            else:
                new = f"decoder.up.{b}.upsample." + rest2.split(".", 1)[1]
        elif rest.startswith("mid_block.resnets."):
            _, _, j, rest2 = rest.split(".", 3)
            new = f"{part}.mid.block_{int(j) + 1}.{resnet_to_bfl(rest2)}"
        elif rest.startswith("mid_block.attentions.0."):
            name, t = attn_to_bfl(rest[len("mid_block.attentions.0.") :], t)
            new = f"{part}.mid.attn_1.{name}"
        else:
            raise KeyError(key)
        out[new] = t.contiguous()
    return out


def check_round_trip(bfl, sd, config):
    back = convert_ldm_vae_checkpoint(bfl, config)
    assert set(back) == set(sd), set(back) ^ set(sd)
    for k, v in sd.items():
        # The converter keeps the attention 1x1 conv weights 4-D; diffusers squeezes on load.
        assert torch.equal(back[k].reshape(v.shape), v), k


def run(vae, image, latents_in):
    with torch.no_grad():
        mode = vae.encode(image).latent_dist.mode()
        latents = (mode - SHIFT) * SCALE
        decoded = vae.decode(latents_in / SCALE + SHIFT).sample
    return latents, decoded


def main():
    vae = build()
    sd = {k: v.detach().clone() for k, v in vae.state_dict().items()}
    bfl = to_bfl(sd, len(BLOCKS))
    check_round_trip(bfl, sd, dict(vae.config))

    os.makedirs(f"{OUT}/diffusers/vae", exist_ok=True)
    vae.save_pretrained(f"{OUT}/diffusers/vae", safe_serialization=True)
    save_file(bfl, f"{OUT}/ae_tiny.safetensors")
    bf16 = {k: v.to(torch.bfloat16) for k, v in bfl.items()}
    save_file(bf16, f"{OUT}/ae_tiny_bf16.safetensors")

    g = torch.Generator().manual_seed(1)
    image = (torch.rand(1, 3, 64, 48, generator=g) * 2 - 1).float()
    latents_in = torch.randn(1, 16, 8, 6, generator=g)
    latents, decoded = run(vae, image, latents_in)

    rounded = build()
    with torch.no_grad():
        rounded.load_state_dict({k: v.to(torch.bfloat16).float() for k, v in sd.items()})
    _, decoded_bf16 = run(rounded, image, latents_in)

    save_file(
        {
            "image": image,
            "latents": latents.contiguous(),
            "latents_in": latents_in,
            "decoded": decoded.contiguous(),
            "decoded_bf16": decoded_bf16.contiguous(),
        },
        f"{OUT}/io.safetensors",
    )
    with open(f"{OUT}/diffusers/vae/config.json") as f:
        cfg = json.load(f)
    print("params", sum(v.numel() for v in sd.values()), "groups", cfg["norm_num_groups"])
    print("latents", latents.shape, latents.abs().max().item())
    print("decoded", decoded.shape, decoded.abs().max().item())


if __name__ == "__main__":
    main()
