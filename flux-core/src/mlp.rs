//! The feed-forward of the double-stream blocks: linear, tanh-GELU, linear.

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use flux_nn::{FluxBackend, Init, Linear};

/// BFL's `nn.Sequential(Linear, GELU(approximate="tanh"), Linear)`; checkpoint keys `.0` and `.2`.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// `hidden -> mlp_hidden` (checkpoint `…_mlp.0`).
    in_layer: Linear<B>,
    /// `mlp_hidden -> hidden` (checkpoint `…_mlp.2`).
    out_layer: Linear<B>,
}

impl<B: FluxBackend> Mlp<B> {
    /// An MLP `hidden -> mlp_hidden -> hidden`.
    pub fn new(hidden: usize, mlp_hidden: usize, init: &Init<B>) -> Self {
        Self {
            in_layer: init.linear("in_layer", hidden, mlp_hidden, true),
            out_layer: init.linear("out_layer", mlp_hidden, hidden, true),
        }
    }

    /// # Shapes
    /// - x: `[b, seq, hidden]` -> `[b, seq, hidden]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.out_layer
            .forward(B::gelu_tanh(self.in_layer.forward(x)))
    }
}
