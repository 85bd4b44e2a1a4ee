//! RMSNorm with a learned scale (q/k norm); the LayerNorm and its modulation are
//! `flux_io::ops::layer_norm_modulate` (`ModulationOut::norm_modulate`).

use burn::module::{Module, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use flux_io::ops;

/// RMSNorm over the last dimension with a learned `scale` (BFL `RMSNorm`, eps 1e-6).
/// Statistics are computed in f32 whatever the model's dtype.
#[derive(Module, Debug)]
pub struct RmsNorm<B: Backend> {
    /// Per-channel scale, `[dim]`.
    pub(crate) scale: Param<Tensor<B, 1>>,
}

impl<B: Backend> RmsNorm<B> {
    /// A norm of width `dim` with scale 1.
    pub fn new(dim: usize, device: &B::Device) -> Self {
        Self {
            scale: Param::from_tensor(Tensor::ones([dim], device)),
        }
    }

    /// # Shapes
    /// - x: `[..., dim]` -> `[..., dim]`
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        ops::rms_norm(x, self.scale.val())
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

impl<B: Backend> QkNorm<B> {
    /// Norms of width `head_dim`.
    pub fn new(head_dim: usize, device: &B::Device) -> Self {
        Self {
            query_norm: RmsNorm::new(head_dim, device),
            key_norm: RmsNorm::new(head_dim, device),
        }
    }

    /// # Shapes
    /// - q, k: `[b, heads, seq, head_dim]`, each normalised over `head_dim`
    pub fn forward(&self, q: Tensor<B, 4>, k: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 4>) {
        (self.query_norm.forward(q), self.key_norm.forward(k))
    }
}
