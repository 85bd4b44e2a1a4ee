//! FLUX's LayerNorm with its adaLN modulation, and RMSNorm with a learned scale, with tensor
//! ops; statistics in f32 whatever the dtype.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use super::in_f32;

/// `layer_norm(x) · (1 + scale) + shift`, LayerNorm without affine (BFL's
/// `(1 + mod.scale) * norm(x) + mod.shift`).
///
/// # Shapes
/// - x: `[b, seq, dim]`; scale, shift: `[b, 1, dim]` -> `[b, seq, dim]`
pub(crate) fn layer_norm_modulate<B: Backend>(
    x: Tensor<B, 3>,
    scale: Tensor<B, 3>,
    shift: Tensor<B, 3>,
    eps: f64,
) -> Tensor<B, 3> {
    let normed = in_f32(x, |x| {
        let mean = x.clone().mean_dim(2);
        let centered = x - mean;
        let var = centered.clone().powi_scalar(2).mean_dim(2);
        centered / (var + eps).sqrt()
    });
    normed * (scale + 1.0) + shift
}

/// `x / sqrt(mean(x²) + eps) · scale` over the last dimension.
///
/// # Shapes
/// - x: `[..., dim]`, scale: `[dim]` -> `[..., dim]`
pub(crate) fn rms_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    scale: Tensor<B, 1>,
    eps: f64,
) -> Tensor<B, D> {
    let normed = in_f32(x, |x| {
        // A division, not `* sqrt(..).recip()`: burn-ndarray's SIMD `recip` is the hardware
        // estimate (`rcp`, ~12-14 correct bits), far short of f32.
        let rms = (x.clone().powi_scalar(2).mean_dim(D - 1) + eps).sqrt();
        x / rms
    });
    normed * scale.unsqueeze()
}
