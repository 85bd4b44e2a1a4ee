//! T5's RMS layer norm and gated-GELU feed-forward.

use burn::module::{Initializer, Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, FloatDType, Tensor};
use flux_nn::{FluxBackend, Init, Linear};

use super::T5Config;

/// T5's layer norm: scale only, no mean subtraction, no bias; the variance is taken in f32.
#[derive(Module, Debug)]
pub struct T5LayerNorm<B: Backend> {
    /// Per-channel scale, `[d_model]`.
    pub(crate) weight: Param<Tensor<B, 1>>,
    #[module(skip)]
    eps: f64,
}

impl<B: FluxBackend> T5LayerNorm<B> {
    /// A norm of width `dim` (scale 1 when random).
    pub fn new(dim: usize, eps: f64, init: &Init<B>) -> Self {
        Self {
            weight: init.param("weight", [dim], Initializer::Ones),
            eps,
        }
    }

    /// Normalises in f32 and returns the result in `out` dtype.
    ///
    /// # Shapes
    /// - x: `[batch, len, dim]` -> `[batch, len, dim]`
    pub fn forward(&self, x: Tensor<B, 3>, out: DType) -> Tensor<B, 3> {
        let x = x.cast(FloatDType::F32);
        let variance = x.clone().powi_scalar(2).mean_dim(2);
        // Division, not `recip()`: see flux_core's `RmsNorm` (ndarray's SIMD recip is approximate).
        let normed = x / (variance + self.eps).sqrt();
        let weight = self.weight.val().cast(FloatDType::F32).unsqueeze::<3>();
        (normed * weight).cast(out)
    }
}

/// T5 v1.1's feed-forward: `wo(gelu_tanh(wi_0 x) * wi_1 x)`, no biases
/// (transformers `T5DenseGatedActDense`).
#[derive(Module, Debug)]
pub struct T5DenseGatedActDense<B: Backend> {
    /// Gate projection `d_model -> d_ff`.
    pub(crate) wi_0: Linear<B>,
    /// Linear projection `d_model -> d_ff`.
    pub(crate) wi_1: Linear<B>,
    /// Output projection `d_ff -> d_model`; may be held in f32 when the rest is half precision.
    pub(crate) wo: Linear<B>,
}

impl<B: FluxBackend> T5DenseGatedActDense<B> {
    /// A feed-forward for `config`.
    pub fn new(config: &T5Config, init: &Init<B>) -> Self {
        let (d_model, d_ff) = (config.d_model, config.d_ff);
        Self {
            wi_0: init.linear("wi_0", d_model, d_ff, false),
            wi_1: init.linear("wi_1", d_model, d_ff, false),
            wo: init.linear("wo", d_ff, d_model, false),
        }
    }

    /// The gated product runs in the input's dtype, the output projection in `wo`'s dtype.
    ///
    /// # Shapes
    /// - x: `[batch, len, d_model]` -> `[batch, len, d_model]` (in `wo`'s dtype)
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let gate = B::gelu_tanh(self.wi_0.forward(x.clone()));
        let hidden = gate * self.wi_1.forward(x);
        self.wo.forward(hidden.cast(self.wo.dtype()))
    }
}
