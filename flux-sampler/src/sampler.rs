//! Which solver integrates the flow: Euler (FLUX's own) or DPM-Solver++ 2M.

use std::fmt;
use std::str::FromStr;

/// The solver [`crate::denoise`] runs. Each comes with its own schedule
/// ([`crate::Schedule::pipeline`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Sampler {
    /// `x + (σ_next − σ)·v`: diffusers' `FlowMatchEulerDiscreteScheduler`, BFL's `denoise`.
    #[default]
    Euler,
    /// DPM-Solver++ 2M as diffusers' `DPMSolverMultistepScheduler` runs FLUX
    /// (`use_flow_sigmas=True`, `prediction_type="flow_prediction"`): second order from the
    /// second step on, first order at the first and the last step.
    DpmPp2m,
}

impl Sampler {
    /// Every sampler, for listings.
    pub const ALL: [Sampler; 2] = [Sampler::Euler, Sampler::DpmPp2m];

    /// The name the CLI and the server take (`euler`, `dpmpp-2m`).
    pub fn name(self) -> &'static str {
        match self {
            Sampler::Euler => "euler",
            Sampler::DpmPp2m => "dpmpp-2m",
        }
    }
}

impl fmt::Display for Sampler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Sampler {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Sampler::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown sampler {s:?}; expected euler or dpmpp-2m"))
    }
}
