//! The q/k norms' learned scales (BFL `QKNorm`); the norms themselves run inside the joint
//! attention ([`flux_nn::FluxBackend::joint_attention`]).

use burn::module::{Initializer, Module, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use flux_nn::{FluxBackend, Init};

/// RMSNorm's learned scale (BFL `RMSNorm`, eps 1e-6; checkpoint key `….scale`).
#[derive(Module, Debug)]
pub struct RmsNorm<B: Backend> {
    /// Per-channel scale, `[dim]`.
    pub(crate) scale: Param<Tensor<B, 1>>,
}

impl<B: FluxBackend> RmsNorm<B> {
    /// A norm of width `dim` (scale 1 when random).
    pub fn new(dim: usize, init: &Init<B>) -> Self {
        Self {
            scale: init.param("scale", [dim], Initializer::Ones),
        }
    }
}

/// RMSNorm of queries and keys, per head (BFL `QKNorm`).
#[derive(Module, Debug)]
pub struct QkNorm<B: Backend> {
    /// Norm applied to queries.
    pub(crate) query_norm: RmsNorm<B>,
    /// Norm applied to keys.
    pub(crate) key_norm: RmsNorm<B>,
}

impl<B: FluxBackend> QkNorm<B> {
    /// Norms of width `head_dim`.
    pub fn new(head_dim: usize, init: &Init<B>) -> Self {
        Self {
            query_norm: RmsNorm::new(head_dim, &init.at("query_norm")),
            key_norm: RmsNorm::new(head_dim, &init.at("key_norm")),
        }
    }

    /// The joint attention's view of a fused projection with these norms.
    ///
    /// # Shapes
    /// - qkv: `[b, seq, width]`, q, k, v in the first `3 · hidden` columns
    pub fn stream(&self, qkv: Tensor<B, 3>) -> flux_nn::ops::QkvStream<B> {
        flux_nn::ops::QkvStream {
            qkv,
            q_scale: self.query_norm.scale.val(),
            k_scale: self.key_norm.scale.val(),
        }
    }
}
