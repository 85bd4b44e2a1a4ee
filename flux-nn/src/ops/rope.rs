//! Rotary position embedding on interleaved pairs: the tables ([`Rope`]) and the rotation with
//! tensor ops.

use std::sync::Arc;

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};

use super::in_f32;

/// The cos/sin tables of one sequence of positions, per rotated pair: what
/// [`crate::FluxBackend::rotate_pairs`] and the joint attention rotate q and k by. Built from
/// host values computed in f64 and kept in f32 whatever the model's dtype (bf16 cannot hold
/// positions above 256 exactly).
///
/// Besides the per-pair tables (kept on the host for the host kernels), it holds them expanded
/// to the full head dimension and a pair-rotation matrix on the device, so that the portable
/// rotation is one small matmul and three elementwise ops on contiguous tensors.
#[derive(Debug, Clone)]
pub struct Rope<B: Backend> {
    /// `[b, seq, d / 2]`: the shape of the per-pair tables (`b` may be 1: shared by a batch).
    dims: [usize; 3],
    /// `cos` repeated for both members of each pair, flattened: `[b, 1, seq · d]`.
    cos_full: Tensor<B, 3>,
    /// `sin` likewise: `[b, 1, seq · d]`.
    sin_full: Tensor<B, 3>,
    /// `[d, d]`: `x @ rot` maps each pair `(x0, x1)` to `(-x1, x0)` exactly.
    rot: Tensor<B, 2>,
    /// The per-pair tables on the host, `[b · seq · d / 2]` each.
    host: Arc<(Vec<f32>, Vec<f32>)>,
}

impl<B: Backend> Rope<B> {
    /// Tables from per-pair values, token-major and pair-minor (`[b, seq, half]` flattened),
    /// for `half` rotated pairs (head dimension `2 · half`).
    ///
    /// # Panics
    /// If `cos` or `sin` does not hold `b · seq · half` values.
    pub fn new(
        cos: Vec<f32>,
        sin: Vec<f32>,
        [b, seq, half]: [usize; 3],
        device: &B::Device,
    ) -> Self {
        let n = b * seq * half;
        assert!(
            cos.len() == n && sin.len() == n,
            "rotary tables of {} and {} values for [{b}, {seq}, {half}]",
            cos.len(),
            sin.len()
        );
        let d = 2 * half;
        let full = |v: &[f32]| v.iter().flat_map(|&x| [x, x]).collect::<Vec<f32>>();
        let mut rot = vec![0.0; d * d];
        for i in 0..half {
            rot[(2 * i + 1) * d + 2 * i] = -1.0;
            rot[2 * i * d + 2 * i + 1] = 1.0;
        }
        Self {
            cos_full: f32_tensor(full(&cos), [b, 1, seq * d], device),
            sin_full: f32_tensor(full(&sin), [b, 1, seq * d], device),
            rot: f32_tensor(rot, [d, d], device),
            dims: [b, seq, half],
            host: Arc::new((cos, sin)),
        }
    }

    /// `[b, seq, d / 2]`: batch (1 when shared), positions and rotated pairs.
    pub fn dims(&self) -> [usize; 3] {
        self.dims
    }

    /// The f32 tables with each angle twice, `[b or 1, 1, seq · d]` (cos, sin): what the
    /// GPU kernels read.
    #[cfg(feature = "cubecl")]
    pub(crate) fn full_tables(&self) -> (&Tensor<B, 3>, &Tensor<B, 3>) {
        (&self.cos_full, &self.sin_full)
    }

    /// The per-pair cos and sin tables on the host, `[b · seq · d / 2]` each.
    pub fn host_tables(&self) -> (&[f32], &[f32]) {
        (&self.host.0, &self.host.1)
    }
}

/// Rotates each interleaved pair of `x`'s last dimension by the table's angles, in f32,
/// returning `x`'s dtype: `out = x · cos + rot(x) · sin` with `rot(x0, x1) = (-x1, x0)`
/// computed as `x @ rot` (a ±1 permutation matrix, so the products are exact): the same two
/// products per element as the reference's `cos · x0 − sin · x1`, `sin · x0 + cos · x1`, with
/// no strided pair views.
///
/// # Shapes
/// - x: `[b, heads, seq, d]` -> same
pub(crate) fn rotate_pairs<B: Backend>(x: Tensor<B, 4>, rope: &Rope<B>) -> Tensor<B, 4> {
    let [b, h, seq, d] = x.dims();
    in_f32(x, |x| {
        let rotated = x.clone().matmul(rope.rot.clone().unsqueeze::<4>());
        // Flattened to [b, heads, seq · d] so the tables broadcast over heads as whole rows.
        let flat = |t: Tensor<B, 4>| t.reshape([b, h, seq * d]);
        let out = flat(x) * rope.cos_full.clone() + flat(rotated) * rope.sin_full.clone();
        out.reshape([b, h, seq, d])
    })
}

/// An f32 tensor of `shape` from host values, whatever the device's default float dtype.
fn f32_tensor<B: Backend, const D: usize>(
    values: Vec<f32>,
    shape: [usize; D],
    device: &B::Device,
) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(values, shape), (device, DType::F32))
}
