//! Description of one tensor in a GGUF file.

use crate::types::{GgmlType, type_label};

/// One tensor's entry in a GGUF file: name, shape, storage type and where its
/// bytes are. Every field was validated when the file was opened: the shape's
/// element count and byte size fit in `usize`, the innermost dimension is a
/// whole number of blocks, and the bytes lie inside the file.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufTensorInfo {
    pub(super) name: String,
    pub(super) ggml_dims: Vec<u64>,
    pub(super) shape: Vec<usize>,
    pub(super) type_id: u32,
    pub(super) offset: u64,
    pub(super) file_offset: u64,
    pub(super) n_elements: usize,
    pub(super) n_bytes: usize,
}

impl GgufTensorInfo {
    /// The tensor's name, e.g. `double_blocks.0.img_attn.qkv.weight`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The shape in PyTorch order (outermost first): the reverse of
    /// [`ggml_dims`](Self::ggml_dims). A `[out, in]` linear weight is `[out, in]`.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The dimensions as stored in the file, in ggml order (innermost, i.e.
    /// the row length, first).
    pub fn ggml_dims(&self) -> &[u64] {
        &self.ggml_dims
    }

    /// The storage type, or `None` when the file uses a ggml type this module
    /// cannot decode (see [`type_id`](Self::type_id) and [`type_name`](Self::type_name)).
    pub fn ggml_type(&self) -> Option<GgmlType> {
        GgmlType::from_id(self.type_id)
    }

    /// The raw ggml type id from the file.
    pub fn type_id(&self) -> u32 {
        self.type_id
    }

    /// gguf-py's name for the storage type (`"Q8_0"`, `"IQ2_XXS"`, ...).
    pub fn type_name(&self) -> String {
        type_label(self.type_id)
    }

    /// Offset of the tensor's bytes from the start of the data section.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Offset of the tensor's bytes from the start of the file.
    pub fn file_offset(&self) -> u64 {
        self.file_offset
    }

    /// Number of values (product of the dimensions; 1 for zero dimensions).
    pub fn n_elements(&self) -> usize {
        self.n_elements
    }

    /// Number of bytes the tensor occupies in the file.
    pub fn n_bytes(&self) -> usize {
        self.n_bytes
    }
}
