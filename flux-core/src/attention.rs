//! Joint attention with rotary embeddings, through the workspace's one attention op
//! (`flux_io::ops::attention`: burn's fused kernel on the cubecl backends — no mask, no bias,
//! default scale — and the vectorised host kernel on burn-flex).

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use flux_io::nn::Linear;
use flux_io::ops;

use crate::norm::QkNorm;
use crate::rope::{RopeTable, apply_rope};

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

    /// Projects `x` to normed q, k and v.
    ///
    /// # Shapes
    /// - x: `[b, seq, hidden]` -> three `[b, heads, seq, head_dim]`
    pub fn qkv(&self, x: Tensor<B, 3>, heads: usize) -> (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>) {
        let (q, k, v) = split_qkv(self.qkv.forward(x), heads);
        let (q, k) = self.norm.forward(q, k);
        (q, k, v)
    }
}
