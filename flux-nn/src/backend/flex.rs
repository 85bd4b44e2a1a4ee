//! burn-flex: every fused operation on f32 tensors runs the host kernels of `flux-kernels`,
//! split over the host threads (burn-flex hands a tensor's buffer to the host and back
//! without a copy); other dtypes take the portable forms.

use burn::backend::Flex;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{DType, FloatDType, Tensor, TensorData};
use flux_kernels::activation::{gelu_tanh_in_place, quick_gelu_in_place};
use flux_kernels::joint_attention::{Layout, Stream, joint_attention};
use flux_kernels::norm::{layer_norm_modulate_rows, rms_norm_rows};
use flux_kernels::rope::rotate_pairs_rows;
use flux_kernels::softmax::{causal_softmax_rows_unnormalised, softmax_rows_unnormalised};

use super::FluxBackend;
use super::host::{self, head_groups, host_threads, host_values, map_rows};
use crate::ops::{self, QkvStream, Rope};
use crate::packed::Packed;

type B = Flex;

impl FluxBackend for Flex {
    fn runs_on_host() -> bool {
        true
    }

    fn dot_product_attention(
        q: Tensor<B, 4>,
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
        bias: Option<Tensor<B, 4>>,
        options: AttentionModuleOptions,
    ) -> Tensor<B, 4> {
        if q.dtype() == DType::F32 && options.softcap.is_none() {
            return host_attention(q, k, v, bias, options);
        }
        head_groups(q, k, v, bias, options)
    }

    fn joint_attention(streams: Vec<QkvStream<B>>, heads: usize, rope: &Rope<B>) -> Tensor<B, 3> {
        match host_shape(&streams, heads, rope, false) {
            Some(shape) => joint_on_host(streams, shape, rope, false),
            None => ops::joint_attention(streams, heads, rope),
        }
    }

    fn attention_and_gelu(fused: QkvStream<B>, heads: usize, rope: &Rope<B>) -> Tensor<B, 3> {
        let streams = vec![fused];
        match host_shape(&streams, heads, rope, true) {
            Some(shape) => joint_on_host(streams, shape, rope, true),
            None => {
                let [fused] = <[QkvStream<B>; 1]>::try_from(streams).expect("one stream");
                ops::attention_and_gelu(fused, heads, rope)
            }
        }
    }

    fn rotate_pairs(x: Tensor<B, 4>, rope: &Rope<B>) -> Tensor<B, 4> {
        let [b, heads, seq, d] = x.dims();
        let [tb, tseq, half] = rope.dims();
        if x.dtype() != DType::F32 || tb != b || tseq != seq || 2 * half != d {
            return ops::rotate_pairs(x, rope);
        }
        let (cos, sin) = rope.host_tables();
        let per_head = seq * d;
        map_rows(x, per_head, |first, rows| {
            for (i, head) in rows.chunks_exact_mut(per_head).enumerate() {
                let batch = (first + i) / heads;
                let span = batch * per_head / 2..(batch + 1) * per_head / 2;
                rotate_pairs_rows(head, &cos[span.clone()], &sin[span]);
            }
        })
        .0
    }

    fn layer_norm_modulate(
        x: Tensor<B, 3>,
        scale: Tensor<B, 3>,
        shift: Tensor<B, 3>,
        eps: f64,
    ) -> Tensor<B, 3> {
        let [b, seq, dim] = x.dims();
        let vectors_fit = scale.dims() == [b, 1, dim] && shift.dims() == [b, 1, dim];
        if x.dtype() != DType::F32 || !vectors_fit || scale.dtype() != DType::F32 {
            return ops::layer_norm_modulate(x, scale, shift, eps);
        }
        let scale1p = host_values(scale + 1.0);
        let shift = host_values(shift);
        map_rows(x, dim, |first, rows| {
            layer_norm_modulate_rows(rows, dim, first, seq, eps as f32, &scale1p, &shift)
        })
        .0
    }

    fn rms_norm<const D: usize>(x: Tensor<B, D>, scale: Tensor<B, 1>, eps: f64) -> Tensor<B, D> {
        let dim = x.dims()[D - 1];
        if x.dtype() != DType::F32 || scale.dtype() != DType::F32 || scale.dims() != [dim] {
            return ops::rms_norm(x, scale, eps);
        }
        let scale = host_values(scale);
        map_rows(x, dim, |_, rows| rms_norm_rows(rows, eps as f32, &scale)).0
    }

    fn gelu_tanh<const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
        if x.dtype() != DType::F32 {
            return ops::gelu_tanh(x);
        }
        let unit = x.dims()[D - 1];
        map_rows(x, unit, |_, v| gelu_tanh_in_place(v)).0
    }

    fn quick_gelu<const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
        if x.dtype() != DType::F32 {
            return ops::quick_gelu(x);
        }
        let unit = x.dims()[D - 1];
        map_rows(x, unit, |_, v| quick_gelu_in_place(v)).0
    }

    fn packed_matmul(x: Tensor<B, 2>, packed: &Packed<B>, dtype: FloatDType) -> Tensor<B, 2> {
        host::packed_product(x, packed, dtype)
    }

    fn dequantize_packed(packed: &Packed<B>) -> Tensor<B, 2> {
        host::dequantize(packed, false)
    }
}

/// Most score elements materialised at once by [`host_attention`] (4 MB of f32, ~100 query
/// rows of all heads at `small`): chunks that stay in cache and reuse their allocation
/// (chunk sizes measured against each other in docs/performance.md).
pub(crate) const SCORE_BUDGET: usize = 1 << 20;

/// Softmax attention on the host: `scores = q kᵀ` (burn's matmul, on its thread pool), the bias
/// added, an unnormalised softmax of each row in place on the host threads with a vectorised
/// `exp`, `p v` (matmul), then each row divided by its softmax sum. Query rows are processed in
/// chunks so the scores stay under [`SCORE_BUDGET`].
fn host_attention(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    bias: Option<Tensor<B, 4>>,
    options: AttentionModuleOptions,
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
            let (p, inv) = map_rows(scores, seq_kv, |first, s| {
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

/// (batch, heads, head_dim, joint sequence, output width) when the host kernel takes these
/// streams: f32 projections and scales of one batch size, q, k and v within each stream's
/// columns (with `gelu_tail`, one stream), tables for the joint sequence.
fn host_shape(
    streams: &[QkvStream<B>],
    heads: usize,
    rope: &Rope<B>,
    gelu_tail: bool,
) -> Option<[usize; 5]> {
    let first = streams.first()?;
    let [b, _, width] = first.qkv.dims();
    let d = first.head_dim();
    let hidden = heads * d;
    let seq: usize = streams.iter().map(|s| s.qkv.dims()[1]).sum();
    let fits = |s: &QkvStream<B>| {
        let [sb, _, sw] = s.qkv.dims();
        s.qkv.dtype() == DType::F32
            && s.q_scale.dtype() == DType::F32
            && s.k_scale.dtype() == DType::F32
            && s.q_scale.dims() == [d]
            && s.k_scale.dims() == [d]
            && sb == b
            && sw >= 3 * hidden
            && (!gelu_tail || sw == width)
    };
    let [tb, tseq, half] = rope.dims();
    let tables_fit = tseq == seq && 2 * half == d && (tb == 1 || tb == b) && seq > 0;
    let out_width = if gelu_tail {
        width - 2 * hidden
    } else {
        hidden
    };
    (heads > 0 && d % 2 == 0 && tables_fit && streams.iter().all(fits))
        .then_some([b, heads, d, seq, out_width])
}

/// The joint attention (and the GELU tail) as one host op: the projections and scales read to
/// the host, `flux_kernels::joint_attention` on the host threads, the merged heads put back.
fn joint_on_host(
    streams: Vec<QkvStream<B>>,
    [b, heads, d, seq, out_width]: [usize; 5],
    rope: &Rope<B>,
    gelu_tail: bool,
) -> Tensor<B, 3> {
    let device = streams[0].qkv.device();
    // Each stream's values and scales on the host, then borrowed as the kernel's views.
    let held: Vec<(TensorData, [usize; 2], [Vec<f32>; 2])> = streams
        .into_iter()
        .map(|s| {
            let [_, seq, width] = s.qkv.dims();
            let scales = [host_values(s.q_scale), host_values(s.k_scale)];
            (s.qkv.into_data(), [seq, width], scales)
        })
        .collect();
    let views: Vec<Stream> = held
        .iter()
        .map(|(data, [seq, width], [q_scale, k_scale])| Stream {
            values: data.as_slice::<f32>().expect("f32 on the host"),
            seq: *seq,
            width: *width,
            q_scale,
            k_scale,
        })
        .collect();
    let (cos, sin) = rope.host_tables();
    let layout = Layout {
        batch: b,
        heads,
        head_dim: d,
        cos,
        sin,
        gelu_tail,
    };
    let out = joint_attention(&views, &layout, host_threads());
    Tensor::from_data(
        TensorData::new(out, [b, seq, out_width]),
        (&device, DType::F32),
    )
}
