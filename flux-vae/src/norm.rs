//! GroupNorm (eps 1e-6) and swish, as used throughout the autoencoder.

use burn::module::{Module, Param};
use burn::tensor::Tensor;
use burn::tensor::activation::sigmoid;
use burn::tensor::backend::Backend;

/// GroupNorm with per-channel affine; fields named like PyTorch's (`weight`, `bias`).
#[derive(Module, Debug)]
pub struct GroupNorm<B: Backend> {
    /// Per-channel scale `[c]`.
    pub weight: Param<Tensor<B, 1>>,
    /// Per-channel shift `[c]`.
    pub bias: Param<Tensor<B, 1>>,
    groups: usize,
}

impl<B: Backend> GroupNorm<B> {
    /// `channels` split into `groups`; identity affine until loaded.
    pub fn new(groups: usize, channels: usize, device: &B::Device) -> Self {
        Self {
            weight: Param::from_tensor(Tensor::ones([channels], device)),
            bias: Param::from_tensor(Tensor::zeros([channels], device)),
            groups,
        }
    }

    /// Normalises each group over its channels and all positions (biased variance, eps 1e-6).
    ///
    /// # Shapes
    /// `x`: `[b, c, h, w]` -> `[b, c, h, w]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, c, h, w] = x.dims();
        let g = x.reshape([b, self.groups, (c / self.groups) * h * w]);
        let mean = g.clone().mean_dim(2);
        let centered = g - mean;
        let var = centered.clone().square().mean_dim(2);
        let normed = (centered / (var + 1e-6).sqrt()).reshape([b, c, h, w]);
        let weight = self.weight.val().reshape([1, c, 1, 1]);
        let bias = self.bias.val().reshape([1, c, 1, 1]);
        normed * weight + bias
    }
}

/// `x * sigmoid(x)`.
pub fn swish<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    x.clone() * sigmoid(x)
}
