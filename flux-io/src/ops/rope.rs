//! Rotary position embedding's pair rotation with a host kernel on burn-flex f32.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::kernels::backend::{host_threads, runs_host_kernels};
use crate::kernels::host::map_host_f32;
use crate::kernels::rope::rotate_pairs_rows;

/// Rotates each interleaved pair `(x0, x1)` of `x`'s last dimension by its angle:
/// `(x0 cos − x1 sin, x1 cos + x0 sin)` (BFL `apply_rope`), in one pass per head on the host
/// threads. `cos` and `sin` are the per-pair tables, `[b, seq, head_dim / 2]` flattened
/// (token-major), shared by every head.
///
/// Runs on burn-flex f32 only: elsewhere `x` comes back unchanged as `Err`, for the caller's
/// tensor-op formulation.
///
/// # Shapes
/// - x: `[b, heads, seq, head_dim]` -> `[b, heads, seq, head_dim]`
pub fn rotate_pairs_on_host<B: Backend>(
    x: Tensor<B, 4>,
    cos: &[f32],
    sin: &[f32],
) -> Result<Tensor<B, 4>, Tensor<B, 4>> {
    let [b, heads, seq, d] = x.dims();
    let table = b * seq * d / 2;
    if !runs_host_kernels(&x) || d % 2 != 0 || cos.len() != table || sin.len() != table {
        return Err(x);
    }
    let per_head = seq * d;
    Ok(
        map_host_f32(x, per_head, host_threads::<B>(), |first, rows| {
            for (i, head) in rows.chunks_exact_mut(per_head).enumerate() {
                let batch = (first + i) / heads;
                let span = batch * per_head / 2..(batch + 1) * per_head / 2;
                rotate_pairs_rows(head, &cos[span.clone()], &sin[span]);
            }
        })
        .0,
    )
}
