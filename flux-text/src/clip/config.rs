//! CLIP text-tower hyper-parameters: presets, `config.json`, inference from tensor shapes.

use flux_io::Weights;
use serde::Deserialize;

use super::load::is_prefixed;
use crate::{Error, Result};

/// Hyper-parameters of a CLIP text transformer (names as in transformers' `CLIPTextConfig`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ClipConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Inner width of the MLP.
    pub intermediate_size: usize,
    /// Number of encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    pub num_attention_heads: usize,
    /// Length of the learned position table (the longest input).
    pub max_position_embeddings: usize,
    /// `"quick_gelu"` (OpenAI CLIP) or `"gelu"`.
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// LayerNorm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// The EOS id of the config. `2` is the legacy value of OpenAI's configs (FLUX's included),
    /// for which the pooled position is the argmax of the ids (EOS is the largest id);
    /// otherwise it is the first position holding this id.
    #[serde(default = "default_eos")]
    pub eos_token_id: i64,
}

fn default_act() -> String {
    "quick_gelu".into()
}
fn default_eps() -> f64 {
    1e-5
}
fn default_eos() -> i64 {
    2
}

impl ClipConfig {
    /// CLIP ViT-L/14's text tower (`openai/clip-vit-large-patch14`, FLUX.1's
    /// `text_encoder/config.json`): 12 layers, width 768, 12 heads, MLP 3072, 77 positions.
    pub fn vit_l_14() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            max_position_embeddings: 77,
            hidden_act: default_act(),
            layer_norm_eps: 1e-5,
            eos_token_id: 2,
        }
    }

    /// The tiny model of the test fixtures (`scripts/reference/gen_text.py`).
    pub fn tiny() -> Self {
        Self {
            vocab_size: 1000,
            hidden_size: 64,
            intermediate_size: 128,
            num_hidden_layers: 2,
            num_attention_heads: 2,
            ..Self::vit_l_14()
        }
    }

    /// Checks that the values describe a model this crate can run.
    ///
    /// # Errors
    /// [`Error::Unsupported`] for an unknown activation, [`Error::InvalidConfig`] for zero sizes or a
    /// width not divisible by the head count.
    pub fn validate(&self) -> Result<()> {
        if !matches!(self.hidden_act.as_str(), "quick_gelu" | "gelu") {
            return Err(Error::Unsupported(format!(
                "CLIP hidden_act `{}` (supported: quick_gelu, gelu)",
                self.hidden_act
            )));
        }
        let sizes = [
            self.vocab_size,
            self.hidden_size,
            self.intermediate_size,
            self.num_hidden_layers,
            self.num_attention_heads,
            self.max_position_embeddings,
        ];
        if sizes.contains(&0) || !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(Error::InvalidConfig(format!(
                "CLIP sizes must be positive and hidden_size divisible by the heads: {self:?}"
            )));
        }
        Ok(())
    }

    /// Reads the hyper-parameters from the stored tensor shapes (for single files without
    /// `config.json`). The head count is not stored: it is `hidden_size / 64` (CLIP's head
    /// width, true of ViT-L/14's 12 heads of 64); pass a config for other models.
    ///
    /// # Errors
    /// A missing-key error naming the tensor the shapes are read from.
    pub fn infer(weights: &Weights) -> Result<Self> {
        let prefix = if is_prefixed(weights) {
            "text_model."
        } else {
            ""
        };
        let get =
            |key: &str| -> Result<Vec<usize>> { Ok(weights.shape(&format!("{prefix}{key}"))?) };
        let token = get("embeddings.token_embedding.weight")?;
        let position = get("embeddings.position_embedding.weight")?;
        let fc1 = get("encoder.layers.0.mlp.fc1.weight")?;
        let (&[vocab_size, hidden_size], &[max_position_embeddings, _], &[intermediate_size, _]) =
            (token.as_slice(), position.as_slice(), fc1.as_slice())
        else {
            return Err(Error::InvalidConfig(format!(
                "CLIP embedding / fc1 shapes {token:?}, {position:?}, {fc1:?} are not 2-D"
            )));
        };
        let config = Self {
            vocab_size,
            hidden_size,
            intermediate_size,
            num_hidden_layers: weights.count_indexed(&format!("{prefix}encoder.layers.")),
            num_attention_heads: (hidden_size / 64).max(1),
            max_position_embeddings,
            ..Self::vit_l_14()
        };
        config.validate()?;
        Ok(config)
    }
}
