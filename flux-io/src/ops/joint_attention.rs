//! FLUX's joint attention straight from its blocks' fused projections: on burn-flex f32 one
//! host op does the split into heads, the q/k norms, the concatenation of the streams, RoPE,
//! the attention and the merge of the heads (`kernels::joint_attention`).

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};

use crate::kernels::backend::runs_host_kernels;

/// One stream (text or image) of a joint attention: its fused projection and its q/k
/// RMSNorm scales.
pub struct QkvStream<B: Backend> {
    /// `[b, seq, width]`: q, k and v in the first `3 · heads · head_dim` columns, in the
    /// reference's `(K H D)` order.
    pub qkv: Tensor<B, 3>,
    /// `[head_dim]`.
    pub q_scale: Tensor<B, 1>,
    /// `[head_dim]`.
    pub k_scale: Tensor<B, 1>,
}

/// `softmax(q kᵀ / √head_dim) v` over the streams joined along the sequence (in order), with
/// q and k RMS-normed (eps 1e-6) by their stream's scales and rotated by the RoPE tables
/// `cos`, `sin` (`[1 or b, Σ seq, head_dim / 2]` flattened), heads merged. With `gelu_tail`,
/// each row's projection columns after q, k, v follow the attention through tanh-GELU (the
/// single block's `cat(attn, gelu(mlp))`).
///
/// Runs on burn-flex f32 only: elsewhere, or when the sizes do not fit together, the streams
/// come back unchanged as `Err`, for the caller's tensor-op formulation.
///
/// # Shapes
/// - each `qkv`: `[b, seq_i, width]` (the same `width` for all with `gelu_tail`)
/// - returns `[b, Σ seq_i, heads · head_dim (+ width − 3 · heads · head_dim)]`
pub fn joint_attention_on_host<B: Backend>(
    streams: Vec<QkvStream<B>>,
    heads: usize,
    cos: &[f32],
    sin: &[f32],
    gelu_tail: bool,
) -> Result<Tensor<B, 3>, Vec<QkvStream<B>>> {
    #[cfg(any(feature = "flex", feature = "ndarray"))]
    if let Some(shape) = host_shape(&streams, heads, cos, sin, gelu_tail) {
        return Ok(run(streams, shape, cos, sin, gelu_tail));
    }
    let _ = (heads, cos, sin, gelu_tail);
    Err(streams)
}

/// (batch, heads, head_dim, joint sequence, output width) when the host kernel takes these
/// streams.
#[cfg_attr(not(any(feature = "flex", feature = "ndarray")), allow(dead_code))]
fn host_shape<B: Backend>(
    streams: &[QkvStream<B>],
    heads: usize,
    cos: &[f32],
    sin: &[f32],
    gelu_tail: bool,
) -> Option<[usize; 5]> {
    let first = streams.first()?;
    let [b, _, width] = first.qkv.dims();
    let [d] = first.q_scale.dims();
    let hidden = heads * d;
    let seq: usize = streams.iter().map(|s| s.qkv.dims()[1]).sum();
    let fits = |s: &QkvStream<B>| {
        let [sb, _, sw] = s.qkv.dims();
        runs_host_kernels(&s.qkv)
            && s.q_scale.dtype() == DType::F32
            && s.k_scale.dtype() == DType::F32
            && s.q_scale.dims() == [d]
            && s.k_scale.dims() == [d]
            && sb == b
            && sw >= 3 * hidden
            && (!gelu_tail || sw == width)
    };
    let table = seq * d / 2;
    let tables_fit =
        table > 0 && (cos.len() == table || cos.len() == b * table) && sin.len() == cos.len();
    let out_width = if gelu_tail {
        width - 2 * hidden
    } else {
        hidden
    };
    (heads > 0 && d % 2 == 0 && tables_fit && streams.iter().all(fits))
        .then_some([b, heads, d, seq, out_width])
}

#[cfg(any(feature = "flex", feature = "ndarray"))]
fn run<B: Backend>(
    streams: Vec<QkvStream<B>>,
    [b, heads, d, seq, out_width]: [usize; 5],
    cos: &[f32],
    sin: &[f32],
    gelu_tail: bool,
) -> Tensor<B, 3> {
    use burn::tensor::TensorData;

    use crate::kernels::backend::host_threads;
    use crate::kernels::joint_attention::{Layout, Stream, joint_attention};

    let device = streams[0].qkv.device();
    let host = |t: Tensor<B, 1>| t.into_data().to_vec::<f32>().expect("f32 on the host");
    // Each stream's values and scales on the host, then borrowed as the kernel's views.
    let held: Vec<(TensorData, [usize; 2], [Vec<f32>; 2])> = streams
        .into_iter()
        .map(|s| {
            let [_, seq, width] = s.qkv.dims();
            let scales = [host(s.q_scale), host(s.k_scale)];
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
    let layout = Layout {
        batch: b,
        heads,
        head_dim: d,
        cos,
        sin,
        gelu_tail,
    };
    let out = joint_attention(&views, &layout, host_threads::<B>());
    let data = TensorData::new(out, [b, seq, out_width]);
    Tensor::from_data(data, (&device, DType::F32))
}
