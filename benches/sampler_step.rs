//! The sampler's own cost, with the transformer replaced by a velocity that is already computed:
//! schedule, Euler updates, progress callbacks and the torch-compatible noise draw. Sizes are
//! the released models' loops: `dev` (28 steps, 1024x1024: 4096 packed tokens of 64 values),
//! `schnell` (4 steps, 1024x1024), `small` (28 steps, 512x512: 1024 tokens).

use std::ops::ControlFlow;

use burn::tensor::{Distribution, Tensor};
use flux::FluxBackend;
use flux_sampler::{Error, NoiseDtype, Schedule, ScheduleKind, Shift, TorchGenerator};

/// A sampler loop by name: (steps, image side in pixels, shifted schedule).
pub fn sampler_size(name: &str) -> Option<(usize, usize, bool)> {
    match name {
        "dev" => Some((28, 1024, true)),
        "schnell" => Some((4, 1024, false)),
        "small" => Some((28, 512, true)),
        _ => None,
    }
}

/// One sampler loop, ready to run.
pub struct SamplerLoop<B: FluxBackend> {
    schedule: Schedule,
    start: Tensor<B, 3>,
    velocity: Tensor<B, 3>,
}

impl<B: FluxBackend> SamplerLoop<B> {
    /// A loop of `steps` Euler steps over the packed latents of a `side`x`side` image.
    ///
    /// # Errors
    /// Only for sizes the schedule rejects (none of the named ones).
    pub fn new(
        steps: usize,
        side: usize,
        shifted: bool,
        device: &B::Device,
    ) -> Result<Self, Error> {
        let tokens = (side / 16) * (side / 16);
        let schedule = Schedule::new(
            ScheduleKind::Diffusers,
            steps,
            tokens,
            shifted.then(Shift::default),
        )?;
        let start = Tensor::random([1, tokens, 64], Distribution::Normal(0.0, 1.0), device);
        let velocity = Tensor::random([1, tokens, 64], Distribution::Normal(0.0, 1.0), device);
        Ok(Self {
            schedule,
            start,
            velocity,
        })
    }

    /// Runs the loop; returns the mean of the final latents, `[1]` (read it to force lazy
    /// backends).
    ///
    /// # Errors
    /// None in practice: the stand-in velocity always has the latents' shape.
    pub fn run(&self) -> Result<Tensor<B, 1>, Error> {
        let mut model =
            |_: &Tensor<B, 3>, _: &flux_sampler::Step| Ok::<_, Error>(self.velocity.clone());
        let out = flux_sampler::denoise(
            &mut model,
            self.start.clone(),
            &self.schedule,
            flux_sampler::Sampler::Euler,
            |_| ControlFlow::Continue(()),
        )?;
        Ok(out.mean())
    }
}

/// The initial noise of a `side`x`side` image as diffusers draws it (`[1, 16, side/8, side/8]`,
/// torch's CPU generator, f32), uploaded to `device`.
///
/// # Errors
/// Never for the named sizes.
pub fn noise<B: FluxBackend>(side: usize, device: &B::Device) -> Result<Tensor<B, 4>, Error> {
    let shape = flux_sampler::diffusers_latent_shape(1, side, side);
    TorchGenerator::new(0).randn_tensor(shape, NoiseDtype::F32, device)
}
