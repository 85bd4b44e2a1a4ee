//! ggml tensor types: the thirteen this module decodes, and the names and
//! block geometry of the others, so files that hold them can still be listed.

use std::fmt;

/// Values per K-quant super-block.
pub const QK_K: usize = 256;

/// A ggml tensor storage type that this module can dequantize.
///
/// The discriminant of each variant is its ggml type id as stored in a GGUF
/// tensor info.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum GgmlType {
    /// 32-bit IEEE float.
    F32 = 0,
    /// 16-bit IEEE float.
    F16 = 1,
    /// 32 values: f16 scale `d`, 16 bytes of 4-bit `q`; `x = d·(q − 8)`.
    Q4_0 = 2,
    /// 32 values: f16 `d`, f16 `m`, 16 bytes of 4-bit `q`; `x = d·q + m`.
    Q4_1 = 3,
    /// 32 values: f16 `d`, 32 high bits, 16 bytes of low nibbles; `x = d·(q − 16)`.
    Q5_0 = 6,
    /// 32 values: f16 `d`, f16 `m`, 32 high bits, 16 bytes of low nibbles; `x = d·q + m`.
    Q5_1 = 7,
    /// 32 values: f16 `d`, 32 signed bytes `q`; `x = d·q`.
    Q8_0 = 8,
    /// 256 values, 2-bit, with 16 4-bit scales and mins.
    Q2_K = 10,
    /// 256 values, 3-bit, with 16 6-bit signed scales.
    Q3_K = 11,
    /// 256 values, 4-bit, with 8 6-bit scales and mins.
    Q4_K = 12,
    /// 256 values, 5-bit, with 8 6-bit scales and mins.
    Q5_K = 13,
    /// 256 values, 6-bit, with 16 8-bit signed scales.
    Q6_K = 14,
    /// bfloat16 (the upper half of an f32).
    BF16 = 30,
}

impl GgmlType {
    /// Every supported type, in type-id order.
    pub const ALL: [GgmlType; 13] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::BF16,
    ];

    /// The supported type with ggml type id `id`, if any.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        GgmlType::ALL.into_iter().find(|t| t.id() == id)
    }

    /// The ggml type id, as stored in GGUF tensor infos.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// Values per block (1 for the float types).
    pub fn block_size(self) -> usize {
        match self {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => 1,
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q8_0 => {
                32
            }
            GgmlType::Q2_K | GgmlType::Q3_K | GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K => {
                QK_K
            }
        }
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        match self {
            GgmlType::F32 => 4,
            GgmlType::F16 | GgmlType::BF16 => 2,
            GgmlType::Q4_0 => 18,
            GgmlType::Q4_1 => 20,
            GgmlType::Q5_0 => 22,
            GgmlType::Q5_1 => 24,
            GgmlType::Q8_0 => 34,
            GgmlType::Q2_K => 84,
            GgmlType::Q3_K => 110,
            GgmlType::Q4_K => 144,
            GgmlType::Q5_K => 176,
            GgmlType::Q6_K => 210,
        }
    }

    /// The name gguf-py and ggml use (`"Q4_K"`, `"BF16"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::Q4_0 => "Q4_0",
            GgmlType::Q4_1 => "Q4_1",
            GgmlType::Q5_0 => "Q5_0",
            GgmlType::Q5_1 => "Q5_1",
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Q2_K => "Q2_K",
            GgmlType::Q3_K => "Q3_K",
            GgmlType::Q4_K => "Q4_K",
            GgmlType::Q5_K => "Q5_K",
            GgmlType::Q6_K => "Q6_K",
            GgmlType::BF16 => "BF16",
        }
    }

    /// Bytes needed for `n_values` values, or `None` when `n_values` is not a
    /// whole number of blocks or the size overflows.
    pub fn bytes_for(self, n_values: usize) -> Option<usize> {
        if !n_values.is_multiple_of(self.block_size()) {
            return None;
        }
        (n_values / self.block_size()).checked_mul(self.type_size())
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Name and (block size, bytes per block) of every ggml type gguf-py knows
/// (gguf-py 0.19 `GGMLQuantizationType` and `GGML_QUANT_SIZES`), supported or
/// not. Used to describe and bound tensors of types this module cannot decode.
const KNOWN_TYPES: [(u32, &str, u64, u64); 34] = [
    (0, "F32", 1, 4),
    (1, "F16", 1, 2),
    (2, "Q4_0", 32, 18),
    (3, "Q4_1", 32, 20),
    (6, "Q5_0", 32, 22),
    (7, "Q5_1", 32, 24),
    (8, "Q8_0", 32, 34),
    (9, "Q8_1", 32, 40),
    (10, "Q2_K", 256, 84),
    (11, "Q3_K", 256, 110),
    (12, "Q4_K", 256, 144),
    (13, "Q5_K", 256, 176),
    (14, "Q6_K", 256, 210),
    (15, "Q8_K", 256, 292),
    (16, "IQ2_XXS", 256, 66),
    (17, "IQ2_XS", 256, 74),
    (18, "IQ3_XXS", 256, 98),
    (19, "IQ1_S", 256, 50),
    (20, "IQ4_NL", 32, 18),
    (21, "IQ3_S", 256, 110),
    (22, "IQ2_S", 256, 82),
    (23, "IQ4_XS", 256, 136),
    (24, "I8", 1, 1),
    (25, "I16", 1, 2),
    (26, "I32", 1, 4),
    (27, "I64", 1, 8),
    (28, "F64", 1, 8),
    (29, "IQ1_M", 256, 56),
    (30, "BF16", 1, 2),
    (34, "TQ1_0", 256, 54),
    (35, "TQ2_0", 256, 66),
    (39, "MXFP4", 32, 17),
    (40, "NVFP4", 64, 36),
    (41, "Q1_0", 128, 18),
];

/// gguf-py's name for ggml type id `id`, or `None` for an id it does not know.
pub fn ggml_type_name(id: u32) -> Option<&'static str> {
    KNOWN_TYPES.iter().find(|t| t.0 == id).map(|t| t.1)
}

/// A printable name for any type id: gguf-py's name, else `type <id>`.
pub(super) fn type_label(id: u32) -> String {
    match ggml_type_name(id) {
        Some(name) => name.to_string(),
        None => format!("type {id}"),
    }
}

/// (values per block, bytes per block) for any type id gguf-py knows.
pub(super) fn block_geometry(id: u32) -> Option<(u64, u64)> {
    KNOWN_TYPES.iter().find(|t| t.0 == id).map(|t| (t.2, t.3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supported_types_agree_with_the_known_table() {
        for ty in GgmlType::ALL {
            assert_eq!(ggml_type_name(ty.id()), Some(ty.name()));
            assert_eq!(
                block_geometry(ty.id()),
                Some((ty.block_size() as u64, ty.type_size() as u64))
            );
            assert_eq!(GgmlType::from_id(ty.id()), Some(ty));
        }
        assert_eq!(GgmlType::from_id(16), None);
        assert_eq!(type_label(16), "IQ2_XXS");
        assert_eq!(type_label(99), "type 99");
    }

    #[test]
    fn bytes_for_checks_whole_blocks() {
        assert_eq!(GgmlType::Q4_K.bytes_for(512), Some(288));
        assert_eq!(GgmlType::Q8_0.bytes_for(33), None);
        assert_eq!(GgmlType::F32.bytes_for(usize::MAX), None);
    }
}
