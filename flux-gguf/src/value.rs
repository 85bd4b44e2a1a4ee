//! Metadata values: the thirteen GGUF value types, typed arrays, accessors,
//! and their little-endian encoding (used by the writer).

/// GGUF value type ids (the `u32` written before every metadata value).
pub(super) mod type_id {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

/// One metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum MetadataValue {
    /// Type 0.
    U8(u8),
    /// Type 1.
    I8(i8),
    /// Type 2.
    U16(u16),
    /// Type 3.
    I16(i16),
    /// Type 4.
    U32(u32),
    /// Type 5.
    I32(i32),
    /// Type 6.
    F32(f32),
    /// Type 7 (stored as one byte, 0 or 1).
    Bool(bool),
    /// Type 8 (u64 byte length, then UTF-8 bytes).
    String(String),
    /// Type 9 (u32 element type, u64 count, elements).
    Array(MetadataArray),
    /// Type 10.
    U64(u64),
    /// Type 11.
    I64(i64),
    /// Type 12.
    F64(f64),
}

/// A metadata array: all elements share one type, so they are stored typed.
#[derive(Clone, Debug, PartialEq)]
pub enum MetadataArray {
    /// Elements of type 0.
    U8(Vec<u8>),
    /// Elements of type 1.
    I8(Vec<i8>),
    /// Elements of type 2.
    U16(Vec<u16>),
    /// Elements of type 3.
    I16(Vec<i16>),
    /// Elements of type 4.
    U32(Vec<u32>),
    /// Elements of type 5.
    I32(Vec<i32>),
    /// Elements of type 6.
    F32(Vec<f32>),
    /// Elements of type 7.
    Bool(Vec<bool>),
    /// Elements of type 8.
    String(Vec<String>),
    /// Elements of type 9 (arrays of arrays; each inner array has its own element type).
    Array(Vec<MetadataArray>),
    /// Elements of type 10.
    U64(Vec<u64>),
    /// Elements of type 11.
    I64(Vec<i64>),
    /// Elements of type 12.
    F64(Vec<f64>),
}

impl MetadataValue {
    /// The GGUF value type id of this value.
    pub fn type_id(&self) -> u32 {
        match self {
            MetadataValue::U8(_) => type_id::U8,
            MetadataValue::I8(_) => type_id::I8,
            MetadataValue::U16(_) => type_id::U16,
            MetadataValue::I16(_) => type_id::I16,
            MetadataValue::U32(_) => type_id::U32,
            MetadataValue::I32(_) => type_id::I32,
            MetadataValue::F32(_) => type_id::F32,
            MetadataValue::Bool(_) => type_id::BOOL,
            MetadataValue::String(_) => type_id::STRING,
            MetadataValue::Array(_) => type_id::ARRAY,
            MetadataValue::U64(_) => type_id::U64,
            MetadataValue::I64(_) => type_id::I64,
            MetadataValue::F64(_) => type_id::F64,
        }
    }

    /// The string, if this is a string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetadataValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as `u64`, if it is an integer of any width that is not negative.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetadataValue::U8(v) => Some(v.into()),
            MetadataValue::U16(v) => Some(v.into()),
            MetadataValue::U32(v) => Some(v.into()),
            MetadataValue::U64(v) => Some(v),
            MetadataValue::I8(v) => u64::try_from(v).ok(),
            MetadataValue::I16(v) => u64::try_from(v).ok(),
            MetadataValue::I32(v) => u64::try_from(v).ok(),
            MetadataValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as `i64`, if it is an integer of any width that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            MetadataValue::I8(v) => Some(v.into()),
            MetadataValue::I16(v) => Some(v.into()),
            MetadataValue::I32(v) => Some(v.into()),
            MetadataValue::I64(v) => Some(v),
            MetadataValue::U8(v) => Some(v.into()),
            MetadataValue::U16(v) => Some(v.into()),
            MetadataValue::U32(v) => Some(v.into()),
            MetadataValue::U64(v) => i64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as `f64`, if it is an f32 or f64.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetadataValue::F32(v) => Some(v.into()),
            MetadataValue::F64(v) => Some(v),
            _ => None,
        }
    }

    /// The boolean, if this is a bool value.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetadataValue::Bool(v) => Some(v),
            _ => None,
        }
    }

    /// The array, if this is an array value.
    pub fn as_array(&self) -> Option<&MetadataArray> {
        match self {
            MetadataValue::Array(a) => Some(a),
            _ => None,
        }
    }

    /// Appends the value type id and the value's encoding to `out`.
    pub(super) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.type_id().to_le_bytes());
        match self {
            MetadataValue::U8(v) => out.push(*v),
            MetadataValue::I8(v) => out.extend_from_slice(&v.to_le_bytes()),
            MetadataValue::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
            MetadataValue::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
            MetadataValue::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
            MetadataValue::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
            MetadataValue::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
            MetadataValue::Bool(v) => out.push(u8::from(*v)),
            MetadataValue::String(s) => encode_str(s, out),
            MetadataValue::Array(a) => a.encode(out),
            MetadataValue::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
            MetadataValue::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
            MetadataValue::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
        }
    }
}

impl MetadataArray {
    /// The GGUF value type id of the elements.
    pub fn element_type_id(&self) -> u32 {
        match self {
            MetadataArray::U8(_) => type_id::U8,
            MetadataArray::I8(_) => type_id::I8,
            MetadataArray::U16(_) => type_id::U16,
            MetadataArray::I16(_) => type_id::I16,
            MetadataArray::U32(_) => type_id::U32,
            MetadataArray::I32(_) => type_id::I32,
            MetadataArray::F32(_) => type_id::F32,
            MetadataArray::Bool(_) => type_id::BOOL,
            MetadataArray::String(_) => type_id::STRING,
            MetadataArray::Array(_) => type_id::ARRAY,
            MetadataArray::U64(_) => type_id::U64,
            MetadataArray::I64(_) => type_id::I64,
            MetadataArray::F64(_) => type_id::F64,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            MetadataArray::U8(v) => v.len(),
            MetadataArray::I8(v) => v.len(),
            MetadataArray::U16(v) => v.len(),
            MetadataArray::I16(v) => v.len(),
            MetadataArray::U32(v) => v.len(),
            MetadataArray::I32(v) => v.len(),
            MetadataArray::F32(v) => v.len(),
            MetadataArray::Bool(v) => v.len(),
            MetadataArray::String(v) => v.len(),
            MetadataArray::Array(v) => v.len(),
            MetadataArray::U64(v) => v.len(),
            MetadataArray::I64(v) => v.len(),
            MetadataArray::F64(v) => v.len(),
        }
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The strings, if this is an array of strings.
    pub fn as_strings(&self) -> Option<&[String]> {
        match self {
            MetadataArray::String(v) => Some(v),
            _ => None,
        }
    }

    /// The elements as `i64`, if this is an array of integers that all fit
    /// (e.g. ComfyUI-GGUF's `comfy.gguf.orig_shape.<tensor>` int32 arrays).
    pub fn to_i64s(&self) -> Option<Vec<i64>> {
        fn conv<T: Copy>(v: &[T], f: impl Fn(T) -> Option<i64>) -> Option<Vec<i64>> {
            v.iter().map(|&x| f(x)).collect()
        }
        match self {
            MetadataArray::U8(v) => conv(v, |x| Some(x.into())),
            MetadataArray::I8(v) => conv(v, |x| Some(x.into())),
            MetadataArray::U16(v) => conv(v, |x| Some(x.into())),
            MetadataArray::I16(v) => conv(v, |x| Some(x.into())),
            MetadataArray::U32(v) => conv(v, |x| Some(x.into())),
            MetadataArray::I32(v) => conv(v, |x| Some(x.into())),
            MetadataArray::U64(v) => conv(v, |x| i64::try_from(x).ok()),
            MetadataArray::I64(v) => Some(v.clone()),
            _ => None,
        }
    }

    /// Appends element type, count and elements to `out`.
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.element_type_id().to_le_bytes());
        out.extend_from_slice(&(self.len() as u64).to_le_bytes());
        macro_rules! le {
            ($v:expr) => {
                for x in $v {
                    out.extend_from_slice(&x.to_le_bytes());
                }
            };
        }
        match self {
            MetadataArray::U8(v) => out.extend_from_slice(v),
            MetadataArray::I8(v) => le!(v),
            MetadataArray::U16(v) => le!(v),
            MetadataArray::I16(v) => le!(v),
            MetadataArray::U32(v) => le!(v),
            MetadataArray::I32(v) => le!(v),
            MetadataArray::F32(v) => le!(v),
            MetadataArray::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
            MetadataArray::String(v) => v.iter().for_each(|s| encode_str(s, out)),
            MetadataArray::Array(v) => v.iter().for_each(|a| a.encode(out)),
            MetadataArray::U64(v) => le!(v),
            MetadataArray::I64(v) => le!(v),
            MetadataArray::F64(v) => le!(v),
        }
    }
}

/// Appends a GGUF string (u64 length, bytes) to `out`.
pub(super) fn encode_str(s: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

impl From<&str> for MetadataValue {
    fn from(s: &str) -> Self {
        MetadataValue::String(s.to_string())
    }
}

impl From<String> for MetadataValue {
    fn from(s: String) -> Self {
        MetadataValue::String(s)
    }
}

impl From<u32> for MetadataValue {
    fn from(v: u32) -> Self {
        MetadataValue::U32(v)
    }
}

impl From<f32> for MetadataValue {
    fn from(v: f32) -> Self {
        MetadataValue::F32(v)
    }
}

impl From<MetadataArray> for MetadataValue {
    fn from(a: MetadataArray) -> Self {
        MetadataValue::Array(a)
    }
}
