//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use flux_gguf::{GgmlType, GgufError, GgufFile, GgufWriter, MetadataArray, dequantize, quantize};

/// `tests/fixtures/<name>`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Values both the Rust tests and scripts/gen_gguf.py compute exactly
/// (`formula` there): multiples of 1/256.
pub fn formula(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i as i64 * 7919) % 2001 - 1000) as f32 / 256.0)
        .collect()
}

/// Deterministic K-quant bytes: a byte pattern with the f16 `d` (and `dmin`)
/// fields set to small finite values so the decoded values are finite.
pub fn kquant_pattern(ty: GgmlType, n_values: usize) -> Vec<u8> {
    let size = ty.type_size();
    let mut b: Vec<u8> = (0..n_values / ty.block_size() * size)
        .map(|i| ((i * 73 + 41) % 256) as u8)
        .collect();
    let fields: &[(usize, u16)] = match ty {
        GgmlType::Q2_K => &[(80, 0x2400), (82, 0x2000)],
        GgmlType::Q3_K => &[(108, 0x2400)],
        GgmlType::Q4_K | GgmlType::Q5_K => &[(0, 0x2400), (2, 0x2000)],
        GgmlType::Q6_K => &[(208, 0x1c00)],
        _ => &[],
    };
    for block in b.chunks_exact_mut(size) {
        for &(at, bits) in fields {
            block[at..at + 2].copy_from_slice(&bits.to_le_bytes());
        }
    }
    b
}

/// Little-endian f32 bytes → values.
pub fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Values → little-endian f32 bytes.
pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Writes a file with `tensors` (name, type, torch shape, bytes) and metadata.
pub fn write_file(
    path: &Path,
    metadata: Vec<(&str, flux_gguf::MetadataValue)>,
    tensors: &[(&str, GgmlType, Vec<usize>, Vec<u8>)],
) -> Result<(), GgufError> {
    let mut w = GgufWriter::new(path);
    for (k, v) in metadata {
        w.add_metadata(k, v)?;
    }
    for (name, ty, shape, _) in tensors {
        w.add_tensor_info(name, *ty, shape)?;
    }
    let mut data = w.start_data()?;
    for (name, _, _, bytes) in tensors {
        data.write_tensor(name, bytes)?;
    }
    data.finish()
}

/// The file checked by `scripts/gen_gguf.py` (`check_ours`) with gguf-py's reader.
pub fn write_ours(path: &Path) -> Result<(), GgufError> {
    let q = |ty, shape: Vec<usize>| {
        let n = shape.iter().product();
        (ty, shape, quantize(ty, &formula(n)).unwrap())
    };
    let k = |ty, shape: Vec<usize>| {
        let n = shape.iter().product();
        (ty, shape, kquant_pattern(ty, n))
    };
    let (q4k_ty, q4k_shape, q4k) = k(GgmlType::Q4_K, vec![2, 256]);
    let (q6k_ty, q6k_shape, q6k) = k(GgmlType::Q6_K, vec![1, 512]);
    let q4k_deq = f32_bytes(&dequantize(q4k_ty, &q4k, 512)?);
    let q6k_deq = f32_bytes(&dequantize(q6k_ty, &q6k, 512)?);
    let mut tensors = Vec::new();
    for (name, (ty, shape, bytes)) in [
        ("f32", q(GgmlType::F32, vec![3, 5])),
        ("f16", q(GgmlType::F16, vec![2, 16])),
        ("bf16", q(GgmlType::BF16, vec![2, 16])),
        ("q8", q(GgmlType::Q8_0, vec![4, 64])),
        ("q4_0", q(GgmlType::Q4_0, vec![2, 32])),
        ("q4_1", q(GgmlType::Q4_1, vec![2, 32])),
        ("q5_0", q(GgmlType::Q5_0, vec![2, 64])),
        ("q5_1", q(GgmlType::Q5_1, vec![1, 32])),
        ("vec", q(GgmlType::F32, vec![7])),
        ("q4_k", (q4k_ty, q4k_shape, q4k)),
        ("q6_k", (q6k_ty, q6k_shape, q6k)),
        (
            "q4_k.rust_dequantized",
            (GgmlType::F32, vec![2, 256], q4k_deq),
        ),
        (
            "q6_k.rust_dequantized",
            (GgmlType::F32, vec![1, 512], q6k_deq),
        ),
    ] {
        tensors.push((name, ty, shape, bytes));
    }
    let strings = ["x", "yy", "ünicöde"].map(String::from).to_vec();
    write_file(
        path,
        vec![
            ("general.architecture", "flux".into()),
            ("general.name", "written by the Rust GgufWriter".into()),
            ("test.u32", 42u32.into()),
            ("test.f32", 1.5f32.into()),
            ("test.strings", MetadataArray::String(strings).into()),
            (
                "comfy.gguf.orig_shape.q8",
                MetadataArray::I32(vec![4, 2, 32]).into(),
            ),
        ],
        &tensors,
    )
}

/// Opens `bytes` written to a file called `name` in `dir`.
///
/// The file is overwritten in place and then cut to length rather than
/// truncated first: on some file systems (ext4 with `discard`) truncating to
/// zero thousands of times makes the fuzz test take many seconds.
pub fn open_bytes(dir: &Path, name: &str, bytes: &[u8]) -> Result<GgufFile, GgufError> {
    use std::io::Write;
    let path = dir.join(name);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .unwrap();
    file.write_all(bytes).unwrap();
    file.set_len(bytes.len() as u64).unwrap();
    drop(file);
    GgufFile::open(&path)
}
