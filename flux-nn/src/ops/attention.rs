//! Scaled dot-product attention: burn's kernel (fused on the cubecl backends when there is no
//! bias, no softcap and the default scale), and its f32 form for half-precision models.

use burn::tensor::FloatDType;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use burn::tensor::module::attention as burn_attention;
use burn::tensor::ops::AttentionModuleOptions;

use crate::FluxBackend;

/// `softmax(scale · q kᵀ + bias) v` with burn's kernel.
///
/// # Shapes
/// As [`FluxBackend::dot_product_attention`].
pub(crate) fn attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    bias: Option<Tensor<B, 4>>,
    options: AttentionModuleOptions,
) -> Tensor<B, 4> {
    burn_attention(q, k, v, None, bias, options)
}

/// [`FluxBackend::dot_product_attention`] with q, k, v and the bias in f32 whatever their dtype; the
/// result has q's dtype (the casts are no-ops for f32). For half-precision models whose
/// attention is a small share of the work and sensitive to rounding (CLIP, the VAE's mid
/// block).
///
/// # Shapes
/// As [`FluxBackend::dot_product_attention`].
pub fn attention_f32<B: FluxBackend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    bias: Option<Tensor<B, 4>>,
    options: AttentionModuleOptions,
) -> Tensor<B, 4> {
    let dtype = q.dtype();
    let f32 = |t: Tensor<B, 4>| t.cast(FloatDType::F32);
    B::dot_product_attention(f32(q), f32(k), f32(v), bias.map(f32), options).cast(dtype)
}
