//! Every override of the CPU backends against the portable form it replaces, on the same
//! backend: f32 agreement within rounding (the kernels sum in another order), shapes off the
//! kernels' block sizes, batches with their own or a shared rotary table; and the quantized
//! paths bit-exact where they promise it.

use burn::backend::{Flex, NdArray};
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{DType, FloatDType, Tensor, TensorData};
use flux_gguf::{GgmlType, GgufFile};
use flux_testkit::{max_abs_diff_tensors, values};

use super::FluxBackend;
use super::host::{self, FEW_ROWS};
use crate::ops::{self, QkvStream, Rope};
use crate::packed::Packed;
use crate::quant::{PackedData, QuantType};

/// Deterministic values in about [-2, 2].
fn seeded<B: FluxBackend, const D: usize>(shape: [usize; D], seed: u64) -> Tensor<B, D> {
    let n: usize = shape.iter().product();
    Tensor::from_data(
        TensorData::new(flux_testkit::seeded(n, seed), shape),
        &Default::default(),
    )
}

/// Rotary tables of `b` batches for `seq` positions and `half` pairs.
fn rope<B: FluxBackend>(b: usize, seq: usize, half: usize) -> Rope<B> {
    let (cos, sin) = flux_testkit::rope_tables(b, seq, half);
    Rope::new(cos, sin, [b, seq, half], &Default::default())
}

fn close<B: FluxBackend, const D: usize>(
    got: Tensor<B, D>,
    want: Tensor<B, D>,
    tol: f32,
    what: &str,
) {
    let err = max_abs_diff_tensors(got, want);
    assert!(err <= tol, "{what}: {err:e} > {tol:e}");
}

#[test]
fn pointwise_and_norm_kernels_match_the_portable_forms() {
    type B = Flex;
    let x = seeded::<B, 3>([2, 37, 70], 1);
    close(
        B::gelu_tanh(x.clone()),
        ops::gelu_tanh(x.clone()),
        2e-6,
        "gelu_tanh",
    );
    close(
        B::quick_gelu(x.clone()),
        ops::quick_gelu(x.clone()),
        2e-6,
        "quick_gelu",
    );
    let scale = seeded::<B, 1>([70], 2);
    close(
        B::rms_norm(x.clone(), scale.clone(), 1e-6),
        ops::rms_norm(x.clone(), scale, 1e-6),
        2e-6,
        "rms_norm",
    );
    let (s, t) = (seeded::<B, 3>([2, 1, 70], 3), seeded::<B, 3>([2, 1, 70], 4));
    close(
        B::layer_norm_modulate(x.clone(), s.clone(), t.clone(), 1e-6),
        ops::layer_norm_modulate(x.clone(), s, t, 1e-6),
        1e-5,
        "layer_norm_modulate",
    );
    // Other dtypes take the portable forms.
    let half = x.cast(FloatDType::F16);
    assert_eq!(B::gelu_tanh(half).dtype(), DType::F16);
}

#[test]
fn rotation_matches_the_portable_form() {
    type B = Flex;
    let x = seeded::<B, 4>([2, 3, 19, 8], 5);
    let tables = rope::<B>(2, 19, 4);
    close(
        B::rotate_pairs(x.clone(), &tables),
        ops::rotate_pairs(x, &tables),
        1e-6,
        "rotate_pairs",
    );
}

#[test]
fn attention_matches_burns_kernel() {
    type B = Flex;
    let (q, k, v) = (
        seeded::<B, 4>([2, 3, 45, 16], 6),
        seeded::<B, 4>([2, 3, 45, 16], 7),
        seeded::<B, 4>([2, 3, 45, 16], 8),
    );
    let bias = seeded::<B, 4>([1, 3, 45, 45], 9);
    for (bias, causal, scale) in [
        (None, false, None),
        (Some(bias.clone()), false, Some(1.0)),
        (None, true, None),
        (Some(bias), true, Some(0.3)),
    ] {
        let options = AttentionModuleOptions {
            scale,
            is_causal: causal,
            ..Default::default()
        };
        let got = B::dot_product_attention(q.clone(), k.clone(), v.clone(), bias.clone(), options);
        let want = ops::attention(q.clone(), k.clone(), v.clone(), bias, options);
        close(
            got,
            want,
            2e-6,
            &format!("attention causal {causal} scale {scale:?}"),
        );
        // burn-ndarray's head groups too.
        let on_nd =
            |t: &Tensor<B, 4>| Tensor::<NdArray, 4>::from_data(t.to_data(), &Default::default());
        let got = NdArray::dot_product_attention(on_nd(&q), on_nd(&k), on_nd(&v), None, options);
        let want = ops::attention(on_nd(&q), on_nd(&k), on_nd(&v), None, options);
        close(got, want, 1e-6, "ndarray head groups");
    }
}

/// The materialised form the GPU backends fall back to: whole, in groups of one and two heads
/// (a score budget of 1 and 2 heads' worth), with a bias shared by the heads and one per head.
#[test]
fn materialized_attention_in_head_groups_matches_burns_kernel() {
    type B = Flex;
    let [b, heads, seq, d] = [2, 5, 33, 16];
    let (q, k, v) = (
        seeded::<B, 4>([b, heads, seq, d], 10),
        seeded::<B, 4>([b, heads, seq, d], 11),
        seeded::<B, 4>([b, heads, seq, d], 12),
    );
    let shared = seeded::<B, 4>([1, 1, seq, seq], 13);
    let per_head = seeded::<B, 4>([b, heads, seq, seq], 14);
    let head_bytes = b * seq * seq * 4;
    for bias in [None, Some(shared), Some(per_head)] {
        for (budget, scale) in [
            (usize::MAX, None),
            (head_bytes, Some(0.4)),
            (2 * head_bytes + 1, None),
        ] {
            let options = AttentionModuleOptions {
                scale,
                ..Default::default()
            };
            let (q, k, v) = (q.clone(), k.clone(), v.clone());
            let want = ops::attention(q.clone(), k.clone(), v.clone(), bias.clone(), options);
            let got = ops::attention_materialized_within(
                q,
                k,
                v,
                bias.clone(),
                options,
                budget,
                ops::softmax_rows,
            );
            close(
                got,
                want,
                2e-6,
                &format!(
                    "materialized, budget {budget}, bias {:?}",
                    bias.as_ref().map(|b| b.dims())
                ),
            );
        }
    }
}

/// Two streams of different lengths and widths beyond q, k, v; batch 2 with its own tables
/// and with one table shared; one stream with a GELU tail (the single block).
#[test]
fn joint_attention_matches_the_portable_form() {
    type B = Flex;
    let (heads, d) = (3, 8);
    let stream = |seq: usize, extra: usize, seed: u64| QkvStream {
        qkv: seeded::<B, 3>([2, seq, 3 * heads * d + extra], seed),
        q_scale: seeded::<B, 1>([d], seed + 1),
        k_scale: seeded::<B, 1>([d], seed + 2),
    };
    let (txt, img) = (stream(5, 0, 10), stream(29, 0, 20));
    for tables in [rope::<B>(2, 34, d / 2), rope::<B>(1, 34, d / 2)] {
        let got = B::joint_attention(vec![txt.clone(), img.clone()], heads, &tables);
        let want = ops::joint_attention(vec![txt.clone(), img.clone()], heads, &tables);
        assert_eq!(got.dims(), [2, 34, heads * d]);
        close(got, want, 5e-6, "joint attention");
    }
    let fused = stream(34, 40, 30);
    let tables = rope::<B>(2, 34, d / 2);
    let got = B::attention_and_gelu(fused.clone(), heads, &tables);
    let want = ops::attention_and_gelu(fused, heads, &tables);
    assert_eq!(got.dims(), [2, 34, heads * d + 40]);
    close(got, want, 5e-6, "attention and GELU");
}

/// The host kernels' packed paths give the tensor-op path's bits for every GGUF block type,
/// and `x Wᵀ` from the packed form equals `x` times the dequantized weight.
#[test]
fn packed_host_paths_match_the_tensor_op_path() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../flux-gguf/tests/fixtures/dequant.gguf"
    );
    let file = GgufFile::open(path).unwrap();
    for ty in GgmlType::ALL {
        let name = format!("{}.raw", ty.name());
        let &[rows, cols] = file.tensor(&name).unwrap().shape() else {
            panic!("2-d fixture")
        };
        let bytes = file.tensor_bytes(&name).unwrap();
        let Some(data) = PackedData::from_gguf(ty, bytes, rows, cols, &name).unwrap() else {
            continue;
        };
        let packed = Packed::<Flex>::new(data, DType::F32, &Default::default());
        let ops = packed.dequantize_with_ops();
        let bits =
            |t: Tensor<Flex, 2>| -> Vec<u32> { values(t).iter().map(|v| v.to_bits()).collect() };
        assert!(
            bits(host::dequantize(&packed, false)) == bits(ops.clone()),
            "{ty}: host and tensor-op dequantization differ"
        );
        assert!(
            bits(host::dequantize(&packed, true)) == bits(ops.transpose()),
            "{ty}: the transposed host path differs"
        );
        // Some fixture blocks hold values whose products overflow f16: f32 only here.
        products_match_the_dequantized_weight(&packed, ty, rows, cols, false);
    }
}

/// The tiled product over several tiles of output columns, the last one partial and not a
/// whole band of rows, for a type with offsets and for fp8's codebook.
#[test]
fn tiled_products_cover_partial_tiles() {
    let (rows, cols) = (flux_kernels::gemm::TILE + 45, 96);
    let values: Vec<f32> = (0..rows * cols)
        .map(|i| ((i * 104_729 % 1009) as f32 - 504.0) / 300.0)
        .collect();
    for ty in [QuantType::Q4_1, QuantType::Fp8] {
        let data = PackedData::quantize(ty, &values, rows, cols, "w")
            .unwrap()
            .unwrap();
        let packed = Packed::<Flex>::new(data, DType::F32, &Default::default());
        products_match_the_dequantized_weight(&packed, ty, rows, cols, true);
    }
}

/// `x Wᵀ` through the backend's quantized product (dotted rows for a few inputs, tiles and
/// gemm for more; with `half`, f16 inputs too) equals `x` times the dequantized weight.
fn products_match_the_dequantized_weight(
    packed: &Packed<Flex>,
    ty: impl std::fmt::Display,
    rows: usize,
    cols: usize,
    half: bool,
) {
    let w = packed.dequantize_with_ops().transpose();
    for m in [3, FEW_ROWS + 5] {
        let x = seeded::<Flex, 2>([m, cols], m as u64);
        let want = x.clone().matmul(w.clone());
        let got = Flex::packed_matmul(x.clone(), packed, FloatDType::F32);
        assert_eq!(got.dims(), [m, rows]);
        let rel = flux_testkit::max_rel_diff(&values(got), &values(want.clone()));
        assert!(rel <= 1e-5, "{ty}, {m} rows: {rel}");
        if !half {
            continue;
        }
        let half = Flex::packed_matmul(x.cast(FloatDType::F16), packed, FloatDType::F16);
        assert_eq!(half.dtype(), DType::F16);
        let rel = flux_testkit::max_rel_diff(&values(half), &values(want));
        assert!(rel <= 1e-2, "{ty}, {m} rows in f16: {rel}");
    }
}
