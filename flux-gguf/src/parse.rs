//! Parsing of the GGUF header, metadata and tensor infos from a byte slice.
//!
//! Every length or count read from the file is checked against the bytes
//! that remain before anything is allocated for it, and every size product
//! uses checked arithmetic, so hostile input yields a [`GgufError`], never a
//! panic or a huge allocation.

use std::collections::HashMap;
use std::path::Path;

use crate::error::GgufError;
use crate::fields::{Cursor, capacity, parse_value};
use crate::tensor::GgufTensorInfo;
use crate::types::{block_geometry, type_label};
use crate::value::MetadataValue;

/// Alignment of the data section when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml's `GGML_MAX_DIMS`: no ggml tensor has more dimensions.
pub const MAX_DIMS: u32 = 4;
/// Smallest possible encoded tensor info: name length, n_dims, type, offset.
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 4 + 8;
/// Smallest possible encoded metadata entry: key length, value type, one byte.
const MIN_KV_BYTES: u64 = 8 + 4 + 1;

/// What the parser found; the reader adds the memory map around it.
pub(super) struct Parsed {
    pub version: u32,
    pub metadata: Vec<(String, MetadataValue)>,
    pub tensors: Vec<GgufTensorInfo>,
    pub alignment: u64,
    pub data_start: u64,
}

fn check_count(c: &Cursor<'_>, count: u64, min_each: u64, what: &str) -> Result<(), GgufError> {
    let needed = count.checked_mul(min_each);
    if needed.is_none_or(|n| n > c.remaining()) {
        return Err(GgufError::Truncated {
            path: c.path(),
            what: format!("{count} {what} of at least {min_each} bytes each"),
            offset: c.pos as u64,
            needed: needed.unwrap_or(u64::MAX),
            available: c.remaining(),
        });
    }
    Ok(())
}

fn check_version(path: &Path, version: u32) -> Result<(), GgufError> {
    if version == 2 || version == 3 {
        return Ok(());
    }
    let hint = if version == 1 {
        " (GGUF v1 used 32-bit lengths; re-save the file with a current gguf-py or llama.cpp)"
    } else if matches!(version.swap_bytes(), 2 | 3) {
        " (this looks like a big-endian GGUF file; only little-endian files are supported)"
    } else {
        ""
    };
    Err(GgufError::UnsupportedVersion {
        path: path.to_path_buf(),
        version,
        hint,
    })
}

/// Parses everything before the tensor data and validates every tensor's
/// place in `buf` (the whole file).
pub(super) fn parse(path: &Path, buf: &[u8]) -> Result<Parsed, GgufError> {
    let mut c = Cursor { buf, pos: 0, path };
    let head = &buf[..buf.len().min(4)];
    if head != &b"GGUF"[..head.len()] {
        return Err(GgufError::NotGguf {
            path: path.to_path_buf(),
            found: head.to_vec(),
        });
    }
    c.take(4, || "magic".into())?;
    let version = c.u32(|| "version".into())?;
    check_version(path, version)?;
    let n_tensors = c.u64(|| "tensor count".into())?;
    let n_kv = c.u64(|| "metadata entry count".into())?;
    check_count(&c, n_kv, MIN_KV_BYTES, "metadata entries")?;
    check_count(&c, n_tensors, MIN_TENSOR_INFO_BYTES, "tensor infos")?;

    let mut metadata = Vec::with_capacity(capacity(n_kv));
    let mut keys: HashMap<String, usize> = HashMap::new();
    let mut alignment = DEFAULT_ALIGNMENT;
    for i in 0..n_kv {
        let key_at = c.pos;
        let key = c.string(|| format!("key of metadata entry {i}"))?;
        if keys.contains_key(&key) {
            return Err(c.malformed(key_at, format!("metadata key '{key}' appears twice")));
        }
        let ty = c.u32(|| format!("value type of metadata '{key}'"))?;
        let value_at = c.pos;
        let value = parse_value(&mut c, ty, 0, &|| format!("value of metadata '{key}'"))?;
        if key == "general.alignment" {
            alignment = match value {
                MetadataValue::U32(a) if a.is_power_of_two() => a.into(),
                ref v => {
                    return Err(c.malformed(
                        value_at,
                        format!("general.alignment must be a u32 power of two, found {v:?}"),
                    ));
                }
            };
        }
        keys.insert(key.clone(), metadata.len());
        metadata.push((key, value));
    }

    let mut tensors: Vec<GgufTensorInfo> = Vec::with_capacity(capacity(n_tensors));
    let mut names: HashMap<String, ()> = HashMap::new();
    for i in 0..n_tensors {
        let name_at = c.pos;
        let name = c.string(|| format!("name of tensor info {i}"))?;
        if names.insert(name.clone(), ()).is_some() {
            return Err(c.malformed(name_at, format!("tensor name '{name}' appears twice")));
        }
        tensors.push(parse_tensor_info(&mut c, name, alignment)?);
    }

    let end_of_infos = c.pos as u64;
    let data_start = end_of_infos
        .div_ceil(alignment)
        .checked_mul(alignment)
        .ok_or_else(|| c.malformed(c.pos, "data section start overflows u64".into()))?;
    let file_len = buf.len() as u64;
    for t in &mut tensors {
        let start = data_start.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(t.n_bytes as u64));
        match (start, end) {
            (Some(s), Some(e)) if e <= file_len => t.file_offset = s,
            _ => {
                return Err(GgufError::Tensor {
                    path: path.to_path_buf(),
                    tensor: t.name.clone(),
                    problem: format!(
                        "its {} bytes at data offset {} (file offset {}) run past the end of the \
                         {file_len}-byte file",
                        t.n_bytes,
                        t.offset,
                        start.map_or_else(|| "overflowing u64".to_string(), |s| s.to_string()),
                    ),
                });
            }
        }
    }
    Ok(Parsed {
        version,
        metadata,
        tensors,
        alignment,
        data_start,
    })
}

fn parse_tensor_info(
    c: &mut Cursor<'_>,
    name: String,
    alignment: u64,
) -> Result<GgufTensorInfo, GgufError> {
    let path = c.path;
    let bad = |problem: String| GgufError::Tensor {
        path: path.to_path_buf(),
        tensor: name.clone(),
        problem,
    };
    let n_dims = c.u32(|| format!("n_dims of tensor '{name}'"))?;
    if n_dims > MAX_DIMS {
        return Err(bad(format!(
            "n_dims is {n_dims}; ggml tensors have at most {MAX_DIMS}"
        )));
    }
    let mut ggml_dims = Vec::with_capacity(n_dims as usize);
    for d in 0..n_dims {
        ggml_dims.push(c.u64(|| format!("dimension {d} of tensor '{name}'"))?);
    }
    let type_id = c.u32(|| format!("type of tensor '{name}'"))?;
    let offset = c.u64(|| format!("data offset of tensor '{name}'"))?;

    let n_elements = ggml_dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| {
            bad(format!(
                "ggml dims {ggml_dims:?} multiply to more than fits in memory"
            ))
        })?;
    let shape = ggml_dims
        .iter()
        .rev()
        .map(|&d| usize::try_from(d))
        .collect::<Result<Vec<usize>, _>>()
        .map_err(|_| bad(format!("ggml dims {ggml_dims:?} do not fit in usize")))?;
    let Some((block, type_size)) = block_geometry(type_id) else {
        return Err(bad(format!(
            "unknown ggml type {} (not in gguf-py's GGMLQuantizationType), so its size cannot be checked",
            type_id
        )));
    };
    let row = ggml_dims.first().copied().unwrap_or(1);
    if !row.is_multiple_of(block) {
        return Err(bad(format!(
            "row length (innermost dimension) {row} is not a multiple of the {} block size {block}",
            type_label(type_id)
        )));
    }
    let n_bytes = (n_elements as u64 / block)
        .checked_mul(type_size)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| {
            bad(format!(
                "byte size of {n_elements} {} values overflows",
                type_label(type_id)
            ))
        })?;
    if !offset.is_multiple_of(alignment) {
        return Err(bad(format!(
            "data offset {offset} is not a multiple of the alignment {alignment}"
        )));
    }
    Ok(GgufTensorInfo {
        name,
        ggml_dims,
        shape,
        type_id,
        offset,
        file_offset: 0,
        n_elements,
        n_bytes,
    })
}
