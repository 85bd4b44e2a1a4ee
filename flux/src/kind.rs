//! [`ModelKind`]: \[dev\] or \[schnell\], and the defaults each is used with.

/// Which released model a transformer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// FLUX.1 \[dev\]: guidance-distilled, shifted schedule, T5 padded to 512 tokens.
    Dev,
    /// FLUX.1 \[schnell\]: timestep-distilled, no guidance, no shift, T5 padded to 256 tokens.
    Schnell,
}

impl ModelKind {
    /// The kind of a transformer: guidance embedding means \[dev\].
    pub fn of(config: &flux_core::FluxConfig) -> Self {
        if config.guidance_embed {
            Self::Dev
        } else {
            Self::Schnell
        }
    }

    /// Default sampler steps (diffusers' `FluxPipeline`: 28; schnell: 4).
    pub fn default_steps(self) -> usize {
        match self {
            Self::Dev => 28,
            Self::Schnell => 4,
        }
    }

    /// Default guidance scale (\[dev\] 3.5; \[schnell\] has no guidance input).
    pub fn default_guidance(self) -> Option<f32> {
        match self {
            Self::Dev => Some(3.5),
            Self::Schnell => None,
        }
    }

    /// T5 sequence length the model was trained with (512 dev, 256 schnell).
    pub fn t5_max_len(self) -> usize {
        match self {
            Self::Dev => 512,
            Self::Schnell => 256,
        }
    }

    /// Whether the schedule is shifted by image size (dev) or not (schnell).
    pub fn shifted(self) -> bool {
        matches!(self, Self::Dev)
    }

    /// The released model's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Dev => "FLUX.1-dev",
            Self::Schnell => "FLUX.1-schnell",
        }
    }
}
