//! Launches of the fused kernels on burn tensors of a CubeCL backend (the `FluxBackend`
//! overrides of `super`).

use burn::tensor::{DType, Shape, Tensor, TensorPrimitive};
use burn_cubecl::CubeRuntime;
use burn_cubecl::cubecl::calculate_cube_count_elemwise;
use burn_cubecl::cubecl::prelude::*;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;

use super::Cube;
use super::kernels::{
    ROW_UNITS, gelu_tanh_kernel, layer_norm_modulate_kernel, qkv_heads_kernel, quick_gelu_kernel,
    rms_norm_kernel, softmax_rows_kernel,
};
use crate::ops::{QkvStream, Rope};

/// Rows of `d / 2` units a cube of [`qkv_heads_kernel`] holds (a cube of 256 units at d = 128).
const QKV_UNITS: usize = 256;

fn raw<B: Cube, const D: usize>(t: Tensor<B, D>) -> CubeTensor<B::Runtime> {
    t.into_primitive().tensor()
}

fn wrap<B: Cube, const D: usize>(t: CubeTensor<B::Runtime>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

/// An uninitialised contiguous tensor like `like`'s client, device and `dtype`.
fn empty<R: CubeRuntime>(like: &CubeTensor<R>, shape: &[usize], dtype: DType) -> CubeTensor<R> {
    empty_device_dtype(
        like.client.clone(),
        like.device.clone(),
        Shape::from(shape.to_vec()),
        dtype,
    )
}

/// An activation kernel (`gelu_tanh_kernel`, `quick_gelu_kernel`): `x` and the output.
type Activation<R> =
    fn(&ComputeClient<R>, CubeCount, CubeDim, TensorArg<R>, TensorArg<R>, StorageType);

/// `kernel` over a tensor of any shape (made contiguous first), one unit a value.
fn activation<B: Cube, const D: usize>(
    x: Tensor<B, D>,
    kernel: Activation<B::Runtime>,
) -> Tensor<B, D> {
    let dims = x.dims();
    let n: usize = dims.iter().product();
    if n == 0 {
        return x;
    }
    let x = into_contiguous(raw(x));
    let out = empty(&x, &dims, x.dtype);
    let client = x.client.clone();
    let cube_dim = CubeDim::new(&client, n);
    let count = calculate_cube_count_elemwise(&client, n, cube_dim);
    let dtype = x.dtype;
    kernel(
        &client,
        count,
        cube_dim,
        x.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        dtype.into(),
    );
    wrap(out)
}

/// [`gelu_tanh_kernel`] over a tensor of any shape.
pub(super) fn gelu_tanh<B: Cube, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    activation(x, |c, n, d, x, o, t| {
        gelu_tanh_kernel::launch::<B::Runtime>(c, n, d, x, o, t)
    })
}

/// [`quick_gelu_kernel`] over a tensor of any shape.
pub(super) fn quick_gelu<B: Cube, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    activation(x, |c, n, d, x, o, t| {
        quick_gelu_kernel::launch::<B::Runtime>(c, n, d, x, o, t)
    })
}

/// [`rms_norm_kernel`] over the last dimension of `x` (made contiguous first), `scale`
/// `[dim]`.
pub(super) fn rms_norm<B: Cube, const D: usize>(
    x: Tensor<B, D>,
    scale: Tensor<B, 1>,
    eps: f64,
) -> Tensor<B, D> {
    let dims = x.dims();
    let dim = dims[D - 1];
    let n: usize = dims.iter().product();
    if n == 0 || scale.dims()[0] != dim {
        // Nothing to launch, or a mismatch the portable form reports.
        return crate::ops::rms_norm(x, scale, eps);
    }
    let dtype = x.dtype();
    let scale = raw(scale.cast(crate::float_dtype(dtype)));
    let x = into_contiguous(raw(x));
    let out = empty(&x, &dims, dtype);
    let client = x.client.clone();
    let units = (dim / 8).next_power_of_two().clamp(32, ROW_UNITS as usize);
    let cube_dim = CubeDim::new_1d(units as u32);
    let count = calculate_cube_count_elemwise(&client, n / dim * units, cube_dim);
    rms_norm_kernel::launch::<B::Runtime>(
        &client,
        count,
        cube_dim,
        x.into_tensor_arg(),
        scale.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        eps as f32,
        dtype.into(),
    );
    wrap(out)
}

/// [`layer_norm_modulate_kernel`]: x `[b, seq, dim]`, scale and shift `[b or 1, 1, dim]`.
pub(super) fn layer_norm_modulate<B: Cube>(
    x: Tensor<B, 3>,
    scale: Tensor<B, 3>,
    shift: Tensor<B, 3>,
    eps: f64,
) -> Tensor<B, 3> {
    let [b, seq, dim] = x.dims();
    if b * seq * dim == 0 {
        return x;
    }
    let dtype = x.dtype();
    // The modulation in the activations' dtype, broadcast over the batch where shared.
    let per_batch = |t: Tensor<B, 3>| {
        let t = t.cast(crate::float_dtype(dtype));
        if t.dims()[0] == b {
            t
        } else {
            t.expand([b, 1, dim])
        }
    };
    let (scale, shift) = (raw(per_batch(scale)), raw(per_batch(shift)));
    let x = raw(x);
    let out = empty(&x, &[b, seq, dim], dtype);
    let client = x.client.clone();
    // A power of two of units per row, about 8 values each, 32 to ROW_UNITS.
    let units = (dim / 8).next_power_of_two().clamp(32, ROW_UNITS as usize);
    let cube_dim = CubeDim::new_1d(units as u32);
    let count = calculate_cube_count_elemwise(&client, b * seq * units, cube_dim);
    layer_norm_modulate_kernel::launch::<B::Runtime>(
        &client,
        count,
        cube_dim,
        x.into_tensor_arg(),
        scale.into_tensor_arg(),
        shift.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        eps as f32,
        dtype.into(),
    );
    wrap(out)
}

/// FLUX's joint attention with the streams' q, k, v written straight into the head-major
/// joint layout by [`qkv_heads_kernel`] (RMSNorm and RoPE on the way for q and k), then
/// `attention` (the backend's kernel), then one transposing copy merging the heads.
///
/// # Shapes
/// As [`crate::FluxBackend::joint_attention`].
pub(super) fn joint_attention<B: Cube>(
    streams: Vec<QkvStream<B>>,
    heads: usize,
    rope: &Rope<B>,
    attention: impl FnOnce(Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>) -> Tensor<B, 4>,
) -> Tensor<B, 3> {
    let first = streams
        .first()
        .expect("joint attention of at least one stream");
    let d = first.head_dim();
    if d % 2 == 1 {
        // No rotary pairs: the portable form says what is wrong.
        return crate::ops::joint_attention(streams, heads, rope);
    }
    let b = first.qkv.dims()[0];
    let dtype = first.qkv.dtype();
    for stream in &streams {
        let [sb, _, width] = stream.qkv.dims();
        assert!(
            sb == b && stream.qkv.dtype() == dtype && width >= 3 * heads * d,
            "joint attention streams of one batch and dtype with 3 x {heads} heads of {d}: \
             got [{sb}, _, {width}] {:?} beside batch {b} {dtype:?}",
            stream.qkv.dtype()
        );
    }
    let seq_total: usize = streams.iter().map(|s| s.qkv.dims()[1]).sum();
    let [tb, _, table_len] = rope.full_tables().0.dims();
    assert!(
        table_len == seq_total * d && (tb == 1 || tb == b),
        "rotary tables [{tb}, 1, {table_len}] for {b} x {seq_total} positions of {d}"
    );
    let like = raw(first.qkv.clone());
    let parts: [CubeTensor<B::Runtime>; 3] =
        std::array::from_fn(|_| empty(&like, &[b, heads, seq_total, d], dtype));
    let (cos, sin) = rope.full_tables();
    let (cos, sin) = (raw(cos.clone()), raw(sin.clone()));
    let client = like.client.clone();
    let half = d / 2;
    let rows = (QKV_UNITS / half).max(1);
    let cube_dim = CubeDim::new_2d(half as u32, rows as u32);
    let mut offset = 0;
    for stream in streams {
        let seq = stream.qkv.dims()[1];
        if seq == 0 {
            // CUDA refuses empty launches.
            continue;
        }
        let count = calculate_cube_count_elemwise(&client, b * seq * heads * half, cube_dim);
        let qkv = raw(stream.qkv);
        let scales = [
            raw(stream.q_scale.cast(crate::float_dtype(dtype))),
            raw(stream.k_scale.cast(crate::float_dtype(dtype))),
        ];
        for (part, out) in parts.iter().enumerate() {
            let scale = scales[part.min(1)].clone();
            qkv_heads_kernel::launch::<B::Runtime>(
                &client,
                count.clone(),
                cube_dim,
                qkv.clone().into_tensor_arg(),
                scale.into_tensor_arg(),
                cos.clone().into_tensor_arg(),
                sin.clone().into_tensor_arg(),
                out.clone().into_tensor_arg(),
                (part * heads * d) as u32,
                offset as u32,
                crate::ops::QK_NORM_EPS as f32,
                half as u32,
                rows as u32,
                part < 2,
                dtype.into(),
            );
        }
        offset += seq;
    }
    let [q, k, v] = parts;
    let out = attention(wrap(q), wrap(k), wrap(v));
    out.swap_dims(1, 2).reshape([b, seq_total, heads * d])
}

/// [`softmax_rows_kernel`]: f32 scores `[b, heads, seq_q, seq_kv]` to probabilities in
/// `dtype`.
pub(super) fn softmax_rows<B: Cube>(
    scores: Tensor<B, 4>,
    dtype: burn::tensor::FloatDType,
) -> Tensor<B, 4> {
    let dims = scores.dims();
    let n = dims[3];
    let rows = dims[0] * dims[1] * dims[2];
    if rows * n == 0 {
        return scores.cast(dtype);
    }
    let scores = into_contiguous(raw(scores));
    let out_dtype: DType = dtype.into();
    let out = empty(&scores, &dims, out_dtype);
    let client = scores.client.clone();
    let units = (n / 8).next_power_of_two().clamp(32, ROW_UNITS as usize);
    let cube_dim = CubeDim::new_1d(units as u32);
    let count = calculate_cube_count_elemwise(&client, rows * units, cube_dim);
    let in_dtype = scores.dtype;
    softmax_rows_kernel::launch::<B::Runtime>(
        &client,
        count,
        cube_dim,
        scores.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        [in_dtype.into(), out_dtype.into()],
    );
    wrap(out)
}
