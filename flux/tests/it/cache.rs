//! Step caches against diffusers' `FirstBlockCacheConfig` and `MagCacheConfig` hooks and
//! TeaCache4FLUX's decision on `FluxPipeline` (fixtures: scripts/reference/gen_sampling.py):
//! the same calls computed and reused, step by step, and the same images.

use std::ops::ControlFlow;

use crate::common::{B, Recorded, max_abs, pipeline, run};
use flux::{Cache, Error, GenerateRequest, MemoryMode, Pipeline, Stage};

/// The reference's computed calls per step (both branches with true CFG).
pub(crate) fn reference_computed(rec: &Recorded) -> Vec<usize> {
    let computed = rec.json["computed"].as_object().unwrap();
    let steps = rec.usize("num_inference_steps");
    (0..steps)
        .map(|i| {
            computed
                .values()
                .filter(|branch| branch[i].as_bool().unwrap())
                .count()
        })
        .collect()
}

/// Our images and computed calls per step (from the progress reports' running counts).
pub(crate) fn generate_counting<Bk: flux::FluxBackend>(
    p: &Pipeline<Bk>,
    request: &GenerateRequest,
) -> (Vec<f32>, Vec<usize>) {
    let mut totals = Vec::new();
    let out = p
        .generate_float_with_progress(request, |progress| {
            if progress.stage == Stage::Denoising
                && progress.step > 0
                && let Some(stats) = progress.cache
            {
                totals.push(stats.computed);
                if progress.step == progress.total {
                    assert_eq!(
                        stats.computed + stats.reused,
                        progress.total * if request.true_cfg.is_some() { 2 } else { 1 }
                    );
                }
            }
            ControlFlow::Continue(())
        })
        .unwrap();
    let per_step = totals
        .iter()
        .scan(0, |done, &t| {
            let step = t - *done;
            *done = t;
            Some(step)
        })
        .collect();
    (out, per_step)
}

pub(crate) const RUNS: [&str; 6] = [
    "dev_fbc",
    "dev_fbc_true_cfg",
    "dev_fbc_batch",
    "dev_magcache",
    "dev_magcache_true_cfg",
    "dev_teacache",
];

#[test]
fn caches_decide_and_draw_as_the_reference() {
    let p = pipeline("tiny_pipeline", 32, MemoryMode::Resident);
    for name in RUNS {
        let rec = Recorded::open(&format!("tiny_pipeline_runs/{name}"));
        let run = run(name);
        let (out, computed) = generate_counting(&p, &run.request);
        let want = reference_computed(&rec);
        assert_eq!(computed.len(), want.len(), "{name}: one count per step");
        assert_eq!(computed, want, "{name}: computed calls per step");
        let reused: usize = want
            .iter()
            .map(|c| rec.json["computed"].as_object().unwrap().len() - c)
            .sum();
        assert!(reused >= 2, "{name}: the fixture must reuse");
        rec.check_images(name, &out, 0.999);
        assert!(max_abs(&out, &run.expected) <= 1e-4, "{name}");
        let mut plain = run.request.clone();
        plain.cache = None;
        let uncached = p.generate_float(&plain).unwrap();
        assert!(
            max_abs(&out, &uncached) > 1e-3,
            "{name}: the cache changed nothing"
        );
    }
}

/// With batches split into chunks of one row per transformer call (the CPU default), the
/// decision still spans every row of a branch, as diffusers' one call does.
#[test]
fn chunked_rows_decide_together() {
    let p = flux::Pipeline::<B>::builder()
        .model_dir(crate::common::fixture("tiny_pipeline"))
        .t5_max_len(32)
        .max_batch(1)
        .build()
        .unwrap();
    for name in ["dev_fbc_batch", "dev_fbc_true_cfg"] {
        let rec = Recorded::open(&format!("tiny_pipeline_runs/{name}"));
        let (out, computed) = generate_counting(&p, &run(name).request);
        assert_eq!(computed, reference_computed(&rec), "{name}");
        rec.check_images(&format!("{name} in chunks of 1"), &out, 0.999);
    }
}

#[test]
fn magcache_calibration_measures_the_references_ratios() {
    let p = pipeline("tiny_pipeline", 32, MemoryMode::Resident);
    let rec = Recorded::open("tiny_pipeline_runs/dev_magcache_calibrate");
    let mut request = run("dev_magcache_calibrate").request;
    request.cache = None;
    let (images, ratios) = p.calibrate_mag_cache(&request).unwrap();
    let want: Vec<f32> = rec.json["calibration_ratios"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let err = max_abs(&ratios, &want);
    eprintln!("magcache calibration: {ratios:?}, max abs err {err:.2e}");
    assert!(err <= 1e-4, "{ratios:?} vs {want:?}");
    let ours: Vec<u8> = images.iter().flat_map(|im| im.as_raw().clone()).collect();
    let same = ours
        .iter()
        .zip(rec.bytes("image_u8"))
        .filter(|(a, b)| **a == *b)
        .count();
    assert!(
        same as f64 >= 0.999 * ours.len() as f64,
        "calibration skips nothing"
    );
}

#[test]
fn bad_cache_values_are_errors() {
    let p = pipeline("tiny_pipeline", 32, MemoryMode::Sequential);
    for (cache, says) in [
        (
            Cache::FirstBlock { threshold: -1.0 },
            "first-block threshold -1 must be finite and >= 0",
        ),
        (
            Cache::Tea {
                threshold: f64::NAN,
            },
            "teacache threshold NaN must be finite",
        ),
    ] {
        let r = GenerateRequest::new("a cat")
            .with_size(32, 32)
            .with_cache(cache);
        match p.resolve(&r) {
            Err(Error::BadRequest(m)) => assert!(m.contains(says), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}

/// Caching composes with quantized weights, block offload and run-time LoRAs: a cache that
/// never skips (First-Block Cache and TeaCache at threshold 0, MagCache calibrating) gives the
/// uncached image to the bit (the blocks run in parts, the same operations on the same
/// layouts), and one that skips changes it, reuses calls and stays finite.
#[test]
fn caches_compose_with_quantized_offloaded_and_lora_models() {
    let builder = || {
        flux::Pipeline::<B>::builder()
            .model_dir(crate::common::fixture("tiny_pipeline"))
            .t5_max_len(32)
            .memory(MemoryMode::Resident)
    };
    let pipelines = [
        ("dense", builder().build().unwrap()),
        (
            "q8_0",
            builder()
                .quantization(flux::Quantization::To(flux::QuantType::Q8_0))
                .build()
                .unwrap(),
        ),
        ("offloaded", builder().offload_blocks(true).build().unwrap()),
        (
            "lora runtime",
            builder()
                .lora(
                    crate::common::fixture("lora/peft_diffusers.safetensors"),
                    0.8,
                )
                .lora_mode(flux::LoraMode::Runtime)
                .build()
                .unwrap(),
        ),
    ];
    let request = run("dev_fbc").request;
    let mut plain = request.clone();
    plain.cache = None;
    for (name, p) in &pipelines {
        let uncached = p.generate_float(&plain).unwrap();
        let mut calib = flux::MagCache::flux(0.0);
        calib.ratios = flux::MagRatios::Calibrate;
        for never in [
            Cache::FirstBlock { threshold: 0.0 },
            Cache::Tea { threshold: 0.0 },
            Cache::Mag(calib),
        ] {
            let (out, computed) = generate_counting(p, &plain.clone().with_cache(never.clone()));
            assert_eq!(computed, vec![1; 10], "{name} {never}");
            assert!(
                crate::common::bits(&out) == crate::common::bits(&uncached),
                "{name} {never}: a cache that never skips changed the image by {:.2e}",
                max_abs(&out, &uncached)
            );
        }
        let (out, computed) = generate_counting(p, &request);
        let reused = 10 - computed.iter().sum::<usize>();
        let change = max_abs(&out, &uncached);
        eprintln!(
            "{name} with {}: {reused} of 10 calls reused, max change {change:.2e}",
            request.cache.as_ref().unwrap()
        );
        assert!(reused >= 2 && change > 1e-3 && change.is_finite(), "{name}");
    }
}

/// Caches on the FLUX.1 tools against diffusers' pipelines with the same hooks (Kontext with
/// First-Block Cache, Fill with MagCache, Control with TeaCache on a batch of 2, BFL's control
/// LoRA with First-Block Cache): the same decisions and images.
#[test]
fn caches_on_the_tools_decide_and_draw_as_the_reference() {
    use crate::tools::{HIGH_GUIDANCE_SAME, builder, control_lora, recorded};
    let kontext = builder(None)
        .variant(flux::Variant::Kontext)
        .build()
        .unwrap();
    let fill = builder(Some("tools/fill_transformer")).build().unwrap();
    let control = builder(Some("tools/control_transformer")).build().unwrap();
    let control_lora = builder(None).lora(control_lora(), 1.0).build().unwrap();
    let cases: [(&str, &Pipeline<B>); 4] = [
        ("kontext_fbc", &kontext),
        ("fill_magcache", &fill),
        ("control_teacache", &control),
        ("control_lora_fbc", &control_lora),
    ];
    for (name, p) in cases {
        let rec = recorded(name);
        let base = rec.request();
        let request = match name {
            "kontext_fbc" => base
                .with_latents(rec.values("latents_in"))
                .with_reference_image(rec.image("reference_image_u8", 0))
                .with_max_area(rec.usize("max_area"))
                .with_auto_resize(false),
            "fill_magcache" => {
                base.with_fill(rec.image("init_image_u8", 0), rec.image("mask_image_u8", 0))
            }
            _ => base.with_control_image(rec.image("control_image_u8", 0)),
        };
        assert!(request.cache.is_some(), "{name}");
        let (out, computed) = generate_counting(p, &request);
        assert_eq!(
            computed,
            reference_computed(&rec),
            "{name}: computed calls per step"
        );
        let min_same = match request.guidance {
            Some(g) if g > 4.0 => HIGH_GUIDANCE_SAME,
            _ => 0.999,
        };
        rec.check_images(name, &out, min_same);
        let mut plain = request.clone();
        plain.cache = None;
        let uncached = p.generate_float(&plain).unwrap();
        assert!(
            max_abs(&out, &uncached) > 1e-3,
            "{name}: the cache changed nothing"
        );
    }
}
