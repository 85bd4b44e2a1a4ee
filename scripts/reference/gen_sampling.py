"""Golden fixtures for alternative sigma schedules, DPM-Solver++ 2M and step caches in `flux::Pipeline`.

Runs the tiny [dev] pipeline that gen_pipeline.py saved (f32, CPU, fixed latents) and writes, in that
script's run format (prompt, size, steps, guidance, latents_in, image, image_u8):

  flux/tests/fixtures/tiny_pipeline_runs/
    dev_karras, dev_exponential, dev_beta   FlowMatchEulerDiscreteScheduler with use_{karras,exponential,
                                            beta}_sigmas (6 steps)
    dev_dpmpp_2m, dev_dpmpp_2m_20           DPMSolverMultistepScheduler(use_flow_sigmas, flow_prediction),
                                            dpmsolver++ order 2 (6 and 20 steps)
    dev_fbc, dev_fbc_true_cfg, dev_fbc_batch              diffusers' First Block Cache
    dev_magcache, dev_magcache_true_cfg, dev_magcache_calibrate   diffusers' MagCache
    dev_teacache                            TeaCache4FLUX's decision rule (not in diffusers; restated here)
  flux-sampler/tests/fixtures/schedules.json
    the schedules FluxPipeline.__call__ sets (karras, exponential, beta, dpmpp_2m) for a table of
    (steps, image tokens) with FLUX.1-dev's scheduler config, and scipy's beta(0.6, 0.6) ppf on a few points
  flux/tests/fixtures/tools/runs/  (Part C, in gen_tools.py's run format, 8 steps; run gen_tools.py first)
    kontext_fbc, fill_magcache, control_teacache, control_lora_fbc   the plain kontext / fill / control /
                                            control_lora runs with First Block Cache, MagCache, TeaCache, FBC

Each scheduler run records the scheduler's sigmas and timesteps after the call; each cache run records,
per transformer call and cache context, whether the blocks were computed or the cache reused (a forward
hook on the last single block's proj_out, which only runs when the blocks run), and how far the same
call without the cache lands (`max_abs_diff_vs_uncached`; the tests run that call themselves).

Run from the repository root:  python scripts/reference/gen_sampling.py   (~10 s; `--tools-only`: Part C)
"""

import contextlib
import inspect
import json
import sys
import tempfile
from pathlib import Path

import diffusers
import numpy as np
import scipy.stats
import torch
import transformers
import diffusers.loaders.lora_pipeline as lora_pipeline
from diffusers import (
    DPMSolverMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxControlPipeline,
    FluxFillPipeline,
    FluxKontextPipeline,
    FluxPipeline,
    FluxTransformer2DModel,
)
from diffusers.hooks import FirstBlockCacheConfig, MagCacheConfig
from diffusers.hooks.hooks import StateManager
from diffusers.hooks.first_block_cache import FBCHeadBlockHook
from diffusers.hooks.mag_cache import FLUX_MAG_RATIOS, MagCacheBlockHook
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.pipelines.flux.pipeline_flux import calculate_shift, retrieve_timesteps
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gen_pipeline as gp  # noqa: E402
import gen_sampler as gs  # noqa: E402
import gen_tools as gt  # noqa: E402

SCHEDULES_OUT = gp.ROOT / "flux-sampler" / "tests" / "fixtures" / "schedules.json"

PROMPT = "a photo of a cat wearing a tiny hat"
NEGATIVE = "blurry, low quality"
BASE = dict(prompt=PROMPT, height=32, width=48, guidance_scale=3.5)

# ---------------------------------------------------------------------------------------------
# Part A: sigma schedules and DPM-Solver++ 2M

DPM_KWARGS = dict(use_flow_sigmas=True, prediction_type="flow_prediction")
SCHEDULE_RUNS = [
    # name, scheduler class, from_config kwargs, sampler, sigmas, steps, seed
    ("dev_karras", FlowMatchEulerDiscreteScheduler, dict(use_karras_sigmas=True), "euler", "karras", 6, 11),
    ("dev_exponential", FlowMatchEulerDiscreteScheduler, dict(use_exponential_sigmas=True), "euler", "exponential",
     6, 12),
    ("dev_beta", FlowMatchEulerDiscreteScheduler, dict(use_beta_sigmas=True), "euler", "beta", 6, 13),
    ("dev_dpmpp_2m", DPMSolverMultistepScheduler, DPM_KWARGS, "dpmpp_2m", "flux", 6, 14),
    ("dev_dpmpp_2m_20", DPMSolverMultistepScheduler, DPM_KWARGS, "dpmpp_2m", "flux", 20, 15),
]

TABLE_KINDS = {
    "karras": (FlowMatchEulerDiscreteScheduler, dict(use_karras_sigmas=True)),
    "exponential": (FlowMatchEulerDiscreteScheduler, dict(use_exponential_sigmas=True)),
    "beta": (FlowMatchEulerDiscreteScheduler, dict(use_beta_sigmas=True)),
    "dpmpp_2m": (DPMSolverMultistepScheduler, DPM_KWARGS),
}
TABLE_STEPS = (1, 2, 4, 6, 28, 50)
TABLE_SEQ_LENS = (6, 4096)
BETA_PPF_EXTRA = [1e-12, 1e-6, 0.001, 0.3, 0.5, 0.7, 0.999, 1 - 1e-9]

# ---------------------------------------------------------------------------------------------
# Part B: caches. Thresholds were tuned on this tiny random model (see the printed decisions).

CACHE_STEPS = 10
# The relative first-block residual changes of this random model lie between 0.4 and 1.04 (real FLUX:
# ~0.05-0.2), so FBC's thresholds sit far above its default 0.05; each is >= 0.01 from every compared value.
FBC_THRESHOLD = 0.7
FBC_TRUE_CFG_THRESHOLD = 0.72  # cond and uncond then take different decisions
FBC_BATCH_THRESHOLD = 0.72
MAG_THRESHOLD = 0.06  # MagCacheConfig's default: already skips with FLUX_MAG_RATIOS at 10 steps
TEACACHE_THRESHOLD = 1.5  # every compared accumulator is >= 0.2 from it
# TeaCache4FLUX's rescaling polynomial (highest power first), evaluated in f64 (numpy.poly1d, Horner).
TEACACHE_COEFFICIENTS = [4.98651651e02, -2.83781631e02, 5.58554382e01, -3.82021401e00, 2.64230861e-01]


def noise_for(call, seed):
    prompt = call["prompt"]
    batch = (len(prompt) if isinstance(prompt, list) else 1) * call.get("num_images_per_prompt", 1)
    h, w = call["height"], call["width"]
    return torch.randn((batch, 16, h // 8, w // 8), generator=gp.torch_generator(seed), dtype=torch.float32)


def generate(pipe, call, noise, output_type):
    images = pipe(**call, max_sequence_length=gp.T5_MAX_LEN, latents=gp.pack(noise), output_type=output_type).images
    if output_type == "pil":
        return torch.from_numpy(np.stack([np.asarray(p) for p in images]))
    return torch.from_numpy(images)


def euler(pipe, base_config):
    pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(base_config)


def run_meta(call, seed, noise):
    meta = dict(call, max_sequence_length=gp.T5_MAX_LEN, pipeline=gp.DEV_DIR.name, pipeline_class="FluxPipeline",
                seed=seed, noise=gp.noise_note(seed, list(noise.shape)))
    meta["noise"]["used_as"] = "latents=pack(latents_in) passed to the call"
    return meta


def image_seq_len(call):
    return (call["height"] // 16) * (call["width"] // 16)


def mu_for(config, seq_len):
    return calculate_shift(seq_len, config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096),
                           config.get("base_shift", 0.5), config.get("max_shift", 1.15))


def schedule_run(pipe, base_config, name, cls, kwargs, sampler, sigmas_kind, steps, seed):
    call = dict(BASE, num_inference_steps=steps)
    noise = noise_for(call, seed)
    pipe.scheduler = cls.from_config(base_config, **kwargs)
    image = generate(pipe, call, noise, "np")
    sched = pipe.scheduler
    sigmas = [x.item() for x in sched.sigmas]
    timesteps = [x.item() for x in sched.timesteps]
    flow_shift = float(sched.config.flow_shift) if cls is DPMSolverMultistepScheduler else None
    pipe.scheduler = cls.from_config(base_config, **kwargs)
    image_u8 = generate(pipe, call, noise, "pil")
    assert [x.item() for x in pipe.scheduler.sigmas] == sigmas
    euler(pipe, base_config)
    plain = generate(pipe, call, noise, "np")
    gap = (image - plain).abs().max().item()
    assert gap > 1e-3, f"{name}: the schedule must change the image ({gap})"
    seq = image_seq_len(call)
    meta = run_meta(call, seed, noise)
    meta.update(sampler=sampler, sigmas=sigmas_kind, scheduler_class=cls.__name__, scheduler_kwargs=dict(kwargs),
                image_seq_len=seq, mu=mu_for(sched.config, seq), scheduler_sigmas=sigmas,
                scheduler_timesteps=timesteps, max_abs_diff_vs_euler=gap)
    if flow_shift is not None:
        meta["flow_shift"] = flow_shift  # set_timesteps(mu=...) writes exp(mu) into the config
    gp.write_run(name, {"latents_in": noise, "image": image, "image_u8": image_u8}, meta)
    print(f"{name}: sigmas {[round(s, 4) for s in sigmas]} timesteps {[round(t, 2) for t in timesteps]}, "
          f"max |image - euler| {gap:.3g}")


def schedule_table():
    """What FluxPipeline.__call__ does in step 5 (pipeline_flux.py 823-842), per kind and size."""
    base_config = FlowMatchEulerDiscreteScheduler(**gs.DEV).config
    cases, skipped = [], []
    for kind, (cls, kwargs) in TABLE_KINDS.items():
        for steps in TABLE_STEPS:
            for seq in TABLE_SEQ_LENS:
                sched = cls.from_config(base_config, **kwargs)
                sigmas = np.linspace(1.0, 1 / steps, steps)
                if getattr(sched.config, "use_flow_sigmas", False):
                    sigmas = None
                mu = mu_for(sched.config, seq)
                try:
                    retrieve_timesteps(sched, steps, "cpu", sigmas=sigmas, mu=mu)
                except Exception as e:  # noqa: BLE001 - recorded, not hidden
                    skipped.append(dict(kind=kind, steps=steps, image_seq_len=seq, error=f"{type(e).__name__}: {e}"))
                    continue
                cases.append(dict(kind=kind, steps=steps, image_seq_len=seq, mu=mu,
                                  sigmas=[x.item() for x in sched.sigmas],
                                  timesteps=[x.item() for x in sched.timesteps]))
    qs = [float(q) for q in 1 - np.linspace(0, 1, 28)] + BETA_PPF_EXTRA
    beta_ppf = [[q, float(scipy.stats.beta.ppf(q, 0.6, 0.6))] for q in qs]
    lines = ["{",
             f'  "config": {json.dumps(gs.DEV, sort_keys=True)},',
             '  "pipeline": "FluxPipeline.__call__ step 5: sigmas = linspace(1, 1/n, n) (None with use_flow_sigmas), '
             'mu = calculate_shift(image_seq_len, config), retrieve_timesteps(scheduler, n, cpu, sigmas, mu)",',
             '  "cases": [']
    lines += ["    " + json.dumps(c) + ("," if i + 1 < len(cases) else "") for i, c in enumerate(cases)]
    lines += ["  ],", f'  "skipped": {json.dumps(skipped)},', '  "beta_ppf_params": [0.6, 0.6],', '  "beta_ppf": [']
    lines += ["    " + json.dumps(p) + ("," if i + 1 < len(beta_ppf) else "") for i, p in enumerate(beta_ppf)]
    lines += ["  ]", "}"]
    SCHEDULES_OUT.parent.mkdir(parents=True, exist_ok=True)
    SCHEDULES_OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {SCHEDULES_OUT}: {len(cases)} cases, {len(skipped)} skipped {skipped}")


# ---------------------------------------------------------------------------------------------
# recording which calls ran the blocks


class Recorder:
    """Per transformer call: the cache context and whether the last single block's proj_out ran."""

    def __init__(self, pipe):
        self.pipe = pipe
        self.context = None
        self.fired = False
        self.calls = []  # (context, computed)

    def __enter__(self):
        tr = self.pipe.transformer
        self.saved_forward = tr.__dict__.get("forward")
        self.saved_context = tr.__dict__.get("cache_context")
        inner_forward = tr.forward
        outer_context = tr.cache_context

        def forward(*args, **kwargs):
            self.fired = False
            out = inner_forward(*args, **kwargs)
            self.calls.append((self.context, self.fired))
            return out

        @contextlib.contextmanager
        def cache_context(name, **kwargs):
            self.context = name
            with outer_context(name, **kwargs):
                yield
            self.context = None

        def hook(module, args, output):
            self.fired = True

        tr.forward = forward
        tr.cache_context = cache_context
        self.handle = tr.single_transformer_blocks[-1].proj_out.register_forward_hook(hook)
        return self

    def __exit__(self, *exc):
        tr = self.pipe.transformer
        self.handle.remove()
        for attr, saved in (("forward", self.saved_forward), ("cache_context", self.saved_context)):
            if saved is None:
                delattr(tr, attr)
            else:
                setattr(tr, attr, saved)

    def computed(self, true_cfg):
        names = ["cond", "uncond"] if true_cfg else ["cond"]
        expected = names * (len(self.calls) // len(names))
        assert [c for c, _ in self.calls] == expected, self.calls
        return {n: [f for c, f in self.calls if c == n] for n in names}


def decisions(computed):
    return {k: "".join("C" if f else "r" for f in v) for k, v in computed.items()}


# ---------------------------------------------------------------------------------------------
# TeaCache4FLUX, restated on top of diffusers' FluxTransformer2DModel.forward (0.42.1)


class TeaCache:
    def __init__(self, threshold, num_steps):
        self.threshold = threshold
        self.num_steps = num_steps
        self.poly = np.poly1d(TEACACHE_COEFFICIENTS)
        self.cnt = 0
        self.acc = 0.0
        self.prev = None
        self.residual = None
        self.rel = []  # per call: rel L1 distance to the previous call's modulated input (None at cnt 0)
        self.acc_trace = []  # per call: the accumulator compared with the threshold (None when forced)

    def decide(self, modulated):
        rel = compared = None
        if self.prev is not None:
            rel = ((modulated - self.prev).abs().mean() / self.prev.abs().mean()).item()
        if self.cnt == 0 or self.cnt == self.num_steps - 1:
            compute = True
            self.acc = 0.0
        else:
            self.acc += float(self.poly(rel))
            compared = self.acc
            if self.acc < self.threshold:
                compute = False
            else:
                compute = True
                self.acc = 0.0
        self.rel.append(rel)
        self.acc_trace.append(compared)
        self.prev = modulated
        self.cnt += 1
        if self.cnt == self.num_steps:
            self.cnt = 0
        return compute


def teacache_forward(model, tea):
    """FluxTransformer2DModel.forward (no controlnet / IP-adapter / LoRA scale paths) with TeaCache."""

    def forward(hidden_states, encoder_hidden_states=None, pooled_projections=None, timestep=None, img_ids=None,
                txt_ids=None, guidance=None, joint_attention_kwargs=None, return_dict=True):
        img_in = model.x_embedder(hidden_states)
        t = timestep.to(img_in.dtype) * 1000
        if guidance is None:
            temb = model.time_text_embed(t, pooled_projections)
        else:
            temb = model.time_text_embed(t, guidance.to(img_in.dtype) * 1000, pooled_projections)
        txt = model.context_embedder(encoder_hidden_states)
        assert txt_ids.ndim == 2 and img_ids.ndim == 2
        rope = model.pos_embed(torch.cat((txt_ids, img_ids), dim=0))

        compute = tea.decide(model.transformer_blocks[0].norm1(img_in, emb=temb)[0])
        if compute:
            img = img_in
            for block in [*model.transformer_blocks, *model.single_transformer_blocks]:
                txt, img = block(hidden_states=img, encoder_hidden_states=txt, temb=temb, image_rotary_emb=rope,
                                 joint_attention_kwargs=joint_attention_kwargs)
            tea.residual = img - img_in
        else:
            img = img_in + tea.residual
        out = model.proj_out(model.norm_out(img, temb))
        return Transformer2DModelOutput(sample=out) if return_dict else (out,)

    return forward


# ---------------------------------------------------------------------------------------------
# cache runs


@contextlib.contextmanager
def fbc_diff_probe(diffs):
    """Records the relative first-block residual change FBC compares with its threshold, per context."""
    original = FBCHeadBlockHook._should_compute_remaining_blocks

    def probe(self, residual):
        state = self.state_manager.get_state()
        prev = state.head_block_residual
        diff = None if prev is None else (((residual - prev).abs().mean()) / prev.abs().mean()).item()
        diffs.setdefault(self.state_manager.context.name, []).append(diff)
        return original(self, residual)

    FBCHeadBlockHook._should_compute_remaining_blocks = probe
    try:
        yield
    finally:
        FBCHeadBlockHook._should_compute_remaining_blocks = original


@contextlib.contextmanager
def calibration_probe(ratios):
    """Copies MagCache's calibration ratios as they are appended (the hook clears them at the last step)."""
    original = MagCacheBlockHook._perform_calibration_step

    def probe(self, state, residual):
        original(self, state, residual)
        ratios.setdefault(self.state_manager.context.name, []).append(state.calibration_ratios[-1])

    MagCacheBlockHook._perform_calibration_step = probe
    try:
        yield
    finally:
        MagCacheBlockHook._perform_calibration_step = original


class Fbc:
    def __init__(self, threshold):
        self.threshold = threshold
        self.diffs = {}

    def meta(self):
        return {"kind": "first_block_cache", "threshold": self.threshold}

    @contextlib.contextmanager
    def enabled(self, pipe, record):
        pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=self.threshold))
        try:
            with fbc_diff_probe(self.diffs if record else {}):
                yield
        finally:
            pipe.transformer.disable_cache()

    def extra_meta(self):
        return {"fbc_diffs": self.diffs}


class Mag:
    def __init__(self, threshold=MAG_THRESHOLD, calibrate=False, num_steps=CACHE_STEPS):
        self.threshold = threshold
        self.calibrate = calibrate
        self.num_steps = num_steps
        self.ratios = {}

    def config(self):
        if self.calibrate:
            return MagCacheConfig(calibrate=True, num_inference_steps=self.num_steps)
        return MagCacheConfig(threshold=self.threshold, mag_ratios=FLUX_MAG_RATIOS, num_inference_steps=self.num_steps)

    def meta(self):
        c = self.config()
        meta = {"kind": "magcache", "threshold": c.threshold, "max_skip_steps": c.max_skip_steps,
                "retention_ratio": c.retention_ratio, "num_inference_steps": c.num_inference_steps,
                "calibrate": c.calibrate}
        if not self.calibrate:
            meta["mag_ratios"] = "FLUX_MAG_RATIOS"
        return meta

    @contextlib.contextmanager
    def enabled(self, pipe, record):
        pipe.transformer.enable_cache(self.config())
        try:
            with calibration_probe(self.ratios if record else {}):
                yield
        finally:
            pipe.transformer.disable_cache()

    def extra_meta(self):
        if self.calibrate:
            return {"calibration_ratios": self.ratios["cond"]}
        return {"mag_ratios_full": [x.item() for x in FLUX_MAG_RATIOS],
                "mag_ratios_interpolated": [x.item() for x in self.config().mag_ratios]}


class Tea:
    def __init__(self, threshold, num_steps=CACHE_STEPS):
        self.threshold = threshold
        self.num_steps = num_steps
        self.trace = None

    def meta(self):
        return {"kind": "teacache", "threshold": self.threshold, "coefficients": TEACACHE_COEFFICIENTS,
                "num_steps": self.num_steps}

    @contextlib.contextmanager
    def enabled(self, pipe, record):
        tea = TeaCache(self.threshold, self.num_steps)
        pipe.transformer.forward = teacache_forward(pipe.transformer, tea)
        try:
            yield
        finally:
            del pipe.transformer.forward
        if record:
            self.trace = tea

    def extra_meta(self):
        return {"teacache_rel": self.trace.rel, "teacache_acc": self.trace.acc_trace}


def cache_run(pipe, base_config, name, call, seed, cache, min_reused=2, min_computed=3):
    true_cfg = "negative_prompt" in call
    noise = noise_for(call, seed)
    euler(pipe, base_config)
    with Recorder(pipe) as rec:
        uncached = generate(pipe, call, noise, "np")
    assert all(all(v) for v in rec.computed(true_cfg).values())

    euler(pipe, base_config)
    with cache.enabled(pipe, record=True), Recorder(pipe) as rec:
        image = generate(pipe, call, noise, "np")
    computed = rec.computed(true_cfg)
    euler(pipe, base_config)
    with cache.enabled(pipe, record=False), Recorder(pipe) as rec:
        image_u8 = generate(pipe, call, noise, "pil")
    assert rec.computed(true_cfg) == computed, "the PIL call must take the same decisions"

    flags = [f for v in computed.values() for f in v]
    gap = (image - uncached).abs().max().item()
    if not getattr(cache, "calibrate", False):
        for v in computed.values():
            assert sum(not f for f in v) >= min_reused and sum(v) >= min_computed, (name, decisions(computed))
    if not all(flags):
        assert gap > 1e-4, f"{name}: reusing the cache must change the image ({gap})"
    else:
        assert gap <= 1e-6, f"{name}: with every step computed the image must match ({gap})"

    meta = run_meta(call, seed, noise)
    meta.update(sampler="euler", sigmas="flux", cache=cache.meta(), computed=computed, **cache.extra_meta(),
                max_abs_diff_vs_uncached=gap)
    tensors = {"latents_in": noise, "image": image, "image_u8": image_u8}
    gp.write_run(name, tensors, meta)
    print(f"{name}: {cache.meta()} decisions {decisions(computed)} (C computed, r reused), "
          f"max |image - uncached| {gap:.3g}")
    return meta


def check_teacache_forward(pipe, base_config):
    """With threshold 0 every call computes: the restated forward must reproduce the stock pipeline."""
    call = dict(BASE, num_inference_steps=CACHE_STEPS)
    noise = noise_for(call, 27)
    euler(pipe, base_config)
    stock = generate(pipe, call, noise, "np")
    tea = Tea(0.0)
    euler(pipe, base_config)
    with tea.enabled(pipe, record=True), Recorder(pipe) as rec:
        ours = generate(pipe, call, noise, "np")
    assert all(rec.computed(False)["cond"])
    gap = (ours - stock).abs().max().item()
    assert gap <= 1e-6, gap
    print(f"teacache forward with threshold 0: max |ours - stock| {gap:.3g}")


# =============================================================================================
# Part C: step caches on the FLUX.1 tools
#
# gen_tools.py's own run recipes (run_kontext, run_fill, run_control: the same pipelines, inputs,
# seeds and noise draws as its plain `kontext`, `fill`, `control`, `control_lora` runs) with more steps
# and a cache, written beside them to flux/tests/fixtures/tools/runs/ in the same format. Only the step
# count and the cache differ from the plain runs. FluxKontextPipeline, FluxFillPipeline and
# FluxControlPipeline (unlike FluxPipeline) call the transformer outside any `cache_context`:
# - First Block Cache then raises "No cache context is set"; each transformer call is wrapped in
#   `transformer.cache_context("cond")` here, as FluxPipeline does for its single branch;
# - MagCache's hooks fall back to a context of their own, "inference" (mag_cache.py 186-187, 302-303);
#   the calls are left unwrapped;
# - TeaCache (the replacement forward above) has no context.
# gen_tools.py deletes tools/runs/ before it writes: run it first, then this script.

TOOLS_CACHE_STEPS = 8  # the plain runs take 3
# The tools' random transformers are as unlike real FLUX as the dev one (first-block changes 0.48-0.99),
# so the thresholds are again tuned for a mix of computed and reused calls, away from the compared values.
KONTEXT_FBC_THRESHOLD = 0.7  # >= 0.022 from every compared change
# MagCache's decisions depend on the step count and the ratios only (not on the model). 0.05 takes the
# same decisions as the default 0.06 at 8 steps, but >= 0.012 from every accumulated error (the default
# is 0.003 from step 3's 0.0629).
FILL_MAG_THRESHOLD = 0.05
CONTROL_TEA_THRESHOLD = 1.5  # every compared accumulator is >= 0.39 from it
CONTROL_LORA_FBC_THRESHOLD = 0.7  # >= 0.035 from every compared change
# What the cache runs keep of the plain runs' tensors, to stay small (the images are most of it): the u8
# inputs and images, the ids, the noise draws, the schedule, latents_in / latents_out, pooled_prompt_embeds
# and the float image. The rest (the float preprocessings of the inputs, packed / unpacked latents,
# prompt_embeds, vae_input, the per-step stacks) is left out and named in the JSON's `omitted_tensors`.
TOOLS_KEPT = ("pooled_prompt_embeds", "sigmas", "timesteps", "timesteps_full", "transformer_timestep",
              "transformer_guidance", "latents_in", "latents_out", "image")


def tools_kept(name, meta):
    return name.endswith(("_u8", "_ids")) or name in TOOLS_KEPT or name in {d["name"] for d in meta["noise"]["draws"]}


def tools_calls():
    """The plain runs' calls (gen_tools.main), checked against their JSON on disk: name, run, call, seed,
    run_* keyword arguments."""
    kontext = dict(prompt="make the cat red", height=32, width=48, max_area=48 * 32, _auto_resize=False,
                   num_inference_steps=3, guidance_scale=3.5)
    fill = dict(prompt="a red ball", height=32, width=48, num_inference_steps=3, guidance_scale=30.0, strength=1.0)
    control = dict(prompt="a house", height=32, width=48, num_inference_steps=3, guidance_scale=10.0)
    plain = {
        "kontext": (gt.run_kontext, kontext, 10, dict(ref_u8=gp.synthetic_image(48, 64), fixed_latents=True)),
        "fill": (gt.run_fill, fill, 12, {}),
        "control": (gt.run_control, dict(control, num_images_per_prompt=2), 14,
                    dict(transformer="tools/control_transformer")),
        "control_lora": (gt.run_control, dict(control, num_images_per_prompt=1), 15,
                         dict(transformer="tiny_pipeline/transformer + tools/control_lora_bfl.safetensors")),
    }
    for name, (_, call, seed, _) in plain.items():
        recorded = json.loads((gt.RUNS_DIR / f"{name}.json").read_text())
        assert recorded["seed"] == seed and all(recorded[k] == v for k, v in call.items()), name
    # the control LoRA's description (gen_tools.main's lora_meta, adapter weight 1), as the plain run wrote it
    lora = json.loads((gt.RUNS_DIR / "control_lora.json").read_text())["lora"]
    assert lora["adapter_weight"] == 1.0
    plain["control_lora"][3]["extra_meta"] = {"lora": lora}
    return plain


def run_args(run, pipe, name, call, seed, kwargs):
    """gen_tools' run_* signatures: run_kontext(pipe, name, call, ref_u8, seed, fixed_latents), the others
    (pipe, name, call, seed, ...)."""
    if run is gt.run_kontext:
        return (pipe, name, call, kwargs["ref_u8"], seed, kwargs["fixed_latents"]), {}
    return (pipe, name, call, seed), dict(kwargs)


@contextlib.contextmanager
def captured_runs():
    """Collects what gen_tools' run_* would write (name -> (tensors, meta)) instead of writing it."""
    runs = {}
    original = gp.write_run

    def capture(name, tensors, meta, runs_dir=None):
        assert runs_dir == gt.RUNS_DIR and name not in runs
        runs[name] = (tensors, meta)

    gp.write_run = capture
    try:
        yield runs
    finally:
        gp.write_run = original


def hook_context_names(tr):
    """The cache contexts the diffusers hooks' state managers hold right now."""
    names = set()
    for module in tr.modules():
        registry = getattr(module, "_diffusers_hook", None)
        for hook in [] if registry is None else registry.hooks.values():
            for attr in vars(hook).values():
                if isinstance(attr, StateManager) and attr._context is not None:
                    names.add(attr._context.name)
    return names


class ToolRecorder:
    """Per pipeline call, per transformer call: whether the last single block's proj_out ran. A pipeline
    call starts at a transformer call made before the scheduler's first step (step_index None); there the
    diffusers hooks' state is reset (a fresh cache per call, as enabling the cache anew would give).
    With `context`, every transformer call runs inside transformer.cache_context(context)."""

    def __init__(self, pipe, context=None, reset_hooks=False):
        self.pipe = pipe
        self.context = context
        self.reset_hooks = reset_hooks
        self.fired = False
        self.runs = []  # per pipeline call: [computed per transformer call]
        self.hook_contexts = set()
        self.last_step_index = "start"

    def __enter__(self):
        pipe, tr = self.pipe, self.pipe.transformer
        self.saved_forward = tr.__dict__.get("forward")
        inner_forward = tr.forward

        def forward(*args, **kwargs):
            step_index = pipe.scheduler.step_index
            if step_index is None and self.last_step_index is not None:
                self.runs.append([])
                if self.reset_hooks:
                    tr._reset_stateful_cache()
            self.last_step_index = step_index
            self.fired = False
            with tr.cache_context(self.context) if self.context else contextlib.nullcontext():
                out = inner_forward(*args, **kwargs)
                self.hook_contexts |= hook_context_names(tr)
            self.runs[-1].append(self.fired)
            return out

        def hook(module, args, output):
            self.fired = True

        tr.forward = forward
        self.handle = tr.single_transformer_blocks[-1].proj_out.register_forward_hook(hook)
        return self

    def __exit__(self, *exc):
        tr = self.pipe.transformer
        self.handle.remove()
        if self.saved_forward is None:
            delattr(tr, "forward")
        else:
            tr.forward = self.saved_forward


def first_call(values, steps):
    """A per-transformer-call trace over the np and PIL pipeline calls: the two must agree (the first
    entry of a call may see the previous call's state, as TeaCache's relative change does); the first."""
    assert len(values) == 2 * steps, (len(values), steps)
    assert values[1:steps] == values[steps + 1:], values
    return values[:steps]


def tool_cache_run(pipe, name, plain, run, call, seed, kwargs, cache, context=None, min_reused=2, min_computed=3):
    steps = call["num_inference_steps"]
    args, kw = run_args(run, pipe, name, call, seed, kwargs)
    with ToolRecorder(pipe) as rec, captured_runs() as out:
        run(*args, **kw)
    uncached, _ = out[name]
    assert [len(r) for r in rec.runs] == [steps, steps] and all(all(r) for r in rec.runs), rec.runs
    assert not rec.hook_contexts

    hooks = isinstance(cache, (Fbc, Mag))
    with cache.enabled(pipe, record=True), ToolRecorder(pipe, context, reset_hooks=hooks) as rec, \
            captured_runs() as out:
        run(*args, **kw)
    tensors, meta = out[name]
    np_call, pil_call = rec.runs
    assert np_call == pil_call, f"{name}: the PIL call must take the same decisions ({rec.runs})"
    computed = {"cond": np_call}
    hook_contexts = sorted(rec.hook_contexts)
    if isinstance(cache, Fbc):
        assert hook_contexts == [context] == ["cond"], hook_contexts
        extra = {"fbc_diffs": {k: first_call(v, steps) for k, v in cache.diffs.items()}}
        note = ("cond: the pipeline calls the transformer outside any cache_context (First Block Cache then raises "
                "'No cache context is set'); each call was wrapped in transformer.cache_context('cond'), as "
                "FluxPipeline does")
    elif isinstance(cache, Mag):
        assert context is None and hook_contexts == ["inference"], hook_contexts
        extra = cache.extra_meta()
        note = ("inference: the pipeline sets no cache_context; MagCache's hooks then use a context of their own "
                "named 'inference' (mag_cache.py 186-187, 302-303). Recorded here under 'cond'")
    else:
        assert context is None and not hook_contexts, hook_contexts
        extra = {"teacache_rel": first_call(cache.trace.rel, steps),
                 "teacache_acc": first_call(cache.trace.acc_trace, steps)}
        note = "none: TeaCache is a replacement transformer forward (no diffusers hooks)"
    gap = (tensors["image"] - uncached["image"]).abs().max().item()
    print(f"{name}: {cache.meta()} steps {steps} decisions {decisions(computed)} (C computed, r reused), "
          f"max |image - uncached| {gap:.3g}")
    for key, trace in extra.items():
        for ctx, values in (trace.items() if isinstance(trace, dict) else [(None, trace)]):
            if key.startswith(("fbc", "teacache")):
                rounded = [None if x is None else round(x, 4) for x in values]
                print(f"  {key}{'' if ctx is None else f'[{ctx}]'} {rounded}")
    for v in computed.values():
        assert sum(not f for f in v) >= min_reused and sum(v) >= min_computed, (name, decisions(computed))
    assert gap > 1e-4, f"{name}: reusing the cache must change the image ({gap})"

    omitted = sorted(k for k in tensors if not tools_kept(k, meta))
    tensors = {k: v for k, v in tensors.items() if k not in omitted}
    meta.update(cache=cache.meta(), computed=computed, **extra, cache_context=note,
                max_abs_diff_vs_uncached=gap, plain_run=plain,
                omitted_tensors={"names": omitted,
                                 "note": f"stored by the plain run `{plain}` (same inputs and recipe; the per-step "
                                         "ones at its step count), left out here to keep the fixture small"})
    gp.write_run(name, tensors, meta, gt.RUNS_DIR)
    return meta


def check_plain_run(pipe, name, run, call, seed, kwargs):
    """The setup here reproduces gen_tools.py's plain run on disk: the same JSON, the same tensors, the inputs and noise
    draws bit for bit, the rest to CPU rounding: the committed tools fixtures come from another CPU, and on
    this one gen_tools.py itself reproduces them only to ~1e-3 (fill's guidance 30 amplifies the last bits).
    A wrong model or LoRA would be off by ~0.1."""
    args, kw = run_args(run, pipe, name, call, seed, kwargs)
    with captured_runs() as out:
        run(*args, **kw)
    tensors, meta = out[name]
    with tempfile.TemporaryDirectory() as tmp:
        gp.write_run(name, tensors, dict(meta), Path(tmp))
        ours = json.loads((Path(tmp) / f"{name}.json").read_text())
    recorded = json.loads((gt.RUNS_DIR / f"{name}.json").read_text())
    assert ours == recorded, (name, [k for k in ours.keys() | recorded.keys() if ours.get(k) != recorded.get(k)])
    stored = load_file(gt.RUNS_DIR / f"{name}.safetensors")
    assert stored.keys() == tensors.keys(), (stored.keys() ^ tensors.keys())
    exact = {d["name"] for d in meta["noise"]["draws"]} | {k for k in stored if k.endswith(("_u8", "_ids"))}
    exact.discard("image_u8")
    worst = 0.0
    for k, v in stored.items():
        if k in exact:
            assert torch.equal(v, tensors[k]), (name, k)
        else:
            gap = (v.float() - tensors[k].float()).abs().max().item()
            assert gap <= (1 if k == "image_u8" else 1e-2), (name, k, gap)
            worst = max(worst, gap) if k != "image_u8" else worst
    print(f"{name}: the setup reproduces tools/runs/{name} (inputs and draws exact, floats within {worst:.2g})")


def check_teacache_control(pipe, name, run, call, seed, kwargs):
    """With threshold 0 the TeaCache forward must reproduce the stock control transformer (128 inputs)."""
    args, kw = run_args(run, pipe, name, call, seed, kwargs)
    with captured_runs() as out:
        run(*args, **kw)
    stock, _ = out[name]
    with Tea(0.0, call["num_inference_steps"]).enabled(pipe, record=False), ToolRecorder(pipe) as rec, \
            captured_runs() as out:
        run(*args, **kw)
    ours, _ = out[name]
    assert all(all(r) for r in rec.runs)
    assert "forward" not in pipe.transformer.__dict__, "the stock forward must be back"
    gap = (ours["image"] - stock["image"]).abs().max().item()
    assert gap <= 1e-6, gap
    print(f"teacache forward on the control transformer with threshold 0: max |ours - stock| {gap:.3g}")


def tools_main():
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    dev = FluxPipeline.from_pretrained(gp.DEV_DIR, dtype=torch.float32)
    cfg = dict(dev.transformer.config)

    def build(cls, transformer):
        accepted = inspect.signature(cls.__init__).parameters
        pipe = cls(**{k: v for k, v in dict(dev.components, transformer=transformer).items() if k in accepted})
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def tool_transformer(folder):
        return FluxTransformer2DModel.from_pretrained(folder, dtype=torch.float32).eval()

    plain = tools_calls()
    steps = dict(num_inference_steps=TOOLS_CACHE_STEPS)
    written = []
    with torch.no_grad():
        kontext = build(FluxKontextPipeline, dev.transformer)
        fill = build(FluxFillPipeline, tool_transformer(gt.FILL_DIR))
        control = build(FluxControlPipeline, tool_transformer(gt.CONTROL_DIR))
        lora = build(FluxControlPipeline, gt.dev_transformer())
    lora_sd = dict(sorted(load_file(gt.LORA_PATH).items()))
    original_converter = lora_pipeline._convert_bfl_flux_control_lora_to_diffusers
    try:
        adapter = gt.load_control_lora(lora, cfg, lora_sd)  # outside no_grad, as gen_tools.py loads it
    finally:
        lora_pipeline._convert_bfl_flux_control_lora_to_diffusers = original_converter
    with torch.no_grad():
        gt.check_lora_scaling(lora.transformer, adapter, 1.0)
        assert adapter == plain["control_lora"][3]["extra_meta"]["lora"]["adapter_name"], adapter
        runs = [
            # name, pipeline, plain run, cache, context
            ("kontext_fbc", kontext, "kontext", Fbc(KONTEXT_FBC_THRESHOLD), "cond"),
            ("fill_magcache", fill, "fill", Mag(FILL_MAG_THRESHOLD, num_steps=TOOLS_CACHE_STEPS), None),
            ("control_teacache", control, "control", Tea(CONTROL_TEA_THRESHOLD, TOOLS_CACHE_STEPS), None),
            ("control_lora_fbc", lora, "control_lora", Fbc(CONTROL_LORA_FBC_THRESHOLD), "cond"),
        ]
        for name, pipe, plain_name, cache, context in runs:
            run, call, seed, kwargs = plain[plain_name]
            check_plain_run(pipe, plain_name, run, call, seed, kwargs)
            if isinstance(cache, Tea):
                check_teacache_control(pipe, plain_name, run, dict(call, **steps), seed, kwargs)
            tool_cache_run(pipe, name, plain_name, run, dict(call, **steps), seed, kwargs, cache, context)
            assert "forward" not in pipe.transformer.__dict__ and not hook_context_names(pipe.transformer)
            written.append(name)
    print("wrote", written, "to", gt.RUNS_DIR)


def main():
    torch.set_num_threads(1)
    # DPMSolverMultistepScheduler.from_config warns that it ignores shift / base_shift / max_shift /
    # {base,max}_image_seq_len (the pipeline's calculate_shift then uses its defaults: the same values).
    diffusers.utils.logging.set_verbosity_error()
    schedule_table()

    pipe = FluxPipeline.from_pretrained(gp.DEV_DIR, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    base_config = pipe.scheduler.config
    written = []
    with torch.no_grad():
        for name, cls, kwargs, sampler, sigmas_kind, steps, seed in SCHEDULE_RUNS:
            schedule_run(pipe, base_config, name, cls, kwargs, sampler, sigmas_kind, steps, seed)
            written.append(name)

        single = dict(BASE, num_inference_steps=CACHE_STEPS)
        cfg = dict(single, negative_prompt=NEGATIVE, true_cfg_scale=4.0)
        batch = dict(single, prompt=["a cat", "a dog"], num_images_per_prompt=2, width=32)
        check_teacache_forward(pipe, base_config)
        runs = [
            ("dev_fbc", single, 21, Fbc(FBC_THRESHOLD)),
            ("dev_fbc_true_cfg", cfg, 22, Fbc(FBC_TRUE_CFG_THRESHOLD)),
            ("dev_fbc_batch", batch, 23, Fbc(FBC_BATCH_THRESHOLD)),
            ("dev_magcache", single, 24, Mag()),
            ("dev_magcache_true_cfg", cfg, 25, Mag()),
            ("dev_magcache_calibrate", single, 26, Mag(calibrate=True)),
            ("dev_teacache", single, 27, Tea(TEACACHE_THRESHOLD)),
        ]
        for name, call, seed, cache in runs:
            meta = cache_run(pipe, base_config, name, call, seed, cache)
            if name == "dev_magcache_calibrate":
                print(f"  calibration_ratios {meta['calibration_ratios']}")
            written.append(name)
    print("wrote", written, "to", gp.RUNS_DIR)

    tools_main()


if __name__ == "__main__":
    if sys.argv[1:] == ["--tools-only"]:  # Part C alone
        torch.set_num_threads(1)
        diffusers.utils.logging.set_verbosity_error()
        tools_main()
    else:
        main()
