//! 3-axis rotary position embedding (BFL `EmbedNd`, `rope`, `apply_rope`).
//!
//! Each token has a position id `(index, row, column)`; each axis gets its own slice of the head
//! dimension, and within it pairs `(x0, x1), (x2, x3), ...` are rotated by `pos * omega_i` with
//! `omega_i = theta^(-2i/d)`. Tables are computed on the host in f64 and kept in f32 whatever the
//! model's dtype (bf16 cannot hold positions above 256 exactly).

use std::sync::Arc;

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};

use crate::f32_tensor::f32_tensor;
use crate::{Error, Result};
use flux_io::ops;

/// The cos/sin tables for one sequence of positions.
///
/// Besides the per-pair tables the reference builds, it keeps them expanded to the full head
/// dimension and a pair-rotation matrix, so that [`apply_rope`] is one small matmul and three
/// elementwise ops on contiguous tensors (see `apply_rope`).
#[derive(Debug, Clone)]
pub struct RopeTable<B: Backend> {
    /// `[b, seq, head_dim / 2]`: the shape of the reference's per-pair tables.
    dims: [usize; 3],
    /// `cos` repeated for both members of each pair, flattened: `[b, 1, seq * head_dim]`.
    cos_full: Tensor<B, 3>,
    /// `sin` likewise: `[b, 1, seq * head_dim]`.
    sin_full: Tensor<B, 3>,
    /// `[head_dim, head_dim]`: `x @ rot` maps each pair `(x0, x1)` to `(-x1, x0)` exactly.
    rot: Tensor<B, 2>,
    /// The per-pair tables on the host, `[b * seq * head_dim / 2]`, for the host kernel.
    host: Arc<(Vec<f32>, Vec<f32>)>,
}

impl<B: Backend> RopeTable<B> {
    /// The shape of the reference's per-pair cos/sin tables, `[b, 1, seq, head_dim / 2]`.
    pub fn dims(&self) -> [usize; 4] {
        let [b, seq, half] = self.dims;
        [b, 1, seq, half]
    }

    /// The per-pair cos and sin tables on the host, `[b * seq * head_dim / 2]` each.
    pub(crate) fn host_tables(&self) -> (&[f32], &[f32]) {
        (&self.host.0, &self.host.1)
    }

    /// Tables from host values `[b * seq * half]` (token-major, pair-minor).
    fn new(cos: Vec<f32>, sin: Vec<f32>, [b, seq, half]: [usize; 3], device: &B::Device) -> Self {
        let d = 2 * half;
        let full = |v: &[f32]| v.iter().flat_map(|&x| [x, x]).collect::<Vec<f32>>();
        let mut rot = vec![0.0; d * d];
        for i in 0..half {
            rot[(2 * i + 1) * d + 2 * i] = -1.0;
            rot[2 * i * d + 2 * i + 1] = 1.0;
        }
        Self {
            cos_full: f32_tensor::<B, 3>(full(&cos), [b, 1, seq * d], device),
            sin_full: f32_tensor::<B, 3>(full(&sin), [b, 1, seq * d], device),
            rot: f32_tensor::<B, 2>(rot, [d, d], device),
            dims: [b, seq, half],
            host: Arc::new((cos, sin)),
        }
    }
}

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
    /// - returns tables of `[b, 1, seq, sum(axes_dim) / 2]`
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
        Ok(RopeTable::new(cos, sin, [b, seq, half], &device))
    }
}

/// Rotates interleaved pairs of `x` by the table's angles, in f32, returning `x`'s dtype.
///
/// `out = x * cos + rot(x) * sin` with `rot(x0, x1) = (-x1, x0)` computed as `x @ rot`
/// (a ±1 permutation matrix, so the products are exact): the same two products per element as
/// the reference's `cos * x0 - sin * x1`, `sin * x0 + cos * x1`, with no strided pair views.
///
/// # Shapes
/// - x: `[b, heads, seq, head_dim]`, table `[b, 1, seq, head_dim / 2]` -> `[b, heads, seq, head_dim]`
pub fn apply_rope<B: Backend>(x: Tensor<B, 4>, pe: &RopeTable<B>) -> Tensor<B, 4> {
    let [b, h, seq, d] = x.dims();
    let x = match ops::rotate_pairs_on_host(x, &pe.host.0, &pe.host.1) {
        Ok(rotated) => return rotated,
        Err(x) => x,
    };
    ops::in_f32(x, |x| {
        let rotated = x.clone().matmul(pe.rot.clone().unsqueeze::<4>());
        // Flattened to [b, heads, seq * d] so the tables broadcast over heads as whole rows.
        let flat = |t: Tensor<B, 4>| t.reshape([b, h, seq * d]);
        let out = flat(x) * pe.cos_full.clone() + flat(rotated) * pe.sin_full.clone();
        out.reshape([b, h, seq, d])
    })
}
