//! [`FluxConfig`]: the hyper-parameters of a FLUX transformer, with the released models' presets.

use flux_nn::{FluxBackend, Init};

use crate::{Error, Flux, Result};

/// Hyper-parameters of the FLUX transformer (BFL's `FluxParams`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FluxConfig {
    /// Channels of a packed image token (16 latent channels x 2x2 patch = 64).
    pub in_channels: usize,
    /// Channels of a predicted token (64).
    pub out_channels: usize,
    /// Width of the pooled text vector (CLIP-L: 768).
    pub vec_in_dim: usize,
    /// Width of the text tokens (T5-XXL: 4096).
    pub context_in_dim: usize,
    /// Model width.
    pub hidden_size: usize,
    /// MLP width as a multiple of `hidden_size`.
    pub mlp_ratio: f64,
    /// Attention heads.
    pub num_heads: usize,
    /// Number of double-stream blocks.
    pub depth: usize,
    /// Number of single-stream blocks.
    pub depth_single_blocks: usize,
    /// Rotary dimensions per position axis (index, row, column); sums to the head dimension.
    pub axes_dim: [usize; 3],
    /// RoPE base.
    pub theta: f64,
    /// Whether the qkv projections have a bias.
    pub qkv_bias: bool,
    /// Whether the model takes a guidance scale (dev: yes, schnell: no).
    pub guidance_embed: bool,
}

impl FluxConfig {
    /// FLUX.1 \[dev\] (BFL `src/flux/util.py`, `configs["flux-dev"].params`).
    pub fn dev() -> Self {
        Self {
            in_channels: 64,
            out_channels: 64,
            vec_in_dim: 768,
            context_in_dim: 4096,
            hidden_size: 3072,
            mlp_ratio: 4.0,
            num_heads: 24,
            depth: 19,
            depth_single_blocks: 38,
            axes_dim: [16, 56, 56],
            theta: 10_000.0,
            qkv_bias: true,
            guidance_embed: true,
        }
    }

    /// FLUX.1 \[schnell\] (BFL `configs["flux-schnell"]`): \[dev\] without the guidance embedding.
    pub fn schnell() -> Self {
        Self {
            guidance_embed: false,
            ..Self::dev()
        }
    }

    /// A tiny model for tests: width 64, 2 heads of 32, 1 double and 2 single blocks.
    pub fn tiny() -> Self {
        Self {
            in_channels: 64,
            out_channels: 64,
            vec_in_dim: 32,
            context_in_dim: 48,
            hidden_size: 64,
            mlp_ratio: 4.0,
            num_heads: 2,
            depth: 1,
            depth_single_blocks: 2,
            axes_dim: [4, 14, 14],
            theta: 10_000.0,
            qkv_bias: true,
            guidance_embed: true,
        }
    }

    /// Dimension of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }

    /// Width of the MLPs (`hidden_size * mlp_ratio`, truncated like the reference's `int()`).
    pub fn mlp_hidden_dim(&self) -> usize {
        (self.hidden_size as f64 * self.mlp_ratio) as usize
    }

    /// The released models' RoPE split for a head dimension: (hd/8, 7hd/16, 7hd/16), which is
    /// [16, 56, 56] at 128. `None` when that split is not made of even integers.
    pub fn default_axes_dim(head_dim: usize) -> Option<[usize; 3]> {
        let (a, b) = (head_dim / 8, head_dim * 7 / 16);
        let axes = [a, b, b];
        (head_dim.is_multiple_of(16) && axes.iter().all(|d| d % 2 == 0 && *d > 0)).then_some(axes)
    }

    /// Checks the config is consistent.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the violated rule.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::InvalidConfig(msg));
        if self.num_heads == 0 || self.hidden_size == 0 {
            return bad(format!(
                "hidden_size ({}) and num_heads ({}) must be positive",
                self.hidden_size, self.num_heads
            ));
        }
        if !self.hidden_size.is_multiple_of(self.num_heads) {
            return bad(format!(
                "hidden_size {} is not divisible by num_heads {}",
                self.hidden_size, self.num_heads
            ));
        }
        let axes: usize = self.axes_dim.iter().sum();
        if axes != self.head_dim() {
            return bad(format!(
                "axes_dim {:?} sums to {axes}, but the head dimension is {} ({} / {})",
                self.axes_dim,
                self.head_dim(),
                self.hidden_size,
                self.num_heads
            ));
        }
        if self.axes_dim.iter().any(|d| d % 2 != 0) {
            return bad(format!(
                "axes_dim {:?} must all be even (RoPE rotates pairs)",
                self.axes_dim
            ));
        }
        let sizes = [
            self.in_channels,
            self.out_channels,
            self.vec_in_dim,
            self.context_in_dim,
        ];
        if sizes.contains(&0) || self.mlp_hidden_dim() == 0 {
            return bad("channel sizes and mlp_ratio must be positive".into());
        }
        if !(self.theta.is_finite() && self.theta > 0.0) {
            return bad(format!(
                "theta must be positive and finite, got {}",
                self.theta
            ));
        }
        Ok(())
    }

    /// Builds a randomly initialised model (parameters are created lazily, on first use, so
    /// a model about to be loaded never holds random weights).
    ///
    /// # Panics
    /// If the config is invalid: a config that did not come from a preset or a checkpoint
    /// should go through [`FluxConfig::validate`] first (the loaders do).
    pub fn init<B: FluxBackend>(&self, device: &B::Device) -> Flux<B> {
        self.init_with(&Init::random(device))
    }

    /// Builds the model from `init` ([`Init::random_quantized`] for a quantized random model;
    /// [`crate::load`] reads a checkpoint).
    ///
    /// # Panics
    /// As [`FluxConfig::init`].
    pub fn init_with<B: FluxBackend>(&self, init: &Init<B>) -> Flux<B> {
        if let Err(e) = self.validate() {
            panic!("{e}");
        }
        Flux::new(self.clone(), init, false)
    }
}
