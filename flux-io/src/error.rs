//! The loading error every crate of the workspace reuses: reading checkpoint files and
//! `config.json`, matching stored tensors to module parameters, starting a device.

use std::path::PathBuf;

/// Everything that can go wrong while opening a checkpoint and filling a model from it. The
/// model crates wrap it as their `Error::Load`; the facade flattens those back into one
/// `flux::Error::Load`, so a missing T5 key and a missing transformer key read alike.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The path does not exist or could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file or folder that failed.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// The file is not a valid safetensors file (truncated, corrupt header, bad offsets).
    #[error(
        "{path} is not a valid safetensors file ({reason}); the file may be truncated or corrupt"
    )]
    Corrupt {
        /// The offending file.
        path: PathBuf,
        /// What the safetensors parser reported.
        reason: String,
    },

    /// A GGUF file is not valid (magic, version, truncation, bounds, an unsupported tensor type
    /// on reading): the message names the file and, where it applies, the tensor.
    #[error(transparent)]
    Gguf(#[from] flux_gguf::GgufError),

    /// A folder holds no `.safetensors` files.
    #[error("no .safetensors weights found in {0}")]
    NoWeights(PathBuf),

    /// The `*.safetensors.index.json` of a sharded checkpoint is malformed or points nowhere.
    #[error("bad shard index {path}: {reason}")]
    BadIndex {
        /// The index file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// The same tensor name appears in two files of one checkpoint.
    #[error("tensor `{key}` appears in both {first} and {second}")]
    DuplicateKey {
        /// The tensor name.
        key: String,
        /// The first file holding it.
        first: PathBuf,
        /// The second file holding it.
        second: PathBuf,
    },

    /// Tensors the model needs are not in the checkpoint.
    #[error("{} missing key(s) in checkpoint: {}", .0.len(), list(.0))]
    MissingKeys(Vec<String>),

    /// Tensors in the checkpoint that the model does not use.
    #[error("{} unexpected key(s) in checkpoint: {}", .0.len(), list(.0))]
    UnexpectedKeys(Vec<String>),

    /// A tensor has another shape than the model expects.
    #[error("shape mismatch for `{key}`: expected {expected:?}, found {found:?}")]
    ShapeMismatch {
        /// The checkpoint key.
        key: String,
        /// The shape the model expects (in the checkpoint's convention).
        expected: Vec<usize>,
        /// The shape stored in the checkpoint.
        found: Vec<usize>,
    },

    /// A tensor is stored in a dtype we cannot convert to floats.
    #[error(
        "tensor `{key}` has unsupported dtype {dtype}; supported: F32, F16, BF16, F64, F8_E4M3, F8_E5M2 (safetensors) and F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K..Q6_K (GGUF)"
    )]
    UnsupportedDtype {
        /// The checkpoint key.
        key: String,
        /// The stored dtype, as safetensors names it.
        dtype: String,
    },

    /// The checkpoint's layout could not be recognised (e.g. neither BFL nor diffusers keys).
    #[error("unrecognised checkpoint layout: {0}")]
    UnknownLayout(String),

    /// A tensor holds NaN or infinite values.
    #[error("tensor `{0}` contains NaN or infinite values")]
    NonFinite(String),

    /// A stored tensor cannot be turned into the parameter it is mapped to (halves of an odd
    /// row count, a value buffer of the wrong length).
    #[error("tensor `{key}`: {reason}")]
    BadTensor {
        /// The checkpoint key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A `config.json` cannot be read or parsed, or holds a value of the wrong type.
    #[error("bad config {path}: {reason}")]
    BadConfig {
        /// The `config.json` file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A LoRA file that cannot be applied: a factor without its partner, factors whose shapes
    /// do not fit each other or the layer, an unsupported adapter type.
    #[error("LoRA {file}: {reason}")]
    Lora {
        /// The LoRA file.
        file: String,
        /// What is wrong, naming the key.
        reason: String,
    },

    /// LoRA keys that match no layer of the model: the LoRA was made for another model (or
    /// uses names this loader does not know). Never applied silently.
    #[error(
        "LoRA {file}: {} key(s) match no layer of this model{hint}: {}",
        .keys.len(),
        list(.keys)
    )]
    LoraUnmatched {
        /// The LoRA file.
        file: String,
        /// The unmatched module keys.
        keys: Vec<String>,
        /// What the names suggest (e.g. ` (an SD/SDXL LoRA?)`), or empty.
        hint: String,
    },

    /// The backend cannot run on the requested device (no adapter, no driver).
    #[error("device unusable: {0}")]
    Device(String),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// At most 20 names, then a count, so a message stays readable.
fn list(keys: &[String]) -> String {
    const SHOWN: usize = 20;
    let mut s = keys
        .iter()
        .take(SHOWN)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if keys.len() > SHOWN {
        s.push_str(&format!(", … and {} more", keys.len() - SHOWN));
    }
    s
}
