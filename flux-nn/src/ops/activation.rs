//! Activations with tensor ops.

use burn::tensor::Tensor;
use burn::tensor::activation::sigmoid;
use burn::tensor::backend::Backend;

/// GELU with the tanh approximation (PyTorch's `gelu(approximate="tanh")`, transformers'
/// `gelu_new`), `0.5 x (1 + tanh(u))` with `u = sqrt(2/pi) (x + 0.044715 x^3)`, computed as the
/// equal `x / (1 + exp(-2u))`: one transcendental op and four arithmetic ones (burn's
/// `gelu_approximate` takes a `powf` and a `tanh`, both slow on the CPU backends).
///
/// # Shapes
/// - x: any -> same
pub(crate) fn gelu_tanh<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    // -2u = x * (C1 + C3 x^2) with C1 = -2 sqrt(2/pi), C3 = 0.044715 C1.
    const C1: f64 = -2.0 * core::f64::consts::FRAC_2_SQRT_PI * core::f64::consts::FRAC_1_SQRT_2;
    const C3: f64 = 0.044715 * C1;
    let minus_2u = (x.clone() * x.clone() * C3 + C1) * x.clone();
    x / (minus_2u.exp() + 1.0)
}

/// CLIP's quick GELU, `x · sigmoid(1.702 x)`.
///
/// # Shapes
/// - x: any -> same
pub(crate) fn quick_gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    x.clone() * sigmoid(x * 1.702)
}
