//! Negative prompts through true classifier-free guidance, against diffusers' `FluxPipeline`
//! with `negative_prompt` and `true_cfg_scale` (fixtures: scripts/reference/gen_true_cfg.py).

use crate::common::{assert_matches, compare, fixture, max_abs, pipeline, run};
use flux::{Error, GenerateRequest, MemoryMode};
use flux_io::Weights;

#[test]
fn true_cfg_matches_diffusers() {
    let p = pipeline("tiny_pipeline", 32, MemoryMode::Resident);
    for name in ["dev_true_cfg", "dev_true_cfg_batch"] {
        let resolved = p.resolve(&run(name).request).unwrap();
        assert!(resolved.true_cfg.is_some() && resolved.warnings.is_empty());
        assert_matches(&p, name);
    }
}

#[test]
fn a_negative_prompt_without_true_cfg_is_said_and_does_nothing() {
    let p = pipeline("tiny_pipeline", 32, MemoryMode::Sequential);
    let base = run("dev_true_cfg");
    let plain: Vec<f32> = Weights::open(fixture("tiny_pipeline_runs/dev_true_cfg.safetensors"))
        .unwrap()
        .data("image_without_negative")
        .unwrap()
        .to_vec()
        .unwrap();
    for request in [base.request.clone().with_true_cfg(1.0), {
        let mut r = base.request.clone();
        r.true_cfg = None;
        r
    }] {
        let resolved = p.resolve(&request).unwrap();
        assert_eq!(resolved.true_cfg, None);
        assert!(
            resolved.warnings[0].contains("negative prompt is ignored"),
            "{:?}",
            resolved.warnings
        );
        let out = p.generate_float(&request).unwrap();
        assert!(max_abs(&out, &plain) <= 1e-4);
    }
    let mut no_negative = base.request.clone();
    no_negative.negative_prompts = Vec::new();
    let warnings = p.resolve(&no_negative).unwrap().warnings;
    assert!(
        warnings[0].contains("needs a negative prompt"),
        "{warnings:?}"
    );
}

#[test]
fn bad_true_cfg_requests_are_errors() {
    let p = pipeline("tiny_pipeline", 32, MemoryMode::Resident);
    let two = GenerateRequest::batch(["a", "b"])
        .with_size(32, 32)
        .with_true_cfg(3.0);
    let err = |r: &GenerateRequest| match p.resolve(r) {
        Err(Error::BadRequest(m)) => m,
        other => panic!("{other:?}"),
    };
    let m = err(&two.clone().with_negative_prompts(["x", "y", "z"]));
    assert!(m.contains("3 negative prompts for 2 prompts"), "{m}");
    let m = err(&two
        .clone()
        .with_negative_prompt("x")
        .with_true_cfg(f32::NAN));
    assert!(m.contains("true CFG scale"), "{m}");
}

/// The same batches run in chunks of at most 1 and 3 rows per transformer call (true CFG
/// counts each image twice: 8 rows in chunks of 3, 3, 2): diffusers' images, and the
/// unchunked run's.
#[test]
fn chunked_batches_match_diffusers() {
    let whole = pipeline("tiny_pipeline", 32, MemoryMode::Resident);
    for (name, rows) in [("dev_batch2", 1), ("dev_true_cfg_batch", 3)] {
        let p = flux::Pipeline::<crate::common::B>::builder()
            .model_dir(fixture("tiny_pipeline"))
            .t5_max_len(32)
            .max_batch(rows)
            .build()
            .unwrap();
        let run = run(name);
        let (err, same) = compare(&p, &run);
        let unchunked = whole.generate_float(&run.request).unwrap();
        let chunked = p.generate_float(&run.request).unwrap();
        let vs_whole = max_abs(&chunked, &unchunked);
        eprintln!(
            "{name} in chunks of {rows}: vs diffusers {err:.2e} ({:.3}% identical 8-bit), vs one call {vs_whole:.2e}",
            same * 100.0
        );
        assert!(err <= 1e-4 && same >= 0.999, "{name}: {err} {same}");
        assert!(vs_whole <= 1e-5, "{name}: {vs_whole}");
    }
}
