//! Half precision: the transformer with f16 and bf16 weights and activations (burn's Flex
//! backend; NdArray has no half tensors) against the f32 reference outputs.
//!
//! What stays in f32 inside a half model: RMS-norm and LayerNorm statistics, the RoPE rotation,
//! the sinusoidal timestep embedding (docs/backends.md). The bounds are the measured errors
//! (f16 6.1e-3, bf16 4.1e-2 on outputs up to 5: 1.2e-3 and 8e-3 relative, the dtypes' rounding
//! of 4.9e-4 and 3.9e-3 grown over 3 blocks) times 2.

use crate::common::{Inputs, fixture, max_abs_diff, tensor};
use burn::backend::Flex;
use burn::tensor::DType;
use flux_core::LoadConfig;
use flux_io::Weights;

fn half_error(dtype: DType) -> f32 {
    let device = Default::default();
    let io = Weights::open(fixture("dev_tiny/io.safetensors")).unwrap();
    let options = LoadConfig {
        dtype: Some(dtype),
        ..Default::default()
    };
    let model = flux_core::load_with::<Flex>(fixture("dev_tiny/bfl.safetensors"), &device, options)
        .unwrap();
    assert_eq!(model.dtype(), dtype);
    let out = Inputs::<Flex>::read(&io, &device).run(&model);
    assert_eq!(out.dtype(), dtype);
    let err = max_abs_diff(out.cast(DType::F32), tensor(&io, "out", &device));
    eprintln!("transformer {dtype:?} on Flex: max abs err vs the f32 reference {err:.3e}");
    err
}

#[test]
fn f16_transformer_follows_f32() {
    assert!(half_error(DType::F16) <= 1.2e-2);
}

#[test]
fn bf16_transformer_follows_f32() {
    assert!(half_error(DType::BF16) <= 8e-2);
}
