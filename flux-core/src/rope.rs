//! 3-axis rotary position embedding (BFL `EmbedNd`, `rope`, `apply_rope`).
//!
//! Each token has a position id `(index, row, column)`; each axis gets its own slice of the head
//! dimension, and within it pairs `(x0, x1), (x2, x3), ...` are rotated by `pos * omega_i` with
//! `omega_i = theta^(-2i/d)`. Tables are computed on the host in f64 and kept in f32 whatever the
//! model's dtype (bf16 cannot hold positions above 256 exactly).

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};
use flux_nn::ops::Rope;

use crate::{Error, Result};

/// The cos/sin tables of one joint sequence (the workspace's rotary tables).
pub type RopeTable<B> = Rope<B>;

/// Builds [`RopeTable`]s from position ids (BFL `EmbedNd`).
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedNd {
    /// RoPE base.
    pub(crate) theta: f64,
    /// Rotary dimensions per axis.
    pub(crate) axes_dim: [usize; 3],
}

impl EmbedNd {
    /// An embedder for the given axes.
    pub fn new(theta: f64, axes_dim: [usize; 3]) -> Self {
        Self { theta, axes_dim }
    }

    /// Computes the tables for `ids`.
    ///
    /// # Shapes
    /// - ids: `[b, seq, 3]` (read back to the host; they are small)
    /// - returns tables of `[b, seq, sum(axes_dim) / 2]`
    ///
    /// # Errors
    /// [`Error::BadInput`] if `ids` does not have 3 axes or holds non-finite values.
    pub fn forward<B: Backend>(&self, ids: Tensor<B, 3>) -> Result<RopeTable<B>> {
        let [b, seq, axes] = ids.dims();
        if axes != 3 {
            return Err(Error::BadInput(format!(
                "position ids must be [b, seq, 3], got {:?}",
                ids.dims()
            )));
        }
        let device = ids.device();
        let ids: Vec<f64> = ids.cast(DType::F32).into_data().iter::<f64>().collect();
        if ids.iter().any(|v| !v.is_finite()) {
            return Err(Error::BadInput(
                "position ids contain NaN or infinite values".into(),
            ));
        }
        let omegas: Vec<f64> = self
            .axes_dim
            .iter()
            .flat_map(|&d| (0..d / 2).map(move |i| self.theta.powf(-(2.0 * i as f64) / d as f64)))
            .collect();
        let axis_of: Vec<usize> = self
            .axes_dim
            .iter()
            .enumerate()
            .flat_map(|(axis, &d)| std::iter::repeat_n(axis, d / 2))
            .collect();
        let half = omegas.len();
        let (mut cos, mut sin) = (
            Vec::with_capacity(b * seq * half),
            Vec::with_capacity(b * seq * half),
        );
        for token in ids.chunks_exact(3) {
            for (omega, &axis) in omegas.iter().zip(&axis_of) {
                let angle = token[axis] * omega;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        Ok(Rope::new(cos, sin, [b, seq, half], &device))
    }
}
