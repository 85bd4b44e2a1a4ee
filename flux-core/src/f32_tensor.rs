//! Small tensors computed on the host (tables, ids) and moved to the device in f32.

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};

/// An f32 tensor of `shape` from host values, whatever the device's default float dtype.
pub(crate) fn f32_tensor<B: Backend, const D: usize>(
    values: Vec<f32>,
    shape: [usize; D],
    device: &B::Device,
) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(values, shape), (device, DType::F32))
}
