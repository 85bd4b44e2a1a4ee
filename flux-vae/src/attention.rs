//! The single-head self-attention of the mid blocks.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use flux_nn::ops::attention_f32;
use flux_nn::{FluxBackend, Init};

use crate::norm::GroupNorm;
use crate::resnet::conv1x1;

/// Self-attention over all positions with one head of full width; q, k, v and the output
/// projection are 1x1 convolutions (BFL `AttnBlock`; diffusers stores them as `Linear`).
#[derive(Module, Debug)]
pub struct AttnBlock<B: Backend> {
    /// Input norm.
    pub(crate) norm: GroupNorm<B>,
    /// Query projection.
    pub(crate) q: Conv2d<B>,
    /// Key projection.
    pub(crate) k: Conv2d<B>,
    /// Value projection.
    pub(crate) v: Conv2d<B>,
    /// Output projection.
    pub(crate) proj_out: Conv2d<B>,
}

impl<B: FluxBackend> AttnBlock<B> {
    /// A block of `channels` width.
    pub fn new(channels: usize, groups: usize, init: &Init<B>) -> Self {
        Self {
            norm: GroupNorm::new(groups, channels, &init.at("norm")),
            q: conv1x1(init, "q", channels, channels),
            k: conv1x1(init, "k", channels, channels),
            v: conv1x1(init, "v", channels, channels),
            proj_out: conv1x1(init, "proj_out", channels, channels),
        }
    }

    /// `x + proj_out(softmax(q k^T / sqrt(c)) v)`.
    ///
    /// # Shapes
    /// `x`: `[b, c, h, w]` -> `[b, c, h, w]`; attention spans all `h * w` positions.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, c, h, w] = x.dims();
        let normed = self.norm.forward(x.clone());
        let tokens = |t: Tensor<B, 4>| t.reshape([b, 1, c, h * w]).swap_dims(2, 3);
        let q = tokens(self.q.forward(normed.clone()));
        let k = tokens(self.k.forward(normed.clone()));
        let v = tokens(self.v.forward(normed));
        let out = attention_f32(q, k, v, None, Default::default());
        let out = out.swap_dims(2, 3).reshape([b, c, h, w]);
        x + self.proj_out.forward(out)
    }
}
