//! [`LoraAdapter`]: low-rank updates held beside a [`crate::Linear`]'s weight and applied at
//! run time, `y = x W + b + ((x D) ⊙ s) U`, so that LoRAs can be rescaled per request without
//! reloading the base weights, and stacked on quantized ones.

use burn::module::{Module, Param, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::module::linear;
use burn::tensor::{DType, Tensor, TensorData};

use crate::float_dtype;

/// The run-time LoRA updates of one linear layer `d_input -> d_output`: every LoRA (and every
/// part of a fused projection) that touches the layer, stacked along the rank.
///
/// - `down`: `[d_input, R]`, the LoRAs' `lora_A` / `lora_down` transposed, stacked;
/// - `up`: `[R, d_output]`, their `lora_B` / `lora_up` transposed, each in the output columns
///   of the projection it was trained on (zero elsewhere);
/// - `scale`: `[R]`, per rank component: the user's strength for its LoRA times `alpha / rank`.
#[derive(Module, Debug)]
pub struct LoraAdapter<B: Backend> {
    down: Param<Tensor<B, 2>>,
    up: Param<Tensor<B, 2>>,
    scale: Param<Tensor<B, 1>>,
}

impl<B: Backend> LoraAdapter<B> {
    /// Stacked factors (`down` `[d_input, R]`, `up` `[R, d_output]`, `scale` `[R]`, row-major
    /// f32) on `device` in `dtype`.
    pub(crate) fn new(
        [down, up, scale]: [Vec<f32>; 3],
        [d_input, d_output]: [usize; 2],
        dtype: DType,
        device: &B::Device,
    ) -> Self {
        let rank = scale.len();
        Self {
            down: param(down, [d_input, rank], dtype, device),
            up: param(up, [rank, d_output], dtype, device),
            scale: param(scale, [rank], dtype, device),
        }
    }

    /// The updates in `dtype`.
    pub(crate) fn cast(self, dtype: burn::tensor::FloatDType) -> Self {
        Self {
            down: self.down.map(|t| t.cast(dtype)),
            up: self.up.map(|t| t.cast(dtype)),
            scale: self.scale.map(|t| t.cast(dtype)),
        }
    }

    /// Total rank `R` of the stacked updates.
    pub fn rank(&self) -> usize {
        self.scale.lazy_shape().dims::<1>()[0]
    }

    /// Bytes held on the device.
    pub fn num_bytes(&self) -> usize {
        [self.down.val(), self.up.val()]
            .iter()
            .map(|t| t.shape().num_elements() * t.dtype().size())
            .sum::<usize>()
            + self.rank() * self.scale.val().dtype().size()
    }

    /// The id of the `scale` parameter (what a change of strength rewrites).
    pub(crate) fn scale_id(&self) -> ParamId {
        self.scale.id
    }

    /// `y + ((x D) ⊙ s) U`.
    ///
    /// # Shapes
    /// - x: `[..., d_input]`, y: `[..., d_output]` -> `[..., d_output]`
    pub(crate) fn add_to<const D: usize>(&self, x: Tensor<B, D>, y: Tensor<B, D>) -> Tensor<B, D> {
        let down = self.down.val();
        let x = x.cast(float_dtype(down.dtype()));
        let h = linear(x, down, None) * self.scale.val().unsqueeze::<D>();
        let update = linear(h, self.up.val(), None);
        let dtype = y.dtype();
        y + update.cast(float_dtype(dtype))
    }
}

fn param<B: Backend, const D: usize>(
    values: Vec<f32>,
    shape: [usize; D],
    dtype: DType,
    device: &B::Device,
) -> Param<Tensor<B, D>> {
    let data = TensorData::new(values, shape);
    Param::initialized(ParamId::new(), Tensor::from_data(data, (device, dtype)))
}
