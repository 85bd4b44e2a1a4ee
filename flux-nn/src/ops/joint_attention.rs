//! FLUX's joint attention from its blocks' fused projections, with tensor ops: each stream
//! split into heads, q/k RMS-normed with the stream's own scales, the streams joined, rotated
//! and attended, heads merged.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use super::Rope;
use crate::FluxBackend;

/// The RMSNorm epsilon of FLUX's q/k norms (BFL `QKNorm`).
pub(crate) const QK_NORM_EPS: f64 = 1e-6;

/// One stream (text or image) of a joint attention: its fused projection and its q/k
/// RMSNorm scales.
#[derive(Debug, Clone)]
pub struct QkvStream<B: Backend> {
    /// `[b, seq, width]`: q, k and v in the first `3 · heads · d` columns, in the reference's
    /// `(K H D)` order.
    pub qkv: Tensor<B, 3>,
    /// `[d]`: the q norm's scale.
    pub q_scale: Tensor<B, 1>,
    /// `[d]`: the k norm's scale.
    pub k_scale: Tensor<B, 1>,
}

impl<B: Backend> QkvStream<B> {
    /// The head dimension `d` (the norms' width).
    pub fn head_dim(&self) -> usize {
        self.q_scale.dims()[0]
    }
}

/// [`FluxBackend::joint_attention`] built from the backend's own attention, RMSNorm and
/// rotation.
pub(crate) fn joint_attention<B: FluxBackend>(
    streams: Vec<QkvStream<B>>,
    heads: usize,
    rope: &Rope<B>,
) -> Tensor<B, 3> {
    let mut qs = Vec::with_capacity(streams.len());
    let mut ks = Vec::with_capacity(streams.len());
    let mut vs = Vec::with_capacity(streams.len());
    for stream in streams {
        let d = stream.head_dim();
        let (q, k, v) = split_qkv(stream.qkv, heads, d);
        qs.push(B::rms_norm(q, stream.q_scale, QK_NORM_EPS));
        ks.push(B::rms_norm(k, stream.k_scale, QK_NORM_EPS));
        vs.push(v);
    }
    let q = B::rotate_pairs(Tensor::cat(qs, 2), rope);
    let k = B::rotate_pairs(Tensor::cat(ks, 2), rope);
    merge_heads(B::dot_product_attention(
        q,
        k,
        Tensor::cat(vs, 2),
        None,
        Default::default(),
    ))
}

/// [`FluxBackend::attention_and_gelu`] from [`FluxBackend::joint_attention`] and
/// [`FluxBackend::gelu_tanh`].
pub(crate) fn attention_and_gelu<B: FluxBackend>(
    fused: QkvStream<B>,
    heads: usize,
    rope: &Rope<B>,
) -> Tensor<B, 3> {
    let [_, _, width] = fused.qkv.dims();
    let qkv_width = 3 * heads * fused.head_dim();
    let mlp = contiguous(fused.qkv.clone().narrow(2, qkv_width, width - qkv_width));
    let qkv = QkvStream {
        qkv: fused.qkv.narrow(2, 0, qkv_width),
        ..fused
    };
    let attn = B::joint_attention(vec![qkv], heads, rope);
    Tensor::cat(vec![attn, B::gelu_tanh(mlp)], 2)
}

/// `[b, heads, seq, d]` -> `[b, seq, heads · d]`, one head-sized block at a time (a plain copy
/// per head instead of a strided 4-D transpose).
pub(crate) fn merge_heads<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 3> {
    let [b, heads, seq, d] = x.dims();
    let head = |i: usize| x.clone().narrow(1, i, 1).reshape([b, seq, d]);
    Tensor::cat((0..heads).map(head).collect(), 2)
}

/// Splits a fused `[b, seq, ≥ 3 · heads · d]` projection into q, k, v of `[b, heads, seq, d]`
/// each (the reference's `B L (K H D) -> K B H L D`), contiguous.
pub(crate) fn split_qkv<B: Backend>(
    qkv: Tensor<B, 3>,
    heads: usize,
    d: usize,
) -> (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>) {
    // One [b, seq, d] column block per head, stacked on a new head axis: plain 2-D copies,
    // where a permute would make the backends walk a strided 5-D view.
    let part = |i: usize| {
        let head = |h: usize| {
            qkv.clone()
                .narrow(2, (i * heads + h) * d, d)
                .unsqueeze_dim(1)
        };
        Tensor::cat((0..heads).map(head).collect(), 1)
    };
    (part(0), part(1), part(2))
}

/// A contiguous copy of a column slice: flattening cannot be a view of a strided tensor, so
/// every backend copies (a plain 2-D copy), and the elementwise ops that follow run on
/// contiguous memory.
fn contiguous<B: Backend>(x: Tensor<B, 3>) -> Tensor<B, 3> {
    let dims = x.dims();
    x.reshape([dims.iter().product::<usize>()]).reshape(dims)
}
