//! Samplers and sigma spacings against diffusers' `FluxPipeline` with
//! `FlowMatchEulerDiscreteScheduler(use_karras_sigmas / use_exponential_sigmas /
//! use_beta_sigmas)` and `DPMSolverMultistepScheduler(use_flow_sigmas=True)` (fixtures:
//! scripts/reference/gen_sampling.py).

use crate::common::{Recorded, assert_matches, bits, pipeline};
use flux::{Error, GenerateRequest, MemoryMode, Sampler, Spacing};
use flux_sampler::{Schedule, Shift};

pub(crate) const RUNS: [&str; 5] = [
    "dev_karras",
    "dev_exponential",
    "dev_beta",
    "dev_dpmpp_2m",
    "dev_dpmpp_2m_20",
];

#[test]
fn samplers_and_spacings_match_diffusers() {
    let p = pipeline("tiny_pipeline", 32, MemoryMode::Resident);
    for name in RUNS {
        assert_matches(&p, name);
    }
}

/// The schedule each run's scheduler held, to the bit: sigmas and the timesteps the
/// transformer was given (DPM-Solver's truncated integers).
#[test]
fn the_runs_schedules_are_diffusers_to_the_bit() {
    for name in RUNS {
        let rec = Recorded::open(&format!("tiny_pipeline_runs/{name}"));
        let r = rec.request();
        let n_img = rec.json["image_seq_len"].as_u64().unwrap() as usize;
        let s = Schedule::pipeline(
            r.sampler,
            r.sigmas,
            r.steps.unwrap(),
            n_img,
            Some(Shift::default()),
        )
        .unwrap();
        let floats = |key: &str| -> Vec<f32> {
            rec.json[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect()
        };
        assert_eq!(
            bits(s.sigmas()),
            bits(&floats("scheduler_sigmas")),
            "{name}"
        );
        assert_eq!(
            bits(s.timesteps()),
            bits(&floats("scheduler_timesteps")),
            "{name}"
        );
    }
}

#[test]
fn combinations_the_reference_cannot_run_are_errors() {
    let dev = pipeline("tiny_pipeline", 32, MemoryMode::Sequential);
    let schnell = pipeline("tiny_pipeline_schnell", 32, MemoryMode::Sequential);
    let base = GenerateRequest::new("a cat")
        .with_size(32, 32)
        .with_sampler(Sampler::DpmPp2m);
    let err = |p: &flux::Pipeline<crate::common::B>, r: &GenerateRequest| match p.resolve(r) {
        Err(Error::BadRequest(m)) => m,
        other => panic!("{other:?}"),
    };
    let m = err(&dev, &base.clone().with_sigmas(Spacing::Karras));
    assert!(
        m.contains("the karras sigma spacing needs the euler sampler"),
        "{m}"
    );
    let m = err(&schnell, &base);
    assert!(
        m.contains("dpmpp-2m needs a model with a resolution-dependent shift"),
        "{m}"
    );
    let image = image::DynamicImage::new_rgb8(32, 32);
    let m = err(&dev, &base.clone().with_init_image(image, 0.5));
    assert!(
        m.contains("dpmpp-2m cannot start from a partly noised image"),
        "{m}"
    );
    // Every spacing runs with Euler on both models.
    for spacing in Spacing::ALL {
        let r = GenerateRequest::new("a cat")
            .with_size(32, 32)
            .with_sigmas(spacing);
        assert_eq!(dev.resolve(&r).unwrap().sigmas, spacing);
        assert_eq!(schnell.resolve(&r).unwrap().sigmas, spacing);
    }
}
