//! Bounded reading of GGUF fields from a byte slice: integers, strings,
//! metadata values and arrays.
//!
//! Every length or count is checked against the bytes that remain before
//! anything is allocated for it; errors say which field, at which byte, and
//! how many bytes it claimed.

use std::path::{Path, PathBuf};

use crate::error::GgufError;
use crate::value::{MetadataArray, MetadataValue, type_id};

/// Deepest nesting of arrays inside arrays that the parser accepts.
const MAX_ARRAY_DEPTH: u32 = 8;

/// A read position in the bytes of the file at `path`.
pub(super) struct Cursor<'a> {
    pub buf: &'a [u8],
    pub pos: usize,
    pub path: &'a Path,
}

impl<'a> Cursor<'a> {
    pub(super) fn path(&self) -> PathBuf {
        self.path.to_path_buf()
    }

    pub(super) fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    pub(super) fn truncated(&self, what: String, needed: u64) -> GgufError {
        GgufError::Truncated {
            path: self.path(),
            what,
            offset: self.pos as u64,
            needed,
            available: self.remaining(),
        }
    }

    pub(super) fn malformed(&self, offset: usize, problem: String) -> GgufError {
        GgufError::Malformed {
            path: self.path(),
            offset: offset as u64,
            problem,
        }
    }

    pub(super) fn take(
        &mut self,
        n: u64,
        what: impl FnOnce() -> String,
    ) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(self.truncated(what(), n));
        }
        let start = self.pos;
        self.pos += n as usize; // n <= remaining, so it fits in usize
        Ok(&self.buf[start..self.pos])
    }

    pub(super) fn array<const N: usize>(
        &mut self,
        what: impl FnOnce() -> String,
    ) -> Result<[u8; N], GgufError> {
        let bytes = self.take(N as u64, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    pub(super) fn u32(&mut self, what: impl FnOnce() -> String) -> Result<u32, GgufError> {
        self.array(what).map(u32::from_le_bytes)
    }

    pub(super) fn u64(&mut self, what: impl FnOnce() -> String) -> Result<u64, GgufError> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// A GGUF string: u64 byte length, then UTF-8 bytes.
    pub(super) fn string(&mut self, what: impl Fn() -> String) -> Result<String, GgufError> {
        let len = self.u64(|| format!("length of {}", what()))?;
        let at = self.pos;
        let bytes = self.take(len, || format!("{} ({len} bytes)", what()))?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_string()),
            Err(e) => Err(self.malformed(at, format!("{} is not valid UTF-8: {e}", what()))),
        }
    }
}

/// Initial capacity for a collection of `count` parsed items. `count` has
/// been checked against the bytes left in the file, but an item in memory can
/// be several times larger than its smallest encoding, so very large counts
/// grow the collection as items are actually read instead of reserving up front.
pub(super) fn capacity(count: u64) -> usize {
    count.min(4096) as usize
}

/// Smallest encoding of one element of GGUF value type `ty`, or `None` for an
/// unknown type.
fn min_value_size(ty: u32) -> Option<u64> {
    Some(match ty {
        type_id::U8 | type_id::I8 | type_id::BOOL => 1,
        type_id::U16 | type_id::I16 => 2,
        type_id::U32 | type_id::I32 | type_id::F32 => 4,
        type_id::U64 | type_id::I64 | type_id::F64 | type_id::STRING => 8,
        type_id::ARRAY => 12,
        _ => return None,
    })
}

fn parse_bool(
    c: &Cursor<'_>,
    byte: u8,
    at: usize,
    what: &dyn Fn() -> String,
) -> Result<bool, GgufError> {
    match byte {
        0 => Ok(false),
        1 => Ok(true),
        b => Err(c.malformed(
            at,
            format!("{} is a bool stored as {b}, expected 0 or 1", what()),
        )),
    }
}

pub(super) fn parse_value(
    c: &mut Cursor<'_>,
    ty: u32,
    depth: u32,
    what: &dyn Fn() -> String,
) -> Result<MetadataValue, GgufError> {
    let at = c.pos;
    Ok(match ty {
        type_id::U8 => MetadataValue::U8(u8::from_le_bytes(c.array(what)?)),
        type_id::I8 => MetadataValue::I8(i8::from_le_bytes(c.array(what)?)),
        type_id::U16 => MetadataValue::U16(u16::from_le_bytes(c.array(what)?)),
        type_id::I16 => MetadataValue::I16(i16::from_le_bytes(c.array(what)?)),
        type_id::U32 => MetadataValue::U32(u32::from_le_bytes(c.array(what)?)),
        type_id::I32 => MetadataValue::I32(i32::from_le_bytes(c.array(what)?)),
        type_id::F32 => MetadataValue::F32(f32::from_le_bytes(c.array(what)?)),
        type_id::BOOL => {
            let [b] = c.array(what)?;
            MetadataValue::Bool(parse_bool(c, b, at, what)?)
        }
        type_id::STRING => MetadataValue::String(c.string(what)?),
        type_id::ARRAY => MetadataValue::Array(parse_array(c, depth, what)?),
        type_id::U64 => MetadataValue::U64(u64::from_le_bytes(c.array(what)?)),
        type_id::I64 => MetadataValue::I64(i64::from_le_bytes(c.array(what)?)),
        type_id::F64 => MetadataValue::F64(f64::from_le_bytes(c.array(what)?)),
        other => {
            return Err(c.malformed(
                at.saturating_sub(4),
                format!("{} has unknown value type {other} (known: 0..=12)", what()),
            ));
        }
    })
}

/// Converts `bytes` (a whole number of `N`-byte elements) element by element.
fn fixed<T, const N: usize>(bytes: &[u8], f: fn([u8; N]) -> T) -> Vec<T> {
    bytes
        .chunks_exact(N)
        .map(|ch| {
            let mut a = [0u8; N];
            a.copy_from_slice(ch);
            f(a)
        })
        .collect()
}

fn parse_array(
    c: &mut Cursor<'_>,
    depth: u32,
    what: &dyn Fn() -> String,
) -> Result<MetadataArray, GgufError> {
    let type_at = c.pos;
    let elem_ty = c.u32(|| format!("element type of {}", what()))?;
    let count_at = c.pos;
    let count = c.u64(|| format!("element count of {}", what()))?;
    let Some(min) = min_value_size(elem_ty) else {
        return Err(c.malformed(
            type_at,
            format!("{} is an array of unknown value type {elem_ty}", what()),
        ));
    };
    if elem_ty == type_id::ARRAY && depth >= MAX_ARRAY_DEPTH {
        return Err(c.malformed(
            type_at,
            format!("{} nests arrays more than {MAX_ARRAY_DEPTH} deep", what()),
        ));
    }
    let needed = count.checked_mul(min);
    if needed.is_none_or(|n| n > c.remaining()) {
        return Err(GgufError::Truncated {
            path: c.path(),
            what: format!("{} ({count} elements of type {elem_ty})", what()),
            offset: count_at as u64,
            needed: needed.unwrap_or(u64::MAX),
            available: c.remaining(),
        });
    }
    // From here on `count` is bounded by the bytes left in the file.
    let n = count as usize;
    let elem = |i: usize| move || format!("element {i} of {}", what());
    Ok(match elem_ty {
        type_id::U8 => MetadataArray::U8(c.take(count, what)?.to_vec()),
        type_id::I8 => MetadataArray::I8(fixed(c.take(count, what)?, i8::from_le_bytes)),
        type_id::U16 => MetadataArray::U16(fixed(c.take(count * 2, what)?, u16::from_le_bytes)),
        type_id::I16 => MetadataArray::I16(fixed(c.take(count * 2, what)?, i16::from_le_bytes)),
        type_id::U32 => MetadataArray::U32(fixed(c.take(count * 4, what)?, u32::from_le_bytes)),
        type_id::I32 => MetadataArray::I32(fixed(c.take(count * 4, what)?, i32::from_le_bytes)),
        type_id::F32 => MetadataArray::F32(fixed(c.take(count * 4, what)?, f32::from_le_bytes)),
        type_id::U64 => MetadataArray::U64(fixed(c.take(count * 8, what)?, u64::from_le_bytes)),
        type_id::I64 => MetadataArray::I64(fixed(c.take(count * 8, what)?, i64::from_le_bytes)),
        type_id::F64 => MetadataArray::F64(fixed(c.take(count * 8, what)?, f64::from_le_bytes)),
        type_id::BOOL => {
            let at = c.pos;
            let bytes = c.take(count, what)?;
            let mut v = Vec::with_capacity(capacity(count));
            for (i, &b) in bytes.iter().enumerate() {
                v.push(parse_bool(c, b, at + i, &elem(i))?);
            }
            MetadataArray::Bool(v)
        }
        type_id::STRING => {
            let mut v = Vec::with_capacity(capacity(count));
            for i in 0..n {
                v.push(c.string(elem(i))?);
            }
            MetadataArray::String(v)
        }
        _ => {
            let mut v = Vec::with_capacity(capacity(count));
            for i in 0..n {
                v.push(parse_array(c, depth + 1, &elem(i))?);
            }
            MetadataArray::Array(v)
        }
    })
}
