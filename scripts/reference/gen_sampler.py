"""Golden fixtures for flux-sampler's schedules and Euler step.

Writes flux-sampler/tests/fixtures/sampler.safetensors:
  bfl.n<steps>.seq<len>[.noshift]         BFL `get_schedule(steps, len, shift=...)` (f32, steps+1)
  diffusers.n<steps>.seq<len>             FluxPipeline + FLUX.1-dev scheduler config: the
                                          scheduler's `sigmas` after retrieve_timesteps (f32, steps+1)
  diffusers_schnell.n<steps>.seq<len>     the same with FLUX.1-schnell's scheduler config
  diffusers_timesteps.n<steps>.seq<len>   the scheduler's `timesteps` (f32, steps)
  euler.x / .v / .out                     one `scheduler.step` in f32 (sigmas from diffusers.n4.seq4096,
                                          from step 1 to 2), inputs and output
Run from the repository root: .venv/bin/python scripts/reference/gen_sampler.py
"""

import math
import os

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.pipelines.flux.pipeline_flux import calculate_shift, retrieve_timesteps
from safetensors.torch import save_file

OUT = "flux-sampler/tests/fixtures/sampler.safetensors"
# (steps, packed image tokens): 1024² (4096), 768x1360 (4080), 512² (1024), tiny (48, 6), 2048² (16384)
CASES = [(1, 4096), (4, 4096), (4, 1024), (20, 4080), (28, 4096), (50, 4096), (28, 16384), (4, 48), (7, 6)]

# FLUX.1-dev / FLUX.1-schnell `scheduler/scheduler_config.json` (the fields that matter).
DEV = dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5,
           max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096)
SCHNELL = dict(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=False, base_shift=0.5,
               max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096)


# BFL src/flux/sampling.py, restated (the `flux` package is not installed here).
def bfl_time_shift(mu, sigma, t):
    return math.exp(mu) / (math.exp(mu) + (1 / t - 1) ** sigma)


def bfl_lin_function(x1=256, y1=0.5, x2=4096, y2=1.15):
    m = (y2 - y1) / (x2 - x1)
    b = y1 - m * x1
    return lambda x: m * x + b


def bfl_get_schedule(num_steps, image_seq_len, base_shift=0.5, max_shift=1.15, shift=True):
    timesteps = torch.linspace(1, 0, num_steps + 1)
    if shift:
        mu = bfl_lin_function(y1=base_shift, y2=max_shift)(image_seq_len)
        timesteps = bfl_time_shift(mu, 1.0, timesteps)
    return timesteps


def diffusers_schedule(config, steps, seq_len):
    """What FluxPipeline.__call__ does in step 5 (pipeline_flux.py 823-842)."""
    scheduler = FlowMatchEulerDiscreteScheduler(**config)
    sigmas = np.linspace(1.0, 1 / steps, steps)
    mu = calculate_shift(seq_len, config["base_image_seq_len"], config["max_image_seq_len"],
                         config["base_shift"], config["max_shift"])
    timesteps, n = retrieve_timesteps(scheduler, steps, "cpu", sigmas=sigmas, mu=mu)
    assert n == steps
    return scheduler, timesteps


def main():
    torch.manual_seed(0)
    out = {}
    for steps, seq in CASES:
        out[f"bfl.n{steps}.seq{seq}"] = bfl_get_schedule(steps, seq)
        out[f"bfl.n{steps}.seq{seq}.noshift"] = bfl_get_schedule(steps, seq, shift=False)
        scheduler, timesteps = diffusers_schedule(DEV, steps, seq)
        out[f"diffusers.n{steps}.seq{seq}"] = scheduler.sigmas.clone()
        out[f"diffusers_timesteps.n{steps}.seq{seq}"] = timesteps.clone()
        out[f"diffusers_schnell.n{steps}.seq{seq}"] = diffusers_schedule(SCHNELL, steps, seq)[0].sigmas.clone()
        gap = (out[f"bfl.n{steps}.seq{seq}"] - out[f"diffusers.n{steps}.seq{seq}"]).abs().max().item()
        print(f"steps {steps:2} seq {seq:5}: max |BFL - diffusers| = {gap:.3g}")

    scheduler, timesteps = diffusers_schedule(DEV, 4, 4096)
    gen = torch.Generator("cpu").manual_seed(5)
    x = torch.randn(2, 6, 64, generator=gen)
    v = torch.randn(2, 6, 64, generator=gen)
    scheduler.set_begin_index(0)
    scheduler.step(v, timesteps[0], x)  # advance to step 1
    y = scheduler.step(v, timesteps[1], x, return_dict=False)[0]
    out.update({"euler.x": x, "euler.v": v, "euler.out": y})

    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    save_file(dict(sorted(out.items())), OUT)
    print(f"wrote {OUT}: {len(out)} tensors, {os.path.getsize(OUT)} bytes")


if __name__ == "__main__":
    main()
