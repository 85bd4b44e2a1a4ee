//! T5 self-attention with the bucketed relative position bias (transformers `T5Attention`).

use burn::module::Module;
use burn::nn::Embedding;
use burn::tensor::backend::Backend;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Int, Tensor, TensorData};
use flux_nn::{FluxBackend, Init, Linear};

use super::T5Config;

/// Multi-head self-attention without score scaling (T5 folds the `1/sqrt(d)` into its weights).
/// Only the first block owns a `relative_attention_bias`; its bias is shared by all blocks.
#[derive(Module, Debug)]
pub struct T5Attention<B: Backend> {
    /// Query projection `d_model -> heads * d_kv`, no bias.
    pub(crate) q: Linear<B>,
    /// Key projection.
    pub(crate) k: Linear<B>,
    /// Value projection.
    pub(crate) v: Linear<B>,
    /// Output projection `heads * d_kv -> d_model`.
    pub(crate) o: Linear<B>,
    /// `[buckets, heads]` learned bias per relative-position bucket (first block only).
    pub(crate) relative_attention_bias: Option<Embedding<B>>,
    #[module(skip)]
    num_heads: usize,
    #[module(skip)]
    num_buckets: usize,
    #[module(skip)]
    max_distance: usize,
}

impl<B: FluxBackend> T5Attention<B> {
    /// An attention layer for `config`, with the bias table when `has_bias`.
    pub fn new(config: &T5Config, has_bias: bool, init: &Init<B>) -> Self {
        let inner = config.inner_dim();
        let d_model = config.d_model;
        Self {
            q: init.linear("q", d_model, inner, false),
            k: init.linear("k", d_model, inner, false),
            v: init.linear("v", d_model, inner, false),
            o: init.linear("o", inner, d_model, false),
            relative_attention_bias: has_bias.then(|| {
                let buckets = config.relative_attention_num_buckets;
                init.embedding("relative_attention_bias", buckets, config.num_heads)
            }),
            num_heads: config.num_heads,
            num_buckets: config.relative_attention_num_buckets,
            max_distance: config.relative_attention_max_distance,
        }
    }

    /// The position bias for `len` tokens, from this layer's table (`None` if it has none).
    ///
    /// # Shapes
    /// - output: `[1, heads, len, len]`
    pub fn position_bias(&self, len: usize, device: &B::Device) -> Option<Tensor<B, 4>> {
        let table = self.relative_attention_bias.as_ref()?;
        let (num_buckets, max_distance) = (self.num_buckets, self.max_distance);
        let buckets: Vec<i64> = (0..len as i64)
            .flat_map(|q| {
                (0..len as i64)
                    .map(move |k| relative_position_bucket(k - q, num_buckets, max_distance))
            })
            .collect();
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(buckets, [len, len]), device);
        // [len, len] -> [1, len, len, heads] -> [1, heads, len, len]
        let bias =
            table
                .forward(ids.reshape([1, len * len]))
                .reshape([1, len, len, self.num_heads]);
        Some(bias.permute([0, 3, 1, 2]))
    }

    /// # Shapes
    /// - x: `[batch, len, d_model]`
    /// - bias: `[1, heads, len, len]` (any float dtype; cast to the scores' dtype)
    /// - output: `[batch, len, d_model]`
    pub fn forward(&self, x: Tensor<B, 3>, bias: Tensor<B, 4>) -> Tensor<B, 3> {
        let [batch, len, _] = x.dims();
        let heads = |t: Tensor<B, 3>| {
            t.reshape([batch as i64, len as i64, self.num_heads as i64, -1])
                .swap_dims(1, 2)
        };
        let q = heads(self.q.forward(x.clone()));
        let k = heads(self.k.forward(x.clone()));
        let v = heads(self.v.forward(x));
        let bias = bias.cast(q.dtype()).expand([batch as i64, -1, -1, -1]);
        let options = AttentionModuleOptions {
            scale: Some(1.0),
            ..Default::default()
        };
        let out = B::dot_product_attention(q, k, v, Some(bias), options);
        self.o
            .forward(out.swap_dims(1, 2).reshape([batch as i64, len as i64, -1]))
    }
}

/// T5's bidirectional bucket of the relative position `key - query` (transformers
/// `T5Attention._relative_position_bucket`): half the buckets per direction, exact buckets for
/// distances below a quarter of the buckets, log-spaced ones up to `max_distance`.
pub(crate) fn relative_position_bucket(
    relative_position: i64,
    num_buckets: usize,
    max_distance: usize,
) -> i64 {
    let half = (num_buckets / 2) as i64;
    let mut bucket = if relative_position > 0 { half } else { 0 };
    let distance = relative_position.abs();
    let max_exact = half / 2;
    if distance < max_exact {
        return bucket + distance;
    }
    // The reference computes this in f32.
    let log_ratio = (distance as f32 / max_exact as f32).ln()
        / ((max_distance as f64 / max_exact as f64).ln() as f32)
        * (half - max_exact) as f32;
    bucket += (max_exact + log_ratio as i64).min(half - 1);
    bucket
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_buckets_follow_t5() {
        // Values of transformers' `_relative_position_bucket(bidirectional=True, 32, 128)`.
        let cases = [
            (0, 0),
            (-1, 1),
            (1, 17),
            (-7, 7),
            (-8, 8),
            (-12, 9),
            (-16, 10),
            (-127, 15),
            (-500, 15),
            (8, 24),
            (32, 28),
            (127, 31),
            (1000, 31),
        ];
        for (rel, bucket) in cases {
            assert_eq!(
                relative_position_bucket(rel, 32, 128),
                bucket,
                "relative position {rel}"
            );
        }
    }
}
