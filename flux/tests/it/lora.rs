//! LoRA parity with diffusers / PEFT (and, where diffusers cannot load a format on the tiny
//! model, the format's formula applied to the weights): every format, two strengths, merged and
//! run-time, two LoRAs at once, end to end through the pipeline, and bad files
//! (fixtures: scripts/reference/gen_lora.py).

use burn::tensor::{Tensor, TensorData};
use flux::lora::{Adapters, LoraFile, LoraMode, Resolved};
use flux::{Component, GenerateRequest, MemoryMode, Pipeline};
use flux_io::{SafetensorsFile, Weights};

use crate::common::{B, fixture, max_abs};

/// f32 parity bar (the reference's own noise floor is ~1.4e-6).
const TOL: f32 = 1e-4;
/// Merged and run-time forms are the same factors: they agree far below the parity bar.
const MODES_TOL: f32 = 1e-5;

const FORMATS: &[&str] = &[
    "peft_diffusers",
    "kohya",
    "bfl_comfy",
    "xlabs",
    "lokr",
    "loha",
];

fn expected(key: &str) -> Vec<f32> {
    Weights::open(fixture("lora/expected.safetensors"))
        .unwrap()
        .data(key)
        .unwrap_or_else(|e| panic!("{key}: {e}"))
        .to_vec::<f32>()
        .unwrap()
}

fn tensor<const D: usize>(key: &str, shape: [usize; D]) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(expected(key), shape), &Default::default())
}

/// The tiny pipeline's transformer and CLIP configs' targets, and `loras` resolved on them.
fn resolve(loras: &[(&str, f32)], lenient: bool) -> flux_io::Result<Resolved<Component>> {
    let device = Default::default();
    let config = flux::core::read_config(fixture("tiny_pipeline/transformer")).unwrap();
    let clip = flux::text::read_clip_config(fixture("tiny_pipeline/text_encoder")).unwrap();
    let transformer = config.lora_targets::<B>(&device);
    let clip = clip.lora_targets::<B>(&device);
    let files = loras
        .iter()
        .map(|(name, scale)| {
            Ok((
                LoraFile::open(fixture(&format!("lora/{name}.safetensors")))?,
                *scale,
            ))
        })
        .collect::<flux_io::Result<Vec<_>>>()?;
    flux::resolve_loras(
        &files,
        &[
            (Component::Transformer, &transformer),
            (Component::Clip, &clip),
        ],
        lenient,
    )
}

fn load(quantization: flux::Quantization) -> flux::core::Flux<B> {
    load_with(flux::core::LoadConfig {
        quantization,
        ..Default::default()
    })
}

fn load_with(options: flux::core::LoadConfig) -> flux::core::Flux<B> {
    flux::core::load_with(
        fixture("tiny_pipeline/transformer"),
        &Default::default(),
        options,
    )
    .unwrap()
}

/// The tiny transformer built with `adapters` applied as `mode`.
fn with_adapters(adapters: &Adapters, mode: LoraMode) -> flux::core::Flux<B> {
    load_with(flux::core::LoadConfig {
        adapters: Some(adapters.clone()),
        lora_mode: mode,
        ..Default::default()
    })
}

/// The transformer's output on the fixture's inputs.
fn forward(model: &flux::core::Flux<B>) -> Vec<f32> {
    let out = model.forward(
        tensor("img", [1, 16, 64]),
        tensor("img_ids", [1, 16, 3]),
        tensor("txt", [1, 8, 32]),
        tensor("txt_ids", [1, 8, 3]),
        tensor("timestep", [1]),
        tensor("pooled", [1, 32]),
        Some(tensor("guidance", [1])),
    );
    out.into_data().to_vec::<f32>().unwrap()
}

fn with_lora(loras: &[(&str, f32)], mode: LoraMode) -> Vec<f32> {
    let resolved = resolve(loras, false).unwrap();
    forward(&with_adapters(
        &resolved.adapters[&Component::Transformer],
        mode,
    ))
}

#[test]
fn every_format_matches_the_reference_at_two_strengths_in_both_modes() {
    let base = expected("base_out");
    assert!(max_abs(&forward(&load(Default::default())), &base) <= TOL);
    for format in FORMATS {
        for (scale, key) in [(1.0, "s100"), (0.6, "s060")] {
            let want = expected(&format!("{format}_{key}"));
            let merged = with_lora(&[(format, scale)], LoraMode::Merged);
            let runtime = with_lora(&[(format, scale)], LoraMode::Runtime);
            let (e_merged, e_runtime) = (max_abs(&merged, &want), max_abs(&runtime, &want));
            let modes = max_abs(&merged, &runtime);
            let effect = max_abs(&want, &base);
            eprintln!(
                "{format} strength {scale}: merged {e_merged:.2e}, runtime {e_runtime:.2e}, \
                 merged vs runtime {modes:.2e} (LoRA effect {effect:.2})"
            );
            assert!(effect > 0.05, "{format}: the LoRA must change the output");
            assert!(e_merged <= TOL && e_runtime <= TOL, "{format} {scale}");
            assert!(modes <= MODES_TOL, "{format} {scale}: {modes}");
        }
    }
}

#[test]
fn two_loras_at_once_match_set_adapters() {
    let want = expected("two_loras_out");
    for mode in [LoraMode::Merged, LoraMode::Runtime] {
        let out = with_lora(&[("peft_diffusers", 0.7), ("peft_diffusers_b", 0.4)], mode);
        let err = max_abs(&out, &want);
        eprintln!("two LoRAs ({mode:?}): {err:.2e}");
        assert!(err <= TOL, "{mode:?}: {err}");
    }
}

#[test]
fn runtime_strengths_change_without_reloading() {
    let resolved = resolve(&[("kohya", 1.0)], false).unwrap();
    let adapters = &resolved.adapters[&Component::Transformer];
    let model = with_adapters(adapters, LoraMode::Runtime);
    assert!(model.param_bytes().adapters > 0);
    let (at_06, layers) = model
        .clone()
        .rescale_lora(&adapters.with_scales(&[0.6]).unwrap());
    assert_eq!(layers, adapters.layer_paths().count());
    assert!(max_abs(&forward(&at_06), &expected("kohya_s060")) <= TOL);
    let (at_0, _) = model.rescale_lora(&adapters.with_scales(&[0.0]).unwrap());
    assert!(max_abs(&forward(&at_0), &expected("base_out")) <= TOL);
}

#[test]
fn offloaded_blocks_take_loras_in_both_modes() {
    let resolved = resolve(&[("loha", 0.6)], false).unwrap();
    let adapters = &resolved.adapters[&Component::Transformer];
    for mode in [LoraMode::Merged, LoraMode::Runtime] {
        let model = load_with(flux::core::LoadConfig {
            offload_blocks: true,
            adapters: Some(adapters.clone()),
            lora_mode: mode,
            ..Default::default()
        });
        assert!(model.is_offloaded());
        let err = max_abs(&forward(&model), &expected("loha_s060"));
        assert!(err <= TOL, "{mode:?}: {err}");
    }
}

/// On a quantized base, low-rank updates run beside the packed weights (merging would lose
/// them to requantization): the result equals the quantized model's dequantized weights
/// with the update merged in f32.
#[test]
fn quantized_base_takes_loras_at_run_time() {
    let resolved = resolve(&[("peft_diffusers", 1.0)], false).unwrap();
    let adapters = &resolved.adapters[&Component::Transformer];
    // The tiny transformer quantized once to Q8_0 under its own (diffusers) names, then
    // built packed and built dense from that file (dense: exactly the packed weights' values).
    let dir = tempfile::tempdir().unwrap();
    let q8 = dir.path().join("q8_0.gguf");
    write_q8_0(&fixture("tiny_pipeline/transformer"), &q8);
    let build = |quantization| {
        let options = flux::core::LoadConfig {
            quantization,
            adapters: Some(adapters.clone()),
            lora_mode: LoraMode::Merged,
            ..Default::default()
        };
        flux::core::load_with::<B>(&q8, &Default::default(), options).unwrap()
    };
    let with_packed = build(flux::Quantization::AsStored);
    let with_dense = build(flux::Quantization::Dequantize);
    let held = with_packed.param_bytes();
    assert!(
        held.packed_layers > 10,
        "{} packed layers",
        held.packed_layers
    );
    // Every packed layer the LoRA touches holds its update beside the weight.
    assert!(held.adapters > 0 && with_dense.param_bytes().adapters == 0);
    let err = max_abs(&forward(&with_packed), &forward(&with_dense));
    let vs_f32 = max_abs(&forward(&with_packed), &expected("peft_diffusers_s100"));
    eprintln!(
        "Q8_0 base: packed+runtime vs dequantized+merged {err:.2e}; vs f32 reference {vs_f32:.2e}"
    );
    assert!(err <= MODES_TOL, "{err}");
}

/// The checkpoint at `src` as a GGUF file under the same names: matrices of whole 32-value
/// rows and more than 1024 values in Q8_0 (gguf-py's encoding), the rest in F32.
fn write_q8_0(src: &std::path::Path, dst: &std::path::Path) {
    use flux::gguf::{GgmlType, GgufWriter, quantize};
    let weights = Weights::open(src).unwrap();
    let mut keys: Vec<&str> = weights.keys().collect();
    keys.sort_unstable();
    let tensors: Vec<(&str, GgmlType, Vec<usize>, Vec<u8>)> = keys
        .into_iter()
        .map(|key| {
            let values: Vec<f32> = weights
                .data(key)
                .unwrap()
                .convert::<f32>()
                .to_vec()
                .unwrap();
            let shape = weights.shape(key).unwrap();
            let ty = match shape[..] {
                [_, cols] if cols % 32 == 0 && values.len() > 1024 => GgmlType::Q8_0,
                _ => GgmlType::F32,
            };
            (key, ty, shape, quantize(ty, &values).unwrap())
        })
        .collect();
    let mut writer = GgufWriter::new(dst);
    let arch = flux::gguf::MetadataValue::from("flux");
    writer.add_metadata("general.architecture", arch).unwrap();
    for (name, ty, shape, _) in &tensors {
        writer.add_tensor_info(name, *ty, shape).unwrap();
    }
    let mut data = writer.start_data().unwrap();
    for (name, _, _, bytes) in &tensors {
        data.write_tensor(name, bytes).unwrap();
    }
    data.finish().unwrap();
}

fn e2e_request() -> GenerateRequest {
    let latents = expected("e2e_latents_in");
    GenerateRequest::new("a photo of a cat wearing a tiny hat")
        .with_size(32, 32)
        .with_steps(3)
        .with_guidance(3.5)
        .with_latents(latents)
}

fn e2e_pipeline(loras: &[(&str, f32)], mode: LoraMode) -> Pipeline<B> {
    loras
        .iter()
        .fold(Pipeline::<B>::builder(), |b, (name, s)| {
            b.lora(fixture(&format!("lora/{name}.safetensors")), *s)
        })
        .model_dir(fixture("tiny_pipeline"))
        .t5_max_len(32)
        .memory(MemoryMode::Resident)
        .lora_mode(mode)
        .build()
        .unwrap()
}

/// Max abs error of the float image and the share of equal 8-bit values against `key`.
fn compare_image(pipeline: &Pipeline<B>, request: &GenerateRequest, key: &str) -> (f32, f64) {
    let out = pipeline.generate_float(request).unwrap();
    let err = max_abs(&out, &expected(key));
    let ours = flux::vae::rgb8_images(&out, 1, 32, 32);
    let reference = SafetensorsFile::open(fixture("lora/expected.safetensors"))
        .unwrap()
        .bytes(&format!("{key}_u8"))
        .unwrap()
        .to_vec();
    let same = ours[0]
        .as_raw()
        .iter()
        .zip(&reference)
        .filter(|(a, b)| a == b)
        .count();
    (err, same as f64 / reference.len() as f64)
}

#[test]
fn pipeline_applies_transformer_and_clip_loras_like_diffusers() {
    let merged = e2e_pipeline(&[("peft_diffusers", 1.0)], LoraMode::Merged);
    let reports = merged.lora_reports();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].layers[&Component::Transformer], 26); // 36 diffusers modules, fused
    assert_eq!(reports[0].layers[&Component::Clip], 12);
    eprintln!("{}", reports[0]);
    let runtime = e2e_pipeline(&[("peft_diffusers", 1.0)], LoraMode::Runtime);
    let kohya = e2e_pipeline(&[("kohya", 1.0)], LoraMode::Merged);
    let cases = [
        (&merged, e2e_request(), "e2e_s100_image"),
        (&runtime, e2e_request(), "e2e_s100_image"),
        (
            &runtime,
            e2e_request().with_lora_scales([0.6]),
            "e2e_s060_image",
        ),
        (
            &runtime,
            e2e_request().with_lora_scales([0.0]),
            "e2e_base_image",
        ),
        (&kohya, e2e_request(), "e2e_kohya_s100_image"),
    ];
    for (pipeline, request, key) in cases {
        let (err, same) = compare_image(pipeline, &request, key);
        eprintln!(
            "{key} {:?}: {err:.2e}, {:.3}% identical 8-bit",
            request.lora_scales,
            same * 100.0
        );
        assert!(err <= TOL && same >= 0.999, "{key}: {err} {same}");
    }
    // The loaded strength stays what it was after a rescaled request.
    let (err, _) = compare_image(&runtime, &e2e_request(), "e2e_s100_image");
    assert!(err <= TOL);
    let resolved = runtime
        .resolve(&e2e_request().with_lora_scales([0.6]))
        .unwrap();
    assert_eq!(
        resolved.loras,
        vec![("peft_diffusers.safetensors".to_string(), 0.6)]
    );
    // Merged LoRAs cannot change per request.
    let err = merged
        .generate_float(&e2e_request().with_lora_scales([0.6]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("run-time LoRA mode"), "{err}");
}
