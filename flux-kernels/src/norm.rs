//! Row norms for the host backends, one pass per row instead of burn-flex's five to nine
//! single-threaded ops: LayerNorm fused with FLUX's adaLN modulation, and RMSNorm with its
//! scale. Sums run over 8-lane partial sums that LLVM vectorises (as PyTorch's CPU kernels
//! sum: not in index order).

use crate::simd::{Kernel, dispatch};
use crate::softmax::LANES;

/// Sum of `f(x)` over `row`, in 8 lanes then across them.
#[inline(always)]
fn lane_sum(row: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().map(|&x| f(x)).sum();
    for chunk in chunks {
        for (s, &x) in lanes.iter_mut().zip(chunk) {
            *s += f(x);
        }
    }
    tail + lanes.iter().sum::<f32>()
}

/// LayerNorm without affine (`eps` inside the root) of every `width`-long row of `values` in
/// place, followed by the modulation `x · scale1p + shift`. `values` holds rows `first_row..`
/// of a `[b, seq, width]` tensor; row `r` takes the vectors of batch entry `r / seq` from
/// `scale1p` and `shift` (`[b, width]`, flattened). Mean and variance are two
/// passes (the variance of the centred values), as the burn ops they replace.
pub fn layer_norm_modulate_rows(
    values: &mut [f32],
    width: usize,
    first_row: usize,
    seq: usize,
    eps: f32,
    scale1p: &[f32],
    shift: &[f32],
) {
    let args = (values, (width, first_row, seq, eps), (scale1p, shift));
    dispatch::<LayerNormModulate, _>(args);
}

struct LayerNormModulate;

impl Kernel<LayerNormArgs<'_>> for LayerNormModulate {
    type Output = ();

    #[inline(always)]
    fn run(args: LayerNormArgs) {
        layer_norm_modulate(args);
    }
}

type LayerNormArgs<'a> = (
    &'a mut [f32],
    (usize, usize, usize, f32),
    (&'a [f32], &'a [f32]),
);

#[inline(always)]
fn layer_norm_modulate((values, (width, first_row, seq, eps), (scale1p, shift)): LayerNormArgs) {
    for (i, row) in values.chunks_exact_mut(width).enumerate() {
        let batch = (first_row + i) / seq;
        let (s, t) = (
            &scale1p[batch * width..(batch + 1) * width],
            &shift[batch * width..(batch + 1) * width],
        );
        let n = row.len() as f32;
        let mean = lane_sum(row, |x| x) / n;
        let var = lane_sum(row, |x| (x - mean) * (x - mean)) / n;
        let inv = 1.0 / (var + eps).sqrt();
        for ((x, &s), &t) in row.iter_mut().zip(s).zip(t) {
            *x = ((*x - mean) * inv) * s + t;
        }
    }
}

/// RMSNorm of every `scale.len()`-long row of `values` in place: `x / sqrt(mean(x²) + eps)
/// · scale`.
pub fn rms_norm_rows(values: &mut [f32], eps: f32, scale: &[f32]) {
    dispatch::<RmsNorm, _>((values, eps, scale));
}

struct RmsNorm;

impl Kernel<(&mut [f32], f32, &[f32])> for RmsNorm {
    type Output = ();

    #[inline(always)]
    fn run(args: (&mut [f32], f32, &[f32])) {
        rms_norm(args);
    }
}

#[inline(always)]
fn rms_norm((values, eps, scale): (&mut [f32], f32, &[f32])) {
    for row in values.chunks_exact_mut(scale.len()) {
        let ms = lane_sum(row, |x| x * x) / row.len() as f32;
        let rms = (ms + eps).sqrt();
        for (x, &s) in row.iter_mut().zip(scale) {
            *x = (*x / rms) * s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(n: usize, seed: u32) -> Vec<f32> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 8) as f32 / (1 << 24) as f32 * 8.0 - 3.0
            })
            .collect()
    }

    #[test]
    fn layer_norm_modulate_matches_f64() {
        let (b, seq, width) = (2, 3, 37);
        let x = pseudo_random(b * seq * width, 1);
        let scale1p = pseudo_random(b * width, 2);
        let shift = pseudo_random(b * width, 3);
        // Rows 2.. of the tensor, as a thread's part sees them.
        let mut part = x[2 * width..].to_vec();
        layer_norm_modulate_rows(&mut part, width, 2, seq, 1e-6, &scale1p, &shift);
        for (i, row) in x.chunks(width).enumerate().skip(2) {
            let batch = i / seq;
            let mean = row.iter().map(|&v| v as f64).sum::<f64>() / width as f64;
            let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / width as f64;
            for (j, &v) in row.iter().enumerate() {
                let normed = (v as f64 - mean) / (var + 1e-6).sqrt();
                let want =
                    normed * scale1p[batch * width + j] as f64 + shift[batch * width + j] as f64;
                let got = part[(i - 2) * width + j] as f64;
                assert!(
                    (got - want).abs() <= 2e-6 * (1.0 + want.abs()),
                    "{i} {j}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn rms_norm_matches_f64() {
        let width = 19;
        let x = pseudo_random(4 * width, 4);
        let scale = pseudo_random(width, 5);
        let mut got = x.clone();
        rms_norm_rows(&mut got, 1e-6, &scale);
        for (row, out) in x.chunks(width).zip(got.chunks(width)) {
            let ms = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / width as f64;
            for ((&v, &o), &s) in row.iter().zip(out).zip(&scale) {
                let want = v as f64 / (ms + 1e-6).sqrt() * s as f64;
                assert!(
                    (o as f64 - want).abs() <= 2e-6 * (1.0 + want.abs()),
                    "{o} vs {want}"
                );
            }
        }
    }
}
