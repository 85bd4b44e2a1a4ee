//! The one error type of the GGUF module.

use std::path::PathBuf;

/// Everything that can go wrong while reading, decoding, encoding or writing
/// GGUF data.
///
/// Every variant that concerns a file names that file; variants about one
/// tensor also name the tensor (and its type where that is the problem).
/// Messages are meant to be shown to a person as they are.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The operating system refused an operation on the file.
    #[error("{}: cannot {action}: {source}", .path.display())]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// What was being attempted ("open", "map into memory", "write", ...).
        action: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The first four bytes are not `GGUF`.
    #[error(
        "{}: not a GGUF file: it starts with bytes {found:02x?}, a GGUF file starts with \"GGUF\" (47 47 55 46)",
        .path.display()
    )]
    NotGguf {
        /// The file concerned.
        path: PathBuf,
        /// The bytes found where the magic should be (fewer than four when the file is shorter).
        found: Vec<u8>,
    },

    /// The header names a format version other than 2 or 3.
    #[error("{}: unsupported GGUF version {version}{hint} (this reader understands versions 2 and 3)", .path.display())]
    UnsupportedVersion {
        /// The file concerned.
        path: PathBuf,
        /// The version number as read (little-endian).
        version: u32,
        /// Extra explanation for recognisable cases (version 1, big-endian files).
        hint: &'static str,
    },

    /// A field runs past the end of the file, or claims more bytes than the file has left.
    #[error(
        "{}: truncated or corrupt: {what} at byte {offset} needs {needed} bytes but only {available} remain",
        .path.display()
    )]
    Truncated {
        /// The file concerned.
        path: PathBuf,
        /// Which field was being read.
        what: String,
        /// Byte position of the field.
        offset: u64,
        /// Bytes the field needs (as claimed by the file for length-prefixed data).
        needed: u64,
        /// Bytes left in the file from `offset`.
        available: u64,
    },

    /// A header, metadata or tensor-info field holds an impossible value.
    #[error("{}: malformed at byte {offset}: {problem}", .path.display())]
    Malformed {
        /// The file concerned.
        path: PathBuf,
        /// Byte position of the offending field.
        offset: u64,
        /// What is wrong.
        problem: String,
    },

    /// One tensor's description is inconsistent (shape, offset, size, alignment).
    #[error("{}: tensor '{tensor}': {problem}", .path.display())]
    Tensor {
        /// The file concerned.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// What is wrong.
        problem: String,
    },

    /// A tensor is stored in a ggml type this module cannot decode.
    #[error(
        "{}: tensor '{tensor}' has ggml type {type_name}, which this reader cannot dequantize \
         (supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K)",
        .path.display()
    )]
    UnsupportedType {
        /// The file concerned.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// gguf-py's name for the type, or `type <number>` when it has none.
        type_name: String,
    },

    /// Encoded data handed to a codec function has the wrong size.
    #[error("{ty} data: {problem}")]
    Data {
        /// The ggml type being decoded or encoded.
        ty: &'static str,
        /// What is wrong.
        problem: String,
    },

    /// Quantization to this type is not implemented (gguf-py has no quantizer for it either).
    #[error(
        "quantizing to {ty} is not supported (supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0; \
         gguf-py has no K-quant quantizer to be bit-exact against)"
    )]
    QuantizeUnsupported {
        /// The requested type.
        ty: &'static str,
    },

    /// The writer was used inconsistently (duplicate names, wrong sizes, wrong order).
    #[error("{}: cannot write GGUF: {problem}", .path.display())]
    Writer {
        /// The file being written (empty before a path is known).
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}
