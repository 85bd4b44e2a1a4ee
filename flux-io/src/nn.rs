//! [`Linear`]: the one linear layer of every model in the workspace.
//!
//! Every projection of the transformer, T5 and CLIP goes through [`Linear::forward`], so what
//! changes how a weight is held or applied — a quantized weight dequantized inside the matmul,
//! a low-rank adapter added beside it — changes this type and its loader, never the blocks'
//! `forward` code.

use burn::module::{Initializer, Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::module::linear;
use burn::tensor::{DType, FloatDType, Tensor};

/// `y = x W + b` with `W` held `[d_input, d_output]` (burn's layout; checkpoints store PyTorch's
/// `[out, in]`, and the loader transposes on the way in). The module's container name is
/// `Linear`, which is how [`crate::Loader`] recognises weights to transpose.
#[derive(Module, Debug)]
pub struct Linear<B: Backend> {
    weight: Param<Tensor<B, 2>>,
    bias: Option<Param<Tensor<B, 1>>>,
}

impl<B: Backend> Linear<B> {
    /// A layer `d_input -> d_output`, with or without a bias. Parameters stay lazy until
    /// loaded or first used (then drawn like burn's `LinearConfig` default: Kaiming uniform),
    /// so building a model allocates nothing.
    pub fn new(d_input: usize, d_output: usize, bias: bool, device: &B::Device) -> Self {
        let init = Initializer::KaimingUniform {
            gain: 1.0 / 3.0f64.sqrt(),
            fan_out_only: false,
        };
        let fans = (Some(d_input), Some(d_output));
        Self {
            weight: init.init_with([d_input, d_output], fans.0, fans.1, device),
            bias: bias.then(|| init.init_with([d_output], fans.0, fans.1, device)),
        }
    }

    /// # Shapes
    /// - x: `[..., d_input]` -> `[..., d_output]`
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        linear(x, self.weight.val(), self.bias.as_ref().map(Param::val))
    }

    /// The weight, `[d_input, d_output]`.
    pub fn weight(&self) -> Tensor<B, 2> {
        self.weight.val()
    }

    /// The bias, `[d_output]`, if the layer has one.
    pub fn bias(&self) -> Option<Tensor<B, 1>> {
        self.bias.as_ref().map(Param::val)
    }

    /// The weight's float dtype.
    pub fn dtype(&self) -> DType {
        self.weight.val().dtype()
    }

    /// The layer with its weight and bias cast to `dtype` (e.g. T5 keeps its output
    /// projections in f32 inside a half-precision model).
    #[must_use]
    pub fn cast(self, dtype: FloatDType) -> Self {
        Self {
            weight: self.weight.map(|w| w.cast(dtype)),
            bias: self.bias.map(|b| b.map(|b| b.cast(dtype))),
        }
    }
}
