//! GroupNorm (eps 1e-6) and swish, as used throughout the autoencoder.

use burn::module::{Initializer, Module, Param};
use burn::tensor::Tensor;
use burn::tensor::activation::sigmoid;
use burn::tensor::backend::Backend;
use flux_nn::ops::in_f32;
use flux_nn::{FluxBackend, Init};

/// GroupNorm with per-channel affine; fields named like PyTorch's (`weight`, `bias`).
#[derive(Module, Debug)]
pub struct GroupNorm<B: Backend> {
    /// Per-channel scale `[c]`.
    pub(crate) weight: Param<Tensor<B, 1>>,
    /// Per-channel shift `[c]`.
    pub(crate) bias: Param<Tensor<B, 1>>,
    groups: usize,
}

impl<B: FluxBackend> GroupNorm<B> {
    /// `channels` split into `groups`; identity affine until loaded.
    pub fn new(groups: usize, channels: usize, init: &Init<B>) -> Self {
        Self {
            weight: init.param("weight", [channels], Initializer::Ones),
            bias: init.param("bias", [channels], Initializer::Zeros),
            groups,
        }
    }

    /// Normalises each group over its channels and all positions (biased variance, eps 1e-6).
    /// The statistics are computed in f32 whatever the dtype of `x` (a half-precision mean over
    /// a group of a 128x128 feature map keeps too few bits); the result has `x`'s dtype.
    ///
    /// # Shapes
    /// `x`: `[b, c, h, w]` -> `[b, c, h, w]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, c, h, w] = x.dims();
        let groups = self.groups;
        let normed = in_f32(x, |x| {
            let g = x.reshape([b, groups, (c / groups) * h * w]);
            let mean = g.clone().mean_dim(2);
            let centered = g - mean;
            let var = centered.clone().square().mean_dim(2);
            (centered / (var + 1e-6).sqrt()).reshape([b, c, h, w])
        });
        let weight = self.weight.val().reshape([1, c, 1, 1]);
        let bias = self.bias.val().reshape([1, c, 1, 1]);
        normed * weight + bias
    }
}

/// `x * sigmoid(x)`.
pub fn swish<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    x.clone() * sigmoid(x)
}
