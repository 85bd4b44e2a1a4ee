//! What every crate's tests share to hold an output to its reference: error measures for
//! which NaN and infinity are failures, not values.
//!
//! `f32::max` keeps its other argument when one is NaN, so the usual
//! `diffs.fold(0.0, f32::max)` scores an all-NaN output as a perfect match; a tensor's
//! `max()` on some backends does the same. Every parity test of the workspace goes through
//! [`max_abs_diff`] (or its tensor form) instead, which answers `f32::INFINITY` as soon as any
//! value on either side is not finite, so that `err <= tolerance` fails whatever the
//! tolerance.
//!
//! Beside them, the small inputs the error tests build files from: [`write_safetensors`] and
//! [`ramp`].

use std::path::{Path, PathBuf};

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// The largest `|a[i] − b[i]|`, or `f32::INFINITY` when any value of `a` or `b` is NaN or
/// infinite.
///
/// # Panics
/// If the slices differ in length (a shape mismatch is a failure, not a large error).
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "compared outputs differ in length");
    let mut max = 0.0f32;
    for (x, y) in a.iter().zip(b) {
        if !x.is_finite() || !y.is_finite() {
            return f32::INFINITY;
        }
        max = max.max((x - y).abs());
    }
    max
}

/// [`max_abs_diff`] divided by the largest `|b[i]|` (`f32::INFINITY` for non-finite values,
/// and for an all-zero `b` unless `a` equals it).
///
/// # Panics
/// As [`max_abs_diff`].
pub fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    let err = max_abs_diff(a, b);
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    match (err, scale) {
        (e, _) if !e.is_finite() => f32::INFINITY,
        (0.0, _) => 0.0,
        (_, 0.0) => f32::INFINITY,
        (e, s) => e / s,
    }
}

/// A tensor's values as f32, row-major.
pub fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .into_vec()
        .expect("f32 after convert")
}

/// [`max_abs_diff`] of two tensors of the same shape (any dtype; compared in f32).
///
/// # Panics
/// If the shapes differ.
pub fn max_abs_diff_tensors<B: Backend, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> f32 {
    assert_eq!(a.dims(), b.dims(), "compared outputs differ in shape");
    max_abs_diff(&values(a), &values(b))
}

/// Writes the f32 tensors `(name, shape, values)` as the safetensors file `dir/name` and
/// returns its path.
///
/// # Panics
/// If a shape does not match its values or the file cannot be written.
pub fn write_safetensors(
    dir: &Path,
    name: &str,
    tensors: &[(&str, Vec<usize>, Vec<f32>)],
) -> PathBuf {
    use safetensors::tensor::{Dtype, TensorView};
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views: Vec<(&str, TensorView)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((n, s, _), b)| (*n, TensorView::new(Dtype::F32, s.clone(), b).unwrap()))
        .collect();
    let path = dir.join(name);
    safetensors::serialize_to_file(views, None, &path).unwrap();
    path
}

/// `n` deterministic values in about `[-11, 11] · scale`, no two neighbours equal.
pub fn ramp(n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 37 % 23) as f32 - 11.0) * scale)
        .collect()
}

/// `n` deterministic values in about `[-2, 2]`, a different sequence for each `seed` (a
/// multiplicative hash of the index: no pattern a kernel's block size could align with).
pub fn seeded(n: usize, seed: u64) -> Vec<f32> {
    (0..n as u64)
        .map(|i| {
            let mut x = (i ^ seed.rotate_left(17)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            x ^= x >> 29;
            (x % 4001) as f32 / 1000.0 - 2.0
        })
        .collect()
}

/// Rotary cos and sin tables of `b` batches for `seq` positions and `half` pairs
/// (`[b, seq, half]` each, flattened), angles of every size and a different set per batch.
pub fn rope_tables(b: usize, seq: usize, half: usize) -> (Vec<f32>, Vec<f32>) {
    let angles: Vec<f64> = (0..b * seq * half)
        .map(|i| (i % seq) as f64 * 0.37 / (1 + i % half) as f64 + (i / (seq * half)) as f64)
        .collect();
    (
        angles.iter().map(|a| a.cos() as f32).collect(),
        angles.iter().map(|a| a.sin() as f32).collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_values_fail_any_tolerance() {
        let want = [0.5f32, -1.0, 2.0];
        assert_eq!(max_abs_diff(&[0.5, -1.0, 2.25], &want), 0.25);
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            assert_eq!(max_abs_diff(&[0.5, bad, 2.0], &want), f32::INFINITY);
            assert_eq!(max_abs_diff(&[bad; 3], &want), f32::INFINITY);
            // A broken reference is a failure too.
            assert_eq!(max_abs_diff(&want, &[0.5, bad, 2.0]), f32::INFINITY);
            assert_eq!(max_rel_diff(&[0.5, bad, 2.0], &want), f32::INFINITY);
        }
        assert!(max_abs_diff(&[f32::NAN; 3], &want) > f32::MAX);
        assert_eq!(max_rel_diff(&[0.5, -1.0, 2.5], &want), 0.25);
        assert_eq!(max_rel_diff(&[0.0], &[0.0]), 0.0);
        assert_eq!(max_rel_diff(&[1.0], &[0.0]), f32::INFINITY);
    }

    #[test]
    fn tensors_compare_as_their_values() {
        type B = burn::backend::NdArray;
        let device = Default::default();
        let a = Tensor::<B, 2>::from_floats([[1.0, 2.0], [3.0, 4.0]], &device);
        let b = Tensor::<B, 2>::from_floats([[1.0, 2.0], [3.0, 4.5]], &device);
        assert_eq!(max_abs_diff_tensors(a.clone(), b), 0.5);
        let nan = Tensor::<B, 2>::from_floats([[f32::NAN, 2.0], [3.0, 4.0]], &device);
        assert_eq!(max_abs_diff_tensors(nan, a), f32::INFINITY);
    }

    #[test]
    #[should_panic(expected = "differ in shape")]
    fn shapes_must_agree() {
        type B = burn::backend::NdArray;
        let device = Default::default();
        let a = Tensor::<B, 2>::zeros([2, 3], &device);
        let b = Tensor::<B, 2>::zeros([3, 2], &device);
        max_abs_diff_tensors(a, b);
    }
}
