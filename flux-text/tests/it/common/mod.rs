//! Shared helpers of the integration tests: fixture paths, reading reference tensors.

#![allow(dead_code)]

use flux_nn::FluxBackend;
use std::path::PathBuf;

use burn::tensor::{Int, Tensor, TensorData};
use flux_io::{SafetensorsFile, Weights};

pub type Nd = burn::backend::NdArray<f32>;
pub type Fx = burn::backend::Flex;

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A tensor of a fixture file as f32 values and its shape.
pub fn read(file: &str, key: &str) -> (Vec<f32>, Vec<usize>) {
    let data = Weights::open(fixture(file)).unwrap().data(key).unwrap();
    let shape = data.shape.to_vec();
    (data.convert::<f32>().into_vec::<f32>().unwrap(), shape)
}

/// Token ids of a fixture file (stored as little-endian i64, which the float loader refuses).
pub fn ids<B: FluxBackend>(file: &str, key: &str, device: &B::Device) -> Tensor<B, 2, Int> {
    let st = SafetensorsFile::open(fixture(file)).unwrap();
    let shape = st.info(key).unwrap().shape.clone();
    let values: Vec<i64> = st
        .bytes(key)
        .unwrap()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// Largest absolute difference between a tensor and reference values (shapes must agree);
/// infinite when either holds NaN or inf.
pub fn max_abs_err<B: FluxBackend, const D: usize>(
    out: Tensor<B, D>,
    reference: &(Vec<f32>, Vec<usize>),
) -> f32 {
    assert_eq!(out.dims().to_vec(), reference.1, "shape");
    flux_testkit::max_abs_diff(&flux_testkit::values(out), &reference.0)
}
