//! What the CPU backends' overrides share: tensors' values on the host for `flux-kernels`, the
//! host threads, attention split into head groups, and quantized products from the packed
//! form.

use burn::tensor::backend::Backend;
use burn::tensor::module::attention as burn_attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{DType, Tensor, TensorData};
use flux_kernels::parallel::for_each_part;

use crate::packed::Packed;

/// Threads to split host-side work over: the size of the CPU backends' rayon pool
/// (`RAYON_NUM_THREADS` when set, else the available parallelism).
pub(crate) fn host_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1)
}

/// Runs `f` on the f32 values of `x` on the host, split into up to [`host_threads`] parts of
/// whole `unit`-long rows, and puts the values back on `x`'s device (on burn-flex the buffer
/// moves out of the tensor and back without a copy). `f` gets the index of its part's first
/// row and the part. Returns the new tensor and each part's result, in order.
///
/// # Panics
/// If `x` is not f32.
pub(crate) fn map_rows<B: Backend, const D: usize, R: Send>(
    x: Tensor<B, D>,
    unit: usize,
    f: impl Fn(usize, &mut [f32]) -> R + Sync,
) -> (Tensor<B, D>, Vec<R>) {
    let device = x.device();
    let mut data = x.into_data();
    let values = data
        .as_mut_slice::<f32>()
        .expect("host kernels take f32 tensors");
    let results = for_each_part(values, unit, host_threads(), f);
    (Tensor::from_data(data, (&device, DType::F32)), results)
}

/// A small f32 tensor's values on the host.
pub(crate) fn host_values<B: Backend, const D: usize>(x: Tensor<B, D>) -> Vec<f32> {
    x.into_data()
        .to_vec::<f32>()
        .expect("f32 tensor on a host backend")
}

/// burn's attention over groups of heads, each group on its own host thread (burn's CPU
/// attention runs one head after another).
pub(crate) fn head_groups<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    bias: Option<Tensor<B, 4>>,
    options: AttentionModuleOptions,
) -> Tensor<B, 4> {
    let run = |q, k, v, bias| burn_attention(q, k, v, None, bias, options);
    let heads = q.dims()[1];
    let groups = host_threads().min(heads);
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

/// Input rows up to which [`packed_matmul`] dots decoded weight rows with the inputs (above
/// it, tiles and `gemm`).
pub(crate) const FEW_ROWS: usize = 8;

/// `x Wᵀ` computed from the packed form on the host threads, without a whole f32 copy of `W`:
/// at most [`FEW_ROWS`] input rows (the modulation layers' one vector per image, any dtype)
/// by dotting each decoded weight row with them; more f32 rows by dequantizing tiles of weight
/// rows into per-thread buffers that `gemm` multiplies while they are in cache. `None` for
/// many half-precision rows (the caller dequantizes and multiplies).
///
/// # Shapes
/// - x: `[m, cols]` -> `[m, rows]` (f32)
pub(crate) fn packed_matmul<B: Backend>(
    x: &Tensor<B, 2>,
    packed: &Packed<B>,
) -> Option<Tensor<B, 2>> {
    let [m, _] = x.dims();
    let few = m <= FEW_ROWS;
    if !few && x.dtype() != DType::F32 {
        return None;
    }
    let parts = packed.host_parts();
    let values: Vec<f32> = x
        .clone()
        .into_data()
        .convert::<f32>()
        .into_vec()
        .expect("f32 after convert");
    let host = parts.view();
    let y = if few {
        host.matmul_few(&values, m, host_threads())
    } else {
        host.matmul(&values, m, host_threads())
    };
    Some(Tensor::from_data(
        TensorData::new(y, [m, host.rows]),
        (&x.device(), DType::F32),
    ))
}

/// A packed weight dequantized on the host threads, `[rows, cols]` in f32, or `[cols, rows]`
/// when `transposed` (burn's `[in, out]`, written so by the threads: the matmul then gets the
/// same contiguous layout as a dense layer).
pub(crate) fn dequantize<B: Backend>(packed: &Packed<B>, transposed: bool) -> Tensor<B, 2> {
    let device = packed.device();
    let parts = packed.host_parts();
    let host = parts.view();
    let (values, shape) = if transposed {
        (
            host.dequantize_transposed(host_threads()),
            [host.cols, host.rows],
        )
    } else {
        (host.dequantize(host_threads()), [host.rows, host.cols])
    };
    Tensor::from_data(TensorData::new(values, shape), (&device, DType::F32))
}

/// [`crate::FluxBackend::packed_matmul`] on a CPU backend: from the packed form where
/// [`packed_matmul`] takes it, else the weight dequantized transposed on the host and one
/// matmul.
pub(crate) fn packed_product<B: Backend>(
    x: Tensor<B, 2>,
    packed: &Packed<B>,
    dtype: burn::tensor::FloatDType,
) -> Tensor<B, 2> {
    if let Some(y) = packed_matmul(&x, packed) {
        return y.cast(dtype);
    }
    let weight = dequantize(packed, true).cast(dtype);
    x.cast(dtype).matmul(weight)
}
