//! Helpers shared by the flux-core integration tests.
#![allow(dead_code)]

use flux_nn::FluxBackend;
use std::path::PathBuf;

use burn::tensor::Tensor;
use flux_io::Weights;

/// Path of a fixture under `tests/fixtures/`.
pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// A tensor from a fixture file.
pub fn tensor<B: FluxBackend, const D: usize>(
    io: &Weights,
    key: &str,
    device: &B::Device,
) -> Tensor<B, D> {
    let data = io
        .data(key)
        .unwrap_or_else(|e| panic!("fixture tensor {key}: {e}"));
    Tensor::from_data(data, device)
}

/// Max |a - b| over all elements, infinite when either holds NaN or inf; panics on shape
/// mismatch.
pub use flux_testkit::max_abs_diff_tensors as max_abs_diff;

/// Inputs of one fixture case.
pub struct Inputs<B: FluxBackend> {
    pub img: Tensor<B, 3>,
    pub img_ids: Tensor<B, 3>,
    pub txt: Tensor<B, 3>,
    pub txt_ids: Tensor<B, 3>,
    pub timesteps: Tensor<B, 1>,
    pub y: Tensor<B, 2>,
    pub guidance: Option<Tensor<B, 1>>,
}

impl<B: FluxBackend> Inputs<B> {
    pub fn read(io: &Weights, device: &B::Device) -> Self {
        Self {
            img: tensor(io, "img", device),
            img_ids: tensor(io, "img_ids", device),
            txt: tensor(io, "txt", device),
            txt_ids: tensor(io, "txt_ids", device),
            timesteps: tensor(io, "timesteps", device),
            y: tensor(io, "y", device),
            guidance: io
                .contains("guidance")
                .then(|| tensor(io, "guidance", device)),
        }
    }

    pub fn run(&self, model: &flux_core::Flux<B>) -> Tensor<B, 3> {
        model.forward(
            self.img.clone(),
            self.img_ids.clone(),
            self.txt.clone(),
            self.txt_ids.clone(),
            self.timesteps.clone(),
            self.y.clone(),
            self.guidance.clone(),
        )
    }
}
