//! [`LastLayer`]: modulated LayerNorm and the projection back to packed latent channels.

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::activation::silu;
use burn::tensor::backend::Backend;
use flux_nn::{FluxBackend, Init, Linear};

use crate::modulation::NORM_EPS;

/// BFL `LastLayer` (checkpoint `final_layer.*`; the modulation is `adaLN_modulation.1`).
#[derive(Module, Debug)]
pub struct LastLayer<B: Backend> {
    /// `hidden -> out_channels`.
    linear: Linear<B>,
    /// `hidden -> 2 * hidden`, chunked (shift, scale) — BFL order.
    ada_ln_modulation: Linear<B>,
}

impl<B: FluxBackend> LastLayer<B> {
    /// A final layer from `hidden` to `out_channels`.
    pub fn new(hidden: usize, out_channels: usize, init: &Init<B>) -> Self {
        Self {
            linear: init.linear("linear", hidden, out_channels, true),
            ada_ln_modulation: init.linear("ada_ln_modulation", hidden, 2 * hidden, true),
        }
    }

    /// # Shapes
    /// - x: `[b, n_img, hidden]`, vec: `[b, hidden]` -> `[b, n_img, out_channels]`
    pub fn forward(&self, x: Tensor<B, 3>, vec: Tensor<B, 2>) -> Tensor<B, 3> {
        let modulation = self
            .ada_ln_modulation
            .forward(silu(vec))
            .unsqueeze_dim::<3>(1);
        let mut chunks = modulation.chunk(2, 2).into_iter();
        let (shift, scale) = (
            chunks.next().expect("2 chunks"),
            chunks.next().expect("2 chunks"),
        );
        self.linear
            .forward(B::layer_norm_modulate(x, scale, shift, NORM_EPS))
    }
}
