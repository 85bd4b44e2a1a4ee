//! GGUF transformers as city96 and stable-diffusion.cpp publish them: the tiny [dev] model
//! quantized by gguf-py in each block type, against diffusers run on gguf-py's dequantized
//! weights (fixtures: scripts/reference/gen_gguf_flux.py), plus the error each type costs
//! against the f32 model.

use crate::common::{Inputs, fixture, max_abs_diff, tensor};
use burn::backend::{Flex, NdArray};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};
use flux_core::{Error, LoadConfig};
use flux_io::Weights;
use flux_io::gguf::{GgmlType, GgufWriter, MetadataValue, quantize};

const F32_TOL: f32 = 1e-4;

/// Our output for `dev_tiny/gguf/<file>` and the reference's `expected`, and the f32 model's.
fn run<B: Backend>(file: &str) -> (Tensor<B, 3>, Tensor<B, 3>, Tensor<B, 3>) {
    let device = B::Device::default();
    let io = Weights::open(fixture("dev_tiny/io.safetensors")).unwrap();
    let expected = Weights::open(fixture("dev_tiny/gguf/expected.safetensors")).unwrap();
    let model = flux_core::load::<B>(fixture(&format!("dev_tiny/gguf/{file}")), &device)
        .unwrap_or_else(|e| panic!("loading {file}: {e}"));
    let out = Inputs::<B>::read(&io, &device).run(&model);
    let stem = file.trim_end_matches(".gguf").trim_end_matches("_comfy");
    let reference = tensor(&expected, &format!("out_{stem}"), &device);
    (out, reference, tensor(&io, "out", &device))
}

fn check<B: Backend>(file: &str) {
    let (out, reference, f32_out) = run::<B>(file);
    let err = max_abs_diff(out.clone(), reference);
    let cost = max_abs_diff(out, f32_out.clone());
    let range: f32 = f32_out
        .abs()
        .max()
        .into_scalar()
        .to_string()
        .parse()
        .unwrap();
    eprintln!(
        "{file} on {}: max abs err vs diffusers on the dequantized weights {err:.3e}; \
         vs the f32 model {cost:.3e} (output range {range:.2})",
        std::any::type_name::<B>()
    );
    assert!(err <= F32_TOL, "{file}: {err}");
}

#[test]
fn every_block_type_matches_the_reference() {
    for file in [
        "q8_0.gguf",
        "q4_0.gguf",
        "q4_1.gguf",
        "q5_0.gguf",
        "q5_1.gguf",
        "q4_k.gguf",
    ] {
        check::<NdArray<f32>>(file);
    }
    check::<Flex>("q8_0.gguf");
    check::<Flex>("q4_k.gguf");
}

#[test]
fn comfy_prefix_and_orig_shape() {
    type B = NdArray<f32>;
    // The same Q8_0 model behind `model.diffusion_model.`, with `txt_in.weight` stored as
    // [96, 32] and its [64, 48] shape in `comfy.gguf.orig_shape`: identical output.
    let (plain, ..) = run::<B>("q8_0.gguf");
    let (comfy, ..) = run::<B>("q8_0_comfy.gguf");
    assert_eq!(max_abs_diff(plain, comfy), 0.0);
    let weights = Weights::open(fixture("dev_tiny/gguf/q8_0_comfy.gguf")).unwrap();
    let meta = weights.meta("model.diffusion_model.txt_in.weight").unwrap();
    assert_eq!(meta.shape, vec![64, 48]);
    let meta = weights.meta("model.diffusion_model.img_in.weight").unwrap();
    assert_eq!((meta.dtype.as_str(), meta.shape), ("Q8_0", vec![64, 64]));
}

#[test]
fn half_precision_parameters_from_gguf() {
    // Dequantized weights take the parameters' dtype like any other stored dtype.
    let device = Default::default();
    let options = LoadConfig {
        dtype: Some(DType::BF16),
        ..Default::default()
    };
    let model =
        flux_core::load_with::<Flex>(fixture("dev_tiny/gguf/q4_0.gguf"), &device, options).unwrap();
    assert_eq!(model.dtype(), DType::BF16);
}

/// A GGUF of `arch` holding one tensor, written by our writer.
fn one_tensor_gguf(dir: &std::path::Path, arch: &str, ty: GgmlType) -> std::path::PathBuf {
    let path = dir.join(format!("{arch}.gguf"));
    let values: Vec<f32> = (0..64 * 64).map(|i| (i % 13) as f32 * 0.01).collect();
    let bytes = quantize(ty, &values).unwrap();
    let mut w = GgufWriter::new(&path);
    w.add_metadata(
        "general.architecture",
        MetadataValue::String(arch.to_string()),
    )
    .unwrap();
    w.add_tensor_info("img_in.weight", ty, &[64, 64]).unwrap();
    let mut data = w.start_data().unwrap();
    data.write_tensor("img_in.weight", &bytes).unwrap();
    data.finish().unwrap();
    path
}

#[test]
fn another_architecture_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let llama = one_tensor_gguf(dir.path(), "llama", GgmlType::Q8_0);
    let err = flux_core::load::<NdArray<f32>>(&llama, &Default::default()).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, Error::Load(flux_io::Error::UnknownLayout(_))),
        "{msg}"
    );
    assert!(msg.contains("`llama`"), "{msg}");
}

#[test]
fn truncated_gguf_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let src = std::fs::read(fixture("dev_tiny/gguf/q4_0.gguf")).unwrap();
    let cut = dir.path().join("cut.gguf");
    std::fs::write(&cut, &src[..src.len() / 2]).unwrap();
    let err = flux_core::load::<NdArray<f32>>(&cut, &Default::default()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Load(flux_io::Error::Gguf(_))), "{msg}");
    assert!(msg.contains("cut.gguf"), "{msg}");
}
