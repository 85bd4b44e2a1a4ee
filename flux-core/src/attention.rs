//! Joint attention with rotary embeddings: on burn-flex f32 one host op from the blocks'
//! fused projections to the merged heads (`flux_io::ops::joint_attention_on_host`), elsewhere
//! the heads split, normed, rotated and joined with tensor ops around the workspace's one
//! attention op (`flux_io::ops::attention`: burn's fused kernel on the cubecl backends — no
//! mask, no bias, default scale).

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use flux_io::nn::Linear;
use flux_io::ops;

use crate::norm::QkNorm;
use crate::rope::{RopeTable, apply_rope};

/// The double block's joint attention from each stream's fused projection (text first):
/// the host op where it runs ([`attention_on_host`]), else [`attention_with_ops`].
///
/// # Shapes
/// - streams: `[b, seq_i, 3 * hidden]` each
/// - returns `[b, Σ seq_i, hidden]`
pub(crate) fn joint_attention<B: Backend>(
    streams: Vec<(Tensor<B, 3>, &QkNorm<B>)>,
    heads: usize,
    pe: &RopeTable<B>,
) -> Tensor<B, 3> {
    let norms: Vec<&QkNorm<B>> = streams.iter().map(|(_, norm)| *norm).collect();
    attention_on_host(streams, heads, pe, false).unwrap_or_else(|projections| {
        attention_with_ops(projections.into_iter().zip(norms).collect(), heads, pe)
    })
}

/// [`joint_attention`] with tensor ops: each stream split into heads, q/k RMSNorm with the
/// stream's own norm, the streams joined along the sequence, then [`attention`].
///
/// # Shapes
/// - streams: `[b, seq_i, 3 * hidden]` each
/// - returns `[b, Σ seq_i, hidden]`
pub(crate) fn attention_with_ops<B: Backend>(
    streams: Vec<(Tensor<B, 3>, &QkNorm<B>)>,
    heads: usize,
    pe: &RopeTable<B>,
) -> Tensor<B, 3> {
    let split: Vec<_> = streams
        .into_iter()
        .map(|(qkv, norm)| {
            let (q, k, v) = split_qkv(qkv, heads);
            let (q, k) = norm.forward(q, k);
            (q, (k, v))
        })
        .collect();
    let (q, (k, v)): (Vec<_>, (Vec<_>, Vec<_>)) = split.into_iter().unzip();
    attention(Tensor::cat(q, 2), Tensor::cat(k, 2), Tensor::cat(v, 2), pe)
}

/// [`joint_attention`] as one host op on burn-flex f32 (`gelu_tail`: each projection row's
/// columns after q, k, v follow the attention through tanh-GELU); the projections come back
/// as `Err` elsewhere.
///
/// # Shapes
/// - streams: `[b, seq_i, width]` each, q, k, v in the first `3 * hidden` columns
/// - returns `[b, Σ seq_i, hidden (+ width - 3 * hidden)]`
pub(crate) fn attention_on_host<B: Backend>(
    streams: Vec<(Tensor<B, 3>, &QkNorm<B>)>,
    heads: usize,
    pe: &RopeTable<B>,
    gelu_tail: bool,
) -> Result<Tensor<B, 3>, Vec<Tensor<B, 3>>> {
    let streams = streams
        .into_iter()
        .map(|(qkv, norm)| ops::QkvStream {
            qkv,
            q_scale: norm.query_norm.scale.val(),
            k_scale: norm.key_norm.scale.val(),
        })
        .collect();
    let (cos, sin) = pe.host_tables();
    ops::joint_attention_on_host(streams, heads, cos, sin, gelu_tail)
        .map_err(|streams| streams.into_iter().map(|s| s.qkv).collect())
}

/// RoPE on `q` and `k`, scaled dot-product attention, heads merged (BFL `attention`).
///
/// # Shapes
/// - q, k, v: `[b, heads, seq, head_dim]`
/// - returns `[b, seq, heads * head_dim]`
pub(crate) fn attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    pe: &RopeTable<B>,
) -> Tensor<B, 3> {
    let (q, k) = (apply_rope(q, pe), apply_rope(k, pe));
    merge_heads(ops::attention(q, k, v, None, Default::default()))
}

/// `[b, heads, seq, head_dim]` -> `[b, seq, heads * head_dim]`, one head-sized block at a time
/// (a plain copy per head instead of a strided 4-D transpose).
fn merge_heads<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 3> {
    let [b, heads, seq, d] = x.dims();
    let head = |i: usize| x.clone().narrow(1, i, 1).reshape([b, seq, d]);
    Tensor::cat((0..heads).map(head).collect(), 2)
}

/// Splits a fused `[b, seq, 3 * heads * head_dim]` projection into q, k, v of
/// `[b, heads, seq, head_dim]` each (the reference's `B L (K H D) -> K B H L D`), contiguous.
pub(crate) fn split_qkv<B: Backend>(
    qkv: Tensor<B, 3>,
    heads: usize,
) -> (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>) {
    let [_, _, width] = qkv.dims();
    let d = width / (3 * heads);
    // One [b, seq, head_dim] column block per head, stacked on a new head axis: plain 2-D
    // copies, where a permute would make the backends walk a strided 5-D view.
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

/// The attention weights of one stream of a double block (BFL `SelfAttention`): fused qkv
/// projection, per-head q/k RMSNorm, output projection.
#[derive(Module, Debug)]
pub struct SelfAttention<B: Backend> {
    /// `hidden -> 3 * hidden`.
    pub(crate) qkv: Linear<B>,
    /// q/k norms of width `head_dim`.
    pub(crate) norm: QkNorm<B>,
    /// `hidden -> hidden`.
    pub(crate) proj: Linear<B>,
}

impl<B: Backend> SelfAttention<B> {
    /// Weights for `hidden` channels in `heads` heads.
    pub fn new(hidden: usize, heads: usize, qkv_bias: bool, device: &B::Device) -> Self {
        Self {
            qkv: Linear::new(hidden, 3 * hidden, qkv_bias, device),
            norm: QkNorm::new(hidden / heads, device),
            proj: Linear::new(hidden, hidden, true, device),
        }
    }

    /// The fused projection of `x`, with the norm of its q and k (for [`joint_attention`]).
    ///
    /// # Shapes
    /// - x: `[b, seq, hidden]` -> `[b, seq, 3 * hidden]`
    pub fn qkv(&self, x: Tensor<B, 3>) -> (Tensor<B, 3>, &QkNorm<B>) {
        (self.qkv.forward(x), &self.norm)
    }
}
