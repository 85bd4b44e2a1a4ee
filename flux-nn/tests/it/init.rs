//! A loading session's errors name every problem, a layout build records every layer, and a
//! random quantized build holds its linear weights packed.

use burn::backend::Flex;
use burn::module::{Initializer, Module};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use flux_io::{Error, Weights};
use flux_nn::quant::QuantType;
use flux_nn::{FluxBackend, Init, LayerKind, Linear, LoadOptions, Loader};

use crate::common::{Same, ramp, write};

#[derive(Module, Debug)]
struct Small<B: Backend> {
    a: Linear<B>,
    b: Linear<B>,
    scale: burn::module::Param<Tensor<B, 1>>,
}

fn build<B: FluxBackend>(init: &Init<B>) -> Small<B> {
    Small {
        a: init.at("first").linear("a", 64, 32, true),
        b: init.linear("b", 32, 64, false),
        scale: init.param("scale", [32], Initializer::Ones),
    }
}

#[test]
fn every_missing_tensor_is_named_and_the_first_other_error_reported() {
    let dir = tempfile::tempdir().unwrap();
    // `first.a.bias` and `scale` missing; `b.weight` of the wrong shape; an extra tensor.
    let path = write(
        dir.path(),
        "bad.safetensors",
        &[
            ("first.a.weight", vec![32, 64], ramp(2048, 0.01)),
            ("b.weight", vec![64, 31], ramp(64 * 31, 0.01)),
            ("stray", vec![2], vec![0.0, 1.0]),
        ],
    );
    let weights = Weights::open(path).unwrap();
    let load = |deny_unexpected| {
        let options = LoadOptions {
            deny_unexpected,
            ..Default::default()
        };
        let loader = Loader::new(&weights, &Same, options);
        let init = Init::<Flex>::load(&loader, &Default::default());
        let _ = build(&init);
        assert!(init.failed() && !loader.ok());
        loader.finish().unwrap_err()
    };
    match load(true) {
        Error::MissingKeys(keys) => assert_eq!(keys, ["first.a.bias", "scale"]),
        e => panic!("{e}"),
    }
    let path = write(
        dir.path(),
        "shape.safetensors",
        &[
            ("first.a.weight", vec![32, 64], ramp(2048, 0.01)),
            ("first.a.bias", vec![32], ramp(32, 0.01)),
            ("b.weight", vec![64, 31], ramp(64 * 31, 0.01)),
            ("scale", vec![32], vec![1.0; 32]),
            ("stray", vec![2], vec![0.0, 1.0]),
        ],
    );
    let weights = Weights::open(path).unwrap();
    let loader = strict(&weights);
    let _ = build(&Init::<Flex>::load(&loader, &Default::default()));
    let e = loader.finish().unwrap_err().to_string();
    assert!(
        e.contains("b.weight") && e.contains("[64, 32]") && e.contains("[64, 31]"),
        "{e}"
    );
}

#[test]
fn unexpected_and_non_finite_tensors_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = ramp(2048, 0.01);
    let good = [
        ("first.a.bias", vec![32], ramp(32, 0.01)),
        ("b.weight", vec![64, 32], ramp(2048, 0.01)),
        ("scale", vec![32], vec![1.0; 32]),
    ];
    let mut tensors = vec![("first.a.weight", vec![32, 64], a.clone())];
    tensors.extend(good.iter().cloned());
    tensors.push(("stray", vec![2], vec![0.0, 1.0]));
    let weights = Weights::open(write(dir.path(), "extra.safetensors", &tensors)).unwrap();
    let loader = strict(&weights);
    let model = build(&Init::<Flex>::load(&loader, &Default::default()));
    match loader.finish() {
        Err(Error::UnexpectedKeys(keys)) => assert_eq!(keys, ["stray"]),
        r => panic!("{r:?}"),
    }
    // The layers hold the stored values: `a` in burn's `[in, out]`.
    assert_eq!(model.a.shape(), [64, 32]);
    let w: Vec<f32> = model.a.weight().into_data().to_vec().unwrap();
    assert_eq!(w[1], ramp(2048, 0.01)[64]);

    a[77] = f32::NAN;
    let mut tensors = vec![("first.a.weight", vec![32, 64], a)];
    tensors.extend(good.iter().cloned());
    let weights = Weights::open(write(dir.path(), "nan.safetensors", &tensors)).unwrap();
    let loader = Loader::new(&weights, &Same, LoadOptions::default());
    let _ = build(&Init::<Flex>::load(&loader, &Default::default()));
    match loader.finish() {
        Err(Error::NonFinite(key)) => assert_eq!(key, "first.a.weight"),
        r => panic!("{r:?}"),
    }
}

#[test]
fn a_layout_build_records_every_layer_and_allocates_nothing() {
    let init = Init::<Flex>::layout(&Default::default());
    let model = build(&init);
    let layers = init.layers();
    let kinds: Vec<(&str, &LayerKind)> =
        layers.iter().map(|l| (l.path.as_str(), &l.kind)).collect();
    assert_eq!(
        kinds,
        [
            (
                "first.a",
                &LayerKind::Linear {
                    d_input: 64,
                    d_output: 32,
                    bias: true
                }
            ),
            (
                "b",
                &LayerKind::Linear {
                    d_input: 32,
                    d_output: 64,
                    bias: false
                }
            ),
            ("scale", &LayerKind::Param { shape: vec![32] }),
        ]
    );
    assert!(!model.scale.is_initialized());
    assert_eq!(init.held().total(), 0);
}

#[test]
fn a_random_quantized_build_packs_its_linear_weights() {
    let device = Default::default();
    let init = Init::<Flex>::random_quantized(&device, QuantType::Q8_0);
    let model = build(&init);
    // 32 x 64 = 2048 values in rows of whole blocks: both packed.
    assert!(model.a.packed().is_some() && model.b.packed().is_some());
    let held = init.held();
    assert_eq!(held.packed_layers, 2);
    assert_eq!(held.packed, 2 * 2048 * 34 / 32);
    assert_eq!(held.dense, (32 + 32) * 4);
    let x = Tensor::<Flex, 2>::from_data(TensorData::new(ramp(128, 0.1), [2, 64]), &device);
    let y = model.b.forward(model.a.forward(x));
    assert_eq!(y.dims(), [2, 64]);
}

/// A loader over `weights` (keys named as the parameters) that refuses keys nothing read.
fn strict(weights: &Weights) -> Loader<'_> {
    let options = LoadOptions {
        deny_unexpected: true,
        ..Default::default()
    };
    Loader::new(weights, &Same, options)
}
