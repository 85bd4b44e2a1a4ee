//! The crate's error type.

/// What can go wrong when building a schedule or running the sampler.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// A schedule needs at least one step.
    #[error("the number of sampling steps must be at least 1")]
    ZeroSteps,
    /// Custom sigmas that cannot drive the sampler.
    #[error("invalid sigmas: {reason}")]
    InvalidSigmas {
        /// What is wrong, naming the offending index and value.
        reason: String,
    },
    /// A schedule cut that leaves no step to run (img2img with strength 0, or a bad start).
    #[error("cannot start at step {start}: the schedule has {steps} steps")]
    StartOutOfRange {
        /// The requested first step.
        start: usize,
        /// The number of steps in the schedule.
        steps: usize,
    },
    /// The model returned a velocity whose shape differs from the latents'.
    #[error("velocity shape {found:?} differs from the latent shape {expected:?} at step {step}")]
    VelocityShape {
        /// The step (0-based) at which it happened.
        step: usize,
        /// The latents' shape.
        expected: Vec<usize>,
        /// The velocity's shape.
        found: Vec<usize>,
    },
    /// The progress callback stopped the run (returned [`std::ops::ControlFlow::Break`]).
    #[error("cancelled after {completed} of {total} steps")]
    Cancelled {
        /// Steps that had run.
        completed: usize,
        /// Steps in the schedule.
        total: usize,
    },
    /// A combination the sampler does not run, named with the reason.
    #[error("not supported: {0}")]
    Unsupported(String),
    /// A noise shape whose element count overflows `usize`.
    #[error("noise shape {shape:?} has too many elements")]
    NoiseTooLarge {
        /// The requested shape.
        shape: Vec<usize>,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
