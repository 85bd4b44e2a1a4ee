//! Shared helpers: fixture paths and tensors.
#![allow(dead_code)]

use std::path::PathBuf;

use burn::backend::NdArray;
use burn::tensor::Tensor;
use flux_core::io::Weights;

pub type B = NdArray<f32>;

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A tensor of `io.safetensors`.
pub fn io<Bk: burn::tensor::backend::Backend>(key: &str, device: &Bk::Device) -> Tensor<Bk, 4> {
    let w = Weights::open(fixture("io.safetensors")).unwrap();
    Tensor::from_data(w.data(key).unwrap().convert::<f32>(), device)
}

pub fn max_abs<Bk: burn::tensor::backend::Backend>(a: Tensor<Bk, 4>, b: Tensor<Bk, 4>) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .abs()
        .max()
        .into_scalar()
        .to_string()
        .parse()
        .unwrap()
}
