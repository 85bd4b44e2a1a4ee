//! Bit-exactness against gguf-py: fixtures in tests/fixtures were made by
//! scripts/reference/gen_gguf.py with the versions pinned in its requirements.txt.

use crate::common::{f32s, fixture, formula, write_ours};
use flux_gguf::{
    GgmlType, GgufFile, MetadataArray, MetadataValue, dequantize, f32_to_f16_bits, quantize,
};

fn bits_mismatch(ours: &[f32], want: &[f32]) -> Option<String> {
    assert_eq!(ours.len(), want.len());
    let bad: Vec<usize> = (0..ours.len())
        .filter(|&i| ours[i].to_bits() != want[i].to_bits())
        .collect();
    bad.first().map(|&i| {
        format!(
            "{} of {} values differ; first at {i}: ours {} ({:#010x}), gguf-py {} ({:#010x})",
            bad.len(),
            ours.len(),
            ours[i],
            ours[i].to_bits(),
            want[i],
            want[i].to_bits()
        )
    })
}

#[test]
fn dequantize_is_bit_exact_for_all_13_types() {
    let f = GgufFile::open(fixture("dequant.gguf")).unwrap();
    let mut checked = 0;
    for ty in GgmlType::ALL {
        let raw_name = format!("{}.raw", ty.name());
        let info = f
            .tensor(&raw_name)
            .unwrap_or_else(|| panic!("fixture lacks {raw_name}"));
        assert_eq!(info.ggml_type(), Some(ty));
        let want = f32s(f.tensor_bytes(&format!("{}.expected", ty.name())).unwrap());
        assert_eq!(info.n_elements(), want.len());
        let raw = f.tensor_bytes(&raw_name).unwrap();
        let ours = dequantize(ty, raw, want.len()).unwrap();
        if let Some(msg) = bits_mismatch(&ours, &want) {
            panic!("{ty}: {msg}");
        }
        // The file-level path gives the same values.
        assert_eq!(f.dequantize(&raw_name).unwrap().len(), want.len());
        checked += 1;
    }
    assert_eq!(checked, 13);
}

#[test]
fn quantize_is_byte_exact_for_every_type_gguf_py_quantizes() {
    let f = GgufFile::open(fixture("quantize.gguf")).unwrap();
    let input = f32s(f.tensor_bytes("input").unwrap());
    assert_eq!(input.len(), 6 * 256);
    let types = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
    ];
    for ty in types {
        let want = f.tensor_bytes(ty.name()).unwrap();
        let ours = quantize(ty, &input).unwrap();
        assert_eq!(ours.len(), want.len(), "{ty}");
        let block = ty.type_size();
        let bad: Vec<usize> = (0..ours.len() / block)
            .filter(|&b| ours[b * block..(b + 1) * block] != want[b * block..(b + 1) * block])
            .collect();
        assert!(
            bad.is_empty(),
            "{ty}: {} blocks differ, first {:?}",
            bad.len(),
            bad.first()
        );
    }
    let specials = f32s(f.tensor_bytes("float_specials").unwrap());
    for ty in [GgmlType::F16, GgmlType::BF16] {
        let want = f
            .tensor_bytes(&format!("float_specials.{}", ty.name()))
            .unwrap();
        let ours = quantize(ty, &specials).unwrap();
        for (i, (a, b)) in ours.chunks(2).zip(want.chunks(2)).enumerate() {
            assert_eq!(a, b, "{ty} value {i}: {:#010x}", specials[i].to_bits());
        }
    }
}

/// Q4_K against ggml's own quantizer (`quantize_row_q4_K_ref`, compiled from the pinned
/// llama-cpp-python sdist by `scripts/reference/gen_gguf_q4_k.py`): the same bytes for
/// Gaussian rows of four magnitudes and the algorithm's edge cases.
#[test]
fn q4_k_is_byte_exact_against_ggml() {
    let f = GgufFile::open(fixture("q4_k.gguf")).unwrap();
    let input = f32s(f.tensor_bytes("input").unwrap());
    assert_eq!(input.len(), 22 * 256, "the fixture's rows");
    let want = f.tensor_bytes("Q4_K").unwrap();
    let ours = quantize(GgmlType::Q4_K, &input).unwrap();
    assert_eq!(ours.len(), want.len());
    let block = GgmlType::Q4_K.type_size();
    let bad: Vec<usize> = (0..ours.len() / block)
        .filter(|&b| ours[b * block..(b + 1) * block] != want[b * block..(b + 1) * block])
        .collect();
    assert!(bad.is_empty(), "super-blocks {bad:?} differ from ggml's");
    // And gguf-py reads those bytes back to the values ours does.
    let back = dequantize(GgmlType::Q4_K, &ours, input.len()).unwrap();
    let reference = f32s(f.tensor_bytes("Q4_K.dequantized").unwrap());
    assert!(bits_mismatch(&back, &reference).is_none());
}

#[test]
fn the_other_k_quants_cannot_be_quantized() {
    for ty in [
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
    ] {
        let msg = quantize(ty, &[0.0; 256]).unwrap_err().to_string();
        assert!(msg.contains(ty.name()), "{msg}");
    }
}

#[test]
fn reads_a_flux_like_file_written_by_gguf_py() {
    let path = fixture("flux_like.gguf");
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.path(), path);
    assert_eq!(f.version(), 3);
    assert_eq!(f.alignment(), 32);
    assert_eq!(f.data_start() % 32, 0);
    assert_eq!(f.architecture(), Some("flux"));
    let keys: Vec<&str> = f.metadata_keys().collect();
    assert_eq!(
        keys,
        [
            "general.architecture",
            "general.name",
            "fixture.u32",
            "fixture.f32",
            "fixture.bool",
            "fixture.strings",
            "fixture.u64",
            "fixture.i8",
            "comfy.gguf.orig_shape.img_in.weight",
        ]
    );
    let md = |k| f.metadata(k).unwrap();
    assert_eq!(md("general.name").as_str(), Some("flux-like fixture"));
    assert_eq!(md("fixture.u32"), &MetadataValue::U32(123456));
    assert_eq!(md("fixture.f32"), &MetadataValue::F32(0.5));
    assert_eq!(md("fixture.bool").as_bool(), Some(true));
    assert_eq!(md("fixture.u64").as_u64(), Some((1 << 40) + 1));
    assert_eq!(md("fixture.i8"), &MetadataValue::I8(-5));
    let strings = md("fixture.strings").as_array().unwrap();
    assert_eq!(strings.as_strings().unwrap(), ["a", "bc", "déf"]);
    let orig = md("comfy.gguf.orig_shape.img_in.weight")
        .as_array()
        .unwrap();
    assert!(matches!(orig, MetadataArray::I32(_)));
    assert_eq!(orig.to_i64s(), Some(vec![32, 4, 16]));
    assert!(f.metadata("missing").is_none());

    let names: Vec<&str> = f.tensors().map(|t| t.name()).collect();
    assert_eq!(
        names,
        [
            "double_blocks.0.img_attn.qkv.weight",
            "img_in.weight",
            "double_blocks.0.img_attn.norm.query_norm.scale",
        ]
    );
    let qkv = f.tensor("double_blocks.0.img_attn.qkv.weight").unwrap();
    assert_eq!(qkv.shape(), [96, 32]);
    assert_eq!(qkv.ggml_dims(), [32, 96]);
    assert_eq!(qkv.ggml_type(), Some(GgmlType::Q8_0));
    assert_eq!(qkv.n_bytes(), 96 * 34);
    assert_eq!(qkv.offset() % 32, 0);
    let bytes = f.tensor_bytes(qkv.name()).unwrap();
    assert_eq!(bytes.len(), 3264);
    assert_eq!(bytes, quantize(GgmlType::Q8_0, &formula(96 * 32)).unwrap());
    let values = f.dequantize(qkv.name()).unwrap();
    for (v, x) in values.iter().zip(formula(96 * 32)) {
        assert!((v - x).abs() <= 4.0 / 127.0, "{v} vs {x}");
    }

    let img_in = f.tensor("img_in.weight").unwrap();
    assert_eq!(
        (img_in.shape(), img_in.ggml_type()),
        (&[32, 64][..], Some(GgmlType::F16))
    );
    assert_eq!(f.tensor_bytes("img_in.weight").unwrap().len(), 32 * 64 * 2);
    let want: Vec<f32> = (0..32 * 64)
        .map(|i| ((i * 31) % 97 - 48) as f32 / 16.0)
        .collect();
    assert_eq!(f.dequantize("img_in.weight").unwrap(), want);

    let scale = f
        .tensor("double_blocks.0.img_attn.norm.query_norm.scale")
        .unwrap();
    assert_eq!(
        (scale.shape(), scale.ggml_type()),
        (&[16][..], Some(GgmlType::F32))
    );
    let want: Vec<f32> = (1..=16).map(|i| i as f32 / 8.0).collect();
    assert_eq!(f.dequantize(scale.name()).unwrap(), want);
    assert!(f.check_supported().is_ok());
    assert!(f.tensor("nope").is_none() && f.tensor_bytes("nope").is_none());
    assert!(
        f.dequantize("nope")
            .unwrap_err()
            .to_string()
            .contains("nope")
    );
    let debug = format!("{f:?}");
    assert!(
        debug.contains("flux_like.gguf") && debug.contains("tensors: 3"),
        "{debug}"
    );
}

#[test]
fn honours_a_custom_alignment_from_gguf_py() {
    let f = GgufFile::open(fixture("aligned64.gguf")).unwrap();
    assert_eq!(f.alignment(), 64);
    assert_eq!(
        f.metadata("general.alignment"),
        Some(&MetadataValue::U32(64))
    );
    assert_eq!(f.data_start() % 64, 0);
    assert_eq!(f.tensor("b").unwrap().offset(), 64);
    assert_eq!(f.dequantize("a").unwrap(), [0.0, 1.0, 2.0]);
    assert_eq!(f.dequantize("b").unwrap(), [-0.0, -1.5, -3.0, -4.5, -6.0]);
}

/// Our writer's output is committed as tests/fixtures/ours_written.gguf and
/// checked by `scripts/reference/gen_gguf.py` with gguf-py's GGUFReader. This test
/// keeps the committed file identical to what the writer produces now
/// (`GGUF_UPDATE_FIXTURES=1 cargo test` rewrites it).
#[test]
fn committed_writer_output_is_current() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("ours_written.gguf");
    write_ours(&fresh).unwrap();
    let fresh_bytes = std::fs::read(&fresh).unwrap();
    let committed = fixture("ours_written.gguf");
    if std::env::var_os("GGUF_UPDATE_FIXTURES").is_some() {
        std::fs::write(&committed, &fresh_bytes).unwrap();
    }
    let committed_bytes = std::fs::read(&committed).expect("run with GGUF_UPDATE_FIXTURES=1");
    assert!(
        committed_bytes == fresh_bytes,
        "writer output changed: regenerate and re-run gen_gguf.py"
    );
    // And it reads back with our reader.
    let f = GgufFile::open(&committed).unwrap();
    assert_eq!(f.tensor_count(), 13);
    assert_eq!(f.dequantize("vec").unwrap(), formula(7));
    let f16 = f.tensor_bytes("f16").unwrap();
    let first = u16::from_le_bytes([f16[0], f16[1]]);
    assert_eq!(first, f32_to_f16_bits(formula(1)[0]));
}

/// A released tensor's pages come back from the file when it is read again.
#[test]
fn released_tensors_read_back_unchanged() {
    let file = GgufFile::open(fixture("q4_k.gguf")).unwrap();
    let before = file.tensor_bytes("input").unwrap().to_vec();
    for key in ["input", "Q4_K", "Q4_K.dequantized", "absent"] {
        file.release(key);
    }
    assert_eq!(file.tensor_bytes("input").unwrap(), before);
}
