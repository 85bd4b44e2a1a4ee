//! The attention weights of one stream of a double block; the joint attention itself is the
//! backend's ([`flux_nn::FluxBackend::joint_attention`]).

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use flux_nn::ops::QkvStream;
use flux_nn::{FluxBackend, Init, Linear};

use crate::norm::QkNorm;

/// The attention weights of one stream of a double block (BFL `SelfAttention`): fused qkv
/// projection, per-head q/k RMSNorm, output projection.
#[derive(Module, Debug)]
pub struct SelfAttention<B: Backend> {
    /// `hidden -> 3 * hidden`.
    qkv: Linear<B>,
    /// q/k norms of width `head_dim`.
    norm: QkNorm<B>,
    /// `hidden -> hidden`.
    proj: Linear<B>,
}

impl<B: FluxBackend> SelfAttention<B> {
    /// Weights for `hidden` channels in `heads` heads.
    pub fn new(hidden: usize, heads: usize, qkv_bias: bool, init: &Init<B>) -> Self {
        Self {
            qkv: init.linear("qkv", hidden, 3 * hidden, qkv_bias),
            norm: QkNorm::new(hidden / heads, &init.at("norm")),
            proj: init.linear("proj", hidden, hidden, true),
        }
    }

    /// The stream `x` brings to the joint attention: its fused projection with its q/k norms.
    ///
    /// # Shapes
    /// - x: `[b, seq, hidden]` -> a stream of `[b, seq, 3 * hidden]`
    pub fn qkv(&self, x: Tensor<B, 3>) -> QkvStream<B> {
        self.norm.stream(self.qkv.forward(x))
    }

    /// The output projection.
    ///
    /// # Shapes
    /// - x: `[b, seq, hidden]` -> `[b, seq, hidden]`
    pub fn proj(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.proj.forward(x)
    }
}
