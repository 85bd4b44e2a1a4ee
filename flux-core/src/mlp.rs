//! The feed-forward of the double-stream blocks: linear, tanh-GELU, linear.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::Tensor;
use burn::tensor::activation::gelu_approximate;
use burn::tensor::backend::Backend;

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
        self.out_layer
            .forward(gelu_approximate(self.in_layer.forward(x)))
    }
}
