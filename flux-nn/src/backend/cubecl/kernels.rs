//! FLUX's fused operations as CubeCL kernels: one launch and one pass over memory each where
//! burn's tensor ops take from 6 to 100 (the per-head copies of the q/k/v split). Every kernel
//! reads any float dtype, computes in f32 where the reference does, and writes the input's
//! dtype; indices go through the inputs' strides, so views need no copy first.

use burn_cubecl::cubecl;
use burn_cubecl::cubecl::prelude::*;

/// The most units of a cube that reduces one row (LayerNorm): a power of two, the size of the
/// reduction's shared memory.
pub(super) const ROW_UNITS: u32 = 256;

/// `-2 √(2/π)` of tanh-GELU, rounded from f64 as the portable form's scalar is.
const GELU_C1: f32 =
    (-2.0 * core::f64::consts::FRAC_2_SQRT_PI * core::f64::consts::FRAC_1_SQRT_2) as f32;
/// `0.044715 · GELU_C1`.
const GELU_C3: f32 =
    (0.044715 * -2.0 * core::f64::consts::FRAC_2_SQRT_PI * core::f64::consts::FRAC_1_SQRT_2) as f32;

/// tanh-GELU, `0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))` in f32 as
/// `x / (1 + exp(-2u))`, on a contiguous tensor of `len` values.
#[cube(launch)]
pub(super) fn gelu_tanh_kernel<F: Float>(
    x: &Tensor<F>,
    out: &mut Tensor<F>,
    #[define(F)] _dtype: StorageType,
) {
    let i = ABSOLUTE_POS;
    if i >= out.len() {
        terminate!();
    }
    let v = f32::cast_from(x[i]);
    let minus_2u = (v * v * GELU_C3 + GELU_C1) * v;
    out[i] = F::cast_from(v / (minus_2u.exp() + 1.0));
}

/// CLIP's quick GELU, `x · sigmoid(1.702 x)` in f32, on a contiguous tensor.
#[cube(launch)]
pub(super) fn quick_gelu_kernel<F: Float>(
    x: &Tensor<F>,
    out: &mut Tensor<F>,
    #[define(F)] _dtype: StorageType,
) {
    let i = ABSOLUTE_POS;
    if i >= out.len() {
        terminate!();
    }
    let v = f32::cast_from(x[i]);
    out[i] = F::cast_from(v / ((v * -1.702_f32).exp() + 1.0));
}

/// RMSNorm with a learned scale per row of a contiguous `x` viewed as `[rows, dim]`:
/// `x / sqrt(mean(x²) + eps)` in f32, rounded to `F`, times `scale` (`[dim]`) in `F`, as the
/// portable form computes it. One cube per row of a power of two units up to [`ROW_UNITS`].
#[cube(launch)]
pub(super) fn rms_norm_kernel<F: Float>(
    x: &Tensor<F>,
    scale: &Tensor<F>,
    out: &mut Tensor<F>,
    eps: f32,
    #[define(F)] _dtype: StorageType,
) {
    let dim = scale.shape(0);
    let row = CUBE_POS;
    if row * dim >= x.len() {
        terminate!();
    }
    let base = row * dim;
    let unit = UNIT_POS_X as usize;
    let units = CUBE_DIM_X as usize;
    let mut partial = SharedMemory::<f32>::new(ROW_UNITS as usize);
    let mut sq = 0.0_f32;
    let mut i = unit;
    while i < dim {
        let v = f32::cast_from(x[base + i]);
        sq += v * v;
        i += units;
    }
    let rms = (row_sum(&mut partial, sq) / dim as f32 + eps).sqrt();
    let mut i = unit;
    while i < dim {
        let normed = F::cast_from(f32::cast_from(x[base + i]) / rms);
        out[base + i] = normed * scale[i * scale.stride(0)];
        i += units;
    }
}

/// `LayerNorm(x) · (1 + scale) + shift` per row of `x` (`[b, seq, dim]`, any strides): mean
/// and variance of the row in f32 (two passes, the centered sum of squares), the normalised
/// row rounded to `F`, the modulation in `F` as the reference computes it. One cube per row
/// of a power of two units up to [`ROW_UNITS`]; `scale`, `shift`: `[b, 1, dim]`; `out`
/// contiguous.
#[cube(launch)]
pub(super) fn layer_norm_modulate_kernel<F: Float>(
    x: &Tensor<F>,
    scale: &Tensor<F>,
    shift: &Tensor<F>,
    out: &mut Tensor<F>,
    eps: f32,
    #[define(F)] _dtype: StorageType,
) {
    let seq = x.shape(1);
    let dim = x.shape(2);
    let row = CUBE_POS;
    // Cubes past the last row (the launch rounds the count up): the whole cube leaves.
    if row >= x.shape(0) * seq {
        terminate!();
    }
    let b = row / seq;
    let s = row % seq;
    let base = b * x.stride(0) + s * x.stride(1);
    let step = x.stride(2);
    let unit = UNIT_POS_X as usize;
    let units = CUBE_DIM_X as usize;
    let mut partial = SharedMemory::<f32>::new(ROW_UNITS as usize);

    let mut sum = 0.0_f32;
    let mut i = unit;
    while i < dim {
        sum += f32::cast_from(x[base + i * step]);
        i += units;
    }
    let mean = row_sum(&mut partial, sum) / dim as f32;

    let mut sq = 0.0_f32;
    let mut i = unit;
    while i < dim {
        let c = f32::cast_from(x[base + i * step]) - mean;
        sq += c * c;
        i += units;
    }
    let std = (row_sum(&mut partial, sq) / dim as f32 + eps).sqrt();

    let mod_base = b * scale.stride(0);
    let shift_base = b * shift.stride(0);
    let out_base = row * dim;
    let mut i = unit;
    while i < dim {
        let normed = F::cast_from((f32::cast_from(x[base + i * step]) - mean) / std);
        let one_plus = scale[mod_base + i * scale.stride(2)] + F::new(1.0);
        out[out_base + i] = normed * one_plus + shift[shift_base + i * shift.stride(2)];
        i += units;
    }
}

/// The sum of every unit's `value` over a one-dimensional cube of a power of two units, at
/// most [`ROW_UNITS`] (a tree in shared memory), returned to every unit.
#[cube]
fn row_sum(partial: &mut SharedMemory<f32>, value: f32) -> f32 {
    row_reduce(partial, value, false)
}

/// [`row_sum`], or the maximum with `max`.
#[cube]
fn row_reduce(partial: &mut SharedMemory<f32>, value: f32, #[comptime] max: bool) -> f32 {
    let unit = UNIT_POS_X as usize;
    partial[unit] = value;
    sync_cube();
    // From the cube's size at run time (a constant cannot be the loop's variable).
    let mut stride = CUBE_DIM_X as usize / 2;
    while stride > 0 {
        if unit < stride {
            let other = partial[unit + stride];
            if max {
                if other > partial[unit] {
                    partial[unit] = other;
                }
            } else {
                partial[unit] += other;
            }
        }
        sync_cube();
        stride /= 2;
    }
    let total = partial[0];
    sync_cube();
    total
}

/// Softmax over the last dimension of contiguous f32 `scores`, `exp(x − max) / Σ exp(x − max)`
/// as burn's `softmax` computes it, written in `O` (the probabilities in the activations'
/// dtype, no separate cast). One cube per row of a power of two units up to [`ROW_UNITS`];
/// three reads of the row (max, sum, write) where burn's ops take five passes and a cast.
#[cube(launch)]
pub(super) fn softmax_rows_kernel<F: Float, O: Float>(
    scores: &Tensor<F>,
    out: &mut Tensor<O>,
    #[define(F, O)] _dtypes: [StorageType; 2],
) {
    let n = scores.shape(scores.rank() - 1);
    let row = CUBE_POS;
    if row * n >= scores.len() {
        terminate!();
    }
    let base = row * n;
    let unit = UNIT_POS_X as usize;
    let units = CUBE_DIM_X as usize;
    let mut partial = SharedMemory::<f32>::new(ROW_UNITS as usize);

    // Every unit starts from the row's first score (no infinity literal in WGSL).
    let mut top = f32::cast_from(scores[base]);
    let mut i = unit;
    while i < n {
        let v = f32::cast_from(scores[base + i]);
        if v > top {
            top = v;
        }
        i += units;
    }
    let top = row_reduce(&mut partial, top, true);

    let mut sum = 0.0_f32;
    let mut i = unit;
    while i < n {
        sum += (f32::cast_from(scores[base + i]) - top).exp();
        i += units;
    }
    let sum = row_sum(&mut partial, sum);

    let mut i = unit;
    while i < n {
        out[base + i] = O::cast_from((f32::cast_from(scores[base + i]) - top).exp() / sum);
        i += units;
    }
}

/// One part (q, k or v) of a stream's fused projection into the joint attention's head-major
/// layout: `qkv[b, s, column + h·d + j]` -> `out[b, h, offset + s, j]`, with, for q and k
/// (`norm`), FLUX's RMSNorm over the head (f32 statistics, the normed value rounded to `F`,
/// times the learned `scale` in `F`) and the rotary embedding on interleaved pairs in f32
/// (`(x0 cos − x1 sin, x1 cos + x0 sin)`, tables `[b or 1, 1, seq_total · d]` with each angle
/// twice, as `Rope` holds them).
///
/// A cube holds `rows` rows of `half = d / 2` units, one pair each; `qkv` any strides, `out`
/// contiguous `[b, heads, seq_total, d]`.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub(super) fn qkv_heads_kernel<F: Float>(
    qkv: &Tensor<F>,
    scale: &Tensor<F>,
    cos: &Tensor<f32>,
    sin: &Tensor<f32>,
    out: &mut Tensor<F>,
    column: u32,
    offset: u32,
    eps: f32,
    #[comptime] half: u32,
    #[comptime] rows: u32,
    #[comptime] norm: bool,
    #[define(F)] _dtype: StorageType,
) {
    let heads = out.shape(1);
    let seq_total = out.shape(2);
    let d = out.shape(3);
    let seq = qkv.shape(1);
    let total_rows = qkv.shape(0) * seq * heads;
    let y = UNIT_POS_Y as usize;
    let pair = UNIT_POS_X as usize;
    let row = CUBE_POS * rows as usize + y;
    let active = row < total_rows;
    // Row order (b, s, h): neighbouring cubes read neighbouring columns of one token.
    let h = row % heads;
    let s = (row / heads) % seq;
    let b = row / (heads * seq);
    let src = b * qkv.stride(0)
        + s * qkv.stride(1)
        + (column as usize + h * d + 2 * pair) * qkv.stride(2);
    let dst = ((b * heads + h) * seq_total + offset as usize + s) * d + 2 * pair;

    if norm {
        let mut x0 = 0.0_f32;
        let mut x1 = 0.0_f32;
        if active {
            x0 = f32::cast_from(qkv[src]);
            x1 = f32::cast_from(qkv[src + qkv.stride(2)]);
        }
        let mut squares = SharedMemory::<f32>::new((rows * half) as usize);
        squares[y * half as usize + pair] = x0 * x0 + x1 * x1;
        sync_cube();
        if active {
            let mut sum = 0.0_f32;
            for j in 0..half as usize {
                sum += squares[y * half as usize + j];
            }
            let rms = (sum / d as f32 + eps).sqrt();
            let y0 = f32::cast_from(F::cast_from(x0 / rms) * scale[2 * pair * scale.stride(0)]);
            let y1 =
                f32::cast_from(F::cast_from(x1 / rms) * scale[(2 * pair + 1) * scale.stride(0)]);
            // Tables shared by the batch, or one per image.
            let mut tb = b;
            if cos.shape(0) == 1 {
                tb = 0;
            }
            let at = (offset as usize + s) * d + 2 * pair;
            let c = cos[tb * cos.stride(0) + at * cos.stride(2)];
            let sn = sin[tb * sin.stride(0) + at * sin.stride(2)];
            out[dst] = F::cast_from(y0 * c - y1 * sn);
            out[dst + 1] = F::cast_from(y1 * c + y0 * sn);
        }
    } else if active {
        out[dst] = qkv[src];
        out[dst + 1] = qkv[src + qkv.stride(2)];
    }
}
