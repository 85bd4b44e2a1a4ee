//! The feed-forward of the double-stream blocks: linear, tanh-GELU, linear.

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use flux_io::nn::Linear;

use flux_io::ops::gelu_tanh;

/// BFL's `nn.Sequential(Linear, GELU(approximate="tanh"), Linear)`; checkpoint keys `.0` and `.2`.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// `hidden -> mlp_hidden` (checkpoint `…_mlp.0`).
    pub(crate) in_layer: Linear<B>,
    /// `mlp_hidden -> hidden` (checkpoint `…_mlp.2`).
    pub(crate) out_layer: Linear<B>,
}

impl<B: Backend> Mlp<B> {
    /// An MLP `hidden -> mlp_hidden -> hidden`.
    pub fn new(hidden: usize, mlp_hidden: usize, device: &B::Device) -> Self {
        Self {
            in_layer: Linear::new(hidden, mlp_hidden, true, device),
            out_layer: Linear::new(mlp_hidden, hidden, true, device),
        }
    }

    /// # Shapes
    /// - x: `[b, seq, hidden]` -> `[b, seq, hidden]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.out_layer.forward(gelu_tanh(self.in_layer.forward(x)))
    }
}
