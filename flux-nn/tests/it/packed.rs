//! Quantized weights kept quantized: every GGUF block type loaded into a `Linear` as packed
//! codes and dequantized on the device gives exactly gguf-py's values (`dequant.gguf` from
//! scripts/reference/gen_gguf.py), holds the bits per weight of its format, and multiplies
//! like the dense layer; quantizing at load equals gguf-py's quantizer.

use burn::backend::Flex;
use burn::tensor::{Distribution, Tensor, TensorData};
use flux_gguf::{GgmlType, GgufFile, dequantize, quantize};
use flux_io::{KeyMap, Source, Weights};
use flux_nn::quant::{QuantType, Quantization};
use flux_nn::{Init, Linear, LoadOptions, Loader};
use flux_testkit::{max_rel_diff, values};

use crate::common::gguf_fixture as fixture;

type B = Flex;

/// Every parameter is the stored tensor `.0`.
struct Named(String);

impl KeyMap for Named {
    fn source(&self, _path: &str) -> Source {
        Source::Key(self.0.clone())
    }
}

/// The layer `[rows, cols]` (PyTorch's `[out, in]`) built from the stored tensor `key`.
fn load(key: &str, rows: usize, cols: usize, quantization: Quantization) -> Linear<B> {
    let device = Default::default();
    let weights = Weights::open(fixture("dequant.gguf")).unwrap();
    let options = LoadOptions {
        quantization,
        ..LoadOptions::default()
    };
    let map = Named(key.into());
    let loader = Loader::new(&weights, &map, options);
    let layer = Init::<B>::load(&loader, &device).linear("layer", cols, rows, false);
    loader.finish().unwrap();
    layer
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn block_types() -> Vec<(GgmlType, f64)> {
    vec![
        (GgmlType::Q8_0, 8.5),
        (GgmlType::Q4_0, 4.5),
        (GgmlType::Q4_1, 5.0),
        (GgmlType::Q5_0, 5.5),
        (GgmlType::Q5_1, 6.0),
        (GgmlType::Q2_K, 3.125),
        (GgmlType::Q3_K, 3.5625),
        (GgmlType::Q4_K, 4.625),
        (GgmlType::Q5_K, 5.625),
        (GgmlType::Q6_K, 6.5625),
    ]
}

#[test]
fn every_block_type_stays_packed_and_dequantizes_bit_exactly() {
    let f = GgufFile::open(fixture("dequant.gguf")).unwrap();
    for (ty, bits) in block_types() {
        let raw = format!("{}.raw", ty.name());
        let &[rows, cols] = f.tensor(&raw).unwrap().shape() else {
            panic!("2-d fixture")
        };
        let want = f32s(f.tensor_bytes(&format!("{}.expected", ty.name())).unwrap());
        let layer = load(&raw, rows, cols, Quantization::AsStored);
        let packed = layer
            .packed()
            .unwrap_or_else(|| panic!("{ty} loaded dense"));
        assert_eq!(packed.shape(), [rows, cols]);
        let held = packed.num_bytes() as f64 * 8.0 / (rows * cols) as f64;
        assert_eq!(held, bits, "{ty}: bits per weight held");
        let ours: Vec<f32> = packed.dequantize().into_data().to_vec().unwrap();
        let differ = (0..want.len())
            .filter(|&i| ours[i].to_bits() != want[i].to_bits())
            .count();
        assert_eq!(differ, 0, "{ty}: {differ} of {} values differ", want.len());

        // The product through the packed layer equals the dense one, up to f32 summation
        // order: with a few input rows (straight from the packed form) and with many
        // (dequantized, then gemm).
        let device = Default::default();
        let dense = Tensor::<B, 2>::from_data(TensorData::new(want, [rows, cols]), &device);
        for m in [3, 40] {
            let x = Tensor::<B, 2>::random([m, cols], Distribution::Normal(0.0, 1.0), &device);
            let expected = x.clone().matmul(dense.clone().transpose());
            let (got, want) = (values(layer.forward(x)), values(expected));
            let rel = max_rel_diff(&got, &want);
            assert!(
                rel <= 1e-5,
                "{ty}, {m} rows: forward differs by {rel} of the largest"
            );
        }
    }
}

#[test]
fn dequantize_on_request_loads_dense() {
    let layer = load("Q4_K.raw", 3, 1024, Quantization::Dequantize);
    assert!(layer.packed().is_none());
    assert_eq!(layer.weight().dims(), [1024, 3]);
    // Float tensors are dense either way.
    assert!(
        load("Q4_0.expected", 4, 256, Quantization::AsStored)
            .packed()
            .is_none()
    );
}

#[test]
fn tensors_of_at_most_1024_values_stay_dense() {
    // As ComfyUI-GGUF's converter keeps them: [4, 256] is exactly 1024 values.
    let layer = load("Q8_0.expected", 4, 256, Quantization::To(QuantType::Q4_0));
    assert!(layer.packed().is_none());
}

#[test]
fn quantizing_at_load_equals_gguf_py_quantizer() {
    let f = GgufFile::open(fixture("dequant.gguf")).unwrap();
    let values = f32s(f.tensor_bytes("Q4_K.expected").unwrap());
    for ty in QuantType::ALL {
        let layer = load("Q4_K.expected", 3, 1024, Quantization::To(ty));
        let packed = layer.packed().expect("quantized at load");
        let ours: Vec<f32> = packed.dequantize().into_data().to_vec().unwrap();
        let want: Vec<f32> = match ty.ggml_type() {
            // Byte-exact to gguf-py, and to ggml for Q4_K (tests/it/gguf_reference.rs), so
            // this is their round trip.
            Some(g) => dequantize(g, &quantize(g, &values).unwrap(), values.len()).unwrap(),
            None => {
                let absmax = values.iter().fold(0f32, |m, v| m.max(v.abs()));
                let scale = absmax / 448.0;
                values
                    .iter()
                    .map(|&v| float8::F8E4M3::from_f32(v / scale).to_f32() * scale)
                    .collect()
            }
        };
        assert_eq!(ours, want, "{ty}");
        let rel = max_rel_diff(&ours, &values);
        assert!(
            rel < 0.07,
            "{ty}: round-trip error {rel} of the largest value"
        );
    }
}
