//! Scaled dot-product attention: the one entry point every model of the workspace calls
//! (the transformer's joint attention, T5 with its position bias, CLIP causal, the VAE's
//! mid-block), so that a backend's fast path serves all of them.

use burn::tensor::backend::Backend;
use burn::tensor::module::attention as burn_attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{DType, FloatDType, Tensor, TensorData};

use crate::kernels::backend::{host_threads, runs_host_kernels};
use crate::kernels::host::{
    causal_softmax_rows_unnormalised, map_host_f32, softmax_rows_unnormalised,
};

/// `softmax(scale · q kᵀ + bias) v`, per batch and head, in the inputs' dtype.
///
/// `options.scale` defaults to `head_dim^-0.5`; `options.is_causal` masks keys after each
/// query (query `i` sees keys `0..=i`). Which kernel runs is chosen by backend type:
/// - burn-flex, f32: `q kᵀ` and `p v` as burn matmuls around a vectorised softmax on the host
///   threads, query rows in chunks of at most [`SCORE_BUDGET`] scores;
/// - other CPU backends and dtypes: burn's kernel, heads split into groups on the host threads
///   (burn's CPU attention runs one head after another);
/// - GPU backends: burn's kernel (fused when there is no bias and the scale is the default).
///
/// # Shapes
/// - q: `[b, heads, seq_q, d]`, k and v: `[b, heads, seq_kv, d]`
/// - bias: `[b or 1, heads, seq_q, seq_kv]`
/// - returns `[b, heads, seq_q, d]`
pub fn attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    bias: Option<Tensor<B, 4>>,
    options: AttentionModuleOptions,
) -> Tensor<B, 4> {
    let threads = host_threads::<B>();
    if runs_host_kernels(&q) && options.softcap.is_none() {
        return host_attention(q, k, v, bias, options, threads);
    }
    head_groups(q, k, v, bias, options, threads)
}

/// [`attention`] with q, k, v and the bias in f32 whatever their dtype; the result has q's
/// dtype (the casts are no-ops for f32). For half-precision models whose attention is a small
/// share of the work and sensitive to rounding (CLIP, the VAE's mid block).
///
/// # Shapes
/// As [`attention`].
pub fn attention_f32<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    bias: Option<Tensor<B, 4>>,
    options: AttentionModuleOptions,
) -> Tensor<B, 4> {
    let dtype = q.dtype();
    let f32 = |t: Tensor<B, 4>| t.cast(FloatDType::F32);
    attention(f32(q), f32(k), f32(v), bias.map(f32), options).cast(dtype)
}

/// burn's attention over groups of heads, each group on its own host thread (one group, on
/// the caller's thread, when `threads` is 1).
fn head_groups<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    bias: Option<Tensor<B, 4>>,
    options: AttentionModuleOptions,
    threads: usize,
) -> Tensor<B, 4> {
    let run = |q, k, v, bias| burn_attention(q, k, v, None, bias, options);
    let heads = q.dims()[1];
    let groups = threads.min(heads);
    if groups <= 1 {
        return run(q, k, v, bias);
    }
    let part = |t: &Tensor<B, 4>, (start, end): (usize, usize)| {
        if t.dims()[1] == 1 {
            t.clone()
        } else {
            t.clone().narrow(1, start, end - start)
        }
    };
    let ranges: Vec<(usize, usize)> = (0..groups)
        .map(|g| (g * heads / groups, (g + 1) * heads / groups))
        .collect();
    let args = |r| {
        let b = bias.as_ref().map(|b| part(b, r));
        (part(&q, r), part(&k, r), part(&v, r), b)
    };
    std::thread::scope(|scope| {
        let handles: Vec<_> = ranges[1..]
            .iter()
            .map(|&r| {
                let (q, k, v, b) = args(r);
                scope.spawn(move || run(q, k, v, b))
            })
            .collect();
        let (q0, k0, v0, b0) = args(ranges[0]);
        let mut outs = vec![run(q0, k0, v0, b0)];
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

/// Most score elements materialised at once by the host attention (4 MB of f32, ~100 query
/// rows of all heads at `small`): chunks that stay in cache and reuse their allocation
/// (chunk sizes measured against each other in docs/performance.md).
pub const SCORE_BUDGET: usize = 1 << 20;

/// Softmax attention on burn-flex f32: `scores = q kᵀ` (burn's matmul, on its thread pool),
/// the bias added, an unnormalised softmax of each row in place on `threads` threads with a
/// vectorised `exp`, `p v` (matmul), then each row divided by its softmax sum. Query rows are
/// processed in chunks so the scores stay under [`SCORE_BUDGET`].
fn host_attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    bias: Option<Tensor<B, 4>>,
    options: AttentionModuleOptions,
    threads: usize,
) -> Tensor<B, 4> {
    let [b, heads, seq_q, d] = q.dims();
    let seq_kv = k.dims()[2];
    let device = q.device();
    let scale = options.scale.unwrap_or(1.0 / (d as f64).sqrt()) as f32;
    let kt = k.swap_dims(2, 3);
    let rows = (SCORE_BUDGET / (b * heads * seq_kv).max(1)).clamp(1, seq_q.max(1));
    let chunks: Vec<Tensor<B, 4>> = (0..seq_q)
        .step_by(rows)
        .map(|start| {
            let n = rows.min(seq_q - start);
            let mut scores = q.clone().narrow(2, start, n).matmul(kt.clone());
            // With a bias the scale is applied first (softmax(scale·s + bias)); the softmax
            // then runs unscaled.
            let row_scale = match &bias {
                Some(bias) => {
                    scores = scores * scale + bias.clone().narrow(2, start, n);
                    1.0
                }
                None => scale,
            };
            let (p, inv) = map_host_f32(scores, seq_kv, threads, |first, s| {
                if options.is_causal {
                    causal_softmax_rows_unnormalised(s, seq_kv, row_scale, start, n, first)
                } else {
                    softmax_rows_unnormalised(s, seq_kv, row_scale)
                }
            });
            let inv = TensorData::new(inv.concat(), [b, heads, n, 1]);
            p.matmul(v.clone()) * Tensor::from_data(inv, (&device, DType::F32))
        })
        .collect();
    Tensor::cat(chunks, 2)
}
