//! GgufWriter: round trips through GgufFile, layout, and misuse.

use crate::common::{formula, kquant_pattern, write_file};
use flux_gguf::{
    GgmlType, GgufError, GgufFile, GgufWriter, MetadataArray, MetadataValue, dequantize, quantize,
};

fn encoded(ty: GgmlType, n: usize) -> Vec<u8> {
    match quantize(ty, &formula(n)) {
        Ok(bytes) => bytes,
        Err(_) => kquant_pattern(ty, n),
    }
}

#[test]
fn every_type_and_value_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("round.gguf");
    let metadata = vec![
        ("general.architecture", MetadataValue::from("flux")),
        ("v.u8", MetadataValue::U8(200)),
        ("v.i8", MetadataValue::I8(-100)),
        ("v.u16", MetadataValue::U16(60000)),
        ("v.i16", MetadataValue::I16(-30000)),
        ("v.u32", MetadataValue::U32(4_000_000_000)),
        ("v.i32", MetadataValue::I32(-2_000_000_000)),
        ("v.f32", MetadataValue::F32(-0.25)),
        ("v.bool", MetadataValue::Bool(false)),
        ("v.string", MetadataValue::from("ünïcode ✓")),
        ("v.u64", MetadataValue::U64(u64::MAX)),
        ("v.i64", MetadataValue::I64(i64::MIN)),
        ("v.f64", MetadataValue::F64(1e300)),
        (
            "a.strings",
            MetadataArray::String(vec!["".into(), "b".into()]).into(),
        ),
        ("a.bools", MetadataArray::Bool(vec![true, false]).into()),
        ("a.f64", MetadataArray::F64(vec![1.5, -2.5]).into()),
        ("a.empty", MetadataArray::U8(vec![]).into()),
        (
            "a.nested",
            MetadataArray::Array(vec![
                MetadataArray::I16(vec![-1, 2]),
                MetadataArray::U64(vec![7]),
            ])
            .into(),
        ),
    ];
    let tensors: Vec<(String, GgmlType, Vec<usize>, Vec<u8>)> = GgmlType::ALL
        .iter()
        .enumerate()
        .map(|(i, &ty)| {
            let shape = if ty.block_size() == 1 {
                vec![3, 1 + i]
            } else {
                vec![2, ty.block_size()]
            };
            let n = shape.iter().product();
            (format!("t.{}", ty.name()), ty, shape, encoded(ty, n))
        })
        .collect();
    let borrowed: Vec<_> = tensors
        .iter()
        .map(|(n, t, s, b)| (n.as_str(), *t, s.clone(), b.clone()))
        .collect();
    write_file(&path, metadata.clone(), &borrowed).unwrap();
    assert!(!dir.path().join("round.gguf.partial").exists());

    let f = GgufFile::open(&path).unwrap();
    assert_eq!((f.version(), f.alignment()), (3, 32));
    assert_eq!(std::fs::metadata(&path).unwrap().len() % 32, 0);
    let keys: Vec<&str> = f.metadata_keys().collect();
    assert_eq!(keys, metadata.iter().map(|(k, _)| *k).collect::<Vec<_>>());
    for (k, v) in &metadata {
        assert_eq!(f.metadata(k), Some(v), "{k}");
    }
    let names: Vec<&str> = f.tensors().map(|t| t.name()).collect();
    assert_eq!(
        names,
        tensors.iter().map(|t| t.0.as_str()).collect::<Vec<_>>()
    );
    for (name, ty, shape, bytes) in &tensors {
        let t = f.tensor(name).unwrap();
        assert_eq!(
            (t.ggml_type(), t.shape()),
            (Some(*ty), &shape[..]),
            "{name}"
        );
        assert_eq!(
            t.ggml_dims()
                .iter()
                .rev()
                .map(|&d| d as usize)
                .collect::<Vec<_>>(),
            *shape
        );
        assert_eq!(t.offset() % 32, 0);
        assert_eq!(f.tensor_bytes(name).unwrap(), &bytes[..], "{name}");
        let n = t.n_elements();
        assert_eq!(
            f.dequantize(name).unwrap(),
            dequantize(*ty, bytes, n).unwrap(),
            "{name}"
        );
    }
}

#[test]
fn tensor_data_is_streamed_in_declared_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stream.gguf");
    let mut w = GgufWriter::new(&path);
    w.add_metadata("general.architecture", "flux").unwrap();
    w.add_tensor_info("a", GgmlType::Q8_0, &[4, 64]).unwrap();
    w.add_tensor_info("b", GgmlType::F16, &[5]).unwrap();
    let mut data = w.start_data().unwrap();
    while let Some((name, ty, shape, n_bytes)) = data.next_tensor() {
        let name = name.to_string();
        let bytes = quantize(ty, &formula(shape.iter().product())).unwrap();
        assert_eq!(bytes.len(), n_bytes);
        data.write_tensor(&name, &bytes).unwrap();
    }
    assert!(!path.exists(), "final name appears only after finish");
    data.finish().unwrap();
    let f = GgufFile::open(&path).unwrap();
    // "a" takes 4 * 2 * 34 = 272 bytes, padded to 288.
    assert_eq!(f.tensor("b").unwrap().offset(), 288);
    assert_eq!(f.dequantize("b").unwrap(), formula(5));
}

#[test]
fn misuse_is_reported_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.gguf");
    let mut w = GgufWriter::new(&path);
    w.add_metadata("k", 1u32).unwrap();
    let msg = |e: GgufError| e.to_string();
    assert!(msg(w.add_metadata("k", 2u32).unwrap_err()).contains("'k' added twice"));
    assert!(msg(w.add_metadata("general.alignment", 64u32).unwrap_err()).contains("U32(32)"));
    w.add_tensor_info("a", GgmlType::Q4_0, &[2, 32]).unwrap();
    w.add_tensor_info("b", GgmlType::F32, &[3]).unwrap();
    assert!(msg(w.add_tensor_info("a", GgmlType::F32, &[1]).unwrap_err()).contains("twice"));
    let e = msg(w
        .add_tensor_info("c", GgmlType::Q4_K, &[2, 32])
        .unwrap_err());
    assert!(
        e.contains("bad.gguf") && e.contains("'c'") && e.contains("256"),
        "{e}"
    );
    for (name, shape, problem) in [
        ("d", &[][..], "1 to 4 dimensions"),
        ("e", &[1, 1, 1, 1, 1][..], "1 to 4 dimensions"),
        ("f", &[usize::MAX, 2][..], "overflows"),
    ] {
        let e = msg(w.add_tensor_info(name, GgmlType::F32, shape).unwrap_err());
        assert!(
            e.contains(&format!("'{name}'")) && e.contains(problem),
            "{e}"
        );
    }

    let mut data = w.start_data().unwrap();
    let partial = dir.path().join("bad.gguf.partial");
    assert!(partial.exists());
    let e = msg(data.write_tensor("b", &[0; 12]).unwrap_err());
    assert!(e.contains("'b' written where 'a' was declared next"), "{e}");
    let e = msg(data.write_tensor("a", &[0; 10]).unwrap_err());
    assert!(e.contains("needs 36 bytes, got 10"), "{e}");
    data.write_tensor("a", &[0; 36]).unwrap();
    let e = msg(data.finish().unwrap_err());
    assert!(e.contains("before tensor 'b'"), "{e}");
    assert!(
        !partial.exists() && !path.exists(),
        "unfinished output is removed"
    );
}
