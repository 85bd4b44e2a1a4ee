"""Golden fixtures for the FLUX.1 tools: Kontext, Fill, Canny/Depth-style control and a BFL control LoRA.

Runs diffusers' own FluxKontextPipeline, FluxFillPipeline and FluxControlPipeline in f32 on the CPU
on the tiny [dev] pipeline that gen_pipeline.py saved (its text encoders, tokenizers, VAE, scheduler
and, for Kontext and the control LoRA, its transformer), and writes under flux/tests/fixtures/tools/:

  fill_transformer/           tiny FluxTransformer2DModel, in_channels 384, out_channels 64 (FLUX.1 Fill)
  control_transformer/        tiny FluxTransformer2DModel, in_channels 128, out_channels 64 (Canny/Depth [dev])
  control_lora_bfl.safetensors  a control LoRA for the tiny dev transformer in BFL's format
  kontext_sizes.json          diffusers' Kontext size arithmetic on a table of cases
  runs/<run>.{json,safetensors} in gen_pipeline.py's run format

Every generator draw the pipelines make is recomputed here and asserted equal to what they used;
meta["noise"]["draws"] lists them in order. Line numbers are diffusers 0.42.1.

Run from the repository root:  python scripts/reference/gen_tools.py   (~10 s, single-threaded torch)
"""

import inspect
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import torch
import diffusers
import diffusers.loaders.lora_conversion_utils as lcu
import diffusers.loaders.lora_pipeline as lora_pipeline
import transformers
from diffusers import (
    FluxControlPipeline,
    FluxFillPipeline,
    FluxKontextPipeline,
    FluxPipeline,
    FluxTransformer2DModel,
)
from diffusers.image_processor import VaeImageProcessor
from diffusers.pipelines.flux.pipeline_flux_kontext import PREFERRED_KONTEXT_RESOLUTIONS
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gen_pipeline as gp  # noqa: E402

TOOLS_DIR = gp.FIXTURES / "tools"
RUNS_DIR = TOOLS_DIR / "runs"
FILL_DIR = TOOLS_DIR / "fill_transformer"
CONTROL_DIR = TOOLS_DIR / "control_transformer"
LORA_PATH = TOOLS_DIR / "control_lora_bfl.safetensors"
SIZES_PATH = TOOLS_DIR / "kontext_sizes.json"

NORM_KEYS = ("norm_q", "norm_k", "norm_added_q", "norm_added_k")  # as gen_pipeline.build_transformer
LORA_RANK = 4
LORA_REL = 0.3  # lora_B ~ N(0, 1/r)·REL, lora_A ~ N(0, 1/in): delta ≈ REL × the base weight's scale


# ---------------------------------------------------------------------------------------------
# models


def build_tool_transformer(folder, in_channels, seed):
    """The tiny dev transformer's config with FLUX.1 tool input widths, weights redrawn like
    gen_pipeline.build_transformer (same rule, new seed), saved as one safetensors file."""
    config = json.loads((gp.DEV_DIR / "transformer" / "config.json").read_text())
    kwargs = {k: v for k, v in config.items() if not k.startswith("_")}
    kwargs.update(in_channels=in_channels, out_channels=64)
    torch.manual_seed(seed)
    model = FluxTransformer2DModel(**kwargs)
    gp.randomise(model, seed, gp.linear_rule(NORM_KEYS))
    model.eval()
    if folder.exists():
        shutil.rmtree(folder)
    model.save_pretrained(folder, safe_serialization=True, max_shard_size="10GB")
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["config.json", "diffusion_pytorch_model.safetensors"], names
    loaded = FluxTransformer2DModel.from_pretrained(folder, dtype=torch.float32).eval()
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert loaded.x_embedder.in_features == in_channels and loaded.proj_out.out_features == 64
    return loaded


def dev_transformer():
    return FluxTransformer2DModel.from_pretrained(gp.DEV_DIR / "transformer", dtype=torch.float32).eval()


# ---------------------------------------------------------------------------------------------
# the BFL control LoRA


def bfl_lora_modules(cfg):
    """(BFL module, in, out) of every nn.Linear in BFL's Flux, with the control LoRA's img_in width."""
    d = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    mlp = 4 * d
    mods = [
        ("img_in", 2 * cfg["in_channels"], d),  # 128 inputs: the control latents are concatenated
        ("time_in.in_layer", 256, d),
        ("time_in.out_layer", d, d),
        ("vector_in.in_layer", cfg["pooled_projection_dim"], d),
        ("vector_in.out_layer", d, d),
        ("guidance_in.in_layer", 256, d),
        ("guidance_in.out_layer", d, d),
        ("txt_in", cfg["joint_attention_dim"], d),
    ]
    for i in range(cfg["num_layers"]):
        for s in ("img", "txt"):
            p = f"double_blocks.{i}.{s}"
            mods += [
                (f"{p}_attn.qkv", d, 3 * d),
                (f"{p}_attn.proj", d, d),
                (f"{p}_mlp.0", d, mlp),
                (f"{p}_mlp.2", mlp, d),
                (f"{p}_mod.lin", d, 6 * d),
            ]
    for i in range(cfg["num_single_layers"]):
        p = f"single_blocks.{i}"
        mods += [(f"{p}.linear1", d, 3 * d + mlp), (f"{p}.linear2", d + mlp, d), (f"{p}.modulation.lin", d, 3 * d)]
    mods += [("final_layer.linear", d, 64), ("final_layer.adaLN_modulation.1", d, 2 * d)]
    return mods


def build_control_lora(cfg, seed):
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for name, fan_in, fan_out in bfl_lora_modules(cfg):
        sd[f"{name}.lora_A.weight"] = gp.randn((LORA_RANK, fan_in), gen) / fan_in**0.5
        sd[f"{name}.lora_B.weight"] = gp.randn((fan_out, LORA_RANK), gen) * (LORA_REL / LORA_RANK**0.5)
        # every lora_B has a bias, as in BFL's files (flux/modules/lora.py: LinearLora(lora_bias=True)).
        # diffusers cannot load a file where only some have one: PEFT's lora_bias is one flag for the
        # whole adapter, and with low_cpu_mem_usage (the default) the missing biases stay meta tensors.
        sd[f"{name}.lora_B.bias"] = 0.05 * gp.randn((fan_out,), gen)
    head = cfg["attention_head_dim"]
    norms = [f"double_blocks.{i}.{s}_attn.norm.{q}_norm.scale"
             for i in range(cfg["num_layers"]) for s in ("img", "txt") for q in ("query", "key")]
    norms += [f"single_blocks.{i}.norm.{q}_norm.scale" for i in range(cfg["num_single_layers"]) for q in ("query", "key")]
    for name in norms:
        sd[name] = 1.0 + 0.3 * gp.randn((head,), gen)  # replacement values, not deltas
    return dict(sorted(sd.items()))


def patched_bfl_converter(cfg):
    """diffusers' _convert_bfl_flux_control_lora_to_diffusers (lora_conversion_utils.py 1071-1369) with
    its FLUX.1 constants (19 double / 38 single blocks, width 3072, lines 1074-1076) set to the tiny model's."""
    src = inspect.getsource(lcu._convert_bfl_flux_control_lora_to_diffusers)
    d = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    for old, new in [
        ("num_layers = 19", f"num_layers = {cfg['num_layers']}"),
        ("num_single_layers = 38", f"num_single_layers = {cfg['num_single_layers']}"),
        ("inner_dim = 3072", f"inner_dim = {d}"),
        ("mlp_ratio = 4.0", "mlp_ratio = 4.0"),
    ]:
        assert src.count(old) == 1, old
        src = src.replace(old, new)
    namespace = dict(vars(lcu))
    exec(compile(src, lcu.__file__, "exec"), namespace)
    return namespace["_convert_bfl_flux_control_lora_to_diffusers"]


# ---------------------------------------------------------------------------------------------
# synthetic inputs


def fill_mask_u8(h, w):
    """RGB mask: white rectangle, grays either side of 0.5, and coloured blocks whose binarized
    value depends on PIL's L conversion (not on R alone, nor on the channel mean)."""
    m = np.zeros((h, w, 3), np.uint8)
    m[8:24, 16:40] = 255  # white: inpaint
    m[0:8, 0:16] = 100  # L 100 -> 0.392 -> 0
    m[24:32, 40:48] = 160  # L 160 -> 0.627 -> 1
    m[1:7, 41:47] = (200, 50, 50)  # L 95 -> 0 (R alone would give 1)
    m[25:31, 2:9] = (40, 200, 40)  # L 134 -> 1 (the channel mean, 93, would give 0)
    m[26:30, 12:20] = 128  # L 128 -> 0.50196 -> 1
    m[0:5, 20:27] = 127  # L 127 -> 0.49804 -> 0
    return m


def pil_luma(rgb_u8):
    """PIL's RGB -> L (libImaging/Convert.c rgb2l: L24 = R*19595 + G*38470 + B*7471 + 0x8000, >> 16)."""
    rgb = rgb_u8.astype(np.int64)
    return ((rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16).astype(np.uint8)


def checkerboard_u8(h, w, cell=5):
    y, x = np.mgrid[0:h, 0:w]
    on = ((y // cell + x // cell) % 2 == 1)[..., None]
    a = np.array([230, 40, 90], np.uint8)
    b = np.stack([(x * 200) // (w - 1), 180 - (y * 100) // (h - 1), np.full_like(x, 60)], -1).astype(np.uint8)
    return np.where(on, a, b).astype(np.uint8)


def to_unit(u8):
    """image_processor.py 167 (np.array(img).astype(float32) / 255) and 220 (2x - 1), NCHW."""
    x = torch.from_numpy(u8.astype(np.float32) / 255.0)
    return (2.0 * x - 1.0).permute(2, 0, 1)[None]


# ---------------------------------------------------------------------------------------------
# recording


class Capture(gp.Recorder):
    """gen_pipeline's Recorder (timestep, guidance, output, latents after each step) plus the
    transformer's hidden_states and img_ids of every call."""

    def __init__(self, pipe):
        self.hidden, self.img_ids = [], []
        super().__init__(pipe)

    def hook(self, module, args, kwargs, output):
        super().hook(module, args, kwargs, output)
        self.hidden.append(kwargs["hidden_states"].clone())
        self.img_ids.append(kwargs["img_ids"].clone())


def generate(pipe, call, output_type):
    """gen_pipeline.generate with Capture: images, the recorder, every prepare_latents (args, result)
    and every vae.encode (input, latent_dist): the posteriors the pipeline itself computed (CPU conv
    results can differ in the last bit with the input's memory alignment, so they are not recomputed)."""
    rec = Capture(pipe)
    prepared, encodes = [], []
    original, encode = pipe.prepare_latents, pipe.vae.encode
    pipe.prepare_latents = lambda *a, **k: prepared.append((a, original(*a, **k))) or prepared[-1][1]

    def recording_encode(x, *a, **k):
        out = encode(x, *a, **k)
        encodes.append((x.clone(), out.latent_dist))
        return out

    pipe.vae.encode = recording_encode
    try:
        images = pipe(**call, output_type=output_type, callback_on_step_end=rec.callback).images
    finally:
        del pipe.prepare_latents
        del pipe.vae.encode
        rec.close()
    return images, rec, prepared, encodes


def denoise_tensors(rec, steps, n_tokens, sigmas, cfg_scale=None):
    """The transformer's first-call inputs, every call's velocity (sliced to the noisy tokens, as
    the pipeline uses it) and the latents after each step; the Euler steps are re-done and checked."""
    calls = 2 if cfg_scale else 1
    assert len(rec.velocities) == calls * steps and len(rec.steps) == steps, (len(rec.velocities), len(rec.steps))
    assert all(torch.equal(i, rec.img_ids[0]) for i in rec.img_ids)
    out = {
        "transformer_hidden_states": rec.hidden[0],
        "transformer_img_ids": rec.img_ids[0],
        "transformer_timestep": torch.stack([t for t, _ in rec.inputs]),
        "transformer_guidance": torch.stack([g for _, g in rec.inputs]),
        "velocities": torch.stack([v[:, :n_tokens] for v in rec.velocities]),
        "latents_steps": torch.stack(rec.steps),
        "latents_out": rec.steps[-1],
    }
    v = out["velocities"]
    if cfg_scale:  # pipeline_flux_kontext.py 1040-1069: pos call, then neg call, both sliced
        pos, neg = v[0::2], v[1::2]
        v = neg + cfg_scale * (pos - neg)
        out["velocities_guided"] = v
    x = rec.hidden[0][:, :n_tokens, :64]
    offset = len(sigmas) - 1 - steps
    for i in range(steps):  # scheduler step: x + (sigma_next - sigma) * v, f32
        x = x + (sigmas[offset + i + 1] - sigmas[offset + i]) * v[i]
        assert torch.equal(x, rec.steps[i]), (i, (x - rec.steps[i]).abs().max())
    return out


def pipe_images(pipe, kwargs, tensors, height, width):
    """np call already done: decode check + the PIL call (gen_pipeline.finish), with our generate."""
    vae_tensors, decoded = gp.decode_reference(pipe, tensors["latents_out"], height, width)
    tensors.update(vae_tensors)
    assert torch.equal(tensors["image"], (decoded * 0.5 + 0.5).clamp(0, 1).permute(0, 2, 3, 1))
    pil, rec, _, _ = generate(pipe, kwargs(), "pil")
    assert torch.equal(rec.steps[-1], tensors["latents_out"]), "the PIL call diverged"
    tensors["image_u8"] = torch.from_numpy(np.stack([np.asarray(p) for p in pil]))


def base_meta(name, pipeline_class, call, seed, transformer):
    meta = {k: v for k, v in call.items()}
    meta.update(max_sequence_length=gp.T5_MAX_LEN, pipeline=gp.DEV_DIR.name, transformer=transformer,
                pipeline_class=pipeline_class, seed=seed, output_type="np (image) and pil (image_u8)")
    return meta


def draw_note(seed, draws, used_as):
    note = gp.noise_note(seed, None, draws=draws)
    note["used_as"] = used_as
    return note


# ---------------------------------------------------------------------------------------------
# Kontext


def kontext_output_size(height, width, max_area, vae_scale_factor=8):
    """pipeline_flux_kontext.py 844-851, line for line (height/width already defaulted, 841-842)."""
    aspect_ratio = width / height
    width = round((max_area * aspect_ratio) ** 0.5)
    height = round((max_area / aspect_ratio) ** 0.5)

    multiple_of = vae_scale_factor * 2
    width = width // multiple_of * multiple_of
    height = height // multiple_of * multiple_of
    return width, height


def kontext_reference_size(image_width, image_height, auto_resize, vae_scale_factor=8):
    """pipeline_flux_kontext.py 936-944 for a PIL image of size (w, h); `get_default_height_width`
    (image_processor.py 561-606) floors to multiples of the image processor's vae_scale_factor, which
    the pipeline built as 2·vae_scale_factor = 16 (line 256)."""
    processor_factor = vae_scale_factor * 2
    image_width, image_height = (x - x % processor_factor for x in (image_width, image_height))
    multiple_of = vae_scale_factor * 2
    aspect_ratio = image_width / image_height
    if auto_resize:
        # Kontext is trained on specific resolutions, using one of them is recommended
        _, image_width, image_height = min(
            (abs(aspect_ratio - w / h), w, h) for w, h in PREFERRED_KONTEXT_RESOLUTIONS
        )
    image_width = image_width // multiple_of * multiple_of
    image_height = image_height // multiple_of * multiple_of
    return image_width, image_height


def write_kontext_sizes():
    processor = VaeImageProcessor(vae_scale_factor=16)
    refs = []
    for w, h in [(1024, 1024), (1920, 1080), (1080, 1920), (500, 333), (333, 500), (64, 48),
                 (3000, 1000), (1000, 3000), (777, 777)]:
        ph, pw = processor.get_default_height_width(PIL.Image.new("RGB", (w, h)))
        floored = [pw, ph]
        assert floored == [w - w % 16, h - h % 16]
        for auto in (True, False):
            rw, rh = kontext_reference_size(w, h, auto)
            refs.append({"image_size": [w, h], "auto_resize": auto, "floored_size": floored,
                         "resized_to": [rw, rh], "latent_tokens": (rh // 16) * (rw // 16)})
    outs = []
    for w, h, area in [(1024, 1024, 1024**2), (1920, 1080, 1024**2), (48, 32, 48 * 32),
                       (1000, 700, 1024**2), (512, 512, 1024**2)]:
        ow, oh = kontext_output_size(h, w, area)
        outs.append({"requested": [w, h], "max_area": area, "output": [ow, oh]})
    doc = {
        "source": "diffusers 0.42.1 pipelines/flux/pipeline_flux_kontext.py; sizes are [width, height]",
        "vae_scale_factor": 8,
        "vae_scale_factor_note": "the real FLUX VAE's (2 ** (len(block_out_channels) - 1)); the tiny VAE has the same 8",
        "reference_image": {
            "lines": "936-946: get_default_height_width floors (w, h) to multiples of 16 (the pipeline's "
                     "VaeImageProcessor is built with vae_scale_factor * 2 = 16, line 256; image_processor.py 602-604); "
                     "with _auto_resize the PREFERRED_KONTEXT_RESOLUTIONS entry (lines 82-100) minimising "
                     "|w/h - w_p/h_p| (ties: the smaller w_p, then h_p, by tuple order) replaces it; then both are "
                     "floored to multiples of multiple_of = 16; image_processor.resize (PIL LANCZOS, no-op when the "
                     "size is unchanged) and preprocess to [-1, 1]",
            "preferred_resolutions": [list(r) for r in PREFERRED_KONTEXT_RESOLUTIONS],
            "cases": refs,
        },
        "output_size": {
            "lines": "841-851: aspect = width / height; width = round(sqrt(max_area * aspect)); "
                     "height = round(sqrt(max_area / aspect)) (Python round: half to even); both floored "
                     "to multiples of 16. Note: the requested size only sets the aspect ratio, max_area sets the area",
            "cases": outs,
        },
    }
    SIZES_PATH.write_text(json.dumps(doc, indent=2) + "\n")


def run_kontext(pipe, name, call, ref_u8, seed, fixed_latents):
    steps, height, width = call["num_inference_steps"], call["height"], call["width"]
    prompts = call["prompt"] if isinstance(call["prompt"], list) else [call["prompt"]]
    batch = len(prompts) * call.get("num_images_per_prompt", 1)
    out_w, out_h = kontext_output_size(height, width, call["max_area"])
    assert (out_w, out_h) == (width, height), "max_area must keep the requested size"
    ref_w, ref_h = kontext_reference_size(ref_u8.shape[1], ref_u8.shape[0], call["_auto_resize"])
    assert (ref_w, ref_h) == (ref_u8.shape[1], ref_u8.shape[0]), "the reference image must not be resized"
    pil = PIL.Image.fromarray(ref_u8)
    assert np.array_equal(np.asarray(pil.resize((ref_w, ref_h), PIL.Image.LANCZOS)), ref_u8)
    base = dict(call, image=pil, max_sequence_length=gp.T5_MAX_LEN)
    noise = torch.randn((batch, 16, height // 8, width // 8), generator=gp.torch_generator(seed), dtype=torch.float32)

    def kwargs():
        return dict(base, latents=gp.pack(noise)) if fixed_latents else dict(base, generator=gp.torch_generator(seed))

    image, rec, prepared, encodes = generate(pipe, kwargs(), "np")
    (args, (latents_in, image_latents, latent_ids, image_ids)), = prepared
    # the reference: preprocess (image_processor.py 167, 220), VAE posterior MODE (pipeline 599-611, argmax)
    ref = to_unit(ref_u8)
    (encoded, posterior), = encodes
    assert torch.equal(args[0], ref) and torch.equal(encoded, ref)
    vae = pipe.vae.config
    ref_latents = (posterior.mean - vae.shift_factor) * vae.scaling_factor
    ref_packed = gp.pack(ref_latents.expand(batch, -1, -1, -1).contiguous())
    assert torch.equal(image_latents, ref_packed), (image_latents.shape, ref_packed.shape, (image_latents - ref_packed).abs().max())
    assert torch.equal(latents_in, gp.pack(noise)), "the pipeline started from other latents"
    n = latents_in.shape[1]
    lh, lw = ref_latents.shape[2] // 2, ref_latents.shape[3] // 2
    exp_image_ids = torch.zeros(lh, lw, 3)
    exp_image_ids[..., 0] = 1
    exp_image_ids[..., 1] = torch.arange(lh)[:, None]
    exp_image_ids[..., 2] = torch.arange(lw)[None, :]
    assert torch.equal(image_ids, exp_image_ids.reshape(-1, 3))
    assert torch.equal(rec.img_ids[0], torch.cat([latent_ids, image_ids]))
    for h in rec.hidden:
        assert torch.equal(h[:, n:], ref_packed)
    assert torch.equal(rec.hidden[0][:, :n], latents_in)
    timesteps, sigmas, mu = gp.expected_schedule(pipe, steps, n)  # image_seq_len = noisy tokens only (966)
    assert torch.equal(timesteps, pipe.scheduler.timesteps) and torch.equal(sigmas, pipe.scheduler.sigmas)
    tensors = gp.text_tensors(pipe, call["prompt"], None)
    cfg = call.get("true_cfg_scale") if call.get("negative_prompt") else None
    if cfg:
        neg = gp.text_tensors(pipe, call["negative_prompt"], None)
        tensors.update({f"negative_{k}": v for k, v in neg.items() if k != "txt_ids"})
    tensors.update(
        reference_image_u8=torch.from_numpy(ref_u8),
        reference_image=ref,
        image_latents_unpacked=ref_latents,
        image_latents=image_latents[:1],
        image_ids=image_ids,
        latent_ids=latent_ids,
        latents_in=noise,
        latents_in_packed=latents_in,
        timesteps=timesteps,
        sigmas=sigmas,
        image=torch.from_numpy(image),
    )
    tensors.update(denoise_tensors(rec, steps, n, sigmas, cfg))
    pipe_images(pipe, kwargs, tensors, height, width)
    assert tensors["image"].shape == (batch, height, width, 3)
    meta = base_meta(name, "FluxKontextPipeline", call, seed, "tiny_pipeline/transformer")
    meta.update(
        image="reference_image_u8 given as a PIL RGB image (gen_pipeline.synthetic_image(h, w))",
        image_seq_len=n, mu=mu, reference_tokens=image_latents.shape[1],
        noise=draw_note(seed, [{"name": "latents_in", "shape": list(noise.shape),
                                "call": "torch.randn(shape, generator, float32)"}],
                        "latents=latents_in_packed passed to the call; no generator (the reference image is "
                        "encoded with the posterior mode, which draws nothing)" if fixed_latents else
                        "generator=torch.Generator('cpu').manual_seed(seed) passed to the call: one draw, the "
                        "noise (prepare_latents, pipeline_flux_kontext.py 667-669); the reference encode "
                        "(sample_mode='argmax') draws nothing"),
        transformer_input="hidden_states = cat([latents, image_latents], dim=1) (1036-1038); "
                          "img_ids = cat([latent_ids, image_ids], dim=0) (961-962); output sliced to "
                          "[:, :latents_in_packed.shape[1]] (1052, 1068)",
    )
    if cfg:
        # a single negative prompt string is encoded once (batch 1, encode_prompt 917-932) and the
        # transformer broadcasts it over the batch (AdaLayerNormZero's modulation has the batch of temb):
        # the same as repeating it per prompt (up to f32 rounding: other kernels), checked here
        assert isinstance(call["negative_prompt"], str)
        repeated = dict(kwargs(), negative_prompt=[call["negative_prompt"]] * len(prompts))
        again, _, _, _ = generate(pipe, repeated, "np")
        diff = float(np.abs(again - image).max())
        assert diff < 1e-5, diff
        meta["negative_prompt_batch"] = ("one negative prompt string: encoded once ([1,L,D]) and broadcast over "
                                         "the batch by the transformer; equal to repeating it per prompt up to "
                                         f"f32 rounding (image max diff {diff:.1e})")
        meta["true_cfg"] = ("velocities holds every transformer call, per step the positive then the negative "
                            "prompt's; velocities_guided = neg + true_cfg_scale * (pos - neg) (1040-1069)")
    gp.write_run(name, tensors, meta, RUNS_DIR)


# ---------------------------------------------------------------------------------------------
# Fill


def pack_mask(mask, h8, w8, vsf=8):
    """The 8x8 pixel block under each latent as 64 channels, then packed: channel
    (py*8 + px)*4 + ph*2 + pw of token (r, c) = mask[(2r+ph)*8 + py, (2c+pw)*8 + px] (independent loop)."""
    b = mask.shape[0]
    m = mask[:, 0].numpy()
    out = np.zeros((b, (h8 // 2) * (w8 // 2), vsf * vsf * 4), np.float32)
    for r in range(h8 // 2):
        for c in range(w8 // 2):
            for py in range(vsf):
                for px in range(vsf):
                    for ph in range(2):
                        for pw in range(2):
                            out[:, r * (w8 // 2) + c, (py * vsf + px) * 4 + ph * 2 + pw] = \
                                m[:, (2 * r + ph) * vsf + py, (2 * c + pw) * vsf + px]
    return torch.from_numpy(out)


def run_fill(pipe, name, call, seed):
    steps, height, width, strength = call["num_inference_steps"], call["height"], call["width"], call["strength"]
    batch = call.get("num_images_per_prompt", 1)
    init_u8, mask_u8 = gp.synthetic_image(height, width), fill_mask_u8(height, width)
    base = dict(call, image=PIL.Image.fromarray(init_u8), mask_image=PIL.Image.fromarray(mask_u8),
                max_sequence_length=gp.T5_MAX_LEN)

    def kwargs():
        return dict(base, generator=gp.torch_generator(seed))

    image, rec, prepared, encodes = generate(pipe, kwargs(), "np")
    ((init_image, latent_timestep, *_), (latents_in, img_ids)), = prepared
    (enc_init, post), (enc_masked, mpost) = encodes
    vae = pipe.vae.config
    # preprocessing, redone: image -> [-1, 1]; mask -> PIL "L" -> /255 -> binarize (< 0.5 -> 0, else 1)
    assert torch.equal(init_image, to_unit(init_u8))
    luma = pil_luma(mask_u8)
    assert np.array_equal(luma, np.asarray(PIL.Image.fromarray(mask_u8).convert("L")))
    mask = torch.from_numpy(luma.astype(np.float32) / 255.0)[None, None]
    mask = torch.where(mask < 0.5, 0.0, 1.0)
    assert torch.equal(mask, pipe.mask_processor.preprocess(PIL.Image.fromarray(mask_u8), height=height, width=width))
    masked_image = init_image * (1 - mask)  # pipeline_flux_fill.py 924
    # the three draws, in order (prepare_latents 660-681, then prepare_mask_latents 363)
    gen = gp.torch_generator(seed)
    assert torch.equal(enc_init, init_image) and torch.equal(enc_masked, masked_image)
    eps = torch.randn(post.mean.shape, generator=gen, dtype=torch.float32)
    image_latents = (post.mean + post.std * eps - vae.shift_factor) * vae.scaling_factor
    noise = torch.randn((batch, 16, height // 8, width // 8), generator=gen, dtype=torch.float32)
    meps = torch.randn(mpost.mean.shape, generator=gen, dtype=torch.float32)
    masked_latents = (mpost.mean + mpost.std * meps - vae.shift_factor) * vae.scaling_factor
    full_ts, full_sigmas, mu = gp.expected_schedule(pipe, steps, (height // 16) * (width // 16))
    t_start = int(max(steps - min(steps * strength, steps), 0))  # get_timesteps 516-526
    sigma = full_sigmas[t_start]
    noised = sigma * noise + (1.0 - sigma) * image_latents.expand(batch, -1, -1, -1)  # scale_noise
    assert torch.equal(gp.pack(noised), latents_in), (gp.pack(noised) - latents_in).abs().max()
    assert torch.equal(latent_timestep, full_ts[t_start:][:1].repeat(batch))
    assert torch.equal(pipe.scheduler.timesteps, full_ts) and torch.equal(pipe.scheduler.sigmas, full_sigmas)
    h8, w8 = height // 8, width // 8
    mask_packed = pack_mask(mask.expand(batch, -1, -1, -1), h8, w8)
    cond = torch.cat([gp.pack(masked_latents.expand(batch, -1, -1, -1).contiguous()), mask_packed], dim=-1)
    n = latents_in.shape[1]
    for h in rec.hidden:
        assert torch.equal(h[..., 64:], cond), (h[..., 64:] - cond).abs().max()
    assert torch.equal(rec.hidden[0][..., :64], latents_in)
    assert torch.equal(rec.img_ids[0], img_ids)
    tensors = gp.text_tensors(pipe, call["prompt"], None)
    tensors.update(
        init_image_u8=torch.from_numpy(init_u8),
        mask_image_u8=torch.from_numpy(mask_u8),
        init_image=init_image,
        mask=mask,
        masked_image=masked_image,
        encode_eps=eps,
        image_latents=image_latents,
        noise=noise,
        masked_encode_eps=meps,
        masked_image_latents_unpacked=masked_latents,
        mask_packed=mask_packed,
        masked_image_latents=cond,
        latents_in=noised,
        latents_in_packed=latents_in,
        img_ids=img_ids,
        sigmas=full_sigmas,
        timesteps=full_ts[t_start:],
        timesteps_full=full_ts,
        image=torch.from_numpy(image),
    )
    tensors.update(denoise_tensors(rec, steps - t_start, n, full_sigmas))
    pipe_images(pipe, kwargs, tensors, height, width)
    meta = base_meta(name, "FluxFillPipeline", call, seed, "tools/fill_transformer")
    meta.update(
        image="init_image_u8 given as a PIL RGB image (gen_pipeline.synthetic_image(h, w))",
        mask_image="mask_image_u8 given as a PIL RGB image; mask_processor: PIL convert('L') "
                   "(L = (R*19595 + G*38470 + B*7471 + 0x8000) >> 16), /255 in f32, binarize x < 0.5 -> 0 else 1 "
                   "(no normalisation); `mask` is the result [1,1,h,w]",
        masked_image="init_image * (1 - mask) on the [-1,1] image (pipeline_flux_fill.py 924): masked pixels become 0",
        image_seq_len=n, mu=mu, t_start=t_start,
        noise=draw_note(seed, [
            {"name": "encode_eps", "shape": list(eps.shape),
             "call": "prepare_latents -> vae.encode(init_image).latent_dist.sample(generator) (fill 501-509, 665)"},
            {"name": "noise", "shape": list(noise.shape),
             "call": "prepare_latents: torch.randn(shape, generator, float32) (fill 679)"},
            {"name": "masked_encode_eps", "shape": list(meps.shape),
             "call": "prepare_mask_latents -> vae.encode(masked_image).latent_dist.sample(generator) (fill 363)"},
        ], "generator=torch.Generator('cpu').manual_seed(seed) passed to the call"),
        transformer_input="hidden_states = cat((latents [B,N,64], masked_image_latents [B,N,320]), dim=2) "
                          "(fill 962); masked_image_latents = cat(pack(masked latents) [64], mask_packed [256]) "
                          "(940); mask_packed: mask[:,0].view(B,h/8,8,w/8,8).permute(0,2,4,1,3)"
                          ".reshape(B,64,h/8,w/8) then _pack_latents (396-416)",
    )
    gp.write_run(name, tensors, meta, RUNS_DIR)


# ---------------------------------------------------------------------------------------------
# Control


def run_control(pipe, name, call, seed, transformer, extra_meta=None):
    steps, height, width = call["num_inference_steps"], call["height"], call["width"]
    batch = call.get("num_images_per_prompt", 1)
    ctrl_u8 = checkerboard_u8(height, width)
    base = dict(call, control_image=PIL.Image.fromarray(ctrl_u8), max_sequence_length=gp.T5_MAX_LEN)

    def kwargs():
        return dict(base, generator=gp.torch_generator(seed))

    image, rec, prepared, encodes = generate(pipe, kwargs(), "np")
    (_, (latents_in, img_ids)), = prepared
    (encoded, post), = encodes
    vae = pipe.vae.config
    control = to_unit(ctrl_u8).repeat_interleave(batch, dim=0)  # prepare_image 533-565
    gen = gp.torch_generator(seed)
    assert torch.equal(encoded, control)  # one batched encode (control 747)
    eps = torch.randn(post.mean.shape, generator=gen, dtype=torch.float32)
    control_latents = (post.mean + post.std * eps - vae.shift_factor) * vae.scaling_factor
    noise = torch.randn((batch, 16, height // 8, width // 8), generator=gen, dtype=torch.float32)
    assert torch.equal(latents_in, gp.pack(noise))
    control_packed = gp.pack(control_latents)
    n = latents_in.shape[1]
    for h in rec.hidden:
        assert torch.equal(h[..., 64:], control_packed), (h[..., 64:] - control_packed).abs().max()
    assert torch.equal(rec.hidden[0][..., :64], latents_in) and torch.equal(rec.img_ids[0], img_ids)
    timesteps, sigmas, mu = gp.expected_schedule(pipe, steps, n)
    assert torch.equal(timesteps, pipe.scheduler.timesteps) and torch.equal(sigmas, pipe.scheduler.sigmas)
    tensors = gp.text_tensors(pipe, call["prompt"], None)
    tensors.update(
        control_image_u8=torch.from_numpy(ctrl_u8),
        control_image=control,
        control_encode_eps=eps,
        control_latents_unpacked=control_latents,
        control_latents=control_packed,
        latents_in=noise,
        latents_in_packed=latents_in,
        img_ids=img_ids,
        timesteps=timesteps,
        sigmas=sigmas,
        image=torch.from_numpy(image),
    )
    tensors.update(denoise_tensors(rec, steps, n, sigmas))
    pipe_images(pipe, kwargs, tensors, height, width)
    meta = base_meta(name, "FluxControlPipeline", call, seed, transformer)
    meta.update(
        control_image="control_image_u8 given as a PIL RGB image (checkerboard of 5-pixel cells: "
                      "(230,40,90) and a gradient); preprocessed to [-1,1], then repeat_interleave(B) "
                      "(prepare_image 558: one image per prompt is repeated B = prompts x images_per_prompt times)",
        image_seq_len=n, mu=mu,
        noise=draw_note(seed, [
            {"name": "control_encode_eps", "shape": list(eps.shape),
             "call": "vae.encode(control_image [B,3,h,w]).latent_dist.sample(generator): one batched draw (control 747)"},
            {"name": "noise", "shape": list(noise.shape),
             "call": "prepare_latents: torch.randn(shape, generator, float32) (control 525)"},
        ], "generator=torch.Generator('cpu').manual_seed(seed) passed to the call"),
        transformer_input="hidden_states = cat([latents [B,N,64], control_latents [B,N,64]], dim=2) (control 807)",
    )
    meta.update(extra_meta or {})
    gp.write_run(name, tensors, meta, RUNS_DIR)


def load_control_lora(pipe, cfg, lora_sd):
    lora_pipeline._convert_bfl_flux_control_lora_to_diffusers = patched_bfl_converter(cfg)
    tr = pipe.transformer
    x_before = tr.x_embedder.weight.detach().clone()
    # diffusers' converter (lora_conversion_utils.py 1355-1361) applies swap_scale_shift to
    # final_layer.adaLN_modulation.1's lora_A as well as its lora_B: swapping lora_A's halves
    # permutes the rank rows, so diffusers applies B'·P·A instead of the file's B'·A (B' the
    # output-swapped lora_B) to norm_out.linear. BFL's own loader applies B·A in BFL's layout.
    # The file is written as BFL writes it; diffusers is handed a copy whose final-layer lora_A
    # is pre-swapped, so that its swap undoes ours and it computes the file's update.
    compensated = {k: v.clone() for k, v in lora_sd.items()}
    key = "final_layer.adaLN_modulation.1.lora_A.weight"
    rank = compensated[key].shape[0]
    compensated[key] = torch.cat([compensated[key][rank // 2:], compensated[key][: rank // 2]]).contiguous()
    pipe.load_lora_weights(compensated)  # detection: a "query_norm.scale" key (lora_pipeline.py 1530)
    adapters = list(tr.peft_config)
    assert len(adapters) == 1, adapters
    name = adapters[0]
    x = tr.x_embedder
    assert x.base_layer.in_features == 128 and x.in_features == 128, x
    assert tr.config.in_channels == 128
    assert torch.equal(x.base_layer.weight[:, :64], x_before) and not x.base_layer.weight[:, 64:].any()
    assert torch.equal(x.lora_A[name].weight, lora_sd["img_in.lora_A.weight"])
    norm_map = {"img_attn.norm.query_norm": "attn.norm_q", "img_attn.norm.key_norm": "attn.norm_k",
                "txt_attn.norm.query_norm": "attn.norm_added_q", "txt_attn.norm.key_norm": "attn.norm_added_k"}
    checked = 0
    for key, value in lora_sd.items():
        if not key.endswith("_norm.scale"):
            continue
        parts = key.split(".")
        if parts[0] == "double_blocks":
            mod = f"transformer_blocks.{parts[1]}." + norm_map[".".join(parts[2:5])]
        else:
            mod = f"single_transformer_blocks.{parts[1]}.attn.norm_" + ("q" if "query" in key else "k")
        assert torch.equal(tr.get_submodule(mod).weight, value), key
        checked += 1
    assert checked == 4 * cfg["num_layers"] + 2 * cfg["num_single_layers"]
    assert torch.equal(tr.time_text_embed.timestep_embedder.linear_1.lora_B[name].bias,
                       lora_sd["time_in.in_layer.lora_B.bias"])
    assert not any(p.is_meta for p in tr.parameters())
    return name


def check_lora_scaling(tr, name, weight):
    """PEFT Linear forward: base(x) + (lora_B(lora_A(x)) incl. lora_B.bias) · scaling, scaling = weight·alpha/r
    with alpha = r (no alphas in the file): the bias is scaled by the adapter weight too."""
    gen = torch.Generator().manual_seed(7)
    for mod in (tr.x_embedder, tr.time_text_embed.timestep_embedder.linear_1, tr.single_transformer_blocks[0].proj_out):
        assert mod.scaling[name] == weight, mod.scaling
        x = gp.randn((3, mod.base_layer.in_features), gen)
        a, b = mod.lora_A[name], mod.lora_B[name]
        expected = mod.base_layer(x) + weight * (x @ a.weight.T @ b.weight.T + b.bias)
        assert torch.allclose(mod(x), expected, atol=1e-5, rtol=1e-5), (mod(x) - expected).abs().max()


# ---------------------------------------------------------------------------------------------


def main():
    torch.set_num_threads(1)
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()
    TOOLS_DIR.mkdir(parents=True, exist_ok=True)
    if RUNS_DIR.exists():
        shutil.rmtree(RUNS_DIR)
    RUNS_DIR.mkdir()
    write_kontext_sizes()

    dev = FluxPipeline.from_pretrained(gp.DEV_DIR, dtype=torch.float32)
    cfg = dict(dev.transformer.config)
    fill_tr = build_tool_transformer(FILL_DIR, 384, seed=500)
    control_tr = build_tool_transformer(CONTROL_DIR, 128, seed=510)
    lora_sd = build_control_lora(cfg, seed=520)
    save_file(lora_sd, LORA_PATH)
    assert all(torch.equal(v, lora_sd[k]) for k, v in load_file(LORA_PATH).items())

    def components(cls, **over):
        accepted = inspect.signature(cls.__init__).parameters
        return {k: v for k, v in dict(dev.components, **over).items() if k in accepted}

    with torch.no_grad():
        kontext = FluxKontextPipeline(**components(FluxKontextPipeline))
        kontext.set_progress_bar_config(disable=True)
        run_kontext(kontext, "kontext",
                    dict(prompt="make the cat red", height=32, width=48, max_area=48 * 32, _auto_resize=False,
                         num_inference_steps=3, guidance_scale=3.5),
                    gp.synthetic_image(48, 64), seed=10, fixed_latents=True)
        run_kontext(kontext, "kontext_batch_cfg",
                    dict(prompt=["make the cat red", "add a hat"], negative_prompt="blurry", true_cfg_scale=2.0,
                         height=32, width=32, max_area=32 * 32, _auto_resize=False,
                         num_inference_steps=2, guidance_scale=3.5),
                    gp.synthetic_image(48, 48), seed=11, fixed_latents=False)

        fill = FluxFillPipeline(**components(FluxFillPipeline, transformer=fill_tr))
        fill.set_progress_bar_config(disable=True)
        run_fill(fill, "fill", dict(prompt="a red ball", height=32, width=48, num_inference_steps=3,
                                    guidance_scale=30.0, strength=1.0), seed=12)
        run_fill(fill, "fill_strength", dict(prompt="a red ball", height=32, width=48, num_inference_steps=5,
                                             guidance_scale=30.0, strength=0.6, num_images_per_prompt=2), seed=13)

        control = FluxControlPipeline(**components(FluxControlPipeline, transformer=control_tr))
        control.set_progress_bar_config(disable=True)
        control_call = dict(prompt="a house", height=32, width=48, num_inference_steps=3, guidance_scale=10.0)
        run_control(control, "control", dict(control_call, num_images_per_prompt=2), seed=14,
                    transformer="tools/control_transformer")

        lora = FluxControlPipeline(**components(FluxControlPipeline, transformer=dev_transformer()))
        lora.set_progress_bar_config(disable=True)
    name = load_control_lora(lora, cfg, lora_sd)  # outside no_grad, as a user would call it
    with torch.no_grad():
        check_lora_scaling(lora.transformer, name, 1.0)
        lora_meta = {
            "lora": {
                "file": "tools/control_lora_bfl.safetensors",
                "loaded_with": "pipe.load_lora_weights(path) with diffusers' _convert_bfl_flux_control_lora_to_diffusers "
                               "patched to num_layers 1, num_single_layers 2, inner_dim 64 (its FLUX.1 constants are "
                               "hard-coded: 19, 38, 3072)",
                "adapter_name": name,
                "adapter_weight": 1.0,
                "diffusers_converter_bug": "diffusers swaps the halves of final_layer.adaLN_modulation.1's lora_A "
                                           "(rank rows) with its lora_B's; diffusers was given a copy with that lora_A "
                                           "pre-swapped, so these images apply the file's update as BFL's loader does",
                "semantics": "x_embedder widened to 128 inputs (new columns zero, bias kept), config.in_channels = 128; "
                             "every Linear: W x + b + w·(B A x + lora_B.bias) with w the adapter weight (alpha = r); "
                             "qk-norm scales replaced by the file's values, independent of w",
            }
        }
        run_control(lora, "control_lora", dict(control_call, num_images_per_prompt=1), seed=15,
                    transformer="tiny_pipeline/transformer + tools/control_lora_bfl.safetensors", extra_meta=lora_meta)
        lora.set_adapters([name], [0.75])
        check_lora_scaling(lora.transformer, name, 0.75)
        lora_meta["lora"]["adapter_weight"] = 0.75
        lora_meta["lora"]["set_adapters"] = f"pipe.set_adapters([{name!r}], [0.75])"
        run_control(lora, "control_lora_075", dict(control_call, num_images_per_prompt=1), seed=15,
                    transformer="tiny_pipeline/transformer + tools/control_lora_bfl.safetensors", extra_meta=lora_meta)
    print("wrote", TOOLS_DIR)


if __name__ == "__main__":
    main()
