//! Joint attention with rotary embeddings, on burn's `module::attention` (fused on the cubecl
//! backends: no mask, no bias, default scale).

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::module::attention as sdpa;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{DType, FloatDType, Tensor, TensorData};

use crate::host_kernels::{self, map_host_f32, softmax_rows_unnormalised};
use crate::norm::QkNorm;
use crate::rope::{RopeTable, apply_rope};
use crate::threads::host_threads;

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
    let (q, k) = (apply_rope(q, pe), apply_rope(k, pe));
    merge_heads(sdpa_heads(q, k, v))
}

/// `module::attention` over all heads. On burn-flex, f32 attention runs as two burn matmuls
/// around a vectorised softmax ([`host_sdpa`]); on burn-ndarray (where it measured slower: its
/// data round trips copy) and for half dtypes, the heads are split into groups run on their
/// own threads (burn's CPU attention kernels run one head at a time).
fn sdpa_heads<B: Backend>(q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>) -> Tensor<B, 4> {
    let run = |q, k, v| sdpa(q, k, v, None, None, AttentionModuleOptions::default());
    let heads = q.dims()[1];
    let threads = host_threads::<B>(&q.device());
    if host_kernels::applies(&q) {
        return host_sdpa(q, k, v, threads);
    }
    let groups = threads.min(heads);
    if groups <= 1 {
        return run(q, k, v);
    }
    let ranges: Vec<(usize, usize)> = (0..groups)
        .map(|g| (g * heads / groups, (g + 1) * heads / groups))
        .collect();
    let part =
        |t: &Tensor<B, 4>, (start, end): (usize, usize)| t.clone().narrow(1, start, end - start);
    std::thread::scope(|scope| {
        let handles: Vec<_> = ranges[1..]
            .iter()
            .map(|&r| {
                let (q, k, v) = (part(&q, r), part(&k, r), part(&v, r));
                scope.spawn(move || run(q, k, v))
            })
            .collect();
        let mut outs = vec![run(
            part(&q, ranges[0]),
            part(&k, ranges[0]),
            part(&v, ranges[0]),
        )];
        for handle in handles {
            outs.push(
                handle
                    .join()
                    .unwrap_or_else(|e| std::panic::resume_unwind(e)),
            );
        }
        Tensor::cat(outs, 1)
    })
}

/// Scaled dot-product attention with scores and softmax in f32 whatever the dtype of q, k,
/// v (casts are no-ops for f32); the result has q's dtype. For half-precision models whose
/// attention is a small share of the work (the VAE's mid block, CLIP).
///
/// # Shapes
/// - q: `[b, heads, seq_q, d]`, k and v: `[b, heads, seq_kv, d]` -> `[b, heads, seq_q, d]`
pub fn attention_in_f32<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    options: AttentionModuleOptions,
) -> Tensor<B, 4> {
    let dtype = q.dtype();
    let f32 = |t: Tensor<B, 4>| t.cast(FloatDType::F32);
    sdpa(f32(q), f32(k), f32(v), None, None, options).cast(dtype)
}

/// Most score elements materialised at once by [`host_sdpa`] (4 MB of f32, ~100 query rows of
/// all heads at `small`): chunks that stay in cache and reuse their allocation. Measured at
/// `small` on 2 cores, 3 alternating runs each: 1.05-1.14 s per step at 1 M elements,
/// 1.18-1.24 s at 256 K, 1.17-1.29 s at 4 M, against 1.20-1.34 s for burn-flex's flash kernel
/// on head-group threads in the same runs; whole score matrices (16 M) took 1.23-1.63 s in an
/// earlier set (page faults on every fresh 52 MB buffer).
const SCORE_BUDGET: usize = 1 << 20;

/// Softmax attention on a host backend: `scores = q k^T` (burn's matmul, on its thread pool),
/// an unnormalised softmax of each row in place on `threads` threads with a vectorised `exp`
/// ([`crate::host_kernels`]), `p v` (matmul), then each row divided by its softmax sum.
/// Query rows are processed in chunks so the scores stay under [`SCORE_BUDGET`].
///
/// # Shapes
/// - q: `[b, heads, seq_q, d]`, k and v: `[b, heads, seq_kv, d]` -> `[b, heads, seq_q, d]`
fn host_sdpa<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    threads: usize,
) -> Tensor<B, 4> {
    let [b, heads, seq_q, d] = q.dims();
    let seq_kv = k.dims()[2];
    let device = q.device();
    let scale = (d as f32).powf(-0.5);
    let kt = k.swap_dims(2, 3);
    let rows = (SCORE_BUDGET / (b * heads * seq_kv).max(1)).clamp(1, seq_q.max(1));
    let chunks: Vec<Tensor<B, 4>> = (0..seq_q)
        .step_by(rows)
        .map(|start| {
            let n = rows.min(seq_q - start);
            let scores = q.clone().narrow(2, start, n).matmul(kt.clone());
            let (p, inv) = map_host_f32(scores, seq_kv, threads, |s| {
                softmax_rows_unnormalised(s, seq_kv, scale)
            });
            let inv = TensorData::new(inv.concat(), [b, heads, n, 1]);
            p.matmul(v.clone()) * Tensor::from_data(inv, (&device, DType::F32))
        })
        .collect();
    Tensor::cat(chunks, 2)
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
pub fn split_qkv<B: Backend>(
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
