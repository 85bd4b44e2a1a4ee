//! Shared helpers: fixture paths and tensors.
#![allow(dead_code)]

use flux_nn::FluxBackend;
use std::path::PathBuf;

use burn::backend::NdArray;
use burn::tensor::Tensor;
use flux_io::Weights;

pub type B = NdArray<f32>;

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A tensor of `io.safetensors`.
pub fn io<Bk: FluxBackend>(key: &str, device: &Bk::Device) -> Tensor<Bk, 4> {
    fixture_tensor("io.safetensors", key, device)
}

/// Tensor `key` of the fixture file `file`, as f32.
pub fn fixture_tensor<Bk: FluxBackend>(
    file: &str,
    key: &str,
    device: &Bk::Device,
) -> Tensor<Bk, 4> {
    let w = Weights::open(fixture(file)).unwrap();
    Tensor::from_data(w.data(key).unwrap().convert::<f32>(), device)
}

/// Max |a - b| over all elements, infinite when either holds NaN or inf; panics on shape
/// mismatch.
pub use flux_testkit::max_abs_diff_tensors as max_abs;

/// Deterministic latents of `shape` with values spread over about [-2, 2] (a fixed integer
/// hash of each index, so every run and backend sees the same input).
pub fn seeded<Bk: FluxBackend>(shape: [usize; 4], seed: u64, device: &Bk::Device) -> Tensor<Bk, 4> {
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n as u64)
        .map(|i| {
            let mut x = (i ^ seed.rotate_left(17)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            x ^= x >> 29;
            x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x ^= x >> 32;
            (x % 4001) as f32 / 1000.0 - 2.0
        })
        .collect();
    Tensor::from_data(burn::tensor::TensorData::new(values, shape), device)
}
