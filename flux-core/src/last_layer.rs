//! [`LastLayer`]: modulated LayerNorm and the projection back to packed latent channels.

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::activation::silu;
use burn::tensor::backend::Backend;
use flux_io::nn::Linear;

use flux_io::ops;

/// BFL `LastLayer` (checkpoint `final_layer.*`; the modulation is `adaLN_modulation.1`).
#[derive(Module, Debug)]
pub struct LastLayer<B: Backend> {
    /// `hidden -> out_channels`.
    pub(crate) linear: Linear<B>,
    /// `hidden -> 2 * hidden`, chunked (shift, scale) — BFL order.
    pub(crate) ada_ln_modulation: Linear<B>,
}

impl<B: Backend> LastLayer<B> {
    /// A final layer from `hidden` to `out_channels`.
    pub fn new(hidden: usize, out_channels: usize, device: &B::Device) -> Self {
        Self {
            linear: Linear::new(hidden, out_channels, true, device),
            ada_ln_modulation: Linear::new(hidden, 2 * hidden, true, device),
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
            .forward(ops::layer_norm_modulate(x, scale, shift))
    }
}
