"""Why FLUX.1 Fill (guidance 30) matches diffusers to ~1e-4 rather than ~1e-6.

The guidance embedding is sin/cos of `guidance · 1000 · freqs`, `freqs = exp(-ln(10000) · i / 128)`
in f32. torch's CPU `exp` is not correctly rounded: 2 of the 128 frequencies differ by one ulp from
the correctly rounded values (which flux computes). At guidance 30 the arguments reach 30000, so
one ulp of a frequency moves them by up to ~3.6e-3. This script runs the tiny Fill transformer on
the recorded first-step input twice, with torch's exp and with correctly rounded frequencies, and
prints the velocity difference: the whole of flux's first-step error on that fixture.

Run from the repository root:  python scripts/reference/check_guidance_exp.py   (~3 s)
"""

import math

import diffusers.models.embeddings as embeddings
import numpy as np
import torch
from diffusers import FluxTransformer2DModel
from safetensors.torch import load_file

torch.set_num_threads(1)
RUN = "flux/tests/fixtures/tools/runs/fill.safetensors"


def main():
    run = load_file(RUN)
    model = FluxTransformer2DModel.from_pretrained("flux/tests/fixtures/tools/fill_transformer").eval()

    def velocity():
        with torch.no_grad():
            return model(hidden_states=run["transformer_hidden_states"], encoder_hidden_states=run["prompt_embeds"],
                         pooled_projections=run["pooled_prompt_embeds"], timestep=run["transformer_timestep"][0],
                         guidance=run["transformer_guidance"][0], img_ids=run["transformer_img_ids"],
                         txt_ids=run["txt_ids"], return_dict=False)[0]

    exponent = -math.log(10000) * torch.arange(0, 128, dtype=torch.float32) / 128
    rounded = np.exp(exponent.numpy().astype(np.float64)).astype(np.float32)
    print("frequencies where torch.exp differs from the correctly rounded value:",
          int((torch.exp(exponent).numpy() != rounded).sum()), "of 128")
    with_torch = velocity()
    assert torch.equal(with_torch, run["velocities"][0])
    torch_exp = torch.exp

    def correctly_rounded_exp(x, *args, **kwargs):
        if x.dtype == torch.float32 and x.numel() == 128:
            return torch.from_numpy(np.exp(x.numpy().astype(np.float64)).astype(np.float32))
        return torch_exp(x, *args, **kwargs)

    embeddings.torch.exp = correctly_rounded_exp
    try:
        with_rounded = velocity()
    finally:
        embeddings.torch.exp = torch_exp
    print(f"first-step velocity, torch exp vs correctly rounded: max abs diff "
          f"{(with_torch - with_rounded).abs().max().item():.3e}")


if __name__ == "__main__":
    main()
