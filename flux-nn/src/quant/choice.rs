//! What to do with a checkpoint's weights at load: keep them as stored, dequantize them, or
//! quantize the dense ones.

use std::fmt;
use std::str::FromStr;

use flux_gguf::GgmlType;

/// A format dense weights can be quantized to at load (`--quantize`).
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuantType {
    /// GGUF `Q8_0`: blocks of 32 signed bytes with an f16 scale (8.5 bits per weight).
    Q8_0,
    /// GGUF `Q5_1`: 5-bit codes, f16 scale and offset per 32 (6 bits per weight).
    Q5_1,
    /// GGUF `Q5_0`: 5-bit codes, f16 scale per 32 (5.5 bits per weight).
    Q5_0,
    /// GGUF `Q4_1`: 4-bit codes, f16 scale and offset per 32 (5 bits per weight).
    Q4_1,
    /// GGUF `Q4_K`: 4-bit codes in super-blocks of 256 with 6-bit scales and offsets per 32
    /// and two f16 factors, encoded as ggml's reference quantizer does (4.5 bits per weight
    /// on disk, 4.625 in memory). Weights whose rows are not a multiple of 256 stay dense.
    Q4_K,
    /// GGUF `Q4_0`: 4-bit codes, f16 scale per 32 (4.5 bits per weight).
    Q4_0,
    /// fp8 e4m3fn with one f32 scale per tensor (`absmax / 448`), as ComfyUI's scaled fp8
    /// checkpoints store it (8 bits per weight).
    Fp8,
}

impl QuantType {
    /// Every type, largest first.
    pub const ALL: [QuantType; 7] = [
        QuantType::Q8_0,
        QuantType::Fp8,
        QuantType::Q5_1,
        QuantType::Q5_0,
        QuantType::Q4_1,
        QuantType::Q4_K,
        QuantType::Q4_0,
    ];

    /// The GGUF block type, for the GGUF types.
    pub fn ggml_type(self) -> Option<GgmlType> {
        Some(match self {
            QuantType::Q8_0 => GgmlType::Q8_0,
            QuantType::Q5_1 => GgmlType::Q5_1,
            QuantType::Q5_0 => GgmlType::Q5_0,
            QuantType::Q4_1 => GgmlType::Q4_1,
            QuantType::Q4_K => GgmlType::Q4_K,
            QuantType::Q4_0 => GgmlType::Q4_0,
            QuantType::Fp8 => return None,
        })
    }

    /// The name on the command line: `q8_0`, ..., `fp8`.
    pub fn name(self) -> &'static str {
        match self {
            QuantType::Q8_0 => "q8_0",
            QuantType::Q5_1 => "q5_1",
            QuantType::Q5_0 => "q5_0",
            QuantType::Q4_1 => "q4_1",
            QuantType::Q4_K => "q4_k",
            QuantType::Q4_0 => "q4_0",
            QuantType::Fp8 => "fp8",
        }
    }

    /// Bits per weight held in memory, factors included.
    pub fn bits_per_weight(self) -> f64 {
        match self {
            QuantType::Q8_0 => 8.5,
            QuantType::Q5_1 => 6.0,
            QuantType::Q5_0 => 5.5,
            QuantType::Q4_1 => 5.0,
            QuantType::Q4_K => 4.625,
            QuantType::Q4_0 => 4.5,
            QuantType::Fp8 => 8.0,
        }
    }
}

impl fmt::Display for QuantType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for QuantType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        let lower = if lower == "fp8_e4m3fn" || lower == "f8_e4m3" {
            "fp8".to_string()
        } else {
            lower
        };
        Self::ALL
            .into_iter()
            .find(|t| t.name() == lower)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|t| t.name()).collect();
                format!("unknown quantization `{s}`; one of {}", names.join(", "))
            })
    }
}

/// How a model's linear weights are held after loading. Biases, norms, embeddings and other
/// small tensors always load as dense tensors in the model's dtype.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Quantization {
    /// As stored: GGUF block types and fp8 stay quantized in memory (dequantized one layer at
    /// a time when used); float weights load dense.
    #[default]
    AsStored,
    /// Everything dense in the model's dtype (the memory of an unquantized model).
    Dequantize,
    /// Dense float weights quantized at load to this type; already quantized ones kept.
    To(QuantType),
}
