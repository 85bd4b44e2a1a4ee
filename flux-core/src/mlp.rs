//! The feed-forward of the double-stream blocks: linear, tanh-GELU, linear.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::host_kernels::{self, gelu_tanh_in_place, map_host_f32};
use crate::threads::host_threads;

/// BFL's `nn.Sequential(Linear, GELU(approximate="tanh"), Linear)`; checkpoint keys `.0` and `.2`.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// `hidden -> mlp_hidden` (checkpoint `…_mlp.0`).
    pub in_layer: Linear<B>,
    /// `mlp_hidden -> hidden` (checkpoint `…_mlp.2`).
    pub out_layer: Linear<B>,
}

impl<B: Backend> Mlp<B> {
    /// An MLP `hidden -> mlp_hidden -> hidden`.
    pub fn new(hidden: usize, mlp_hidden: usize, device: &B::Device) -> Self {
        Self {
            in_layer: LinearConfig::new(hidden, mlp_hidden).init(device),
            out_layer: LinearConfig::new(mlp_hidden, hidden).init(device),
        }
    }

    /// # Shapes
    /// - x: `[b, seq, hidden]` -> `[b, seq, hidden]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.out_layer.forward(gelu_tanh(self.in_layer.forward(x)))
    }
}

/// GELU with the tanh approximation (PyTorch's `gelu(approximate="tanh")`),
/// `0.5 x (1 + tanh(u))` with `u = sqrt(2/pi) (x + 0.044715 x^3)`, computed as the equal
/// `x / (1 + exp(-2u))`: one transcendental op and four arithmetic ones (burn's
/// `gelu_approximate` takes a `powf` and a `tanh`, both slow on the CPU backends).
///
/// # Shapes
/// - x: any -> same
///
/// On burn-flex, f32 tensors take a fused, vectorised kernel ([`crate::host_kernels`]) split
/// over the host threads: one pass instead of seven single-threaded scalar ones (burn-ndarray
/// keeps the burn ops: its data round trip copies, which measured slower at `tiny`).
pub fn gelu_tanh<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    if host_kernels::applies(&x) {
        let (unit, threads) = (x.dims()[D - 1], host_threads::<B>(&x.device()));
        return map_host_f32(x, unit, threads, gelu_tanh_in_place).0;
    }
    // -2u = x * (C1 + C3 x^2) with C1 = -2 sqrt(2/pi), C3 = 0.044715 C1.
    const C1: f64 = -2.0 * core::f64::consts::FRAC_2_SQRT_PI * core::f64::consts::FRAC_1_SQRT_2;
    const C3: f64 = 0.044715 * C1;
    let minus_2u = (x.clone() * x.clone() * C3 + C1) * x.clone();
    x / (minus_2u.exp() + 1.0)
}
