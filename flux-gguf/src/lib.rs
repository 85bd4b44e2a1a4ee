//! GGUF files: reading (versions 2 and 3), dequantizing, quantizing and
//! writing, for FLUX model files as ComfyUI-GGUF (city96) and
//! stable-diffusion.cpp publish them.
//!
//! * [`GgufFile`] memory-maps a file and validates all of it before handing
//!   anything out: header, metadata, tensor infos, and that each tensor's
//!   bytes lie inside the file at an aligned offset. Tensor bytes are
//!   borrowed from the map ([`GgufFile::tensor_bytes`]) or decoded to f32
//!   ([`GgufFile::dequantize`]).
//! * [`dequantize`] / [`dequantize_into`] decode F32, F16, BF16, Q4_0,
//!   Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K and Q6_K, bit-identical
//!   to gguf-py's `gguf.quants.dequantize`.
//! * [`quantize`] encodes F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0,
//!   byte-identical to gguf-py's `gguf.quants.quantize` (which has no K-quant
//!   encoder, so neither has this module).
//! * [`GgufWriter`] writes GGUF v3 with 32-byte alignment, one tensor's data
//!   at a time.
//!
//! Shapes: GGUF stores dimensions innermost first ("ggml order");
//! [`GgufTensorInfo::shape`] gives them in PyTorch order (outermost first),
//! [`GgufTensorInfo::ggml_dims`] as stored. ComfyUI-GGUF records the original
//! PyTorch shape of tensors it had to reshape under
//! `comfy.gguf.orig_shape.<tensor name>` (an int32 array); this module
//! exposes that entry like any other metadata and does not apply it.
//!
//! Unsupported types: a file holding tensors of other ggml types (IQ*,
//! Q8_1, TQ*, integer types, ...) still opens so it can be inspected;
//! [`GgufFile::check_supported`] fails naming the first such tensor and its
//! type, as does dequantizing it. A type id unknown to gguf-py fails on
//! open, because the tensor's size, and so its bounds, cannot be checked.
//!
//! Strictness: strings (keys, names, string values) must be valid UTF-8,
//! keys and tensor names unique, bools 0 or 1, `general.alignment` a `u32`
//! power of two, tensors at most 4-dimensional (ggml's limit) with offsets
//! that are multiples of the alignment. Overlapping tensor data is not
//! rejected (nothing reads out of bounds either way).
//!
//! Robustness: no input bytes make this module panic, and nothing is
//! allocated from an unchecked length or count: string lengths, array
//! counts, metadata and tensor counts are checked against the bytes left in
//! the file first, and element counts and byte sizes are computed with
//! checked arithmetic. Every error names the file and the problem.

mod dequant;
mod error;
mod fields;
mod half_bits;
mod pages;
mod parse;
mod quantize;
mod quantize_k;
mod reader;
pub mod split;
mod tensor;
mod types;
mod value;
mod writer;

pub use dequant::{dequantize, dequantize_into};
pub use error::GgufError;
pub use half_bits::{f32_to_bf16_bits, f32_to_f16_bits};
pub use pages::release_pages;
pub use quantize::quantize;
pub use reader::GgufFile;
pub use tensor::GgufTensorInfo;
pub use types::{GgmlType, QK_K, ggml_type_name};
pub use value::{MetadataArray, MetadataValue};
pub use writer::{GgufDataWriter, GgufWriter};
