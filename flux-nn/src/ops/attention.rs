//! Scaled dot-product attention: burn's kernel (fused on the cubecl backends when there is no
//! bias, no softcap and the default scale), its f32 form for half-precision models, and the
//! materialised form a GPU backend runs where no flash kernel serves (heads in groups, the
//! scores of one group in memory at a time).

use burn::tensor::FloatDType;
use burn::tensor::Tensor;
#[cfg(test)]
use burn::tensor::activation::softmax;
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

/// The most bytes of f32 scores [`attention_materialized_within`] holds at once on the GPU
/// backends (one group of heads):
/// 512 MiB, 6 of FLUX.1's 24 heads at 1024x1024 (4 608 tokens).
#[cfg(feature = "cubecl")]
pub(crate) const MATERIALIZED_SCORE_BYTES: usize = 512 << 20;

/// The portable row softmax of f32 scores over the last dimension, the probabilities in
/// `dtype`.
#[cfg(test)]
pub(crate) fn softmax_rows<B: Backend>(scores: Tensor<B, 4>, dtype: FloatDType) -> Tensor<B, 4> {
    softmax(scores, 3).cast(dtype)
}

/// `softmax(scale · q kᵀ + bias) v` with the scores in memory: per group of heads whose f32
/// scores fit `score_bytes` (at least one head's; [`MATERIALIZED_SCORE_BYTES`] on the GPU
/// backends), one batched matmul in the inputs' dtype (q scaled first), `softmax` turning the
/// group's f32 scores into probabilities in the inputs' dtype ([`softmax_rows`], or a
/// backend's fused kernel), the second matmul. No causal mask or softcap (FLUX's attentions
/// have neither).
///
/// # Shapes
/// As [`FluxBackend::dot_product_attention`].
///
/// # Panics
/// With `options.is_causal` or `options.softcap` set.
#[cfg(any(test, feature = "cubecl"))]
pub(crate) fn attention_materialized_within<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    bias: Option<Tensor<B, 4>>,
    options: AttentionModuleOptions,
    score_bytes: usize,
    softmax: impl Fn(Tensor<B, 4>, FloatDType) -> Tensor<B, 4>,
) -> Tensor<B, 4> {
    assert!(
        !options.is_causal && options.softcap.is_none(),
        "materialized attention: no causal mask or softcap"
    );
    let [b, heads, seq_q, d] = q.dims();
    let seq_kv = k.dims()[2];
    let dtype = crate::float_dtype(q.dtype());
    let scale = options.scale.unwrap_or(1.0 / (d as f64).sqrt());
    let per_head = (b * seq_q * seq_kv * 4).max(1);
    let group = (score_bytes / per_head).clamp(1, heads.max(1));
    let q = q.mul_scalar(scale);
    let mut outs = Vec::with_capacity(heads.div_ceil(group));
    for start in (0..heads).step_by(group) {
        let end = (start + group).min(heads);
        let heads_of = |t: &Tensor<B, 4>| {
            if end - start == heads {
                t.clone()
            } else {
                t.clone().narrow(1, start, end - start)
            }
        };
        let scores = heads_of(&q)
            .matmul(heads_of(&k).swap_dims(2, 3))
            .cast(FloatDType::F32);
        let scores = match &bias {
            Some(bias) if bias.dims()[1] == 1 => scores + bias.clone().cast(FloatDType::F32),
            Some(bias) => scores + heads_of(bias).cast(FloatDType::F32),
            None => scores,
        };
        let probs = softmax(scores, dtype);
        outs.push(probs.matmul(heads_of(&v)));
    }
    if outs.len() == 1 {
        outs.pop().expect("one group")
    } else {
        Tensor::cat(outs, 1)
    }
}
