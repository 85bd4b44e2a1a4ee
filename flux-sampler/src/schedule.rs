//! Sigma schedules: the `t` values, from 1 (pure noise) down to 0 (the image), that the Euler
//! loop visits.

use crate::error::{Error, Result};
use crate::sampler::Sampler;
use crate::shift::{Shift, time_shift};
use crate::spacing::{Spacing, numpy_linspace};

/// Which reference's arithmetic to reproduce.
///
/// Both put the same grid `1, 1 - 1/n, ..., 1/n, 0` through the same shift, so they agree to
/// about 1e-7; they round differently on the way, and only [`ScheduleKind::Diffusers`] gives the
/// bits that diffusers' `FluxPipeline` feeds its transformer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum ScheduleKind {
    /// BFL's `get_schedule` (`src/flux/sampling.py`): `torch.linspace(1, 0, n + 1)` in `f32`, then
    /// the shift on the whole tensor (the final 0 maps to 0).
    #[default]
    Bfl,
    /// diffusers' `FluxPipeline` driving `FlowMatchEulerDiscreteScheduler`:
    /// `np.linspace(1, 1/n, n)` in `f64`, cast to `f32`, shifted in `f32` with `exp(mu)` rounded
    /// to `f32` (when `use_dynamic_shifting`; schnell's config uses `shift = 1`, the identity),
    /// then a terminal 0 appended.
    Diffusers,
}

/// The `num_steps + 1` sigmas of BFL's `get_schedule(num_steps, image_seq_len, shift=...)`
/// (`shift: None` for schnell). See [`Schedule::new`] for diffusers' variant; with 0 steps the
/// result is `[1.0]`, as `linspace(1, 0, 1)` gives.
pub fn schedule(num_steps: usize, image_seq_len: usize, shift: Option<Shift>) -> Vec<f32> {
    bfl_sigmas(num_steps, image_seq_len, shift)
}

fn bfl_sigmas(num_steps: usize, image_seq_len: usize, shift: Option<Shift>) -> Vec<f32> {
    let mu = shift.map(|s| s.mu(image_seq_len));
    (0..=num_steps)
        .map(|i| {
            let t = if num_steps == 0 {
                1.0
            } else {
                (1.0 - i as f64 / num_steps as f64) as f32
            };
            mu.map_or(t, |mu| time_shift(mu, t))
        })
        .collect()
}

/// A validated, strictly decreasing list of sigmas in [0, 1] (`len() - 1` steps) and the
/// timesteps the model is given at each step.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    sigmas: Vec<f32>,
    /// diffusers' `scheduler.timesteps`: `σ·1000` in `f32`, or DPM-Solver's integers.
    timesteps: Vec<f32>,
}

impl Schedule {
    /// The schedule of `kind` for `num_steps` steps at `image_seq_len` packed image tokens,
    /// shifted with `shift` (dev: `Some(Shift::default())`; schnell: `None`).
    ///
    /// # Errors
    /// [`Error::ZeroSteps`] when `num_steps` is 0.
    pub fn new(
        kind: ScheduleKind,
        num_steps: usize,
        image_seq_len: usize,
        shift: Option<Shift>,
    ) -> Result<Self> {
        if num_steps == 0 {
            return Err(Error::ZeroSteps);
        }
        let sigmas = match kind {
            ScheduleKind::Bfl => bfl_sigmas(num_steps, image_seq_len, shift),
            ScheduleKind::Diffusers => {
                let base: Vec<f32> = numpy_linspace(1.0, 1.0 / num_steps as f64, num_steps)
                    .into_iter()
                    .map(|s| s as f32)
                    .collect();
                diffusers_shifted(&base, shift.map(|s| s.mu(image_seq_len)))
            }
        };
        Self::from_sigmas(sigmas)
    }

    /// The schedule diffusers' `FluxPipeline` runs with `sampler` and `spacing`, for
    /// `num_steps` steps at `image_seq_len` packed tokens (`shift`: `None` for schnell).
    ///
    /// - [`Sampler::Euler`]: [`ScheduleKind::Diffusers`]' shifted sigmas, re-spaced by
    ///   `spacing` between their end points (`FlowMatchEulerDiscreteScheduler` with
    ///   `use_karras_sigmas` and its siblings).
    /// - [`Sampler::DpmPp2m`]: `DPMSolverMultistepScheduler`'s own flow grid
    ///   `1 − linspace(1, 1/1000, n + 1)` through the shift `e^mu` in `f64`, reversed, its final
    ///   0 dropped (so the first sigma is the shifted 0.999, not 1), with integer timesteps
    ///   `⌊1000·σ⌋` that the model is given as `timestep / 1000`.
    ///
    /// # Errors
    /// [`Error::ZeroSteps`]; [`Error::Unsupported`] for DPM-Solver with another spacing than
    /// [`Spacing::Flux`] (diffusers' scheduler would space the sigmas of a different noise
    /// schedule) or without a shift (schnell's scheduler has no dynamic shift, which diffusers'
    /// `FluxPipeline` requires of DPM-Solver).
    pub fn pipeline(
        sampler: Sampler,
        spacing: Spacing,
        num_steps: usize,
        image_seq_len: usize,
        shift: Option<Shift>,
    ) -> Result<Self> {
        match sampler {
            Sampler::Euler => {
                let flux = Self::new(ScheduleKind::Diffusers, num_steps, image_seq_len, shift)?;
                if spacing == Spacing::Flux {
                    return Ok(flux);
                }
                let steps = &flux.sigmas[..num_steps];
                let mut sigmas = spacing.respace(steps);
                sigmas.push(0.0);
                Self::from_sigmas(sigmas)
            }
            Sampler::DpmPp2m => {
                if num_steps == 0 {
                    return Err(Error::ZeroSteps);
                }
                if spacing != Spacing::Flux {
                    return Err(Error::Unsupported(format!(
                        "the {spacing} spacing with dpmpp-2m (diffusers' DPM-Solver spaces \
                         Karras/exponential/beta sigmas of a different noise schedule); \
                         use it with euler"
                    )));
                }
                let Some(shift) = shift else {
                    return Err(Error::Unsupported(
                        "dpmpp-2m on a model without a resolution-dependent shift (schnell): \
                         diffusers' FluxPipeline cannot run it there either; use euler"
                            .into(),
                    ));
                };
                let flow_shift = shift.mu(image_seq_len).exp();
                let mut shifted: Vec<f64> = numpy_linspace(1.0, 1.0 / 1000.0, num_steps + 1)
                    .into_iter()
                    .map(|a| {
                        let s = 1.0 - a;
                        flow_shift * s / (1.0 + (flow_shift - 1.0) * s)
                    })
                    .collect();
                shifted.reverse();
                shifted.pop();
                let timesteps = shifted
                    .iter()
                    .map(|s| (s * 1000.0).trunc() as f32)
                    .collect();
                let sigmas = shifted.iter().map(|&s| s as f32).chain([0.0]).collect();
                Self::validated(sigmas, timesteps)
            }
        }
    }

    /// diffusers' path for caller-given sigmas (`FluxPipeline(..., sigmas=...)`): one per step,
    /// shifted with `mu` when given (`use_dynamic_shifting`), then the terminal 0 appended.
    ///
    /// # Errors
    /// [`Error::InvalidSigmas`] unless the sigmas are finite, in (0, 1] and strictly decreasing.
    pub fn diffusers_custom(step_sigmas: &[f32], mu: Option<f64>) -> Result<Self> {
        if let Some((i, &s)) = step_sigmas
            .iter()
            .enumerate()
            .find(|(_, s)| s.is_nan() || **s <= 0.0)
        {
            return Err(Error::InvalidSigmas {
                reason: format!("sigma {i} is {s}; the sigmas before the appended 0 must be > 0"),
            });
        }
        Self::from_sigmas(diffusers_shifted(step_sigmas, mu))
    }

    /// Sigmas used as given, the last one being where sampling stops (0 for a full
    /// text-to-image run; larger to stop early).
    ///
    /// # Errors
    /// [`Error::InvalidSigmas`] unless there are at least 2 values, all finite, in [0, 1] and
    /// strictly decreasing.
    pub fn from_sigmas(sigmas: Vec<f32>) -> Result<Self> {
        let timesteps = sigmas[..sigmas.len().saturating_sub(1)]
            .iter()
            .map(|s| s * 1000.0)
            .collect();
        Self::validated(sigmas, timesteps)
    }

    fn validated(sigmas: Vec<f32>, timesteps: Vec<f32>) -> Result<Self> {
        let invalid = |reason: String| Err(Error::InvalidSigmas { reason });
        if sigmas.len() < 2 {
            return invalid(format!(
                "need at least 2 values (one step), got {}",
                sigmas.len()
            ));
        }
        if let Some((i, s)) = sigmas
            .iter()
            .enumerate()
            .find(|(_, s)| !s.is_finite() || **s < 0.0 || **s > 1.0)
        {
            return invalid(format!("sigma {i} is {s}, outside [0, 1]"));
        }
        if let Some(i) = (1..sigmas.len()).find(|&i| sigmas[i] >= sigmas[i - 1]) {
            return invalid(format!(
                "sigmas must decrease strictly, but sigma {i} = {} follows {}",
                sigmas[i],
                sigmas[i - 1]
            ));
        }
        Ok(Self { sigmas, timesteps })
    }

    /// All sigmas, the terminal one included (`num_steps() + 1` values).
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    /// The number of Euler steps.
    pub fn num_steps(&self) -> usize {
        self.sigmas.len() - 1
    }

    /// The scheduler's `timesteps`: diffusers' `sigmas[..n] · 1000` in `f32` (DPM-Solver: its
    /// integer timesteps).
    pub fn timesteps(&self) -> &[f32] {
        &self.timesteps
    }

    /// What the model is given at step `index`: `timesteps[index] / 1000` in `f32`, as
    /// `FluxPipeline` passes it (equal to the sigma, or within an ulp of it, for Euler).
    ///
    /// # Panics
    /// When `index >= num_steps()`.
    pub fn model_time(&self, index: usize) -> f32 {
        self.timesteps[index] / 1000.0
    }

    /// The schedule from step `start` on (img2img: diffusers' `timesteps[t_start:]`, noise
    /// level `sigmas[start]`).
    ///
    /// # Errors
    /// [`Error::StartOutOfRange`] when no step would be left.
    pub fn starting_at(&self, start: usize) -> Result<Self> {
        if start >= self.num_steps() {
            return Err(Error::StartOutOfRange {
                start,
                steps: self.num_steps(),
            });
        }
        Ok(Self {
            sigmas: self.sigmas[start..].to_vec(),
            timesteps: self.timesteps[start..].to_vec(),
        })
    }

    /// Consumes the schedule, returning its sigmas.
    pub fn into_sigmas(self) -> Vec<f32> {
        self.sigmas
    }
}

/// The first step an img2img run takes, as diffusers' `FluxImg2ImgPipeline.get_timesteps`
/// computes it: `int(max(n - min(n·strength, n), 0))` (strength 1 starts at step 0, strength 0
/// leaves no step: [`Schedule::starting_at`] then returns an error). Non-finite or negative
/// strengths count as 0.
pub fn img2img_start(num_steps: usize, strength: f64) -> usize {
    let n = num_steps as f64;
    let strength = if strength.is_finite() {
        strength.max(0.0)
    } else {
        0.0
    };
    let init = (n * strength).min(n);
    (n - init).max(0.0) as usize
}

/// diffusers' shift on `f32` sigmas followed by the appended 0.
fn diffusers_shifted(step_sigmas: &[f32], mu: Option<f64>) -> Vec<f32> {
    step_sigmas
        .iter()
        .map(|&s| mu.map_or(s, |mu| time_shift(mu, s)))
        .chain(std::iter::once(0.0))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unshifted_grid_is_linear_and_ends_at_zero() {
        let s = schedule(4, 4096, None);
        assert_eq!(s, vec![1.0, 0.75, 0.5, 0.25, 0.0]);
        let d = Schedule::new(ScheduleKind::Diffusers, 4, 4096, None).unwrap();
        assert_eq!(d.sigmas(), &[1.0, 0.75, 0.5, 0.25, 0.0]);
        assert_eq!(d.timesteps(), &[1000.0, 750.0, 500.0, 250.0]);
        assert_eq!(schedule(0, 4096, None), vec![1.0]);
    }

    #[test]
    fn shifted_schedule_keeps_ends_and_pushes_up() {
        let s = schedule(28, 4096, Some(Shift::default()));
        assert_eq!(s.len(), 29);
        assert_eq!(s[0], 1.0);
        assert_eq!(s[28], 0.0);
        let lin = schedule(28, 4096, None);
        assert!(s[1..28].iter().zip(&lin[1..28]).all(|(a, b)| a > b));
    }

    #[test]
    fn img2img_start_follows_diffusers() {
        assert_eq!(img2img_start(5, 0.6), 2);
        assert_eq!(img2img_start(28, 1.0), 0);
        assert_eq!(img2img_start(28, 0.0), 28);
        assert_eq!(img2img_start(4, 0.3), 2); // 4 - 1.2 = 2.8, truncated
        assert_eq!(img2img_start(4, 7.0), 0);
        assert_eq!(img2img_start(4, f64::NAN), 4);
    }

    #[test]
    fn bad_input_is_an_error() {
        assert_eq!(
            Schedule::new(ScheduleKind::Bfl, 0, 4096, None),
            Err(Error::ZeroSteps)
        );
        for bad in [
            vec![1.0],
            vec![1.0, 1.0, 0.0],
            vec![0.5, 0.7, 0.0],
            vec![1.5, 0.0],
            vec![1.0, f32::NAN, 0.0],
            vec![1.0, -0.1],
        ] {
            assert!(
                matches!(
                    Schedule::from_sigmas(bad.clone()),
                    Err(Error::InvalidSigmas { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(Schedule::diffusers_custom(&[1.0, 0.0], None).is_err());
        let s = Schedule::from_sigmas(vec![1.0, 0.6, 0.2]).unwrap();
        assert_eq!(s.num_steps(), 2);
        assert_eq!(s.starting_at(1).unwrap().sigmas(), &[0.6, 0.2]);
        assert_eq!(
            s.starting_at(2),
            Err(Error::StartOutOfRange { start: 2, steps: 2 })
        );
    }
}
