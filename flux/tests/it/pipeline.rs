//! End-to-end parity with diffusers' `FluxPipeline` on a tiny pipeline saved in the real
//! diffusers folder layout (fixtures: scripts/reference/gen_pipeline.py).

use crate::common::{compare, pipeline, run};
use flux::{Error, GenerateRequest, MemoryMode, Stage};
use std::ops::ControlFlow;

/// Bound on the float image in [0, 1]: the f32 parity bar of the workspace (the pipeline issue
/// asks for 1e-3; measured 1.2e-6 to 5.6e-6).
const FLOAT_TOL: f32 = 1e-4;
/// Share of identical 8-bit values (measured 99.967% to 100%; the rest sit on a rounding edge).
const SAME_8BIT: f64 = 0.999;

#[test]
fn dev_matches_diffusers() {
    let (err, same) = compare(
        &pipeline("tiny_pipeline", 32, MemoryMode::Resident),
        &run("dev"),
    );
    eprintln!(
        "dev: max abs err {err:.2e}, identical 8-bit values {:.4}%",
        same * 100.0
    );
    assert!(err <= FLOAT_TOL && same >= SAME_8BIT, "{err} {same}");
}

#[test]
fn dev_batch2_matches_diffusers_in_sequential_mode() {
    let (err, same) = compare(
        &pipeline("tiny_pipeline", 32, MemoryMode::Sequential),
        &run("dev_batch2"),
    );
    eprintln!(
        "dev_batch2: max abs err {err:.2e}, identical 8-bit values {:.4}%",
        same * 100.0
    );
    assert!(err <= FLOAT_TOL && same >= SAME_8BIT, "{err} {same}");
}

#[test]
fn schnell_matches_diffusers() {
    let p = pipeline("tiny_pipeline_schnell", 32, MemoryMode::Resident);
    assert_eq!(p.kind(), flux::ModelKind::Schnell);
    let (err, same) = compare(&p, &run("schnell"));
    eprintln!(
        "schnell: max abs err {err:.2e}, identical 8-bit values {:.4}%",
        same * 100.0
    );
    assert!(err <= FLOAT_TOL && same >= SAME_8BIT, "{err} {same}");
}

#[test]
fn bad_requests_are_one_line_errors() {
    let p = pipeline("tiny_pipeline", 32, MemoryMode::Resident);
    let cases = [
        (
            GenerateRequest::new("").with_size(32, 32),
            "prompt 0 is empty",
        ),
        (
            GenerateRequest::new("a cat").with_size(40, 32),
            "multiple of 16",
        ),
        (
            GenerateRequest::new("a cat")
                .with_size(32, 32)
                .with_steps(0),
            "steps must be at least 1",
        ),
        (
            GenerateRequest::new("a cat")
                .with_size(32, 32)
                .with_latents(vec![0.0; 5]),
            "initial latents hold 5 values",
        ),
    ];
    for (request, expected) in cases {
        let err = p.generate(&request).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(expected) && !msg.contains('\n'),
            "{msg} should say {expected}"
        );
    }
}

#[test]
fn progress_reports_every_step_and_can_cancel() {
    let p = pipeline("tiny_pipeline", 32, MemoryMode::Resident);
    let request = GenerateRequest::new("a cat")
        .with_size(32, 32)
        .with_steps(3);
    let mut steps = Vec::new();
    p.generate_with_progress(&request, |pr| {
        if pr.stage == Stage::Denoising {
            steps.push((pr.step, pr.total));
        }
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(steps, vec![(0, 3), (1, 3), (2, 3), (3, 3)]);
    let err = p
        .generate_with_progress(&request, |pr| {
            if pr.stage == Stage::Denoising && pr.step == 1 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap_err();
    assert!(matches!(err, Error::Cancelled), "{err}");
}

/// Same seed, same picture: diffusers drew its noise with `torch.Generator("cpu")
/// .manual_seed(42)`; we pass only the seed and must start from the same latents.
#[test]
fn seeded_dev_reproduces_diffusers_noise_and_image() {
    let mut recorded = run("dev_seeded");
    let seed = 42;
    let drawn = flux_sampler::torch_randn_f32(seed, &[1, 16, 8, 12]).unwrap();
    let expected_noise = recorded.request.latents.take().expect("recorded latents");
    assert_eq!(
        drawn.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        expected_noise
            .iter()
            .map(|v| v.to_bits())
            .collect::<Vec<_>>()
    );
    recorded.request = recorded.request.with_seed(seed);
    let (err, same) = compare(
        &pipeline("tiny_pipeline", 32, MemoryMode::Resident),
        &recorded,
    );
    eprintln!(
        "dev_seeded: max abs err {err:.2e}, identical 8-bit values {:.4}%",
        same * 100.0
    );
    assert!(err <= FLOAT_TOL && same >= SAME_8BIT, "{err} {same}");
}
