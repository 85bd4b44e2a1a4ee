//! The FLUX.1 tools against diffusers' pipelines on tiny random models
//! (scripts/reference/gen_tools.py → `tools/`): Kontext (`FluxKontextPipeline`), Fill
//! (`FluxFillPipeline`), Control (`FluxControlPipeline`, with a 128-channel transformer and
//! with BFL's control LoRA on [dev]). Seeded runs are driven by the seed alone: every draw
//! (posterior samples of the init, masked and control images, the noise) must come in
//! diffusers' order for the images to match.

use crate::common::{B, Recorded, bits, fixture, max_abs};
use burn::tensor::{Tensor, TensorData};
use flux::FluxBackend;
use flux::tools::{fill_mask, kontext_output_size, kontext_reference_size};
use flux::{Error, GenerateRequest, LoraMode, MemoryMode, ModelFiles, Pipeline, Variant};
use image::{DynamicImage, RgbImage};

/// A recorded diffusers run of gen_tools.py (`tools/runs/<name>`).
pub(crate) fn recorded(name: &str) -> Recorded {
    Recorded::open(&format!("tools/runs/{name}"))
}

/// The tools' image check on a recorded run.
pub(crate) trait ToolRun {
    /// Runs `request` and compares with the reference's float and 8-bit images: ≤ 1e-3, and
    /// ≥ 99.9 % identical 8-bit values ([`HIGH_GUIDANCE_SAME`] above guidance 4).
    fn check<Bk: FluxBackend>(
        &self,
        name: &str,
        pipeline: &Pipeline<Bk>,
        request: &GenerateRequest,
    );
}

impl ToolRun for Recorded {
    fn check<Bk: FluxBackend>(
        &self,
        name: &str,
        pipeline: &Pipeline<Bk>,
        request: &GenerateRequest,
    ) {
        let min_same = match request.guidance {
            Some(g) if g > 4.0 => HIGH_GUIDANCE_SAME,
            _ => 0.999,
        };
        let out = pipeline.generate_float(request).unwrap();
        self.check_images(name, &out, min_same);
    }
}

pub(crate) fn builder(transformer: Option<&str>) -> flux::PipelineBuilder<B> {
    let files = ModelFiles::from_dir_with(fixture("tiny_pipeline"), transformer.map(fixture), None)
        .unwrap();
    Pipeline::<B>::builder()
        .files(files)
        .t5_max_len(32)
        .memory(MemoryMode::Resident)
}

pub(crate) fn control_lora() -> std::path::PathBuf {
    fixture("tools/control_lora_bfl.safetensors")
}

#[test]
fn kontext_sizes_match_diffusers() {
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("tools/kontext_sizes.json")).unwrap(),
    )
    .unwrap();
    let pair = |v: &serde_json::Value| {
        (
            v[0].as_u64().unwrap() as usize,
            v[1].as_u64().unwrap() as usize,
        )
    };
    let cases = json["reference_image"]["cases"].as_array().unwrap();
    for case in cases {
        let (w, h) = pair(&case["image_size"]);
        let auto = case["auto_resize"].as_bool().unwrap();
        let expected = pair(&case["resized_to"]);
        assert_eq!(
            kontext_reference_size(w, h, auto),
            Some(expected),
            "{w}x{h} auto {auto}"
        );
    }
    for case in json["output_size"]["cases"].as_array().unwrap() {
        let (w, h) = pair(&case["requested"]);
        let area = case["max_area"].as_u64().unwrap() as usize;
        let expected = pair(&case["output"]);
        assert_eq!(
            kontext_output_size(w, h, area),
            Some(expected),
            "{w}x{h} at {area}"
        );
    }
    assert!(cases.len() >= 18);
}

/// Kontext's transformer input, piece by piece: the reference's mode latents, packed, and
/// the ids with first coordinate 1 after the noisy tokens'.
#[test]
fn kontext_inputs_match_diffusers() {
    let run = recorded("kontext");
    let device = Default::default();
    let vae = flux_vae::load::<B>(
        fixture("tiny_pipeline/vae/diffusion_pytorch_model.safetensors"),
        &device,
    )
    .unwrap();
    let reference = run.image("reference_image_u8", 0).to_rgb8();
    let pixels = flux_vae::image_to_tensor::<B>(&reference, &device);
    let tokens = flux_core::pack(vae.encode(pixels).unwrap()).unwrap();
    let tokens: Vec<f32> = tokens.into_data().to_vec().unwrap();
    let err = max_abs(&tokens, &run.values("image_latents"));
    assert!(err <= 1e-4, "reference latents: {err}");

    let noisy = flux_core::img_ids::<B>(1, 32, 48, &device).unwrap();
    let refs = flux_core::img_ids_at::<B>(1, 48, 64, 1.0, &device).unwrap();
    let ids: Vec<f32> = Tensor::cat(vec![noisy, refs], 1)
        .into_data()
        .to_vec()
        .unwrap();
    assert_eq!(bits(&ids), bits(&run.values("transformer_img_ids")));
}

#[test]
fn kontext_reproduces_diffusers() {
    let run = recorded("kontext");
    let pipeline = builder(None).variant(Variant::Kontext).build().unwrap();
    assert_eq!(pipeline.variant(), Variant::Kontext);
    let request = run
        .request()
        .with_latents(run.values("latents_in"))
        .with_reference_image(run.image("reference_image_u8", 0))
        .with_max_area(run.usize("max_area"))
        .with_auto_resize(false);
    let plan = pipeline.resolve(&request).unwrap();
    assert_eq!(
        (plan.width, plan.height, plan.reference_size),
        (48, 32, Some((64, 48)))
    );
    run.check("kontext", &pipeline, &request);
}

/// Two prompts sharing one reference, a negative prompt through true CFG, seeded.
#[test]
fn kontext_batch_with_true_cfg_reproduces_diffusers() {
    let run = recorded("kontext_batch_cfg");
    let pipeline = builder(None).variant(Variant::Kontext).build().unwrap();
    let request = run
        .request()
        .with_reference_image(run.image("reference_image_u8", 0))
        .with_max_area(run.usize("max_area"))
        .with_auto_resize(false);
    run.check("kontext_batch_cfg", &pipeline, &request);
}

/// Fill's conditioning, piece by piece: the binarized mask (PIL's grayscale), its packing to
/// 256 channels, and the masked image.
#[test]
fn fill_inputs_match_diffusers() {
    let run = recorded("fill");
    let device = Default::default();
    let mask = fill_mask(&run.image("mask_image_u8", 0), 48, 32);
    assert_eq!(bits(&mask), bits(&run.values("mask")));
    let mask_t = Tensor::<B, 4>::from_data(TensorData::new(mask, [1, 1, 32, 48]), &device);
    let packed: Vec<f32> = flux_core::pack_mask(mask_t.clone())
        .unwrap()
        .into_data()
        .to_vec()
        .unwrap();
    assert_eq!(bits(&packed), bits(&run.values("mask_packed")));
    let pixels = flux_vae::image_to_tensor::<B>(&run.image("init_image_u8", 0).to_rgb8(), &device);
    let masked: Vec<f32> = (pixels * (mask_t.neg() + 1.0))
        .into_data()
        .to_vec()
        .unwrap();
    assert_eq!(bits(&masked), bits(&run.values("masked_image")));
}

/// The 8-bit bar above guidance 4 (Fill's default 30, the control runs' 10). The guidance
/// embedding's sin/cos arguments reach `guidance · 1000`, where torch's f32 `exp` (one ulp
/// off the correctly rounded value for 2 of the 128 frequencies, which we compute correctly
/// rounded) moves them by up to 1.2e-7 · guidance · 1000: at 30, 3.6e-3. Fill's first-step
/// velocity differs by 2.7e-4 from that alone (scripts/reference/check_guidance_exp.py
/// reproduces it inside diffusers); the images by 2.6e-5 (guidance 10) to 9.2e-5 (30), with
/// 99.77–99.91 % identical 8-bit values. The float bar stays 1e-3.
pub(crate) const HIGH_GUIDANCE_SAME: f64 = 0.997;

#[test]
fn fill_reproduces_diffusers() {
    let run = recorded("fill");
    let pipeline = builder(Some("tools/fill_transformer")).build().unwrap();
    assert_eq!(pipeline.variant(), Variant::Fill);
    let request = run
        .request()
        .with_fill(run.image("init_image_u8", 0), run.image("mask_image_u8", 0));
    run.check("fill", &pipeline, &request);
    // Fill's defaults are FluxFillPipeline's: 50 steps, guidance 30.
    let defaults = GenerateRequest::new("x")
        .with_size(48, 32)
        .with_fill(run.image("init_image_u8", 0), run.image("mask_image_u8", 0));
    let plan = pipeline.resolve(&defaults).unwrap();
    assert_eq!((plan.steps, plan.guidance), (50, Some(30.0)));
}

/// Strength 0.6 (the last 3 of 5 steps) and two images per prompt, seeded.
#[test]
fn fill_with_strength_and_batch_reproduces_diffusers() {
    let run = recorded("fill_strength");
    let pipeline = builder(Some("tools/fill_transformer")).build().unwrap();
    let request = run
        .request()
        .with_init_image(
            run.image("init_image_u8", 0),
            run.json["strength"].as_f64().unwrap() as f32,
        )
        .with_mask(run.image("mask_image_u8", 0));
    run.check("fill_strength", &pipeline, &request);
}

#[test]
fn control_reproduces_diffusers() {
    let run = recorded("control");
    let pipeline = builder(Some("tools/control_transformer")).build().unwrap();
    assert_eq!(pipeline.variant(), Variant::Control);
    let request = run
        .request()
        .with_control_image(run.image("control_image_u8", 0));
    run.check("control", &pipeline, &request);
}

/// BFL's control LoRA on [dev]: `img_in` widened to 128 inputs, `lora_B` biases, norm scales
/// replaced; merged at strength 1 and 0.75, and at run time rescaled per request.
#[test]
fn control_lora_reproduces_diffusers() {
    for (name, strength) in [("control_lora", 1.0), ("control_lora_075", 0.75)] {
        let run = recorded(name);
        let pipeline = builder(None)
            .lora(control_lora(), strength)
            .build()
            .unwrap();
        assert_eq!(pipeline.variant(), Variant::Control);
        let report = &pipeline.lora_reports()[0];
        assert_eq!(report.format, flux::LoraFormat::Control);
        let request = run
            .request()
            .with_control_image(run.image("control_image_u8", 0));
        run.check(name, &pipeline, &request);
    }
    let run = recorded("control_lora_075");
    let pipeline = builder(None)
        .lora(control_lora(), 1.0)
        .lora_mode(LoraMode::Runtime)
        .build()
        .unwrap();
    let request = run
        .request()
        .with_control_image(run.image("control_image_u8", 0))
        .with_lora_scales([0.75]);
    run.check("control_lora_075 (run-time)", &pipeline, &request);
}

/// Inputs a model cannot use, or a tool without what it needs: errors, never ignored.
#[test]
fn wrong_tool_inputs_are_errors() {
    let image = || DynamicImage::ImageRgb8(RgbImage::new(32, 32));
    let base = || GenerateRequest::new("x").with_size(32, 32).with_steps(1);
    let text = builder(None).build().unwrap();
    let kontext = builder(None).variant(Variant::Kontext).build().unwrap();
    let fill = builder(Some("tools/fill_transformer")).build().unwrap();
    let control = builder(Some("tools/control_transformer")).build().unwrap();
    let expect = |p: &Pipeline<B>, r: GenerateRequest, needle: &str| match p.resolve(&r) {
        Err(Error::BadRequest(m)) => assert!(m.contains(needle), "{m}"),
        other => panic!("expected an error with `{needle}`, got {other:?}"),
    };
    expect(
        &text,
        base().with_control_image(image()),
        "128 input channels",
    );
    expect(&text, base().with_fill(image(), image()), "Fill [dev]");
    expect(&text, base().with_reference_image(image()), "Kontext");
    expect(&kontext, base().with_fill(image(), image()), "Fill");
    expect(&kontext, base().with_init_image(image(), 0.5), "init image");
    expect(&fill, base(), "mask");
    expect(&fill, base().with_init_image(image(), 1.0), "mask");
    expect(
        &fill,
        base()
            .with_fill(image(), image())
            .with_control_image(image()),
        "control",
    );
    expect(&control, base(), "control image");
    expect(
        &control,
        GenerateRequest::batch(["a", "b"])
            .with_size(32, 32)
            .with_control_images([image(), image(), image()]),
        "one per prompt",
    );
    expect(
        &kontext,
        base().with_reference_image(DynamicImage::ImageRgb8(RgbImage::new(8, 8))),
        "too small",
    );
    // A variant the checkpoint's shape contradicts.
    match builder(None).variant(Variant::Fill).build() {
        Err(Error::BadRequest(m)) => assert!(m.contains("384"), "{m}"),
        other => panic!("{other:?}"),
    }
}

/// One transformer call on diffusers' recorded first-step input (hidden states with the
/// conditioning concatenated, ids, text, timestep, guidance): the velocity it returned.
fn first_velocity(run: &Recorded, model: &flux_core::Flux<B>) -> f32 {
    let device = Default::default();
    let t = |key: &str| -> Tensor<B, 3> {
        let dims = run.dims(key);
        let v = run.values(key);
        match dims.len() {
            2 => Tensor::from_data(TensorData::new(v, [1, dims[0], dims[1]]), &device),
            _ => Tensor::from_data(TensorData::new(v, [dims[0], dims[1], dims[2]]), &device),
        }
    };
    let hidden = t("transformer_hidden_states");
    let img_ids = t("transformer_img_ids");
    let txt = t("prompt_embeds");
    let n_txt = txt.dims()[1];
    let pooled: Tensor<B, 2> = Tensor::from_data(
        TensorData::new(run.values("pooled_prompt_embeds"), [1, 32]),
        &device,
    );
    let ts = run.values("transformer_timestep")[0];
    let g = run.values("transformer_guidance")[0];
    let v = model.forward(
        hidden,
        img_ids,
        txt,
        flux_core::txt_ids::<B>(1, n_txt, &device),
        Tensor::from_data(TensorData::new(vec![ts], [1]), &device),
        pooled,
        Some(Tensor::from_data(TensorData::new(vec![g], [1]), &device)),
    );
    let v: Vec<f32> = v.into_data().to_vec().unwrap();
    let expected = run.values("velocities");
    max_abs(&v, &expected[..v.len()])
}

/// The transformer alone on diffusers' recorded first-step input: Fill's 384-channel model and
/// [dev] with the control LoRA applied (widened to 128 inputs).
#[test]
fn first_step_velocities_match_diffusers() {
    let device = Default::default();
    let fill = flux_core::load::<B>(fixture("tools/fill_transformer"), &device).unwrap();
    let err = first_velocity(&recorded("fill"), &fill);
    eprintln!("fill first velocity: {err:.2e}");
    // Guidance 30: torch's exp (see HIGH_GUIDANCE_SAME) accounts for 2.72e-4 of it.
    assert!(err <= 3e-4, "fill: {err}");
    let transformer = fixture("tiny_pipeline/transformer");
    let config = flux_core::read_config(&transformer).unwrap();
    let file = flux::lora::LoraFile::open(control_lora()).unwrap();
    let targets = config.lora_targets::<B>(&device);
    let resolved = flux::resolve_loras(
        &[(file, 1.0)],
        &[(flux::Component::Transformer, &targets)],
        false,
    )
    .unwrap();
    let adapters = &resolved.adapters[&flux::Component::Transformer];
    // 26 layers (each with its lora_B bias) and 8 replaced norm scales.
    assert_eq!(
        (
            adapters.layer_paths().count(),
            adapters.param_paths().count()
        ),
        (26, 8)
    );
    let options = flux_core::LoadConfig {
        adapters: Some(adapters.clone()),
        lora_mode: LoraMode::Merged,
        ..Default::default()
    };
    let control = flux_core::load_with::<B>(&transformer, &device, options).unwrap();
    assert_eq!(control.config().in_channels, 128);
    let err = first_velocity(&recorded("control_lora"), &control);
    eprintln!("control LoRA first velocity: {err:.2e}");
    assert!(err <= 1e-4, "control LoRA: {err}");
}
