//! The Euler step of rectified flow and the denoising loop (Euler or DPM-Solver++ 2M) around a
//! velocity model.

use std::ops::ControlFlow;

use burn::tensor::{Tensor, backend::Backend};

use crate::dpm::DpmSolver2M;
use crate::error::Error;
use crate::sampler::Sampler;
use crate::schedule::Schedule;

/// One Euler step of the flow ODE: `x + (t_next - t) · v`.
///
/// `t_next - t` is formed in `f32` first and the product added afterwards, as both references
/// do (diffusers' `FlowMatchEulerDiscreteScheduler.step`, BFL's `denoise`).
///
/// # Shapes
/// `x` and `v` share any shape (the pipeline passes packed latents `[b, n, 64]`); the result
/// has it too.
pub fn euler_step<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    v: Tensor<B, D>,
    t: f32,
    t_next: f32,
) -> Tensor<B, D> {
    x + v.mul_scalar(t_next - t)
}

/// Where the loop is: what a [`VelocityModel`] and a progress callback are told.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// 0-based index of the step.
    pub index: usize,
    /// Number of steps in the schedule.
    pub total: usize,
    /// The current time (sigma).
    pub t: f32,
    /// The time after this step.
    pub t_next: f32,
    /// What the transformer is given as its timestep ([`Schedule::model_time`]): `t` for
    /// Euler (to the ulp), DPM-Solver's integer timestep / 1000.
    pub model_t: f32,
}

/// A model that predicts the flow velocity at time `t`: the transformer with its conditioning
/// bound (text embeddings, ids, guidance), or any stand-in.
///
/// Closures `FnMut(&Tensor<B, D>, &Step) -> Result<Tensor<B, D>, E>` implement it.
pub trait VelocityModel<B: Backend, const D: usize> {
    /// The model's error; it must hold this crate's errors too.
    type Error: From<Error>;

    /// The velocity at `latents` and `step.t`; same shape as `latents`.
    ///
    /// # Shapes
    /// `latents`: whatever the loop was started with (packed `[b, n, 64]` for FLUX); the
    /// result must have the same shape.
    fn velocity(
        &mut self,
        latents: &Tensor<B, D>,
        step: &Step,
    ) -> Result<Tensor<B, D>, Self::Error>;
}

impl<B, const D: usize, E, F> VelocityModel<B, D> for F
where
    B: Backend,
    E: From<Error>,
    F: FnMut(&Tensor<B, D>, &Step) -> Result<Tensor<B, D>, E>,
{
    type Error = E;

    fn velocity(&mut self, latents: &Tensor<B, D>, step: &Step) -> Result<Tensor<B, D>, E> {
        self(latents, step)
    }
}

/// Runs `sampler` over `schedule` (built for it: [`Schedule::pipeline`]) from the starting
/// latents `x`.
///
/// Before each step `progress(&step)` is called (with `step.index` steps done so far); returning
/// [`ControlFlow::Break`] stops the run before the model is called again, with
/// [`Error::Cancelled`]. After the last step it is not called again. Pass
/// `|_| ControlFlow::Continue(())` for none.
///
/// # Shapes
/// `x`: the latents in the layout the model takes (packed `[b, n, 64]` for FLUX).
///
/// # Errors
/// The model's errors; [`Error::VelocityShape`] when it returns a tensor whose shape differs
/// from the latents'; [`Error::Cancelled`] when `progress` stops the run (both converted into
/// the model's error type).
pub fn denoise<B, const D: usize, M>(
    model: &mut M,
    mut x: Tensor<B, D>,
    schedule: &Schedule,
    sampler: Sampler,
    mut progress: impl FnMut(&Step) -> ControlFlow<()>,
) -> Result<Tensor<B, D>, M::Error>
where
    B: Backend,
    M: VelocityModel<B, D>,
{
    let sigmas = schedule.sigmas();
    let total = schedule.num_steps();
    let mut dpm = DpmSolver2M::new();
    for (index, pair) in sigmas.windows(2).enumerate() {
        let step = Step {
            index,
            total,
            t: pair[0],
            t_next: pair[1],
            model_t: schedule.model_time(index),
        };
        if progress(&step).is_break() {
            return Err(Error::Cancelled {
                completed: index,
                total,
            }
            .into());
        }
        let v = model.velocity(&x, &step)?;
        if v.dims() != x.dims() {
            return Err(Error::VelocityShape {
                step: index,
                expected: x.dims().to_vec(),
                found: v.dims().to_vec(),
            }
            .into());
        }
        x = match sampler {
            Sampler::Euler => euler_step(x, v, step.t, step.t_next),
            Sampler::DpmPp2m => dpm.step(x, v, sigmas, index),
        };
    }
    Ok(x)
}
