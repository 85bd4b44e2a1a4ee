//! [`ReduxEmbedder`]: SigLIP tokens to T5's width (diffusers `ReduxImageEncoder`, BFL
//! `ReduxImageEncoder`).

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::activation::silu;
use burn::tensor::backend::Backend;
use flux_nn::{FluxBackend, Init, Linear};

use super::ReduxConfig;

/// `redux_down(silu(redux_up(x)))`. Field names are the checkpoints' keys.
#[derive(Module, Debug)]
pub struct ReduxEmbedder<B: Backend> {
    /// `redux_dim -> 3 · txt_in_features`.
    pub(crate) redux_up: Linear<B>,
    /// `3 · txt_in_features -> txt_in_features`.
    pub(crate) redux_down: Linear<B>,
    #[module(skip)]
    config: ReduxConfig,
}

impl ReduxConfig {
    /// A randomly initialised embedder of this shape (parameters drawn lazily).
    pub fn init<B: FluxBackend>(&self, device: &B::Device) -> ReduxEmbedder<B> {
        self.init_with(&Init::random(device))
    }

    /// The embedder built by `init` (names: `redux_up`, `redux_down`, the checkpoints' keys).
    pub fn init_with<B: FluxBackend>(&self, init: &Init<B>) -> ReduxEmbedder<B> {
        let hidden = 3 * self.txt_in_features;
        ReduxEmbedder {
            redux_up: init.linear("redux_up", self.redux_dim, hidden, true),
            redux_down: init.linear("redux_down", hidden, self.txt_in_features, true),
            config: *self,
        }
    }
}

impl<B: FluxBackend> ReduxEmbedder<B> {
    /// # Shapes
    /// - x: `[batch, tokens, redux_dim]` -> `[batch, tokens, txt_in_features]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = x.cast(self.redux_up.dtype());
        self.redux_down.forward(silu(self.redux_up.forward(x)))
    }

    /// The widths.
    pub fn config(&self) -> &ReduxConfig {
        &self.config
    }
}
