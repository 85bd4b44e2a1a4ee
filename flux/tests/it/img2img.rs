//! img2img parity with diffusers' `FluxImg2ImgPipeline` on the tiny pipeline: the recorded run
//! (`tiny_pipeline_runs/dev_img2img`, from scripts/reference/gen_pipeline.py) used
//! `generator=torch.Generator("cpu").manual_seed(3)`, which drew the VAE posterior sample's
//! noise first and the initial noise second; we are given only the seed.

use crate::common::{B, bits, compare, fixture, max_abs, pipeline, run};
use burn::tensor::{Tensor, TensorData};
use flux::{Error, GenerateRequest, MemoryMode, Stage};
use flux_io::{SafetensorsFile, Weights};
use image::{DynamicImage, RgbImage};
use std::ops::ControlFlow;

const RUN: &str = "tiny_pipeline_runs/dev_img2img";

fn recorded() -> (Weights, serde_json::Value) {
    let io = Weights::open(fixture(&format!("{RUN}.safetensors"))).unwrap();
    let json =
        serde_json::from_str(&std::fs::read_to_string(fixture(&format!("{RUN}.json"))).unwrap())
            .unwrap();
    (io, json)
}

/// The init image diffusers was given (`init_image_u8`, `[1, 64, 64, 3]`).
fn init_image() -> RgbImage {
    let file = SafetensorsFile::open(fixture(&format!("{RUN}.safetensors"))).unwrap();
    RgbImage::from_raw(64, 64, file.bytes("init_image_u8").unwrap().to_vec()).unwrap()
}

fn values(io: &Weights, key: &str) -> Vec<f32> {
    io.data(key).unwrap().to_vec::<f32>().unwrap()
}

/// Each piece of diffusers' `prepare_latents`, checked on its own: the pixels, the two draws
/// (bit for bit), the posterior sample and the noised start.
#[test]
fn img2img_inputs_match_diffusers() {
    let (io, json) = recorded();
    let device = Default::default();
    let pixels = flux_vae::image_to_tensor::<B>(&init_image(), &device);
    let pixels_v: Vec<f32> = pixels.clone().into_data().to_vec().unwrap();
    assert_eq!(bits(&pixels_v), bits(&values(&io, "init_image")));

    let mut generator = flux_sampler::TorchGenerator::new(json["seed"].as_u64().unwrap());
    let eps = generator.randn_f32(16 * 8 * 8);
    let noise = generator.randn_f32(16 * 8 * 8);
    assert_eq!(bits(&eps), bits(&values(&io, "encode_eps")));
    assert_eq!(bits(&noise), bits(&values(&io, "noise")));

    let vae = flux_vae::load::<B>(
        fixture("tiny_pipeline/vae/diffusion_pytorch_model.safetensors"),
        &device,
    )
    .unwrap();
    let eps_t = Tensor::<B, 4>::from_data(TensorData::new(eps, [1, 16, 8, 8]), &device);
    let latents: Vec<f32> = vae
        .encode_sample(pixels, eps_t)
        .unwrap()
        .into_data()
        .to_vec()
        .unwrap();
    let err = max_abs(&latents, &values(&io, "image_latents"));
    eprintln!("posterior sample: max abs err {err:.2e}");
    assert!(err <= 1e-4, "{err}");

    let start = flux_sampler::img2img_start(5, json["strength"].as_f64().unwrap());
    assert_eq!(start as u64, json["t_start"].as_u64().unwrap());
    let sigma = values(&io, "sigmas")[start];
    let noised: Vec<f32> = noise
        .iter()
        .zip(&latents)
        .map(|(n, l)| sigma * n + (1.0 - sigma) * l)
        .collect();
    let err = max_abs(&noised, &values(&io, "latents_in"));
    assert!(err <= 1e-4, "{err}");
}

/// The whole call, driven by seed and init image only.
#[test]
fn img2img_dev_reproduces_diffusers() {
    let (_, json) = recorded();
    let mut recorded = run("dev_img2img");
    recorded.request.latents = None;
    recorded.request = recorded
        .request
        .with_seed(json["seed"].as_u64().unwrap())
        .with_init_image(
            DynamicImage::ImageRgb8(init_image()),
            json["strength"].as_f64().unwrap() as f32,
        );
    let p = pipeline("tiny_pipeline", 32, MemoryMode::Sequential);
    let mut steps = Vec::new();
    let mut stages = Vec::new();
    p.generate_with_progress(&recorded.request, |pr| {
        if !stages.contains(&pr.stage) {
            stages.push(pr.stage);
        }
        if pr.stage == Stage::Denoising {
            steps.push(pr.step);
        }
        ControlFlow::Continue(())
    })
    .unwrap();
    // strength 0.6 of 5 steps: diffusers runs the last 3.
    assert_eq!(steps, vec![0, 1, 2, 3]);
    assert_eq!(
        stages,
        vec![
            Stage::Encoding,
            Stage::EncodingImage,
            Stage::Loading,
            Stage::Denoising,
            Stage::Decoding
        ]
    );
    let (err, same) = compare(&p, &recorded);
    eprintln!(
        "dev_img2img: max abs err {err:.2e}, identical 8-bit values {:.4}%",
        same * 100.0
    );
    // The pipeline tests' bars: f32 parity on the float image, 99.9% identical 8-bit values.
    assert!(err <= 1e-4 && same >= 0.999, "{err} {same}");
}

/// An init image of another size is resized to the request's size, not refused.
#[test]
fn img2img_resizes_the_init_image() {
    let p = pipeline("tiny_pipeline", 32, MemoryMode::Resident);
    let small = DynamicImage::ImageRgb8(RgbImage::from_fn(20, 12, |x, y| {
        image::Rgb([(x * 12) as u8, (y * 20) as u8, 128])
    }));
    let request = GenerateRequest::new("a cat")
        .with_size(32, 48)
        .with_steps(2)
        .with_init_image(small, 0.5);
    let images = p.generate(&request).unwrap();
    assert_eq!(images[0].dimensions(), (32, 48));
}

#[test]
fn img2img_bad_strengths_are_refused() {
    let p = pipeline("tiny_pipeline", 32, MemoryMode::Resident);
    let image = DynamicImage::ImageRgb8(RgbImage::new(32, 32));
    for (strength, expected) in [
        (0.0, "must be in (0, 1]"),
        (1.5, "must be in (0, 1]"),
        (f32::NAN, "must be in (0, 1]"),
        (1e-20, "leaves none of the 4 steps"),
    ] {
        let request = GenerateRequest::new("a cat")
            .with_size(32, 32)
            .with_steps(4)
            .with_init_image(image.clone(), strength);
        let err = p.generate(&request).unwrap_err();
        assert!(
            matches!(err, Error::BadRequest(_)) && err.to_string().contains(expected),
            "strength {strength}: {err}"
        );
    }
}
