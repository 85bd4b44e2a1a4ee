//! Joint attention with rotary embeddings, on burn's `module::attention` (fused on the cubecl
//! backends: no mask, no bias, default scale).

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use burn::tensor::module::attention as sdpa;
use burn::tensor::ops::AttentionModuleOptions;

use crate::norm::QkNorm;
use crate::rope::{RopeTable, apply_rope};

/// RoPE on `q` and `k`, scaled dot-product attention, heads merged (BFL `attention`).
///
/// # Shapes
/// - q, k, v: `[b, heads, seq, head_dim]`
/// - returns `[b, seq, heads * head_dim]`
pub fn attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    pe: &RopeTable<B>,
) -> Tensor<B, 3> {
    let [b, h, seq, d] = q.dims();
    let (q, k) = (apply_rope(q, pe), apply_rope(k, pe));
    let x = sdpa(q, k, v, None, None, AttentionModuleOptions::default());
    x.swap_dims(1, 2).reshape([b, seq, h * d])
}

/// Splits a fused `[b, seq, 3 * heads * head_dim]` projection into q, k, v of
/// `[b, heads, seq, head_dim]` each (the reference's `B L (K H D) -> K B H L D`).
pub fn split_qkv<B: Backend>(
    qkv: Tensor<B, 3>,
    heads: usize,
) -> (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>) {
    let [b, seq, width] = qkv.dims();
    let d = width / (3 * heads);
    let qkv = qkv.reshape([b, seq, 3, heads, d]).permute([2, 0, 3, 1, 4]);
    let part = |i: usize| qkv.clone().narrow(0, i, 1).squeeze_dim::<4>(0);
    (part(0), part(1), part(2))
}

/// The attention weights of one stream of a double block (BFL `SelfAttention`): fused qkv
/// projection, per-head q/k RMSNorm, output projection.
#[derive(Module, Debug)]
pub struct SelfAttention<B: Backend> {
    /// `hidden -> 3 * hidden`.
    pub qkv: Linear<B>,
    /// q/k norms of width `head_dim`.
    pub norm: QkNorm<B>,
    /// `hidden -> hidden`.
    pub proj: Linear<B>,
}

impl<B: Backend> SelfAttention<B> {
    /// Weights for `hidden` channels in `heads` heads.
    pub fn new(hidden: usize, heads: usize, qkv_bias: bool, device: &B::Device) -> Self {
        Self {
            qkv: LinearConfig::new(hidden, 3 * hidden)
                .with_bias(qkv_bias)
                .init(device),
            norm: QkNorm::new(hidden / heads, device),
            proj: LinearConfig::new(hidden, hidden).init(device),
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
