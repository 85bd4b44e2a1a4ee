"""Golden fixtures for FLUX.1 Redux: a tiny SigLIP vision tower + Redux image embedder, and runs of
diffusers' FluxPriorReduxPipeline followed by FluxPipeline, in f32 on the CPU.

Writes, under flux/tests/fixtures/redux/:

  tiny_redux/          a FLUX.1-Redux-dev-style repository (model_index.json, image_encoder/,
                       image_embedder/, feature_extractor/), saved with the libraries' save_pretrained;
                       image_encoder/model.safetensors is re-keyed with the `vision_model.` prefix of
                       the released checkpoint (transformers 5 writes the keys without it)
  runs/<run>.{json,safetensors}  in gen_pipeline.py's run format:
    siglip                   the processor and the vision tower alone, on a 28x28 and a 40x30 (w x h) image
    redux_variation          the canonical flow: prior without text encoders -> FluxPipeline (tiny [dev])
    redux_prompt_two_images  prior with the tiny text encoders, a prompt and two weighted images

The FLUX pipeline parts (transformer, VAE, scheduler, text encoders, tokenizers) are gen_pipeline.py's
tiny [dev] pipeline (flux/tests/fixtures/tiny_pipeline). Line numbers are diffusers 0.42.1
(pipelines/flux/pipeline_flux_prior_redux.py unless named) and transformers 5.24.0.

Run from the repository root:  python scripts/reference/gen_redux.py   (~5 s, single-threaded torch)
"""

import shutil
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import torch
import diffusers
import transformers
from diffusers import FluxPipeline, FluxPriorReduxPipeline
from diffusers.pipelines.flux.modeling_flux import ReduxImageEncoder
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import SiglipImageProcessor, SiglipImageProcessorPil, SiglipVisionConfig, SiglipVisionModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gen_pipeline as gp  # noqa: E402
import gen_tools as gt  # noqa: E402

REDUX_DIR = gp.FIXTURES / "redux"
MODEL_DIR = REDUX_DIR / "tiny_redux"
RUNS_DIR = REDUX_DIR / "runs"

PRIOR_MODULE = sys.modules[FluxPriorReduxPipeline.__module__]
SIGLIP = dict(
    hidden_size=32,
    intermediate_size=72,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_channels=3,
    image_size=28,
    patch_size=14,  # 2 x 2 = 4 tokens
    hidden_act="gelu_pytorch_tanh",
    layer_norm_eps=1e-6,
    attention_dropout=0.0,
)  # vision_use_head keeps its default (True): the file carries the unused attention-pooling head
PROCESSOR = dict(
    do_resize=True,
    size={"height": 28, "width": 28},
    resample=3,  # PILImageResampling.BICUBIC
    do_rescale=True,
    rescale_factor=1 / 255,
    do_normalize=True,
    image_mean=[0.5, 0.5, 0.5],
    image_std=[0.5, 0.5, 0.5],
)
REDUX = dict(redux_dim=32, txt_in_features=32)


# ---------------------------------------------------------------------------------------------
# models


def siglip_rule():
    """gen_pipeline's rule (matrices N(0, 1/fan_in), LayerNorm weights 1 + 0.1 N, other vectors 0.1 N)
    with the learned position embedding [4, 32] drawn small (0.1 N)."""
    base = gp.linear_rule(("layer_norm", "layernorm"))

    def rule(name, shape, gen):
        if name.endswith("position_embedding.weight"):
            return 0.1 * gp.randn(shape, gen)
        return base(name, shape, gen)

    return rule


def build_image_encoder(seed):
    torch.manual_seed(seed)
    model = SiglipVisionModel(SiglipVisionConfig(**SIGLIP))
    assert model.config.vision_use_head and model.head is not None
    gp.randomise(model, seed, siglip_rule())
    return model.eval()


def build_image_embedder(seed):
    torch.manual_seed(seed)
    model = ReduxImageEncoder(**REDUX)
    gp.randomise(model, seed, gp.linear_rule(()))
    return model.eval()


def rekey_image_encoder(folder):
    """transformers 5 saves SiglipVisionModel's keys bare (`embeddings.…`, `head.…`); the released
    checkpoints (transformers 4.x layout, a `vision_model` submodule) have them all under
    `vision_model.`. Rewrite the file in that layout; transformers 5 loads both."""
    path = folder / "model.safetensors"
    sd = load_file(path)
    assert not any(k.startswith("vision_model.") for k in sd), sorted(sd)[:3]
    save_file({f"vision_model.{k}": v.contiguous() for k, v in sorted(sd.items())}, path, metadata={"format": "pt"})


def save_redux(image_encoder, feature_extractor, image_embedder):
    if MODEL_DIR.exists():
        shutil.rmtree(MODEL_DIR)
    prior = FluxPriorReduxPipeline(image_encoder=image_encoder, feature_extractor=feature_extractor,
                                   image_embedder=image_embedder)
    prior.save_pretrained(MODEL_DIR, safe_serialization=True)
    rekey_image_encoder(MODEL_DIR / "image_encoder")
    files = sorted(str(p.relative_to(MODEL_DIR)) for p in MODEL_DIR.rglob("*") if p.is_file())
    assert files == ["feature_extractor/preprocessor_config.json", "image_embedder/config.json",
                     "image_embedder/diffusion_pytorch_model.safetensors", "image_encoder/config.json",
                     "image_encoder/model.safetensors", "model_index.json"], files
    for path in MODEL_DIR.rglob("*.json"):
        assert "/tmp" not in path.read_text() and "/work" not in path.read_text(), path


def check_reloaded(image_encoder, image_embedder):
    prior = FluxPriorReduxPipeline.from_pretrained(MODEL_DIR, dtype=torch.float32)
    for name, model in (("image_encoder", image_encoder), ("image_embedder", image_embedder)):
        a, b = model.state_dict(), getattr(prior, name).state_dict()
        assert a.keys() == b.keys(), name
        assert all(torch.equal(a[k], b[k]) for k in a), name
    _, info = SiglipVisionModel.from_pretrained(MODEL_DIR / "image_encoder", output_loading_info=True)
    assert not any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    with safe_open(MODEL_DIR / "image_encoder" / "model.safetensors", "pt") as f:
        keys = sorted(f.keys())
    assert all(k.startswith("vision_model.") for k in keys) and "vision_model.head.probe" in keys
    fe = prior.feature_extractor
    # transformers 5: `SiglipImageProcessor` is the torchvision backend (SiglipImageProcessorPil the PIL one)
    assert type(fe) is SiglipImageProcessor and fe.backend == "torchvision", (type(fe), fe.backend)
    assert prior.text_encoder is None and prior.text_encoder_2 is None
    return prior, keys


# ---------------------------------------------------------------------------------------------
# images and preprocessing


def variant_image(height, width):
    """A second synthetic picture: diagonal stripes over a colour ramp (differs from synthetic_image)."""
    y, x = np.mgrid[0:height, 0:width]
    stripe = ((x + 2 * y) // 4) % 2 == 0
    r = np.where(stripe, 240, (y * 255) // (height - 1))
    g = np.where(stripe, 30 + (x * 5) % 64, 128)
    b = (255 - (x * 255) // (width - 1)) * (1 - stripe) + 60 * stripe
    return np.stack([r, g, b], axis=-1).astype(np.uint8)


def preprocess(fe, images):
    """encode_image's call (pipeline_flux_prior_redux.py 191-193)."""
    return fe.preprocess(images=images, do_resize=True, return_tensors="pt", do_convert_rgb=True).pixel_values


def normalise_u8(u8_chw):
    """The torchvision backend's fused rescale + normalize (image_processing_backends.py 329-367):
    mean' = mean / rescale_factor = 127.5, std' = 127.5, (x - 127.5) / 127.5 in f32 on the uint8 values."""
    return (u8_chw.to(torch.float32) - 127.5) / 127.5


def to_chw(u8_hwc):
    return torch.from_numpy(np.ascontiguousarray(u8_hwc)).permute(2, 0, 1)


# ---------------------------------------------------------------------------------------------
# recording


class ZerosPatch:
    """Stands in for the `torch` global of pipeline_flux_prior_redux.py while a prior call runs, so
    the dummy text embeddings it builds without text encoders (lines 482-485: zeros of the real sizes,
    [B, 512, 4096] and [B, 768], hard-coded) get the tiny model's sizes: [B, T5_MAX_LEN, 32] and
    [B, 32]. Every other attribute is torch's own; any other torch.zeros call passes through."""

    def __init__(self, seq_len, width, pooled_width):
        self.seq_len, self.width, self.pooled_width = seq_len, width, pooled_width
        self.calls = []

    def __getattr__(self, name):
        return getattr(torch, name)

    def zeros(self, *size, **kwargs):
        size = tuple(size[0]) if len(size) == 1 and not isinstance(size[0], int) else size
        if len(size) == 3 and size[1:] == (512, 4096):
            new = (size[0], self.seq_len, self.width)
        elif len(size) == 2 and size[1:] == (768,):
            new = (size[0], self.pooled_width)
        else:
            new = size
        self.calls.append([list(size), list(new)])
        return torch.zeros(new, **kwargs)

    def __enter__(self):
        assert PRIOR_MODULE.torch is torch
        PRIOR_MODULE.torch = self
        return self

    def __exit__(self, *exc):
        PRIOR_MODULE.torch = torch


class PriorRecorder:
    """Hooks: what the vision tower got and returned, what the embedder returned, and what
    encode_prompt returned (text embeddings before the concatenation)."""

    def __init__(self, prior):
        self.pixel_values, self.hidden, self.embeds, self.text = [], [], [], []
        self.handles = [
            prior.image_encoder.register_forward_hook(self.encoder_hook, with_kwargs=True),
            prior.image_embedder.register_forward_hook(lambda _m, _a, out: self.embeds.append(out.image_embeds.clone())),
        ]
        self.prior = prior
        if prior.text_encoder is not None:
            original = prior.encode_prompt

            def encode_prompt(*a, **k):
                out = original(*a, **k)
                self.text.append((k, out[0].clone(), out[1].clone()))
                return out

            prior.encode_prompt = encode_prompt

    def encoder_hook(self, _module, _args, kwargs, output):
        self.pixel_values.append(kwargs["pixel_values"].clone())
        self.hidden.append(output.last_hidden_state.clone())

    def close(self):
        for h in self.handles:
            h.remove()
        if "encode_prompt" in vars(self.prior):
            del self.prior.encode_prompt


class Capture(gt.Capture):
    """gen_tools' Capture plus the text-side transformer inputs of every call."""

    def __init__(self, pipe):
        self.text_inputs = []
        super().__init__(pipe)

    def hook(self, module, args, kwargs, output):
        super().hook(module, args, kwargs, output)
        self.text_inputs.append((kwargs["encoder_hidden_states"].clone(), kwargs["pooled_projections"].clone(),
                                 kwargs["txt_ids"].clone()))


def generate(pipe, call, output_type):
    rec = Capture(pipe)
    prepared = []
    original = pipe.prepare_latents
    pipe.prepare_latents = lambda *a, **k: prepared.append((a, original(*a, **k))) or prepared[-1][1]
    try:
        images = pipe(**call, output_type=output_type, callback_on_step_end=rec.callback).images
    finally:
        del pipe.prepare_latents
        rec.close()
    return images, rec, prepared


# ---------------------------------------------------------------------------------------------
# runs


def run_siglip(prior, keys):
    fe, enc, emb = prior.feature_extractor, prior.image_encoder, prior.image_embedder
    a_u8 = gp.synthetic_image(28, 28)
    b_u8 = gp.synthetic_image(30, 40)  # 40 wide, 30 high: resized to 28x28
    pv_a = preprocess(fe, PIL.Image.fromarray(a_u8))
    pv_b = preprocess(fe, PIL.Image.fromarray(b_u8))
    assert pv_a.dtype == torch.float32 and pv_a.shape == (1, 3, 28, 28) and pv_b.shape == (1, 3, 28, 28)
    # no resize at the same size: the normalised uint8 values
    assert torch.equal(pv_a[0], normalise_u8(to_chw(a_u8)))
    # torchvision backend: tvF.resize(uint8 CHW tensor, (28, 28), BICUBIC, antialias=True) -> uint8, then normalise
    import torchvision.transforms.v2.functional as tvF

    b_tv_u8 = tvF.resize(to_chw(b_u8), [28, 28], interpolation=tvF.InterpolationMode.BICUBIC, antialias=True)
    assert b_tv_u8.dtype == torch.uint8
    assert torch.equal(pv_b[0], normalise_u8(b_tv_u8)), (pv_b[0] - normalise_u8(b_tv_u8)).abs().max()
    # the PIL backend (transformers 4.x's default SiglipImageProcessor): PIL bicubic on the uint8 image,
    # x * (1/255) in f64 -> f32, then (x - 0.5) / 0.5 in f32 (image_processing_backends.py 656-690)
    pil_fe = SiglipImageProcessorPil(**PROCESSOR)
    pv_a_pil = preprocess(pil_fe, PIL.Image.fromarray(a_u8))
    pv_b_pil = preprocess(pil_fe, PIL.Image.fromarray(b_u8))
    b_pil_u8 = np.array(PIL.Image.fromarray(b_u8).resize((28, 28), PIL.Image.BICUBIC))
    x = (b_pil_u8.astype(np.float64) * (1 / 255)).astype(np.float32)
    assert torch.equal(pv_b_pil[0], torch.from_numpy((x - np.float32(0.5)) / np.float32(0.5)).permute(2, 0, 1))
    out_a = enc(pixel_values=pv_a, output_hidden_states=True)
    out_b = enc(pixel_values=pv_b)
    out_b_pil = enc(pixel_values=pv_b_pil)
    embeds_a = emb(out_a.last_hidden_state).image_embeds
    up = torch.nn.functional.silu(emb.redux_up(out_a.last_hidden_state))
    assert torch.equal(emb.redux_down(up), embeds_a)
    # post_layernorm is part of last_hidden_state; hidden_states are before it
    assert torch.equal(enc.post_layernorm(out_a.hidden_states[-1]), out_a.last_hidden_state)
    tensors = {
        "image_a_u8": torch.from_numpy(a_u8),
        "image_b_u8": torch.from_numpy(b_u8),
        "pixel_values_a": pv_a,
        "pixel_values_b": pv_b,
        "image_b_resized_u8": b_tv_u8.permute(1, 2, 0).contiguous(),
        "pixel_values_a_pil": pv_a_pil,
        "pixel_values_b_pil": pv_b_pil,
        "image_b_resized_pil_u8": torch.from_numpy(b_pil_u8),
        "hidden_states_a": torch.stack(out_a.hidden_states),
        "last_hidden_state_a": out_a.last_hidden_state,
        "last_hidden_state_b": out_b.last_hidden_state,
        "last_hidden_state_b_pil": out_b_pil.last_hidden_state,
        "pooler_output_a": out_a.pooler_output,
        "redux_hidden_a": up,
        "image_embeds_a": embeds_a,
    }
    d_a = float((pv_a - pv_a_pil).abs().max())
    d_b = float((pv_b - pv_b_pil).abs().max())
    d_u8 = int((b_tv_u8.permute(1, 2, 0).int() - torch.from_numpy(b_pil_u8).int()).abs().max())
    meta = {
        "model": "redux/tiny_redux (image_encoder, feature_extractor, image_embedder)",
        "image_a": "image_a_u8 = gen_pipeline.synthetic_image(28, 28) given as a PIL RGB image (no resize)",
        "image_b": "image_b_u8 = gen_pipeline.synthetic_image(30, 40): 40 wide, 30 high, resized to 28x28",
        "processor_call": "feature_extractor.preprocess(images=PIL image, do_resize=True, return_tensors='pt', "
                          "do_convert_rgb=True).pixel_values (encode_image, pipeline_flux_prior_redux.py 191-193)",
        "processor": f"transformers {transformers.__version__}: SiglipImageProcessor is the torchvision backend: "
                     "uint8 HWC -> CHW tensor; tvF.resize(uint8, (28, 28), BICUBIC, antialias=True) -> uint8 "
                     "(image_b_resized_u8; skipped at the same size); then a fused rescale+normalize in f32: "
                     "(x - 127.5) / 127.5 (mean/rescale_factor, std/rescale_factor). pixel_values f32 [1,3,28,28]",
        "processor_pil": "the *_pil tensors: SiglipImageProcessorPil (the PIL backend; transformers 4.x's default "
                         "SiglipImageProcessor): PIL Image.resize((28, 28), BICUBIC) on the uint8 image "
                         "(image_b_resized_pil_u8), x*(1/255) in f64 cast to f32, then (x - 0.5)/0.5 in f32. "
                         "The diffusers pipeline in this environment does NOT use it",
        "processor_differences": {"pixel_values_a_max_abs": d_a, "pixel_values_b_max_abs": d_b,
                                  "resized_u8_max_abs": d_u8},
        "vision_tower": "embeddings = Conv2d(3, 32, 14, stride 14, bias) -> flatten(2).transpose(1, 2) (row-major "
                        "patches) + position_embedding.weight (learned, [4, 32]); 2 pre-LN layers: "
                        "x + out_proj(attn(layer_norm1(x))), x + fc2(gelu_tanh(fc1(layer_norm2(x)))); attention "
                        "scale head_dim^-0.5, no mask; last_hidden_state = post_layernorm(encoder output). "
                        "hidden_states_a [3,1,4,32] = (embeddings, layer 0 out, layer 1 out), before post_layernorm. "
                        "pooler_output_a: the attention-pooling head (not used by Redux)",
        "image_embedder": "redux_down(silu(redux_up(x))): redux_hidden_a = silu(redux_up(x)) [1,4,96] "
                          "(modeling_flux.py 40-44)",
        "image_encoder_keys": keys,
    }
    gp.write_run("siglip", tensors, meta, RUNS_DIR)


def flux_call_tensors(pipe, call, seed, batch):
    """FluxPipeline(**call, generator=manual_seed(seed)) with np output, the recordings checked and
    the PIL call for image_u8 (gen_tools.pipe_images)."""
    steps, height, width = call["num_inference_steps"], call["height"], call["width"]

    def kwargs():
        return dict(call, generator=gp.torch_generator(seed))

    image, rec, prepared = generate(pipe, kwargs(), "np")
    (_, (latents_in, img_ids)), = prepared
    noise = torch.randn((batch, 16, height // 8, width // 8), generator=gp.torch_generator(seed), dtype=torch.float32)
    assert torch.equal(latents_in, gp.pack(noise)), "the pipeline started from other latents"
    n = latents_in.shape[1]
    timesteps, sigmas, mu = gp.expected_schedule(pipe, steps, n)
    assert torch.equal(timesteps, pipe.scheduler.timesteps) and torch.equal(sigmas, pipe.scheduler.sigmas)
    # the prior's batch-1 embeddings go to the transformer as they are (encode_prompt does not repeat
    # given prompt_embeds, pipeline_flux.py 359-389): they are broadcast over the batch inside it
    for ehs, pooled, txt_ids in rec.text_inputs:
        assert torch.equal(ehs, call["prompt_embeds"]) and torch.equal(pooled, call["pooled_prompt_embeds"])
        assert torch.equal(txt_ids, torch.zeros(call["prompt_embeds"].shape[1], 3))
    tensors = {
        "latents_in": noise,
        "latents_in_packed": latents_in,
        "img_ids": img_ids,
        "timesteps": timesteps,
        "sigmas": sigmas,
        "image": torch.from_numpy(image),
    }
    tensors.update(gt.denoise_tensors(rec, steps, n, sigmas))
    assert torch.equal(tensors["transformer_timestep"], timesteps[:, None].expand(-1, batch) / 1000)
    gt.pipe_images(pipe, kwargs, tensors, height, width)
    assert tensors["image"].shape == (batch, height, width, 3) and tensors["image_u8"].shape == (batch, height, width, 3)
    note = gp.noise_note(seed, list(noise.shape))
    note["used_as"] = ("generator=torch.Generator('cpu').manual_seed(seed) passed to FluxPipeline: one draw, the "
                       "noise (prepare_latents, pipeline_flux.py 561-574); the prior draws nothing")
    return tensors, dict(image_seq_len=n, mu=mu, noise=note)


def run_variation(prior, flux, name, flux_call, seed):
    u8 = gp.synthetic_image(28, 28)
    rec = PriorRecorder(prior)
    try:
        with ZerosPatch(gp.T5_MAX_LEN, 32, 32) as patch:
            out = prior(image=PIL.Image.fromarray(u8))
    finally:
        rec.close()
    assert patch.calls == [[[1, 512, 4096], [1, gp.T5_MAX_LEN, 32]], [[1, 768], [1, 32]]], patch.calls
    (pv,), (hidden,), (embeds,) = rec.pixel_values, rec.hidden, rec.embeds
    assert torch.equal(pv[0], normalise_u8(to_chw(u8)))
    expected = torch.cat([torch.zeros(1, gp.T5_MAX_LEN, 32), embeds], 1)
    assert torch.equal(out.prompt_embeds, expected) and out.prompt_embeds.shape == (1, gp.T5_MAX_LEN + 4, 32)
    assert torch.equal(out.pooled_prompt_embeds, torch.zeros(1, 32))
    call = dict(flux_call, prompt_embeds=out.prompt_embeds, pooled_prompt_embeds=out.pooled_prompt_embeds)
    tensors, extra = flux_call_tensors(flux, call, seed, flux_call.get("num_images_per_prompt", 1))
    tensors.update(
        input_image_u8=torch.from_numpy(u8),
        pixel_values=pv,
        siglip_last_hidden_state=hidden,
        image_embeds=embeds,
        prompt_embeds=out.prompt_embeds,
        pooled_prompt_embeds=out.pooled_prompt_embeds,
    )
    meta = {
        "prior": {
            "pipeline_class": "FluxPriorReduxPipeline",
            "model": "redux/tiny_redux (no text encoders: model_index has none)",
            "call": "prior(image=PIL.Image.fromarray(input_image_u8)) (prompt_embeds_scale = "
                    "pooled_prompt_embeds_scale = 1.0, the defaults)",
            "image": "input_image_u8 = gen_pipeline.synthetic_image(28, 28) (no resize)",
            "zeros_patch": "without text encoders the prior builds torch.zeros((B, 512, 4096)) and "
                           "torch.zeros((B, 768)) (pipeline_flux_prior_redux.py 482-485, the real T5/CLIP sizes, "
                           f"hard-coded); for this tiny model they were made [B, {gp.T5_MAX_LEN}, 32] and [B, 32] by "
                           "replacing that module's `torch` global, for the call only, with a proxy whose zeros() "
                           "maps exactly those two shapes (everything else is torch's). For the real model: "
                           "prompt_embeds [1, 512 + 729, 4096], pooled zeros [1, 768]",
            "formula": "prompt_embeds = cat([zeros, image_embeds], 1) * 1.0, summed over the 1 image; "
                       "pooled_prompt_embeds = zeros * 1.0",
        },
        "flux": dict(pipeline_class="FluxPipeline", pipeline=gp.DEV_DIR.name,
                     loaded="FluxPipeline.from_pretrained(tiny_pipeline, text_encoder=None, text_encoder_2=None)",
                     call={k: v for k, v in flux_call.items()},
                     embeddings="prompt_embeds=prior prompt_embeds, pooled_prompt_embeds=prior pooled_prompt_embeds; "
                                "txt_ids = zeros [L, 3] (L = prompt_embeds.shape[1])",
                     output_type="np (image) and pil (image_u8)", **extra),
        "seed": seed,
    }
    gp.write_run(name, tensors, meta, RUNS_DIR)


def run_prompt_two_images(prior, dev_full, flux, name, prior_call, flux_call, seed):
    images_u8 = [gp.synthetic_image(28, 28), variant_image(28, 28)]
    rec = PriorRecorder(prior)
    try:  # no zeros patch: with text encoders the prior builds no dummy embeddings (lines 461-475)
        out = prior(image=[PIL.Image.fromarray(u) for u in images_u8], **prior_call)
    finally:
        rec.close()
    (pv,), (hidden,), (embeds,) = rec.pixel_values, rec.hidden, rec.embeds
    assert pv.shape == (2, 3, 28, 28) and embeds.shape == (2, 4, 32)
    for i, u in enumerate(images_u8):
        assert torch.equal(pv[i], normalise_u8(to_chw(u)))
    (kw, text, pooled), = rec.text
    assert kw["max_sequence_length"] == 512 and kw["prompt"] == [prior_call["prompt"]] * 2, kw
    assert text.shape == (2, 512, 32) and pooled.shape == (2, 32)
    # the prompt is repeated per image (batch_size * [prompt], line 446) and encoded as a batch of 2
    assert torch.equal(text[0], text[1]) and torch.equal(pooled[0], pooled[1])
    single, single_pooled, _ = dev_full.encode_prompt(prompt=prior_call["prompt"], prompt_2=None, device="cpu",
                                                      max_sequence_length=512)
    batch_vs_single = max(float((single[0] - text[0]).abs().max()), float((single_pooled[0] - pooled[0]).abs().max()))
    assert batch_vs_single < 1e-5, batch_vs_single
    s = torch.tensor(prior_call["prompt_embeds_scale"], dtype=torch.float32)
    sp = torch.tensor(prior_call["pooled_prompt_embeds_scale"], dtype=torch.float32)
    full = torch.cat([text, embeds], 1) * s[:, None, None]  # lines 488-490
    expected = torch.sum(full, dim=0, keepdim=True)  # line 496
    assert torch.equal(out.prompt_embeds, expected), (out.prompt_embeds - expected).abs().max()
    assert torch.equal(out.pooled_prompt_embeds, torch.sum(pooled * sp[:, None], dim=0, keepdim=True))
    assert out.prompt_embeds.shape == (1, 512 + 4, 32) and out.pooled_prompt_embeds.shape == (1, 32)
    call = dict(flux_call, prompt_embeds=out.prompt_embeds, pooled_prompt_embeds=out.pooled_prompt_embeds)
    tensors, extra = flux_call_tensors(flux, call, seed, flux_call["num_images_per_prompt"])
    tensors.update(
        input_images_u8=torch.from_numpy(np.stack(images_u8)),
        pixel_values=pv,
        siglip_last_hidden_state=hidden,
        image_embeds=embeds,
        image_embeds_scaled=embeds * s[:, None, None],
        clip_ids=gp.clip_ids(dev_full, [prior_call["prompt"]]),
        t5_ids=gp.t5_ids(dev_full, [prior_call["prompt"]], 512),
        text_prompt_embeds=text[:1],
        text_pooled_prompt_embeds=pooled[:1],
        pooled_prompt_embeds_scaled=pooled * sp[:, None],
        prompt_embeds=out.prompt_embeds,
        pooled_prompt_embeds=out.pooled_prompt_embeds,
    )
    meta = {
        "prior": {
            "pipeline_class": "FluxPriorReduxPipeline",
            "model": "redux/tiny_redux + the tiny_pipeline's text_encoder, tokenizer, text_encoder_2, tokenizer_2 "
                     "passed as components",
            "call": {k: v for k, v in prior_call.items()},
            "images": "input_images_u8[0] = gen_pipeline.synthetic_image(28, 28), input_images_u8[1] = "
                      "gen_redux.variant_image(28, 28); passed as a list of two PIL RGB images (no resize)",
            "max_sequence_length": "512, hard-coded in the prior's encode_prompt call (line 473): t5_ids [1, 512]; "
                                   "CLIP uses tokenizer.model_max_length (77)",
            "text": "the prompt is repeated per image (line 446) and encoded as a batch of 2: both rows equal; "
                    "text_prompt_embeds / text_pooled_prompt_embeds hold one row. Equal to encoding it alone "
                    f"(FluxPipeline.encode_prompt, max_sequence_length 512) up to {batch_vs_single:.1e}",
            "formula": "per image i: P_i = s_i * cat([text, image_embeds[i]], 1) (lines 488-490), "
                       "q_i = sp_i * pooled (491-493); prompt_embeds = sum_i P_i, pooled_prompt_embeds = sum_i q_i "
                       "(torch.sum(dim=0, keepdim=True), 496-497). So the text part is (sum_i s_i) * text = "
                       "1.6 * text and the pooled (sum_i sp_i) * pooled = 1.5 * pooled, while image i's 4 tokens "
                       "are NOT concatenated per image but ADDED: tokens 512..515 = sum_i s_i * image_embeds[i]",
            "scaled_parts": "image_embeds_scaled = s_i * image_embeds[i] [2,4,32]; pooled_prompt_embeds_scaled "
                            "= sp_i * pooled [2,32]; the text part of P_i is s_i * text_prompt_embeds",
        },
        "flux": dict(pipeline_class="FluxPipeline", pipeline=gp.DEV_DIR.name,
                     loaded="FluxPipeline.from_pretrained(tiny_pipeline, text_encoder=None, text_encoder_2=None)",
                     call={k: v for k, v in flux_call.items()},
                     embeddings="prompt_embeds [1, 516, 32] and pooled [1, 32] from the prior, passed with "
                                "num_images_per_prompt 2: FluxPipeline does not repeat given embeddings "
                                "(pipeline_flux.py 359-389): the transformer gets encoder_hidden_states [1, 516, 32] "
                                "with hidden_states [2, N, 64] and broadcasts them (temb, hence the modulation, has "
                                "batch 2). txt_ids zeros [516, 3]",
                     output_type="np (image) and pil (image_u8)", **extra),
        "seed": seed,
    }
    gp.write_run(name, tensors, meta, RUNS_DIR)


# ---------------------------------------------------------------------------------------------


def main():
    torch.set_num_threads(1)
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()
    REDUX_DIR.mkdir(parents=True, exist_ok=True)
    image_encoder = build_image_encoder(600)
    image_embedder = build_image_embedder(610)
    save_redux(image_encoder, SiglipImageProcessor(**PROCESSOR), image_embedder)
    prior, keys = check_reloaded(image_encoder, image_embedder)
    prior.set_progress_bar_config(disable=True)
    if RUNS_DIR.exists():
        shutil.rmtree(RUNS_DIR)
    RUNS_DIR.mkdir()

    dev_full = FluxPipeline.from_pretrained(gp.DEV_DIR, dtype=torch.float32)
    flux = FluxPipeline.from_pretrained(gp.DEV_DIR, text_encoder=None, text_encoder_2=None, dtype=torch.float32)
    flux.set_progress_bar_config(disable=True)
    with torch.no_grad():
        run_siglip(prior, keys)
        run_variation(prior, flux, "redux_variation",
                      dict(height=32, width=48, num_inference_steps=3, guidance_scale=2.5, num_images_per_prompt=1),
                      seed=20)
        prior_text = FluxPriorReduxPipeline(
            image_encoder=prior.image_encoder, feature_extractor=prior.feature_extractor,
            image_embedder=prior.image_embedder, text_encoder=dev_full.text_encoder, tokenizer=dev_full.tokenizer,
            text_encoder_2=dev_full.text_encoder_2, tokenizer_2=dev_full.tokenizer_2)
        prior_text.set_progress_bar_config(disable=True)
        run_prompt_two_images(
            prior_text, dev_full, flux, "redux_prompt_two_images",
            dict(prompt="a cat", prompt_embeds_scale=[1.0, 0.6], pooled_prompt_embeds_scale=[1.0, 0.5]),
            dict(height=32, width=32, num_inference_steps=2, guidance_scale=3.5, num_images_per_prompt=2),
            seed=21)
    print("wrote", MODEL_DIR, RUNS_DIR)


if __name__ == "__main__":
    main()
