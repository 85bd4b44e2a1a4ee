//! The error type of `flux-text`: loading the encoders, tokenizing, bad inputs.

use std::path::PathBuf;

/// Everything that can go wrong in `flux-text`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or interpreting a safetensors checkpoint failed (missing / unexpected keys, shape
    /// mismatches, corrupt files, ...): see [`flux_core::Error`].
    #[error(transparent)]
    Checkpoint(#[from] flux_core::Error),

    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file that failed.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// A `config.json` could not be parsed or holds values this crate cannot run.
    #[error("bad config: {0}")]
    Config(String),

    /// The checkpoint holds a model variant this crate does not implement (e.g. T5 v1.0's
    /// non-gated feed-forward).
    #[error("unsupported model: {0}")]
    Unsupported(String),

    /// The `tokenizers` crate failed to build or run a tokenizer.
    #[error("tokenizer: {context}")]
    Tokenizer {
        /// What was being done.
        context: String,
        /// The error `tokenizers` reported.
        #[source]
        source: tokenizers::Error,
    },

    /// An input (token ids, maximum length) is not valid for the model or tokenizer.
    #[error("bad input: {0}")]
    BadInput(String),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn tokenizer(context: impl Into<String>, source: tokenizers::Error) -> Self {
        Error::Tokenizer {
            context: context.into(),
            source,
        }
    }
}
