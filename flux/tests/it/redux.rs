//! FLUX.1 Redux against diffusers' `FluxPriorReduxPipeline` + `FluxPipeline` on tiny random
//! models (scripts/reference/gen_redux.py → `redux/`): the SigLIP tower and its image
//! processor, the Redux embedder, and whole seeded runs — image variation without a prompt,
//! and a prompt with two weighted images.

use crate::common::{B, Recorded, bits, fixture, max_abs};
use flux::{Error, GenerateRequest, MemoryMode, ModelFiles, Pipeline, ReduxFiles, ReduxImage};
use image::{DynamicImage, RgbImage};

/// A recorded run of gen_redux.py (`redux/runs/<name>`).
fn recorded(name: &str) -> Recorded {
    Recorded::open(&format!("redux/runs/{name}"))
}

fn redux_files() -> ReduxFiles {
    ReduxFiles::from_dir(fixture("redux/tiny_redux")).unwrap()
}

fn pipeline(t5_len: usize) -> Pipeline<B> {
    Pipeline::<B>::builder()
        .files(ModelFiles::from_dir(fixture("tiny_pipeline")).unwrap())
        .t5_max_len(t5_len)
        .memory(MemoryMode::Resident)
        .redux(redux_files())
        .build()
        .unwrap()
}

/// The image processor (bit for bit at the tower's size), the tower's last hidden state and
/// the embedder, each on its own.
#[test]
fn siglip_and_embedder_match_transformers() {
    let run = recorded("siglip");
    let device = Default::default();
    let files = redux_files();
    let processor =
        flux_text::SiglipImageProcessor::from_file(files.preprocessor.as_ref().unwrap()).unwrap();
    let pixels = processor
        .preprocess::<B>(&run.image("image_a_u8", 0), &device)
        .unwrap();
    let pixel_values: Vec<f32> = pixels.clone().into_data().to_vec().unwrap();
    assert_eq!(bits(&pixel_values), bits(&run.values("pixel_values_a")));

    let siglip = flux_text::load_siglip::<B>(&files.image_encoder, &device).unwrap();
    assert_eq!(siglip.config().num_patches(), 4);
    let hidden = siglip.forward(pixels).unwrap();
    let hidden_v: Vec<f32> = hidden.clone().into_data().to_vec().unwrap();
    let err = max_abs(&hidden_v, &run.values("last_hidden_state_a"));
    eprintln!("SigLIP last_hidden_state: max abs err {err:.2e}");
    assert!(err <= 1e-5, "{err}");

    let embedder =
        flux_text::load_redux_embedder::<B>(&files.image_embedder, &device, Default::default())
            .unwrap();
    let embeds: Vec<f32> = embedder.forward(hidden).into_data().to_vec().unwrap();
    let err = max_abs(&embeds, &run.values("image_embeds_a"));
    eprintln!("Redux embeds: max abs err {err:.2e}");
    assert!(err <= 1e-5, "{err}");

    // A 40x30 image is resized (torchvision's antialiased bicubic there, the `image` crate's
    // Catmull-Rom here): measured 3 8-bit levels apart at most (2.35e-2), bound at 4.
    let resized: Vec<f32> = processor
        .preprocess::<B>(&run.image("image_b_u8", 0), &device)
        .unwrap()
        .into_data()
        .to_vec()
        .unwrap();
    let err = max_abs(&resized, &run.values("pixel_values_b"));
    eprintln!("resized 40x30 -> 28x28: pixel max abs err {err:.2e}");
    assert!(err <= 4.0 / 127.5 + 1e-6, "{err}");
}

fn check(name: &str, run: &Recorded, pipeline: &Pipeline<B>, request: &GenerateRequest) {
    run.check_images(name, &pipeline.generate_float(request).unwrap(), 0.999);
}

/// Image variation: no prompt (zeros for the text, as the prior without text encoders), one
/// image, seeded.
#[test]
fn redux_variation_reproduces_diffusers() {
    let run = recorded("redux_variation");
    let p = pipeline(32);
    let request = GenerateRequest::new("")
        .with_size(48, 32)
        .with_steps(3)
        .with_guidance(2.5)
        .with_seed(20)
        .with_redux_image(run.image("input_image_u8", 0), 1.0);
    check("redux_variation", &run, &p, &request);
}

/// A prompt and two images weighted (1, 0.6), pooled (1, 0.5): diffusers sums
/// `[text, image] · strength` over the images. T5 at 512 tokens, as the prior hard-codes.
#[test]
fn redux_prompt_with_two_images_reproduces_diffusers() {
    let run = recorded("redux_prompt_two_images");
    let p = pipeline(512);
    let mut request = GenerateRequest::new("a cat")
        .with_size(32, 32)
        .with_steps(2)
        .with_guidance(3.5)
        .with_seed(21)
        .with_images_per_prompt(2);
    for (i, (s, ps)) in [(1.0, 1.0), (0.6, 0.5)].into_iter().enumerate() {
        request.redux_images.push(ReduxImage {
            image: run.image("input_images_u8", i),
            strength: s,
            pooled_strength: ps,
        });
    }
    check("redux_prompt_two_images", &run, &p, &request);
}

#[test]
fn bad_redux_requests_are_errors() {
    let image = DynamicImage::ImageRgb8(RgbImage::new(28, 28));
    let base = || GenerateRequest::new("x").with_size(32, 32).with_steps(1);
    let without = Pipeline::<B>::builder()
        .files(ModelFiles::from_dir(fixture("tiny_pipeline")).unwrap())
        .t5_max_len(32)
        .build()
        .unwrap();
    let expect = |p: &Pipeline<B>, r: GenerateRequest, needle: &str| match p.resolve(&r) {
        Err(Error::BadRequest(m)) => assert!(m.contains(needle), "{m}"),
        other => panic!("expected an error with `{needle}`, got {other:?}"),
    };
    expect(
        &without,
        base().with_redux_image(image.clone(), 1.0),
        "Redux models",
    );
    let with = pipeline(32);
    expect(
        &with,
        base().with_redux_image(DynamicImage::ImageRgb8(RgbImage::new(0, 0)), 1.0),
        "empty",
    );
    expect(
        &with,
        base().with_redux_image(image.clone(), f32::NAN),
        "finite",
    );
    expect(
        &with,
        base()
            .with_redux_image(image, 1.0)
            .with_negative_prompt("blurry")
            .with_true_cfg(3.0),
        "true CFG",
    );
    // An empty prompt is allowed only with a Redux image.
    expect(&with, GenerateRequest::new("").with_size(32, 32), "empty");
    // A folder without the Redux parts, and a SigLIP file of another model.
    assert!(matches!(
        ReduxFiles::from_dir(fixture("tiny_pipeline")),
        Err(Error::MissingFiles { .. })
    ));
    let wrong = ReduxFiles {
        image_encoder: fixture("tiny_pipeline/text_encoder"),
        ..redux_files()
    };
    let built = Pipeline::<B>::builder()
        .files(ModelFiles::from_dir(fixture("tiny_pipeline")).unwrap())
        .redux(wrong)
        .build();
    let Err(e) = built else {
        panic!("a CLIP text encoder loaded as the SigLIP tower")
    };
    assert!(e.to_string().contains("missing field `image_size`"), "{e}");
}
