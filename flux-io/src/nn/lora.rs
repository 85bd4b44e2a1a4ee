//! [`LoraAdapter`]: low-rank updates held beside a [`super::Linear`]'s weight and applied at
//! run time, `y = x W + b + ((x D) ⊙ s) U`, so that LoRAs can be switched and rescaled without
//! reloading the base weights, and stacked on quantized ones.

use burn::module::{Module, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use burn::tensor::module::linear;

use super::linear::float_dtype;
use super::packed::placeholder_float;

/// The run-time LoRA updates of one linear layer `d_input -> d_output`: every LoRA (and every
/// part of a fused projection) that touches the layer, stacked along the rank.
///
/// - `down`: `[d_input, R]`, the LoRAs' `lora_A` / `lora_down` transposed, stacked;
/// - `up`: `[R, d_output]`, their `lora_B` / `lora_up` transposed, each in the output columns
///   of the projection it was trained on (zero elsewhere);
/// - `scale`: `[R]`, per rank component: the user's strength for its LoRA times `alpha / rank`.
///
/// A layer without adapters holds one-value placeholders (`down` is `[1, 1]`; a real adapter
/// has `d_input ≥ 2`), allocated only if something materialises them.
#[derive(Module, Debug)]
pub struct LoraAdapter<B: Backend> {
    down: Param<Tensor<B, 2>>,
    up: Param<Tensor<B, 2>>,
    scale: Param<Tensor<B, 1>>,
}

/// Whether a `down` of shape `dims` is a real adapter, not the placeholder.
pub(crate) fn holds_adapter(dims: &[usize]) -> bool {
    dims != [1, 1]
}

impl<B: Backend> LoraAdapter<B> {
    /// No adapter.
    pub(crate) fn absent(device: &B::Device) -> Self {
        Self {
            down: placeholder_float(device),
            up: placeholder_float(device),
            scale: placeholder_float(device),
        }
    }

    /// Whether the layer holds run-time LoRA updates.
    pub fn is_present(&self) -> bool {
        holds_adapter(&self.down.lazy_shape().dims::<2>())
    }

    /// Total rank `R` of the stacked updates (0 when absent).
    pub fn rank(&self) -> usize {
        if self.is_present() {
            self.down.lazy_shape().dims::<2>()[1]
        } else {
            0
        }
    }

    /// `y + ((x D) ⊙ s) U`, or `y` when absent.
    ///
    /// # Shapes
    /// - x: `[..., d_input]`, y: `[..., d_output]` -> `[..., d_output]`
    pub(crate) fn add_to<const D: usize>(&self, x: Tensor<B, D>, y: Tensor<B, D>) -> Tensor<B, D> {
        if !self.is_present() {
            return y;
        }
        let down = self.down.val();
        let x = x.cast(float_dtype(down.dtype()));
        let h = linear(x, down, None) * self.scale.val().unsqueeze::<D>();
        let update = linear(h, self.up.val(), None);
        let dtype = y.dtype();
        y + update.cast(float_dtype(dtype))
    }
}
