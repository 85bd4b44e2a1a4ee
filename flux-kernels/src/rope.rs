//! The rotary embedding's pair rotation for the host backends.

use crate::simd::{Kernel, dispatch};

/// `(x0, x1) -> (x0 c − x1 s, x1 c + x0 s)` for every interleaved pair of `values` in place,
/// pair `i` with `cos[i]`, `sin[i]` (products rounded separately, as the reference's).
pub fn rotate_pairs_rows(values: &mut [f32], cos: &[f32], sin: &[f32]) {
    dispatch::<RotatePairs, _>((values, cos, sin));
}

struct RotatePairs;

type PairArgs<'a> = (&'a mut [f32], &'a [f32], &'a [f32]);

impl Kernel<PairArgs<'_>> for RotatePairs {
    type Output = ();

    #[inline(always)]
    fn run(args: PairArgs) {
        rotate_pairs(args);
    }
}

#[inline(always)]
fn rotate_pairs((values, cos, sin): PairArgs) {
    for ((pair, &c), &s) in values.chunks_exact_mut(2).zip(cos).zip(sin) {
        let (x0, x1) = (pair[0], pair[1]);
        pair[0] = x0 * c - x1 * s;
        pair[1] = x1 * c + x0 * s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_rotate_by_their_angle() {
        let angles = [0.0f32, 0.5, -1.25, 3.0];
        let (cos, sin): (Vec<f32>, Vec<f32>) = angles.iter().map(|a| (a.cos(), a.sin())).unzip();
        let x = [1.0f32, 0.0, 0.3, -2.0, 5.0, 1.5, -0.25, 0.75];
        let mut got = x;
        rotate_pairs_rows(&mut got, &cos, &sin);
        for (i, &a) in angles.iter().enumerate() {
            let (x0, x1) = (x[2 * i] as f64, x[2 * i + 1] as f64);
            let (c, s) = ((a as f64).cos(), (a as f64).sin());
            assert!((got[2 * i] as f64 - (x0 * c - x1 * s)).abs() < 1e-6);
            assert!((got[2 * i + 1] as f64 - (x1 * c + x0 * s)).abs() < 1e-6);
        }
    }
}
