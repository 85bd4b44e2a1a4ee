//! T5 v1.1 encoder hyper-parameters: presets, `config.json`, inference from tensor shapes.

use flux_io::Weights;

use super::names::T5Names;
use serde::Deserialize;

use crate::{Error, Result};

/// Hyper-parameters of a T5 v1.1 encoder stack (names as in transformers' `T5Config`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct T5Config {
    /// Vocabulary size (rows of `shared.weight`).
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub d_model: usize,
    /// Width of one attention head.
    pub d_kv: usize,
    /// Inner width of the gated feed-forward.
    pub d_ff: usize,
    /// Number of encoder blocks.
    pub num_layers: usize,
    /// Attention heads per block.
    pub num_heads: usize,
    /// Buckets of the relative position bias.
    #[serde(default = "default_buckets")]
    pub relative_attention_num_buckets: usize,
    /// Distance from which all relative positions share the last bucket.
    #[serde(default = "default_max_distance")]
    pub relative_attention_max_distance: usize,
    /// Epsilon of T5's RMS layer norm.
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    /// Feed-forward kind; only `"gated-gelu"` (T5 v1.1, tanh GELU) is implemented.
    #[serde(default = "default_ff")]
    pub feed_forward_proj: String,
}

fn default_buckets() -> usize {
    32
}
fn default_max_distance() -> usize {
    128
}
fn default_eps() -> f64 {
    1e-6
}
fn default_ff() -> String {
    "gated-gelu".into()
}

impl T5Config {
    /// `google/t5-v1_1-xxl` as FLUX uses it (FLUX.1-dev `text_encoder_2/config.json`):
    /// 24 layers, d_model 4096, 64 heads of 64, d_ff 10240, 32128 tokens.
    pub fn xxl() -> Self {
        Self {
            vocab_size: 32128,
            d_model: 4096,
            d_kv: 64,
            d_ff: 10240,
            num_layers: 24,
            num_heads: 64,
            relative_attention_num_buckets: 32,
            relative_attention_max_distance: 128,
            layer_norm_epsilon: 1e-6,
            feed_forward_proj: default_ff(),
        }
    }

    /// The tiny model of the test fixtures (`scripts/reference/gen_text.py`).
    pub fn tiny() -> Self {
        Self {
            vocab_size: 300,
            d_model: 32,
            d_kv: 8,
            d_ff: 64,
            num_layers: 2,
            num_heads: 4,
            ..Self::xxl()
        }
    }

    /// Width of the concatenated heads (`num_heads * d_kv`).
    pub fn inner_dim(&self) -> usize {
        self.num_heads * self.d_kv
    }

    /// Checks that the values describe a model this crate can run.
    ///
    /// # Errors
    /// [`Error::Unsupported`] for a feed-forward other than gated GELU, [`Error::InvalidConfig`] for
    /// zero sizes.
    pub fn validate(&self) -> Result<()> {
        if self.feed_forward_proj != "gated-gelu" {
            return Err(Error::Unsupported(format!(
                "T5 feed_forward_proj `{}`: only T5 v1.1's `gated-gelu` is implemented",
                self.feed_forward_proj
            )));
        }
        let sizes = [
            self.vocab_size,
            self.d_model,
            self.d_kv,
            self.d_ff,
            self.num_layers,
            self.num_heads,
            self.relative_attention_num_buckets,
        ];
        if sizes.contains(&0) || self.relative_attention_max_distance < 2 {
            return Err(Error::InvalidConfig(format!(
                "T5 sizes must be positive: {self:?}"
            )));
        }
        Ok(())
    }

    /// Reads the hyper-parameters from the stored tensor shapes (for single files without
    /// `config.json`). The bucket count and head count come from the relative position bias
    /// `[buckets, heads]`; the maximum distance and epsilon keep T5's defaults (128, 1e-6).
    ///
    /// # Errors
    /// A missing-key error naming the tensor the shapes are read from; [`Error::Unsupported`]
    /// for T5 v1.0 checkpoints (`DenseReluDense.wi` instead of `wi_0` / `wi_1`).
    pub fn infer(weights: &Weights) -> Result<Self> {
        let names = T5Names::detect(weights);
        let shape = |key: &str| -> Result<[usize; 2]> {
            let key = names.key(key);
            dims2(&weights.shape(&key)?, &key)
        };
        let embed = if weights.contains(&names.key("shared.weight")) {
            "shared.weight"
        } else {
            "encoder.embed_tokens.weight"
        };
        let [vocab_size, d_model] = shape(embed)?;
        let ff = "encoder.block.0.layer.1.DenseReluDense";
        if weights.contains(&format!("{ff}.wi.weight")) {
            return Err(Error::Unsupported(
                "T5 v1.0 checkpoint (non-gated `DenseReluDense.wi`): FLUX uses T5 v1.1".into(),
            ));
        }
        let [buckets, num_heads] =
            shape("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight")?;
        let [inner, _] = shape("encoder.block.0.layer.0.SelfAttention.q.weight")?;
        let [d_ff, _] = shape(&format!("{ff}.wi_0.weight"))?;
        let config = Self {
            vocab_size,
            d_model,
            d_kv: inner / num_heads.max(1),
            d_ff,
            num_layers: weights.count_indexed(names.block_prefix()),
            num_heads,
            relative_attention_num_buckets: buckets,
            ..Self::xxl()
        };
        config.validate()?;
        Ok(config)
    }
}

fn dims2(shape: &[usize], key: &str) -> Result<[usize; 2]> {
    match shape {
        &[a, b] => Ok([a, b]),
        _ => Err(Error::InvalidConfig(format!(
            "tensor `{key}` has shape {shape:?}, expected 2 dimensions"
        ))),
    }
}
