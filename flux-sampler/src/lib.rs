//! Sampling for FLUX.1 on burn: the shifted flow-matching schedule and diffusers' other
//! spacings, the Euler and DPM-Solver++ 2M steps and their loop, step caches' decisions, and
//! seeded noise identical to PyTorch's.
//!
//! Nothing here knows the transformer: [`denoise`] drives any [`VelocityModel`] (a closure
//! will do), so the pipeline binds the conditioning and this crate runs the steps.
//!
//! # Schedule
//!
//! FLUX integrates the flow from `t = 1` (noise) to `t = 0` (image) over a grid that [dev]
//! shifts toward high noise, more so for larger images:
//! `t' = e^mu / (e^mu + (1/t - 1))` with `mu` linear in the number of packed image tokens
//! ([`Shift::mu`]: 0.5 at 256 tokens, 1.15 at 4096 = 1024²). [schnell] uses the plain grid
//! (`shift: None`). `t = 0` is mapped to 0 explicitly, never through `1/t`.
//!
//! [`schedule`] is BFL's `get_schedule`: `linspace(1, 0, n + 1)` then the shift.
//! [`Schedule::new`] offers it and diffusers' `FluxPipeline` as [`ScheduleKind`]s. diffusers
//! passes `sigmas = np.linspace(1, 1/n, n)` to `FlowMatchEulerDiscreteScheduler.set_timesteps`
//! with `mu = calculate_shift(image_seq_len, 256, 4096, 0.5, 1.15)`, which casts them to `f32`,
//! shifts them (`use_dynamic_shifting`) and appends a 0. That is the same grid as BFL's
//! `linspace(1, 0, n + 1)` without its last point, so the two schedules agree to about one
//! `f32` ulp (at most 1.2e-7 over the fixture cases, 1 to 50 steps): they differ only in
//! rounding (torch's `f32` linspace against numpy's `f64` one, cast). [`ScheduleKind::Diffusers`] reproduces diffusers'
//! values bit for bit, which the pipeline needs to match `FluxPipeline`'s images exactly.
//! [`Schedule::diffusers_custom`] is diffusers' path for caller-given sigmas;
//! [`Schedule::from_sigmas`] takes any validated list; [`Schedule::starting_at`] cuts one for
//! img2img (from [`img2img_start`]). The transformer takes `t` itself (diffusers passes
//! `timestep / 1000`, equal to `t`); [`Schedule::timesteps`] are diffusers' `t · 1000`.
//!
//! [`Schedule::pipeline`] adds diffusers' re-spaced sigmas ([`Spacing`]: Karras, exponential,
//! beta, converted after the shift between its end points) and DPM-Solver's own flow grid
//! ([`Sampler::DpmPp2m`]).
//!
//! # Euler and DPM-Solver++ 2M
//!
//! [`euler_step`]: `x + (t_next - t) · v`, in the references' operation order. [`denoise`] loops
//! it (or DPM-Solver++ 2M, [`Sampler`]) over a [`Schedule`], checks each velocity's shape, and
//! calls a progress callback before each step that can stop the run ([`Error::Cancelled`]).
//!
//! # Step caches
//!
//! [`Cache`] names First-Block Cache, MagCache and TeaCache with their parameters;
//! [`StepCache`] is one branch's state: what it needs to see ([`Signal`]), whether a call runs
//! the blocks, and the residual it reuses when not.
//!
//! # Noise
//!
//! [`TorchGenerator`] reproduces `torch.randn(..., generator=torch.Generator("cpu")
//! .manual_seed(seed), dtype=...)` bit for bit for float32, bfloat16 and float16 (checked against
//! torch 2.15 for the seeds 0, 1, 42, 2^32+5, 2^63-1, sizes 1 to 4097, and the full latents of
//! 1024² and 768×1360 images). What torch does, as read from its sources (`ATen/core/
//! MT19937RNGEngine.h`, `DistributionsHelper.h`, `TransformationHelper.h`,
//! `ATen/native/cpu/DistributionTemplates.h`, `avx_mathfun.h`):
//!
//! - **Generator**: MT19937 seeded with the low 32 bits of the `u64` seed (so `s` and `s + 2^32`
//!   coincide). A float uniform is `(bits & (2^24 - 1)) · 2^-24` of one 32-bit draw; a double
//!   uniform the low 53 bits of two draws (first one high) times 2^-53.
//! - **Fewer than 16 elements** (any dtype): each element from the scalar double sampler:
//!   Box-Muller on two double uniforms `u1, u2`, `r = sqrt(-2 log1p(-u2))`, returning
//!   `r cos(2π u1)` and caching `r sin(2π u1)` in the generator for the next element (or the
//!   next small draw); the double is cast to the dtype (bfloat16 and float16 via float).
//! - **16 elements or more**, float32: all `n` float uniforms are drawn first, then every block
//!   of 16 is transformed in place: for `j < 8`, `u1 = 1 - x[j]`, `u2 = x[j + 8]`,
//!   `x[j] = sqrt(-2 ln u1) cos(2π u2)`, `x[j + 8] = ... sin(...)`. When `n % 16 != 0`, 16 *new*
//!   uniforms are drawn and the transform is redone over the last 16 elements.
//! - **16 elements or more**, bfloat16/float16: the same float32 transform, each block from 16
//!   uniforms drawn just before it, then rounded to nearest even. The tail block (when
//!   `n % 16 != 0`) takes the next 16 uniforms, so its values differ from float32's tail.
//! - **The CPU dependence**: the `ln`/`sin`/`cos` of that float32 transform depend on the kernel
//!   torch dispatches to ([`CpuKernel`]). On AVX2 machines (this workspace's, most AMD Zen 1-3,
//!   desktop Intel) it is a vectorised Cephes polynomial, compiled with fused multiply-adds:
//!   [`CpuKernel::Avx2`], the default, reproduced exactly on every platform since it is plain
//!   `f32` arithmetic. On AVX-512 CPUs, CPUs without AVX2 and ARM, torch uses the scalar code
//!   calling libm's `logf`/`sinf`/`cosf` ([`CpuKernel::Scalar`], matched on Linux/glibc, checked
//!   with `ATEN_CPU_CAPABILITY=default`). The two kernels differ in the last bit of a few float32
//!   values per thousand. `torch.Generator("cuda")` (Philox) is not reproduced.
//!
//! Shapes: diffusers' `FluxPipeline` draws `[b, 16, 2·(h/16), 2·(w/16)]`
//! ([`diffusers_latent_shape`]) in the prompt embeddings' dtype, in one call for the whole batch
//! (with one generator), then packs it to `[b, (h/16)·(w/16), 64]`; BFL's `get_noise` draws
//! `[b, 16, 2·ceil(h/16), 2·ceil(w/16)]` ([`bfl_latent_shape`]) in bfloat16. Only the element
//! count and order matter to the generator, so draw the unpacked shape and pack it afterwards
//! (`flux_core::pack`).
//!
//! [dev]: https://huggingface.co/black-forest-labs/FLUX.1-dev
//! [schnell]: https://huggingface.co/black-forest-labs/FLUX.1-schnell

mod cache;
mod dpm;
mod error;
mod euler;
mod noise;
mod sampler;
mod schedule;
mod shift;
mod spacing;

pub use cache::{Cache, CacheStats, FLUX_MAG_RATIOS, MagCache, MagRatios, Signal, StepCache};
pub use error::{Error, Result};
pub use euler::{Step, VelocityModel, denoise, euler_step};
pub use noise::{
    CpuKernel, NoiseDtype, TorchGenerator, bfl_latent_shape, diffusers_latent_shape, noise_tensor,
    torch_randn_bf16, torch_randn_f16, torch_randn_f32,
};
pub use sampler::Sampler;
pub use schedule::{Schedule, ScheduleKind, img2img_start, schedule};
pub use shift::{Shift, time_shift};
pub use spacing::Spacing;
