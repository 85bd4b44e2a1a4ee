//! Norms with a fused host kernel on burn-flex f32 and burn ops elsewhere: FLUX's LayerNorm
//! followed by its adaLN modulation, and RMSNorm with a learned scale. Statistics in f32
//! whatever the dtype.

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};

use super::in_f32;
use crate::kernels::backend::{host_threads, runs_host_kernels};
use crate::kernels::host::map_host_f32;
use crate::kernels::norm::{layer_norm_modulate_rows, rms_norm_rows};

/// LayerNorm without affine over the last dimension (eps 1e-6), computed in f32 and returned in
/// `x`'s dtype: [`layer_norm_modulate`]'s burn-op path.
///
/// # Shapes
/// - x: `[..., dim]` -> `[..., dim]`
fn layer_norm<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    in_f32(x, |x| {
        let mean = x.clone().mean_dim(D - 1);
        let centered = x - mean;
        let var = centered.clone().powi_scalar(2).mean_dim(D - 1);
        centered / (var + 1e-6).sqrt()
    })
}

/// `layer_norm(x) · (1 + scale) + shift` (BFL's `(1 + mod.scale) * norm(x) + mod.shift`).
///
/// On burn-flex f32 one pass per row on the host threads replaces about eleven
/// single-threaded ops.
///
/// # Shapes
/// - x: `[b, seq, dim]`; scale, shift: `[b, 1, dim]` -> `[b, seq, dim]`
pub fn layer_norm_modulate<B: Backend>(
    x: Tensor<B, 3>,
    scale: Tensor<B, 3>,
    shift: Tensor<B, 3>,
) -> Tensor<B, 3> {
    let [b, seq, dim] = x.dims();
    let vectors_fit = scale.dims() == [b, 1, dim] && shift.dims() == [b, 1, dim];
    if runs_host_kernels(&x) && vectors_fit && scale.dtype() == DType::F32 {
        let scale1p = host_values(scale + 1.0);
        let shift = host_values(shift);
        return map_host_f32(x, dim, host_threads::<B>(), |first, rows| {
            layer_norm_modulate_rows(rows, dim, first, seq, 1e-6, &scale1p, &shift)
        })
        .0;
    }
    layer_norm(x) * (scale + 1.0) + shift
}

/// RMSNorm over the last dimension with a learned `scale` (eps 1e-6): `x / sqrt(mean(x²) +
/// eps) · scale`, statistics in f32.
///
/// On burn-flex f32 one pass per row on the host threads.
///
/// # Shapes
/// - x: `[..., dim]`, scale: `[dim]` -> `[..., dim]`
pub fn rms_norm<B: Backend, const D: usize>(x: Tensor<B, D>, scale: Tensor<B, 1>) -> Tensor<B, D> {
    let dim = x.dims()[D - 1];
    if runs_host_kernels(&x) && scale.dtype() == DType::F32 && scale.dims() == [dim] {
        let scale = host_values(scale);
        return map_host_f32(x, dim, host_threads::<B>(), |_, rows| {
            rms_norm_rows(rows, 1e-6, &scale)
        })
        .0;
    }
    let normed = in_f32(x, |x| {
        // A division, not `* sqrt(..).recip()`: burn-ndarray's SIMD `recip` is the hardware
        // estimate (`rcp`, ~12-14 correct bits), far short of f32.
        let rms = (x.clone().powi_scalar(2).mean_dim(D - 1) + 1e-6).sqrt();
        x / rms
    });
    normed * scale.unsqueeze()
}

/// A small f32 tensor's values on the host.
fn host_values<B: Backend, const D: usize>(x: Tensor<B, D>) -> Vec<f32> {
    x.into_data()
        .to_vec::<f32>()
        .expect("f32 tensor on a host backend")
}
