//! GGUF transformers as city96 and stable-diffusion.cpp publish them: the tiny [dev] model
//! quantized by gguf-py in each block type, against diffusers run on gguf-py's dequantized
//! weights (fixtures: scripts/reference/gen_gguf_flux.py), plus the error each type costs
//! against the f32 model. The linear weights stay quantized in memory (packed codes and
//! factors, dequantized one layer at a time), with the bits per weight of their format.

use crate::common::{Inputs, fixture, max_abs_diff, tensor};
use burn::backend::{Flex, NdArray};
use burn::tensor::{DType, Tensor};
use flux_core::{Error, LoadConfig, QuantType, Quantization};
use flux_gguf::{GgmlType, GgufFile, GgufWriter, MetadataValue, quantize};
use flux_io::Weights;
use flux_nn::FluxBackend;

const F32_TOL: f32 = 1e-4;

/// Our output for `dev_tiny/gguf/<file>` and the reference's `expected`, and the f32 model's.
fn run<B: FluxBackend>(file: &str) -> (Tensor<B, 3>, Tensor<B, 3>, Tensor<B, 3>) {
    let device = B::Device::default();
    let io = Weights::open(fixture("dev_tiny/io.safetensors")).unwrap();
    let expected = Weights::open(fixture("dev_tiny/gguf/expected.safetensors")).unwrap();
    let model = flux_core::load::<B>(fixture(&format!("dev_tiny/gguf/{file}")), &device)
        .unwrap_or_else(|e| panic!("loading {file}: {e}"));
    assert!(
        model.param_bytes().packed_layers > 0,
        "{file}: no weight stayed quantized"
    );
    let out = Inputs::<B>::read(&io, &device).run(&model);
    let stem = file.trim_end_matches(".gguf").trim_end_matches("_comfy");
    let reference = tensor(&expected, &format!("out_{stem}"), &device);
    (out, reference, tensor(&io, "out", &device))
}

fn check<B: FluxBackend>(file: &str) {
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
        "q4_k_ggml.gguf",
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

fn load_as<B: FluxBackend>(
    path: &std::path::Path,
    quantization: Quantization,
) -> flux_core::Flux<B> {
    let options = LoadConfig {
        quantization,
        ..Default::default()
    };
    flux_core::load_with::<B>(path, &Default::default(), options).unwrap()
}

#[test]
fn weights_stay_quantized_with_their_bits_per_weight() {
    type B = Flex;
    let io = Weights::open(fixture("dev_tiny/io.safetensors")).unwrap();
    let inputs = Inputs::<B>::read(&io, &Default::default());
    for (file, bits) in [
        ("q8_0", 8.5),
        ("q5_1", 6.0),
        ("q5_0", 5.5),
        ("q4_1", 5.0),
        ("q4_0", 4.5),
        ("q4_k", 4.625),
    ] {
        let path = fixture(&format!("dev_tiny/gguf/{file}.gguf"));
        let packed = load_as::<B>(&path, Quantization::AsStored);
        let dense = load_as::<B>(&path, Quantization::Dequantize);
        let (p, d) = (packed.param_bytes(), dense.param_bytes());
        assert_eq!((d.packed, d.packed_layers), (0, 0), "{file}: dequantized");
        // The weights that were packed hold 4 bytes each when dense (f32).
        let weights = (d.dense - p.dense) / 4;
        let held = p.packed as f64 * 8.0 / weights as f64;
        eprintln!(
            "{file}: {} linear layers packed, {held} bits per packed weight, \
             model {} -> {} bytes",
            p.packed_layers,
            d.total(),
            p.total()
        );
        assert_eq!(held, bits, "{file}");
        // The same weights dequantized per layer or at load: equal up to f32 summation order
        // (the modulation layers' one-vector products are summed straight from the packed
        // form, not by gemm's blocked loops).
        let diff = max_abs_diff(inputs.run(&packed), inputs.run(&dense));
        assert!(diff <= 1e-5, "{file}: packed vs dense {diff}");
    }
}

#[test]
fn quantize_at_load_equals_gguf_py_file() {
    // gen_gguf_flux.py quantized `bfl.safetensors` with gguf-py into q8_0.gguf / q4_0.gguf,
    // and with ggml's quantizer into q4_k_ggml.gguf (2-d tensors of more than 1024 values;
    // those whose rows are not whole blocks stored F16). Quantizing the same weights at load, with those tensors rounded to f16 as the
    // converter stores them, gives the same model, bit for bit.
    type B = NdArray<f32>;
    let io = Weights::open(fixture("dev_tiny/io.safetensors")).unwrap();
    let inputs = Inputs::<B>::read(&io, &Default::default());
    let dir = tempfile::tempdir().unwrap();
    for (ty, file) in [
        (QuantType::Q8_0, "q8_0"),
        (QuantType::Q4_0, "q4_0"),
        (QuantType::Q4_K, "q4_k_ggml"),
    ] {
        let block = ty.ggml_type().unwrap().block_size();
        let converted = dir.path().join(format!("{file}.safetensors"));
        crate::errors::edit_file(
            &fixture("dev_tiny/bfl.safetensors"),
            &converted,
            |tensors| {
                for (dtype, shape, bytes) in tensors.values_mut() {
                    let n: usize = shape.iter().product();
                    if shape.len() == 2 && n > 1024 && shape[1] % block != 0 {
                        assert_eq!(*dtype, safetensors::Dtype::F32);
                        *bytes = bytes
                            .chunks_exact(4)
                            .flat_map(|b| {
                                let v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                                half::f16::from_f32(v).to_f32().to_le_bytes()
                            })
                            .collect();
                    }
                }
            },
        );
        let ours = load_as::<B>(&converted, Quantization::To(ty));
        let theirs = load_as::<B>(
            &fixture(&format!("dev_tiny/gguf/{file}.gguf")),
            Quantization::AsStored,
        );
        assert!(ours.param_bytes().packed_layers > 0, "{ty}");
        assert_eq!(ours.param_bytes(), theirs.param_bytes(), "{ty}");
        let diff = max_abs_diff(inputs.run(&ours), inputs.run(&theirs));
        assert_eq!(diff, 0.0, "{ty}");
    }
}

#[test]
fn written_gguf_matches_gguf_py_converter_byte_for_byte() {
    // `write_gguf` from the f32 BFL file against gen_gguf_flux.py's files, written by gguf-py
    // from the same weights with city96's rules: same names, types, shapes and tensor bytes.
    let dir = tempfile::tempdir().unwrap();
    for (ty, file) in [
        (QuantType::Q8_0, "q8_0"),
        (QuantType::Q5_1, "q5_1"),
        (QuantType::Q5_0, "q5_0"),
        (QuantType::Q4_1, "q4_1"),
        (QuantType::Q4_0, "q4_0"),
        (QuantType::Q4_K, "q4_k_ggml"),
    ] {
        let out = dir.path().join(format!("{file}.gguf"));
        let summary = flux_core::write_gguf(fixture("dev_tiny/bfl.safetensors"), &out, ty)
            .unwrap_or_else(|e| panic!("{ty}: {e}"));
        let ours = GgufFile::open(&out).unwrap();
        let theirs = GgufFile::open(fixture(&format!("dev_tiny/gguf/{file}.gguf"))).unwrap();
        assert_eq!(ours.architecture(), Some("flux"));
        assert_eq!(ours.tensor_count(), theirs.tensor_count(), "{ty}");
        for t in theirs.tensors() {
            let o = ours
                .tensor(t.name())
                .unwrap_or_else(|| panic!("{ty}: {} not written", t.name()));
            assert_eq!(
                (o.type_id(), o.shape()),
                (t.type_id(), t.shape()),
                "{ty} {}",
                t.name()
            );
            assert!(
                ours.tensor_bytes(t.name()) == theirs.tensor_bytes(t.name()),
                "{ty}: {} differs",
                t.name()
            );
        }
        let total: usize = summary.tensors.iter().map(|(_, n)| n).sum();
        assert_eq!(total, theirs.tensor_count());
    }
}

#[test]
fn writing_gguf_refuses_what_it_cannot_write() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.gguf");
    let fp8 = flux_core::write_gguf(fixture("dev_tiny/bfl.safetensors"), &out, QuantType::Fp8);
    assert!(fp8.unwrap_err().to_string().contains("no fp8 type"));
    let diffusers = flux_core::write_gguf(fixture("dev_tiny/diffusers"), &out, QuantType::Q8_0);
    assert!(
        diffusers
            .unwrap_err()
            .to_string()
            .contains("BFL's key names")
    );
    assert!(!out.exists(), "nothing written");
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
