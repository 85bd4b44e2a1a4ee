//! One model code on every backend: every crate's parity fixtures run on burn's wgpu backend
//! and are compared with the reference outputs and with ndarray (`--features wgpu`).
//!
//! Without a GPU, Mesa's software Vulkan driver (lavapipe, Debian `mesa-vulkan-drivers`) runs
//! them; CI installs it. On a machine with no adapter at all the tests say so and pass, except
//! under CI (`CI` set), where a missing adapter fails them.
//!
//! The bars are the CPU's: f32 parity ≤ 1e-4 against the reference for every component, and
//! ≥ 99.9% identical 8-bit values for the pipeline. Measured on lavapipe (Mesa 22.3, LLVM 15):
//! transformer ≤ 2.1e-5 (≤ 3.0e-6 from ndarray), VAE 7.5e-6, T5 5.7e-6, CLIP 1.1e-6, pipeline
//! float image 1.3e-6 with 99.995% to 100% identical 8-bit values (docs/backends.md).
#![cfg(feature = "wgpu")]

use crate::common::{B as Nd, bits, compare, max_abs, run};
use burn::backend::Wgpu;
use burn::backend::wgpu::WgpuDevice;
use burn::tensor::{Int, Tensor, TensorData};
use flux::FluxBackend;
use flux::MemoryMode;
use flux_io::{SafetensorsFile, Weights};

type W = Wgpu;

/// The wgpu device, or `None` (said on stderr) where no adapter exists and CI is unset.
pub(crate) fn device() -> Option<WgpuDevice> {
    let device = WgpuDevice::default();
    match flux::nn::check_device::<W>(&device) {
        Ok(()) => Some(device),
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("skipped: {e} (install a Vulkan driver, e.g. mesa-vulkan-drivers)");
            None
        }
        Err(e) => panic!("CI must run the wgpu tests: {e}"),
    }
}

/// `crate/tests/fixtures/<rel>` of a sibling crate of the workspace.
fn fixture(krate: &str, rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(krate)
        .join("tests/fixtures")
        .join(rel)
}

fn tensor<Bk: FluxBackend, const D: usize>(
    w: &Weights,
    key: &str,
    device: &Bk::Device,
) -> Tensor<Bk, D> {
    Tensor::from_data(w.data(key).unwrap().convert::<f32>(), device)
}

fn values<Bk: FluxBackend, const D: usize>(t: Tensor<Bk, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec().unwrap()
}

/// A stored tensor's values as f32.
fn stored(w: &Weights, key: &str) -> Vec<f32> {
    w.data(key).unwrap().convert::<f32>().into_vec().unwrap()
}

/// Token ids stored as little-endian i64.
fn ids<Bk: FluxBackend>(
    path: &std::path::Path,
    key: &str,
    device: &Bk::Device,
) -> Tensor<Bk, 2, Int> {
    let st = SafetensorsFile::open(path).unwrap();
    let shape = st.info(key).unwrap().shape.clone();
    let v: Vec<i64> = st
        .bytes(key)
        .unwrap()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    Tensor::from_data(TensorData::new(v, shape), device)
}

/// Transformer output of `case`/`checkpoint` on backend `Bk`.
fn transformer<Bk: FluxBackend>(case: &str, checkpoint: &str, device: &Bk::Device) -> Vec<f32> {
    let io = Weights::open(fixture("flux-core", &format!("{case}/io.safetensors"))).unwrap();
    let model = flux_core::load::<Bk>(
        fixture("flux-core", &format!("{case}/{checkpoint}")),
        device,
    )
    .unwrap();
    forward(&model, &io, device)
}

/// `model` on the inputs of a transformer fixture's `io.safetensors`.
fn forward<Bk: FluxBackend>(
    model: &flux_core::Flux<Bk>,
    io: &Weights,
    device: &Bk::Device,
) -> Vec<f32> {
    let guidance = io
        .contains("guidance")
        .then(|| tensor::<Bk, 1>(io, "guidance", device));
    values(
        model
            .try_forward(
                tensor(io, "img", device),
                tensor(io, "img_ids", device),
                tensor(io, "txt", device),
                tensor(io, "txt_ids", device),
                tensor(io, "timesteps", device),
                tensor(io, "y", device),
                guidance,
            )
            .unwrap(),
    )
}

/// Transformer: max |wgpu − diffusers| on outputs of magnitude ≤ 5.
const TRANSFORMER_TOL: f32 = 1e-4;
/// wgpu against ndarray: the two backends' f32 rounding only.
const CROSS_BACKEND_TOL: f32 = 2e-5;

#[test]
fn transformer_fixtures_on_wgpu() {
    let Some(device) = device() else { return };
    for (case, checkpoint, expected) in [
        ("dev_tiny", "bfl.safetensors", "out"),
        ("dev_tiny", "diffusers", "out"),
        ("dev_tiny", "bfl_bf16.safetensors", "out_bf16"),
        ("dev_tiny", "diffusers_f16.safetensors", "out_f16"),
        ("dev_tiny", "comfy_fp8_scaled.safetensors", "out_fp8"),
        ("schnell_tiny", "bfl.safetensors", "out"),
        ("heads4", "diffusers", "out"),
    ] {
        let io = Weights::open(fixture("flux-core", &format!("{case}/io.safetensors"))).unwrap();
        let reference = stored(&io, expected);
        let ours = transformer::<W>(case, checkpoint, &device);
        let cpu = transformer::<Nd>(case, checkpoint, &Default::default());
        let (err, vs_cpu) = (max_abs(&ours, &reference), max_abs(&ours, &cpu));
        eprintln!(
            "transformer {case}/{checkpoint}: wgpu vs diffusers {err:.2e}, vs ndarray {vs_cpu:.2e}"
        );
        assert!(err <= TRANSFORMER_TOL, "{case}/{checkpoint}: {err}");
        assert!(
            vs_cpu <= CROSS_BACKEND_TOL,
            "{case}/{checkpoint} vs ndarray: {vs_cpu}"
        );
    }
}

/// VAE: encode and decode, as on the CPU.
const VAE_TOL: f32 = 1e-4;

#[test]
fn vae_fixtures_on_wgpu() {
    let Some(device) = device() else { return };
    let io = Weights::open(fixture("flux-vae", "io.safetensors")).unwrap();
    let vae = flux_vae::load::<W>(fixture("flux-vae", "diffusers/vae"), &device).unwrap();
    let latents = values(vae.encode(tensor(&io, "image", &device)).unwrap());
    let image = values(vae.decode(tensor(&io, "latents_in", &device)).unwrap());
    let (enc, dec) = (
        max_abs(&latents, &stored(&io, "latents")),
        max_abs(&image, &stored(&io, "decoded")),
    );
    eprintln!("vae: wgpu encode {enc:.2e}, decode {dec:.2e}");
    assert!(
        enc <= VAE_TOL && dec <= VAE_TOL,
        "encode {enc}, decode {dec}"
    );
}

/// Text encoders: T5 and CLIP hidden states and the pooled vector, as on the CPU.
const TEXT_TOL: f32 = 1e-4;

#[test]
fn text_fixtures_on_wgpu() {
    let Some(device) = device() else { return };
    let t5_io = fixture("flux-text", "t5_io.safetensors");
    let t5 = flux_text::load_t5::<W>(fixture("flux-text", "t5"), &device).unwrap();
    let hidden = values(t5.forward(ids::<W>(&t5_io, "ids", &device)));
    let t5_err = max_abs(&hidden, &stored(&Weights::open(&t5_io).unwrap(), "hidden"));

    let clip_io = fixture("flux-text", "clip_io.safetensors");
    let clip = flux_text::load_clip::<W>(fixture("flux-text", "clip"), &device).unwrap();
    let out = clip.forward(ids::<W>(&clip_io, "ids", &device));
    let w = Weights::open(&clip_io).unwrap();
    let clip_err = max_abs(
        &values(out.last_hidden_state),
        &stored(&w, "last_hidden_state"),
    );
    let pooled_err = max_abs(&values(out.pooled), &stored(&w, "pooled"));
    eprintln!("text: wgpu T5 {t5_err:.2e}, CLIP {clip_err:.2e}, pooled {pooled_err:.2e}");
    assert!(t5_err <= TEXT_TOL && clip_err <= TEXT_TOL && pooled_err <= TEXT_TOL);
}

/// Seeded noise reaches the device bit for bit (drawn on the host, then uploaded).
#[test]
fn noise_is_identical_on_wgpu() {
    let Some(device) = device() else { return };
    let shape = flux_sampler::diffusers_latent_shape(1, 64, 96);
    let on_gpu: Tensor<W, 4> =
        flux_sampler::noise_tensor(42, shape, flux_sampler::NoiseDtype::F32, &device).unwrap();
    let host = flux_sampler::torch_randn_f32(42, &shape).unwrap();
    assert_eq!(bits(&values(on_gpu)), bits(&host));
}

/// The tiny [dev] pipeline, resident on the wgpu device (`None` without one).
fn tiny_pipeline() -> Option<flux::Pipeline<W>> {
    let device = device()?;
    let pipeline = flux::Pipeline::<W>::builder()
        .model_dir(crate::common::fixture("tiny_pipeline"))
        .t5_max_len(32)
        .memory(MemoryMode::Resident)
        .device(device)
        .build()
        .unwrap();
    Some(pipeline)
}

/// The whole pipeline on wgpu against diffusers, fixed latents and seeded: the CPU's bars.
#[test]
fn pipeline_on_wgpu_matches_diffusers() {
    let Some(p) = tiny_pipeline() else { return };
    for name in ["dev", "dev_seeded"] {
        let mut recorded = run(name);
        if name == "dev_seeded" {
            recorded.request.latents = None;
            recorded.request = recorded.request.with_seed(42);
        }
        let (err, same) = compare(&p, &recorded);
        eprintln!(
            "pipeline {name}: wgpu max abs err {err:.2e}, identical 8-bit {:.3}%",
            same * 100.0
        );
        assert!(err <= 1e-4 && same >= 0.999, "{name}: {err} {same}");
    }
}

/// Samplers, spacings and step caches on wgpu: diffusers' images and the reference's
/// decisions, call by call.
#[test]
fn samplers_and_caches_on_wgpu_match_diffusers() {
    let Some(p) = tiny_pipeline() else { return };
    for name in crate::sampling::RUNS.into_iter().chain(crate::cache::RUNS) {
        let rec = crate::common::Recorded::open(&format!("tiny_pipeline_runs/{name}"));
        let (out, computed) = crate::cache::generate_counting(&p, &run(name).request);
        if rec.json["computed"].is_object() {
            assert_eq!(computed, crate::cache::reference_computed(&rec), "{name}");
        }
        rec.check_images(&format!("{name} on wgpu"), &out, 0.999);
        assert!(max_abs(&out, &rec.values("image")) <= 1e-4, "{name}");
    }
}

/// Block-level offload on a real device backend: blocks read back from wgpu to host memory,
/// then uploaded block by block each forward; the output must be bit-identical to the
/// resident model's on the same device.
#[test]
fn offloaded_transformer_on_wgpu_is_bit_identical() {
    let Some(device) = device() else { return };
    let case = "dev_tiny";
    let path = fixture("flux-core", &format!("{case}/bfl.safetensors"));
    let io = Weights::open(fixture("flux-core", &format!("{case}/io.safetensors"))).unwrap();
    let run = |model: &flux_core::Flux<W>| forward(model, &io, &device);
    let resident = flux_core::load::<W>(&path, &device).unwrap();
    let expected = bits(&run(&resident));
    let offloaded = resident.offload_blocks();
    assert!(offloaded.is_offloaded() && offloaded.offloaded_bytes() > 0);
    assert_eq!(bits(&run(&offloaded)), expected, "offload_blocks()");
    let options = flux_core::LoadConfig {
        offload_blocks: true,
        ..Default::default()
    };
    let loaded = flux_core::load_with::<W>(&path, &device, options).unwrap();
    assert_eq!(bits(&run(&loaded)), expected, "loaded offloaded");
    eprintln!(
        "offloaded transformer on wgpu: bit-identical, {} bytes of blocks on the host",
        loaded.offloaded_bytes()
    );
}

/// Quantized weights held packed on wgpu: every block type of the tiny [dev] GGUFs (and Q4_K's
/// sub-block factors) dequantized by wgpu's kernels, against the same files on the CPU,
/// resident and with offloaded blocks; and quantizing at load.
#[test]
fn packed_weights_on_wgpu() {
    let Some(device) = device() else { return };
    let io = Weights::open(fixture("flux-core", "dev_tiny/io.safetensors")).unwrap();
    for file in ["q8_0", "q4_0", "q5_1", "q4_k"] {
        let path = fixture("flux-core", &format!("dev_tiny/gguf/{file}.gguf"));
        let cpu = flux_core::load::<Nd>(&path, &Default::default()).unwrap();
        let gpu = flux_core::load::<W>(&path, &device).unwrap();
        assert!(gpu.param_bytes().packed_layers > 0);
        let expected = forward(&cpu, &io, &Default::default());
        let ours = forward(&gpu, &io, &device);
        let err = max_abs(&ours, &expected);
        assert!(err <= 1e-4, "{file}: wgpu vs CPU {err}");
        let offloaded = forward(&gpu.offload_blocks(), &io, &device);
        assert_eq!(bits(&offloaded), bits(&ours), "{file}: offloaded");
        eprintln!("{file} packed on wgpu: max abs err vs the CPU {err:.2e}");
    }
    let options = flux_core::LoadConfig {
        quantization: flux_core::Quantization::To(flux_core::QuantType::Fp8),
        ..Default::default()
    };
    let path = fixture("flux-core", "dev_tiny/bfl.safetensors");
    let cpu = flux_core::load_with::<Nd>(&path, &Default::default(), options.clone()).unwrap();
    let gpu = flux_core::load_with::<W>(&path, &device, options).unwrap();
    let err = max_abs(
        &forward(&gpu, &io, &device),
        &forward(&cpu, &io, &Default::default()),
    );
    assert!(err <= 1e-4, "fp8 quantized at load: wgpu vs CPU {err}");
}

/// The f16 models on wgpu against the f32 references: transformer, VAE encode and decode, T5,
/// CLIP, under the bounds the CPU's f16 tests hold on Flex except for the VAE (below;
/// docs/backends.md). burn's wgpu needs the adapter's `shader-f16` feature (lavapipe has it);
/// an adapter without it is asked first, and the test says so and passes, except under CI
/// (`CI` set), whose lavapipe must run it. wgpu has no bf16.
#[test]
fn f16_models_on_wgpu() {
    let Some(device) = device() else { return };
    if !<W as burn::tensor::backend::Backend>::supports_dtype(&device, burn::tensor::DType::F16) {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI's wgpu adapter must run f16 (shader-f16)"
        );
        eprintln!("skipped: this wgpu adapter runs no f16 (no `shader-f16`)");
        return;
    }
    let f16 = Some(burn::tensor::DType::F16);
    let (transformer, (enc, dec), t5, clip) = {
        let case = "dev_tiny";
        let io = Weights::open(fixture("flux-core", &format!("{case}/io.safetensors"))).unwrap();
        let options = flux_core::LoadConfig {
            dtype: f16,
            ..Default::default()
        };
        let path = fixture("flux-core", &format!("{case}/bfl.safetensors"));
        let model = flux_core::load_with::<W>(&path, &device, options).unwrap();
        assert_eq!(model.dtype(), burn::tensor::DType::F16);
        let transformer = max_abs(&forward(&model, &io, &device), &stored(&io, "out"));

        let io = Weights::open(fixture("flux-vae", "io.safetensors")).unwrap();
        let options = flux_vae::LoadConfig {
            config: None,
            dtype: f16,
            ..Default::default()
        };
        let vae = flux_vae::load_with::<W>(fixture("flux-vae", "diffusers/vae"), &device, options)
            .unwrap();
        let latents = values(vae.encode(tensor(&io, "image", &device)).unwrap());
        let image = values(vae.decode(tensor(&io, "latents_in", &device)).unwrap());
        let vae = (
            max_abs(&latents, &stored(&io, "latents")),
            max_abs(&image, &stored(&io, "decoded")),
        );

        let t5_io = fixture("flux-text", "t5_io.safetensors");
        let t5 =
            flux_text::load_t5_with::<W>(fixture("flux-text", "t5"), &device, half(f16)).unwrap();
        let hidden = values(t5.forward(ids::<W>(&t5_io, "ids", &device)));
        let t5 = max_abs(&hidden, &stored(&Weights::open(&t5_io).unwrap(), "hidden"));

        let clip_io = fixture("flux-text", "clip_io.safetensors");
        let clip = flux_text::load_clip_with::<W>(fixture("flux-text", "clip"), &device, half(f16))
            .unwrap();
        let out = clip.forward(ids::<W>(&clip_io, "ids", &device));
        let w = Weights::open(&clip_io).unwrap();
        let clip = max_abs(
            &values(out.last_hidden_state),
            &stored(&w, "last_hidden_state"),
        )
        .max(max_abs(&values(out.pooled), &stored(&w, "pooled")));
        (transformer, vae, t5, clip)
    };
    eprintln!(
        "f16 on wgpu vs the f32 references: transformer {transformer:.2e}, VAE encode {enc:.2e} / decode {dec:.2e}, T5 {t5:.2e}, CLIP {clip:.2e}"
    );
    assert!(transformer <= 1.2e-2, "transformer {transformer}");
    // The VAE is the exception: 4.8e-3 / 3.9e-2 on lavapipe, ~3.5x Flex's f16 error (1.6e-3 /
    // 1.1e-2; Flex accumulates its half convolutions in f32). Bound: 2x the wgpu figures.
    assert!(enc <= 1e-2 && dec <= 8e-2, "VAE {enc} / {dec}");
    assert!(t5 <= 2e-2, "T5 {t5}");
    assert!(clip <= 1.2e-2, "CLIP {clip}");
}

/// Text-encoder options with a dtype.
fn half<C>(dtype: Option<burn::tensor::DType>) -> flux_text::LoadConfig<C> {
    flux_text::LoadConfig {
        config: None,
        dtype,
        ..Default::default()
    }
}

/// LoRAs on wgpu: run-time updates (the adapter's matmuls on the device) and merged ones match
/// the reference like on the CPU.
#[test]
fn lora_runtime_and_merged_match_on_wgpu() {
    use flux::Component;
    use flux::lora::{LoraFile, LoraMode};
    let Some(device) = device() else { return };
    let fixture = crate::common::fixture;
    let io = Weights::open(fixture("lora/expected.safetensors")).unwrap();
    let config = flux_core::read_config(fixture("tiny_pipeline/transformer")).unwrap();
    let clip = flux::text::read_clip_config(fixture("tiny_pipeline/text_encoder")).unwrap();
    let (transformer, clip) = (
        config.lora_targets::<W>(&device),
        clip.lora_targets::<W>(&device),
    );
    let file = LoraFile::open(fixture("lora/kohya.safetensors")).unwrap();
    let targets = [
        (Component::Transformer, &transformer),
        (Component::Clip, &clip),
    ];
    let resolved = flux::resolve_loras(&[(file, 0.6)], &targets, false).unwrap();
    let adapters = &resolved.adapters[&Component::Transformer];
    let input = |key: &str, shape: &[usize]| -> Vec<f32> {
        let v = stored(&io, key);
        assert_eq!(v.len(), shape.iter().product::<usize>());
        v
    };
    let t = |key: &str, shape: [usize; 3]| {
        Tensor::<W, 3>::from_data(TensorData::new(input(key, &shape), shape), &device)
    };
    let t1 = |key: &str| Tensor::<W, 1>::from_data(TensorData::new(input(key, &[1]), [1]), &device);
    let want = stored(&io, "kohya_s060");
    for mode in [LoraMode::Merged, LoraMode::Runtime] {
        let options = flux_core::LoadConfig {
            adapters: Some(adapters.clone()),
            lora_mode: mode,
            ..Default::default()
        };
        let path = fixture("tiny_pipeline/transformer");
        let model = flux_core::load_with::<W>(path, &device, options).unwrap();
        let pooled =
            Tensor::<W, 2>::from_data(TensorData::new(input("pooled", &[1, 32]), [1, 32]), &device);
        let out = model.forward(
            t("img", [1, 16, 64]),
            t("img_ids", [1, 16, 3]),
            t("txt", [1, 8, 32]),
            t("txt_ids", [1, 8, 3]),
            t1("timestep"),
            pooled,
            Some(t1("guidance")),
        );
        let err = max_abs(&values(out), &want);
        eprintln!("wgpu LoRA ({mode:?}): {err:.2e}");
        assert!(err <= 1e-4, "{mode:?}: {err}");
    }
}

/// The FLUX.1 tools' new inputs on wgpu: Fill (mask packing, channel concatenation, the
/// masked image's posterior draw) and Kontext (reference tokens and their ids), against
/// diffusers with the CPU's bars.
#[test]
fn tool_pipelines_match_diffusers_on_wgpu() {
    use crate::tools::{ToolRun, recorded};
    let Some(device) = device() else { return };
    let files = |transformer: Option<&str>| {
        flux::ModelFiles::from_dir_with(
            fixture("flux", "tiny_pipeline"),
            transformer.map(|t| fixture("flux", t)),
            None,
        )
        .unwrap()
    };
    let fill = flux::Pipeline::<W>::builder()
        .files(files(Some("tools/fill_transformer")))
        .device(device.clone())
        .t5_max_len(32)
        .build()
        .unwrap();
    let run = recorded("fill");
    let request = run
        .request()
        .with_fill(run.image("init_image_u8", 0), run.image("mask_image_u8", 0));
    run.check("fill (wgpu)", &fill, &request);

    let kontext = flux::Pipeline::<W>::builder()
        .files(files(None))
        .device(device)
        .t5_max_len(32)
        .variant(flux::Variant::Kontext)
        .build()
        .unwrap();
    let run = recorded("kontext_batch_cfg");
    let request = run
        .request()
        .with_reference_image(run.image("reference_image_u8", 0))
        .with_max_area(1024)
        .with_auto_resize(false);
    run.check("kontext_batch_cfg (wgpu)", &kontext, &request);
}
