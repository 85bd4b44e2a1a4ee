//! Half precision: T5 in f16 stays finite where a naive f16 forward overflows; T5 and CLIP in
//! f16 and bf16 follow the f32 reference.
//!
//! burn 0.21's NdArray backend has no f16 tensors (its float element is f32 or f64); the Flex
//! backend stores f16 tensors (and computes attention in f32), so these tests run on Flex.

use crate::common::{Fx, fixture, ids, max_abs_err, read};
use burn::tensor::{DType, Tensor};
use flux_text::{LoadConfig, T5Precision, load_clip_with, load_t5, load_t5_with};

const IO: &str = "t5_overflow_io.safetensors";

fn is_finite(t: Tensor<Fx, 3>) -> bool {
    let v: Vec<f32> = t.into_data().convert::<f32>().into_vec().unwrap();
    v.iter().all(|x| x.is_finite())
}

#[test]
fn fixture_overflows_f16() {
    let (ff_max, _) = read(IO, "ff_max");
    assert!(ff_max[0] > 65504.0, "feed-forward max {}", ff_max[0]);
}

#[test]
fn f32_residual_stays_finite_and_naive_f16_overflows() {
    let device = Default::default();
    let path = fixture("t5_overflow.safetensors");
    let reference = read(IO, "hidden");

    let f32_model = load_t5::<Fx>(&path, &device).unwrap();
    let f32_err = max_abs_err(f32_model.forward(ids::<Fx>(IO, "ids", &device)), &reference);
    assert!(f32_err <= 1e-4, "f32 {f32_err}");

    let model = load_t5_with::<Fx>(
        &path,
        &device,
        LoadConfig {
            config: None,
            dtype: Some(DType::F16),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(model.precision(), T5Precision::F32Residual);
    let out = model.forward(ids::<Fx>(IO, "ids", &device));
    assert_eq!(out.dtype(), DType::F16);
    assert!(
        is_finite(out.clone()),
        "f16 with f32 residual is not finite"
    );
    let f16_err = max_abs_err(out, &reference);
    println!("overflow fixture: f32 err {f32_err:.3e}, f16 (f32 residual) err {f16_err:.3e}");
    // f16 rounding of O(1) outputs of a 2-layer model: a few 1e-3.
    assert!(f16_err < 2e-2, "f16 error {f16_err}");

    let naive = model.with_precision(T5Precision::Native);
    let out = naive.forward(ids::<Fx>(IO, "ids", &device));
    assert!(
        !is_finite(out),
        "the naive f16 forward was expected to overflow"
    );
}

#[test]
fn f16_and_bf16_follow_f32_on_the_parity_fixture() {
    let device = Default::default();
    let reference = read("t5_io.safetensors", "hidden");
    for (dtype, tol) in [(DType::F16, 2e-2), (DType::BF16, 1e-1)] {
        let model = load_t5_with::<Fx>(
            fixture("t5"),
            &device,
            LoadConfig {
                config: None,
                dtype: Some(dtype),
                ..Default::default()
            },
        )
        .unwrap();
        let out = model.forward(ids::<Fx>("t5_io.safetensors", "ids", &device));
        let err = max_abs_err(out, &reference);
        println!("T5 {dtype:?}: max abs err vs f32 reference {err:.3e}");
        assert!(err < tol, "{dtype:?}: {err}");
    }
}

#[test]
fn clip_f16_and_bf16_follow_f32() {
    let device = Default::default();
    const CLIP_IO: &str = "clip_io.safetensors";
    let (hidden_ref, pooled_ref) = (read(CLIP_IO, "last_hidden_state"), read(CLIP_IO, "pooled"));
    let mut errors = Vec::new();
    for dtype in [DType::F16, DType::BF16] {
        let model = load_clip_with::<Fx>(
            fixture("clip"),
            &device,
            LoadConfig {
                config: None,
                dtype: Some(dtype),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(model.dtype(), dtype);
        let out = model.forward(ids::<Fx>(CLIP_IO, "ids", &device));
        assert_eq!(out.pooled.dtype(), dtype);
        let hidden = max_abs_err(out.last_hidden_state, &hidden_ref);
        let pooled = max_abs_err(out.pooled, &pooled_ref);
        println!(
            "CLIP {dtype:?}: last_hidden_state {hidden:.3e}, pooled {pooled:.3e} vs f32 reference"
        );
        errors.push(hidden.max(pooled));
    }
    // Bounds: twice the measured errors (f16 5.9e-3, bf16 3.6e-2, on hidden states up to ~3).
    assert!(errors[0] < 1.2e-2, "f16 {}", errors[0]);
    assert!(errors[1] < 7.2e-2, "bf16 {}", errors[1]);
    // Rounding-limited: bf16 keeps 3 fewer mantissa bits than f16, so its error should be
    // ~8x f16's (6.0x measured), as rounding errors scale.
    let ratio = errors[1] / errors[0];
    assert!((3.0..20.0).contains(&ratio), "bf16/f16 error ratio {ratio}");
}
