//! What a checkpoint says of a tensor before it is decoded: its description
//! ([`TensorMeta`]) and its bytes as stored ([`Raw`]).

/// A stored tensor's description, before any data is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorMeta {
    /// How the values are stored: a safetensors dtype (`"F32"`, `"BF16"`, `"F8_E4M3"`, ...)
    /// or a GGUF type (`"Q8_0"`, `"Q4_K"`, ...).
    pub dtype: String,
    /// The stored shape (PyTorch convention; a GGUF `comfy.gguf.orig_shape` applied).
    pub shape: Vec<usize>,
}

/// A stored tensor's bytes as they are in the file ([`crate::Weights::raw`]): what a loader
/// reads to keep a quantized weight quantized, or to transpose a weight straight from the
/// memory map.
pub enum Raw<'a> {
    /// A safetensors tensor.
    Safetensors {
        /// Its dtype.
        dtype: safetensors::Dtype,
        /// Its bytes (little-endian values, row-major).
        bytes: &'a [u8],
        /// Its shape.
        shape: Vec<usize>,
    },
    /// A GGUF tensor.
    Gguf {
        /// Its type (a float type or a block type).
        ty: flux_gguf::GgmlType,
        /// Its bytes (whole blocks for the block types).
        bytes: &'a [u8],
        /// As stored (PyTorch order), before any `comfy.gguf.orig_shape`.
        shape: Vec<usize>,
    },
}
