//! The autoencoder's hyper-parameters.

use flux_nn::{FluxBackend, Init};

use crate::decoder::Decoder;
use crate::encoder::Encoder;
use crate::{AutoEncoder, Error, Result, Tiling};

/// Hyper-parameters of the FLUX autoencoder (BFL `AutoEncoderParams`).
#[derive(Debug, Clone, PartialEq)]
pub struct AutoEncoderConfig {
    /// Image channels in (3).
    pub in_channels: usize,
    /// Base width: channels of the first level.
    pub ch: usize,
    /// Image channels out (3).
    pub out_ch: usize,
    /// Width multiplier of each level (`ch * ch_mult[i]` channels); one level per entry.
    pub ch_mult: Vec<usize>,
    /// Resnet blocks per encoder level (the decoder has one more).
    pub num_res_blocks: usize,
    /// Latent channels.
    pub z_channels: usize,
    /// Latent scale: `latents = scale_factor * (z - shift_factor)`.
    pub scale_factor: f64,
    /// Latent shift.
    pub shift_factor: f64,
    /// GroupNorm group count (32 in every released model; smaller for tiny test models).
    pub norm_groups: usize,
}

impl AutoEncoderConfig {
    /// FLUX.1's autoencoder (BFL `src/flux/util.py`, `ae_params` of `configs["flux-dev"]`;
    /// GroupNorm(32, eps 1e-6) from `src/flux/modules/autoencoder.py`).
    pub fn flux() -> Self {
        Self {
            in_channels: 3,
            ch: 128,
            out_ch: 3,
            ch_mult: vec![1, 2, 4, 4],
            num_res_blocks: 2,
            z_channels: 16,
            scale_factor: 0.3611,
            shift_factor: 0.1159,
            norm_groups: 32,
        }
    }

    /// The tiny model of the test fixtures (`scripts/reference/gen_vae.py`): widths 8/16/24/24,
    /// 4 groups, otherwise FLUX's layout.
    pub fn tiny() -> Self {
        Self {
            ch: 8,
            ch_mult: vec![1, 2, 3, 3],
            norm_groups: 4,
            ..Self::flux()
        }
    }

    /// The downscaling factor between image and latent (8 for four levels).
    pub fn downscale(&self) -> usize {
        1 << self.ch_mult.len().saturating_sub(1)
    }

    /// Checks that the values fit together.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the problem.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidConfig(m));
        if self.ch_mult.is_empty() || self.ch_mult.contains(&0) {
            return bad(format!(
                "ch_mult {:?} must be non-empty and positive",
                self.ch_mult
            ));
        }
        if self.in_channels == 0 || self.out_ch == 0 || self.z_channels == 0 || self.ch == 0 {
            return bad("channel counts must be positive".into());
        }
        if self.num_res_blocks == 0 {
            return bad("num_res_blocks must be positive".into());
        }
        if self.norm_groups == 0 {
            return bad("norm_groups must be positive".into());
        }
        for width in self.ch_mult.iter().map(|m| m * self.ch) {
            if width % self.norm_groups != 0 {
                return bad(format!(
                    "{width} channels cannot be split into {} GroupNorm groups",
                    self.norm_groups
                ));
            }
        }
        if self.scale_factor == 0.0 || !self.scale_factor.is_finite() {
            return bad(format!(
                "scale_factor {} must be finite and non-zero",
                self.scale_factor
            ));
        }
        Ok(())
    }

    /// A randomly initialised model (parameters drawn lazily, on first use).
    ///
    /// # Panics
    /// If the config is invalid: a config that did not come from a preset or a checkpoint
    /// should go through [`Self::validate`] first (the loaders do).
    pub fn init<B: FluxBackend>(&self, device: &B::Device) -> AutoEncoder<B> {
        self.init_with(&Init::random(device))
    }

    /// The model built by `init` ([`crate::load`] reads a checkpoint), under BFL's
    /// `ae.safetensors` names (`encoder.down.0.block.1.conv2`, `decoder.mid.attn_1.q`).
    ///
    /// # Panics
    /// As [`Self::init`].
    pub fn init_with<B: FluxBackend>(&self, init: &Init<B>) -> AutoEncoder<B> {
        if let Err(e) = self.validate() {
            panic!("{e}");
        }
        AutoEncoder {
            encoder: Encoder::new(self, &init.at("encoder")),
            decoder: Decoder::new(self, &init.at("decoder")),
            config: self.clone(),
            tiling: Tiling::default(),
        }
    }
}
