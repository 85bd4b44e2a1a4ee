//! Block-level offload: blocks in host memory, uploaded one at a time by the forward pass.
//! Outputs must be bit-identical to the resident model's, loading must report the same
//! errors, and the device must hold only the resident part.

use flux_nn::FluxBackend;
use std::time::Instant;

use crate::common::{Inputs, fixture, max_abs_diff, tensor};
use crate::errors::{f32_bytes, load_edited_with};
use burn::backend::{Flex, NdArray};
use burn::module::Module;
use burn::tensor::{DType, Tensor};
use flux_core::{Error, Flux, LoadConfig};
use flux_io::Weights;
use safetensors::Dtype;

type B = NdArray<f32>;

fn offloaded() -> LoadConfig {
    LoadConfig {
        offload_blocks: true,
        ..Default::default()
    }
}

fn bits<Bk: FluxBackend>(t: Tensor<Bk, 3>) -> Vec<u32> {
    let values: Vec<f32> = t.into_data().convert::<f32>().into_vec().unwrap();
    values.iter().map(|v| v.to_bits()).collect()
}

/// Number of float parameters of the blocks alone: the model's, less those of the same model
/// built without blocks.
fn block_params<Bk: FluxBackend>(model: &Flux<Bk>) -> usize {
    let without_blocks = flux_core::FluxConfig {
        depth: 0,
        depth_single_blocks: 0,
        ..model.config().clone()
    };
    model.num_params() - without_blocks.init::<Bk>(&Default::default()).num_params()
}

/// Number of values the model holds on the device: its initialised parameters (an offloaded
/// block's are lazily initialised from host memory, in the copies a forward pass uploads).
fn on_device<Bk: FluxBackend>(model: &Flux<Bk>) -> usize {
    struct Count(usize);
    impl<B: FluxBackend> burn::module::ModuleVisitor<B> for Count {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<B, D>>) {
            if param.is_initialized() {
                self.0 += param.lazy_shape().num_elements();
            }
        }
    }
    let mut count = Count(0);
    model.visit(&mut count);
    count.0
}

fn check_backend<Bk: FluxBackend>(case: &str, dtype: Option<DType>) {
    let device = Default::default();
    let io = Weights::open(fixture(&format!("{case}/io.safetensors"))).unwrap();
    let path = fixture(&format!("{case}/bfl.safetensors"));
    let options = LoadConfig {
        dtype,
        ..Default::default()
    };
    let resident = flux_core::load_with::<Bk>(&path, &device, options.clone()).unwrap();
    let inputs = Inputs::<Bk>::read(&io, &device);
    let t0 = Instant::now();
    let expected = inputs.run(&resident);
    let expected_bits = bits(expected.clone());
    let t_resident = t0.elapsed();

    // Offloading a loaded model, and loading straight into offload, give the same bits.
    let blocks = block_params(&resident);
    let total = resident.num_params();
    assert_eq!(on_device(&resident), total);
    let bytes_per = resident.dtype().size();
    let moved = resident.offload_blocks();
    assert!(moved.is_offloaded());
    assert_eq!(moved.offloaded_bytes(), blocks * bytes_per);
    assert_eq!(
        on_device(&moved),
        total - blocks,
        "the device keeps the resident part"
    );
    let t0 = Instant::now();
    assert_eq!(
        bits(inputs.run(&moved)),
        expected_bits,
        "{case}: offload_blocks()"
    );
    let t_offloaded = t0.elapsed();

    let options = LoadConfig {
        offload_blocks: true,
        ..options
    };
    let loaded = flux_core::load_with::<Bk>(&path, &device, options).unwrap();
    assert!(loaded.is_offloaded());
    assert_eq!(loaded.offloaded_bytes(), blocks * bytes_per);
    assert_eq!(on_device(&loaded), total - blocks);
    assert_eq!(
        bits(inputs.run(&loaded)),
        expected_bits,
        "{case}: loaded offloaded"
    );
    // Twice: uploads leave the host copy intact.
    assert_eq!(
        bits(inputs.run(&loaded)),
        expected_bits,
        "{case}: second pass"
    );
    if dtype.is_none() {
        let err = max_abs_diff(inputs.run(&loaded), tensor(&io, "out", &device));
        assert!(err <= 1e-4, "{case}: {err}");
    }
    eprintln!(
        "{case} {dtype:?} on {}: offloaded forward bit-identical; {} of {} parameters on the host; forward {t_resident:?} resident, {t_offloaded:?} offloaded",
        std::any::type_name::<Bk>(),
        blocks,
        total
    );
}

#[test]
fn offloaded_dev_is_bit_identical() {
    check_backend::<B>("dev_tiny", None);
}

#[test]
fn offloaded_schnell_is_bit_identical() {
    check_backend::<B>("schnell_tiny", None);
}

#[test]
fn offloaded_half_precision_on_flex_is_bit_identical() {
    check_backend::<Flex>("dev_tiny", None);
    check_backend::<Flex>("dev_tiny", Some(DType::BF16));
    check_backend::<Flex>("dev_tiny", Some(DType::F16));
}

#[test]
fn offloaded_loading_names_every_missing_tensor() {
    let err = load_edited_with(
        |t| {
            t.remove("double_blocks.0.img_attn.proj.weight");
            t.remove("single_blocks.1.linear2.bias");
            t.remove("final_layer.linear.bias");
        },
        offloaded(),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, Error::Load(flux_io::Error::MissingKeys(ref k)) if k.len() == 3),
        "{msg}"
    );
    for key in [
        "double_blocks.0.img_attn.proj.weight",
        "single_blocks.1.linear2.bias",
        "final_layer.linear.bias",
    ] {
        assert!(msg.contains(key), "{msg}");
    }
}

#[test]
fn offloaded_loading_rejects_bad_tensors_in_blocks() {
    let err = load_edited_with(
        |t| {
            let (_, shape, _) = t["single_blocks.0.linear2.bias"].clone();
            let mut values = vec![0.0f32; shape.iter().product()];
            values[1] = f32::INFINITY;
            t.insert(
                "single_blocks.0.linear2.bias".into(),
                (Dtype::F32, shape, f32_bytes(&values)),
            );
        },
        offloaded(),
    )
    .unwrap_err();
    assert!(
        matches!(err, Error::Load(flux_io::Error::NonFinite(ref k)) if k == "single_blocks.0.linear2.bias"),
        "{err}"
    );
    let err = load_edited_with(
        |t| {
            let extra = t["txt_in.bias"].clone();
            t.insert("double_blocks.0.extra.bias".into(), extra);
        },
        offloaded(),
    )
    .unwrap_err();
    assert!(
        matches!(err, Error::Load(flux_io::Error::UnexpectedKeys(ref k)) if k == &["double_blocks.0.extra.bias"]),
        "{err}"
    );
}
