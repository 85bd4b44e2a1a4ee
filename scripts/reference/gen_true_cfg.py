"""Golden fixtures for true classifier-free guidance (negative prompts) in `flux::Pipeline`.

diffusers' FluxPipeline with `negative_prompt` and `true_cfg_scale > 1` runs the transformer
twice per step and combines `neg + true_cfg_scale * (pos - neg)` (pipeline_flux.py 913-927).
Runs the tiny [dev] pipeline that gen_pipeline.py saved, with fixed latents, and writes
flux/tests/fixtures/tiny_pipeline_runs/dev_true_cfg*.{json,safetensors} in that script's run
format (prompt, size, steps, guidance, latents_in, image, image_u8) plus the negative prompt
and the scale.

Run from the repository root:  python scripts/reference/gen_true_cfg.py   (~5 s)
"""

import sys
from pathlib import Path

import numpy as np
import torch
from diffusers import FluxPipeline

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gen_pipeline as gp  # noqa: E402

CASES = [
    # name, call, seed
    (
        "dev_true_cfg",
        dict(prompt="a photo of a cat wearing a tiny hat", negative_prompt="blurry, low quality",
             true_cfg_scale=4.0, height=32, width=48, num_inference_steps=3, guidance_scale=3.5),
        5,
    ),
    (
        "dev_true_cfg_batch",
        dict(prompt=["a cat", "a dog"], negative_prompt=["ugly", "a cat"],
             true_cfg_scale=2.5, height=32, width=32, num_inference_steps=2, guidance_scale=3.5,
             num_images_per_prompt=2),
        6,
    ),
]


def run(pipe, name, call, seed):
    batch = (len(call["prompt"]) if isinstance(call["prompt"], list) else 1) * call.get("num_images_per_prompt", 1)
    h, w = call["height"], call["width"]
    noise = torch.randn((batch, 16, h // 8, w // 8), generator=gp.torch_generator(seed), dtype=torch.float32)
    kwargs = dict(call, max_sequence_length=gp.T5_MAX_LEN, latents=gp.pack(noise))
    calls = []
    original = pipe.transformer.forward

    def counting(*a, **k):
        calls.append(1)
        return original(*a, **k)

    pipe.transformer.forward = counting
    try:
        image = pipe(**kwargs, output_type="np").images
        assert len(calls) == 2 * call["num_inference_steps"], "true CFG must run two passes a step"
        pil = pipe(**kwargs, output_type="pil").images
        plain = pipe(**{k: v for k, v in kwargs.items() if k not in ("negative_prompt", "true_cfg_scale")},
                     output_type="np").images
    finally:
        del pipe.transformer.forward
    assert np.abs(image - plain).max() > 0.05, "the negative prompt must change the image"
    tensors = {
        "latents_in": noise,
        "image": torch.from_numpy(image),
        "image_u8": torch.from_numpy(np.stack([np.asarray(p) for p in pil])),
        "image_without_negative": torch.from_numpy(plain),
    }
    meta = dict(call, max_sequence_length=gp.T5_MAX_LEN, pipeline=gp.DEV_DIR.name,
                pipeline_class="FluxPipeline", seed=seed,
                true_cfg="neg + true_cfg_scale * (pos - neg), two transformer calls per step",
                noise=gp.noise_note(seed, list(noise.shape)))
    meta["noise"]["used_as"] = "latents=pack(latents_in) passed to the call"
    gp.write_run(name, tensors, meta)


def main():
    torch.set_num_threads(1)
    pipe = FluxPipeline.from_pretrained(gp.DEV_DIR, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        for name, call, seed in CASES:
            run(pipe, name, call, seed)
    print("wrote", [c[0] for c in CASES], "to", gp.RUNS_DIR)


if __name__ == "__main__":
    main()
