//! Activations in place on the host: tanh-GELU and CLIP's quick GELU, through the
//! vectorisable `exp` of [`crate::softmax`].

use crate::simd::{Kernel, dispatch};
use crate::softmax::{LANES, exp};

/// `f` on every value in place, over 8-lane chunks that LLVM vectorises.
#[inline(always)]
fn map_in_place(values: &mut [f32], f: impl Fn(f32) -> f32) {
    let mut chunks = values.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for x in chunk {
            *x = f(*x);
        }
    }
    for x in chunks.into_remainder() {
        *x = f(*x);
    }
}

/// Quick GELU in place (CLIP's `quick_gelu`): `x * sigmoid(1.702 x)` = `x / (1 + exp(-1.702 x))`.
pub fn quick_gelu_in_place(values: &mut [f32]) {
    dispatch::<QuickGelu, _>(values);
}

struct QuickGelu;

impl Kernel<&mut [f32]> for QuickGelu {
    type Output = ();

    #[inline(always)]
    fn run(values: &mut [f32]) {
        map_in_place(values, |x| x / (1.0 + exp(-1.702 * x)));
    }
}

/// tanh-GELU in place: `x / (1 + exp(-2u))`, `u = sqrt(2/pi) (x + 0.044715 x^3)`.
pub fn gelu_tanh_in_place(values: &mut [f32]) {
    dispatch::<GeluTanh, _>(values);
}

struct GeluTanh;

impl Kernel<&mut [f32]> for GeluTanh {
    type Output = ();

    #[inline(always)]
    fn run(values: &mut [f32]) {
        const C1: f32 =
            (-2.0 * core::f64::consts::FRAC_2_SQRT_PI * core::f64::consts::FRAC_1_SQRT_2) as f32;
        const C3: f32 = 0.044715 * C1;
        map_in_place(values, |x| x / (1.0 + exp(x * (C1 + C3 * x * x))));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_gelu_matches_the_sigmoid_formula() {
        let mut values: Vec<f32> = (-3000..3000).map(|i| i as f32 * 0.004).collect();
        values.extend([-100.0, 100.0, 0.0]);
        let want: Vec<f64> = values
            .iter()
            .map(|&x| x as f64 / (1.0 + (-1.702 * x as f64).exp()))
            .collect();
        quick_gelu_in_place(&mut values);
        for (got, want) in values.iter().zip(&want) {
            assert!((*got as f64 - want).abs() <= 1e-6 * (1.0 + want.abs()));
        }
    }

    #[test]
    fn gelu_matches_the_tanh_formula() {
        let mut values: Vec<f32> = (-4000..4000).map(|i| i as f32 * 0.003).collect();
        values.extend([-100.0, 100.0, 0.0, -1e-30]);
        let expected: Vec<f64> = values
            .iter()
            .map(|&x| {
                let x = x as f64;
                let u = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
                0.5 * x * (1.0 + u.tanh())
            })
            .collect();
        gelu_tanh_in_place(&mut values);
        for (got, want) in values.iter().zip(&expected) {
            assert!(
                (*got as f64 - want).abs() <= 1e-6 * (1.0 + want.abs()),
                "{got} vs {want}"
            );
        }
    }
}
