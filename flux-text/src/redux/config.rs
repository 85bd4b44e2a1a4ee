//! SigLIP vision and Redux embedder hyper-parameters: presets, `config.json`, inference from
//! tensor shapes.

use flux_io::Weights;
use serde::Deserialize;

use crate::clip::model::Act;
use crate::{Error, Result};

/// Hyper-parameters of a SigLIP vision tower (names as in transformers' `SiglipVisionConfig`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SiglipVisionConfig {
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Inner width of the MLP.
    pub intermediate_size: usize,
    /// Number of encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    pub num_attention_heads: usize,
    /// Side of the (square) input image in pixels.
    pub image_size: usize,
    /// Side of a patch in pixels.
    pub patch_size: usize,
    /// Input channels.
    #[serde(default = "default_channels")]
    pub num_channels: usize,
    /// `"gelu_pytorch_tanh"` (SigLIP).
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// LayerNorm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
}

fn default_channels() -> usize {
    3
}
fn default_act() -> String {
    "gelu_pytorch_tanh".into()
}
fn default_eps() -> f64 {
    1e-6
}

impl SiglipVisionConfig {
    /// google/siglip-so400m-patch14-384, the tower FLUX.1 Redux uses: 27 layers, width 1152,
    /// 16 heads, MLP 4304, 384² pixels in 14² patches (729 tokens).
    pub fn so400m_patch14_384() -> Self {
        Self {
            hidden_size: 1152,
            intermediate_size: 4304,
            num_hidden_layers: 27,
            num_attention_heads: 16,
            image_size: 384,
            patch_size: 14,
            num_channels: 3,
            hidden_act: default_act(),
            layer_norm_eps: 1e-6,
        }
    }

    /// Patches per side.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Tokens per image (`grid²`).
    pub fn num_patches(&self) -> usize {
        self.grid() * self.grid()
    }

    pub(crate) fn act(&self) -> Act {
        Act::of(&self.hidden_act).unwrap_or(Act::GeluTanh)
    }

    /// Checks the config is consistent.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the violated rule.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidConfig(m));
        if [
            self.hidden_size,
            self.intermediate_size,
            self.num_attention_heads,
            self.patch_size,
            self.num_channels,
        ]
        .contains(&0)
        {
            return bad("SigLIP widths, heads, patch size and channels must be positive".into());
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return bad(format!(
                "SigLIP hidden_size {} is not divisible by {} heads",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.image_size < self.patch_size || !self.image_size.is_multiple_of(self.patch_size) {
            return bad(format!(
                "SigLIP image_size {} is not a multiple of patch_size {}",
                self.image_size, self.patch_size
            ));
        }
        if Act::of(&self.hidden_act).is_none() {
            return bad(format!(
                "SigLIP hidden_act `{}` is not supported",
                self.hidden_act
            ));
        }
        Ok(())
    }

    /// The config of a checkpoint without `config.json` (ComfyUI's
    /// `sigclip_vision_patch14_384.safetensors`): widths, depth, patch and image size from the
    /// shapes; the head count, which shapes cannot give, from so400m's head width (72).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when a needed tensor is missing or the width is not a multiple
    /// of 72 (pass a `config.json` then).
    pub fn infer(weights: &Weights, prefix: &str) -> Result<Self> {
        let shape = |key: &str| {
            weights
                .meta(&format!("{prefix}{key}"))
                .map(|m| m.shape)
                .ok_or_else(|| {
                    Error::InvalidConfig(format!(
                        "no `{prefix}{key}` to infer the SigLIP config from"
                    ))
                })
        };
        let patch = shape("embeddings.patch_embedding.weight")?;
        let positions = shape("embeddings.position_embedding.weight")?;
        let fc1 = shape("encoder.layers.0.mlp.fc1.weight")?;
        let (&[hidden, channels, p, _], &[n, _], &[intermediate, _]) =
            (&patch[..], &positions[..], &fc1[..])
        else {
            return Err(Error::InvalidConfig(
                "unexpected SigLIP tensor ranks".into(),
            ));
        };
        let grid = (n as f64).sqrt() as usize;
        if grid * grid != n || !hidden.is_multiple_of(72) {
            return Err(Error::InvalidConfig(format!(
                "cannot infer the SigLIP config ({n} positions, width {hidden}): give its config.json"
            )));
        }
        let layers = (0..)
            .take_while(|i| weights.contains(&format!("{prefix}encoder.layers.{i}.mlp.fc1.weight")))
            .count();
        Ok(Self {
            hidden_size: hidden,
            intermediate_size: intermediate,
            num_hidden_layers: layers,
            num_attention_heads: hidden / 72,
            image_size: grid * p,
            patch_size: p,
            num_channels: channels,
            hidden_act: default_act(),
            layer_norm_eps: 1e-6,
        })
    }
}

/// The Redux embedder's widths (diffusers `ReduxImageEncoder`'s config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct ReduxConfig {
    /// SigLIP's width (1152).
    pub redux_dim: usize,
    /// T5's width (4096); the hidden layer is 3× this.
    pub txt_in_features: usize,
}

impl ReduxConfig {
    /// FLUX.1-Redux-dev: 1152 -> 12288 -> 4096.
    pub fn flux1_redux_dev() -> Self {
        Self {
            redux_dim: 1152,
            txt_in_features: 4096,
        }
    }
}
