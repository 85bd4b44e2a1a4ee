//! Hostile and damaged files: each must give an `Err` naming the file and the
//! problem, never a panic or a huge allocation.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use crate::common::{f32_bytes, formula, open_bytes, write_file};
use flux_gguf::{GgmlType, GgufError, GgufFile, MetadataArray, quantize};

/// A small valid file. Tensor names have equal lengths so one can be renamed
/// to the other; metadata values never repeat a tensor name.
fn base(dir: &Path, arch: &str) -> Vec<u8> {
    let path = dir.join(format!("base-{arch}.gguf"));
    write_file(
        &path,
        vec![
            ("general.architecture", arch.into()),
            ("general.name", "hostile base".into()),
            ("test.array", MetadataArray::I32(vec![1, 2, 3]).into()),
            ("general.alignmenx", 32u32.into()),
        ],
        &[
            (
                "q8.weight",
                GgmlType::Q8_0,
                vec![2, 32],
                quantize(GgmlType::Q8_0, &formula(64)).unwrap(),
            ),
            (
                "f3.weight",
                GgmlType::F32,
                vec![2, 256],
                f32_bytes(&formula(512)),
            ),
        ],
    )
    .unwrap();
    std::fs::read(path).unwrap()
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .expect("needle in base file")
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Position just after `key` (a metadata key or tensor name) in the file.
fn after(b: &[u8], key: &str) -> usize {
    find(b, key.as_bytes()) + key.len()
}

/// Opens `bytes` as `<name>.gguf` and checks the error names the file and
/// contains every fragment.
fn expect_err(dir: &Path, name: &str, bytes: &[u8], fragments: &[&str]) -> GgufError {
    let file = format!("{name}.gguf");
    let err = open_bytes(dir, &file, bytes).expect_err(name);
    let msg = err.to_string();
    assert!(
        msg.contains(&file),
        "{name}: message does not name the file: {msg}"
    );
    for f in fragments {
        assert!(msg.contains(f), "{name}: message lacks {f:?}: {msg}");
    }
    err
}

#[test]
fn damaged_headers_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = base(d, "flux");
    assert!(open_bytes(d, "good.gguf", &good).is_ok());

    let mut b = good.clone();
    b[3] = b'G';
    let e = expect_err(d, "magic", &b, &["not a GGUF file"]);
    assert!(matches!(e, GgufError::NotGguf { .. }));
    expect_err(d, "empty", &[], &["truncated", "magic"]);
    expect_err(d, "short-magic", b"GG", &["truncated", "magic"]);

    for (v, frag) in [
        (1, "version 1"),
        (99, "version 99"),
        (0x0300_0000, "big-endian"),
    ] {
        let mut b = good.clone();
        put_u32(&mut b, 4, v);
        let e = expect_err(d, &format!("version-{v}"), &b, &[frag, "unsupported"]);
        assert!(matches!(e, GgufError::UnsupportedVersion { .. }));
    }
    // Version 2 has the same layout as 3.
    let mut b = good.clone();
    put_u32(&mut b, 4, 2);
    assert_eq!(open_bytes(d, "v2.gguf", &b).unwrap().version(), 2);

    expect_err(
        d,
        "trunc-header",
        &good[..10],
        &["truncated", "tensor count"],
    );
    expect_err(
        d,
        "trunc-counts",
        &good[..20],
        &["truncated", "metadata entry count"],
    );
    let cut = after(&good, "general.name") + 4 + 8 + 3;
    expect_err(
        d,
        "trunc-metadata",
        &good[..cut],
        &["truncated", "general.name"],
    );
    let e = expect_err(
        d,
        "trunc-data",
        &good[..good.len() - 10],
        &["f3.weight", "past the end"],
    );
    assert!(matches!(e, GgufError::Tensor { .. }));
}

#[test]
fn lengths_and_counts_are_checked_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = base(d, "flux");

    let mut b = good.clone();
    put_u64(&mut b, after(&good, "general.name") + 4, u64::MAX);
    expect_err(
        d,
        "string-len",
        &b,
        &["general.name", "18446744073709551615"],
    );

    let mut b = good.clone();
    put_u64(&mut b, after(&good, "test.array") + 8, 1 << 62);
    expect_err(
        d,
        "array-count",
        &b,
        &["test.array", &(1u64 << 62).to_string()],
    );

    let mut b = good.clone();
    put_u64(&mut b, 8, u64::MAX / 2);
    expect_err(d, "tensor-count", &b, &["tensor infos"]);
    let mut b = good.clone();
    put_u64(&mut b, 16, 1 << 60);
    expect_err(d, "kv-count", &b, &["metadata entries"]);

    let mut b = good.clone();
    put_u32(&mut b, after(&good, "f3.weight"), 1000);
    expect_err(d, "n-dims", &b, &["f3.weight", "n_dims is 1000"]);

    let mut b = good.clone();
    put_u32(&mut b, after(&good, "test.array") + 4, 77);
    expect_err(
        d,
        "array-type",
        &b,
        &["test.array", "unknown value type 77"],
    );
    let mut b = good.clone();
    put_u32(&mut b, after(&good, "general.name"), 13);
    expect_err(
        d,
        "value-type",
        &b,
        &["general.name", "unknown value type 13"],
    );
}

#[test]
fn tensor_infos_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = base(d, "flux");
    let f3 = after(&good, "f3.weight"); // n_dims u32, dims 2×u64, type u32, offset u64
    let (dims, ty, off) = (f3 + 4, f3 + 20, f3 + 24);

    let mut b = good.clone();
    put_u64(&mut b, off, 1 << 40);
    expect_err(d, "offset-past-end", &b, &["f3.weight", "past the end"]);
    let mut b = good.clone();
    put_u64(&mut b, off, u64::MAX - 31);
    expect_err(d, "offset-overflow", &b, &["f3.weight", "past the end"]);
    let mut b = good.clone();
    let old = u64::from_le_bytes(good[off..off + 8].try_into().unwrap());
    put_u64(&mut b, off, old + 4);
    expect_err(
        d,
        "offset-misaligned",
        &b,
        &["f3.weight", "not a multiple of the alignment 32"],
    );

    let mut b = good.clone();
    put_u64(&mut b, dims, 1 << 40);
    put_u64(&mut b, dims + 8, 1 << 40);
    expect_err(d, "dims-overflow", &b, &["f3.weight", "multiply"]);

    let mut b = good.clone();
    put_u64(&mut b, after(&good, "q8.weight") + 4, 33);
    expect_err(
        d,
        "row-length",
        &b,
        &["q8.weight", "row length", "33", "Q8_0", "32"],
    );

    let mut b = good.clone();
    put_u32(&mut b, ty, 99);
    expect_err(
        d,
        "unknown-type",
        &b,
        &["f3.weight", "unknown ggml type 99"],
    );

    let mut b = good.clone();
    let at = find(&good, b"f3.weight");
    b[at..at + 2].copy_from_slice(b"q8");
    expect_err(d, "dup-tensor", &b, &["q8.weight", "twice"]);

    let mut b = good.clone();
    b[find(&good, b"general.alignmenx") + 16] = b't';
    assert_eq!(open_bytes(d, "align32.gguf", &b).unwrap().alignment(), 32);
    put_u32(&mut b, after(&good, "general.alignmenx") + 4, 48);
    expect_err(d, "align48", &b, &["general.alignment", "power of two"]);
}

#[test]
fn unsupported_types_open_for_inspection_but_do_not_decode() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = base(d, "flux");
    let mut b = good.clone();
    put_u32(&mut b, after(&good, "f3.weight") + 20, 16); // IQ2_XXS
    let f = open_bytes(d, "iq2.gguf", &b).unwrap();
    let t = f.tensor("f3.weight").unwrap();
    assert_eq!(
        (t.ggml_type(), t.type_id(), t.type_name()),
        (None, 16, "IQ2_XXS".to_string())
    );
    assert_eq!(f.tensor_bytes("f3.weight").unwrap().len(), 2 * 66);
    for err in [
        f.check_supported().unwrap_err(),
        f.dequantize("f3.weight").unwrap_err(),
    ] {
        let msg = err.to_string();
        assert!(matches!(err, GgufError::UnsupportedType { .. }), "{msg}");
        for frag in ["iq2.gguf", "f3.weight", "IQ2_XXS"] {
            assert!(msg.contains(frag), "{msg}");
        }
    }
    assert!(f.dequantize("q8.weight").is_ok());
}

#[test]
fn other_architectures_open_and_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let b = base(dir.path(), "llama");
    let f = open_bytes(dir.path(), "llama.gguf", &b).unwrap();
    assert_eq!(f.architecture(), Some("llama"));
}

#[test]
fn missing_file_is_an_io_error_naming_it() {
    let err = GgufFile::open("/nonexistent/dir/model.gguf").unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, GgufError::Io { .. }));
    assert!(
        msg.contains("/nonexistent/dir/model.gguf") && msg.contains("open"),
        "{msg}"
    );
}

/// xorshift64*: a tiny seeded PRNG so the fuzz cases are reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Opens `bytes` and, if that works, uses every accessor; returns whether it opened.
fn exercise(dir: &Path, bytes: &[u8]) -> bool {
    let Ok(f) = open_bytes(dir, "fuzz.gguf", bytes) else {
        return false;
    };
    let _ = (f.architecture(), f.check_supported(), format!("{f:?}"));
    for k in f.metadata_keys() {
        let _ = format!("{:?}", f.metadata(k));
    }
    for t in f.tensors() {
        let bytes = f.tensor_bytes(t.name()).expect("listed tensor has bytes");
        assert_eq!(bytes.len(), t.n_bytes());
        if let Ok(v) = f.dequantize(t.name()) {
            assert_eq!(v.len(), t.n_elements());
        }
    }
    true
}

#[test]
fn truncations_and_random_corruption_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = base(d, "flux");
    let header_len = GgufFile::open(d.join("base-flux.gguf"))
        .unwrap()
        .data_start() as usize;

    let run = |label: String, bytes: &[u8]| -> bool {
        match catch_unwind(AssertUnwindSafe(|| exercise(d, bytes))) {
            Ok(opened) => opened,
            Err(_) => panic!("panic on {label}"),
        }
    };
    let mut opened = 0;
    for len in 0..good.len() {
        opened += usize::from(run(format!("truncation to {len} bytes"), &good[..len]));
    }
    // Only the full file, or cuts inside the last tensor's padding, open.
    assert!(opened < 40, "{opened} truncations opened");

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut ok, mut err) = (0, 0);
    for case in 0..4000 {
        let mut b = good.clone();
        for _ in 0..1 + rng.below(4) {
            // Mostly the header, where every byte matters; sometimes anywhere.
            let at = if rng.below(5) == 0 {
                rng.below(b.len())
            } else {
                rng.below(header_len)
            };
            b[at] = match rng.below(4) {
                0 => 0xff,
                1 => 0,
                _ => rng.next() as u8,
            };
        }
        if run(format!("corruption case {case}"), &b) {
            ok += 1
        } else {
            err += 1
        }
    }
    assert!(ok > 100 && err > 100, "opened {ok}, rejected {err}");
}
