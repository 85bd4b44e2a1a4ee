//! The error type of `flux-text`: loading the encoders, tokenizing, bad inputs.

/// Everything that can go wrong in `flux-text`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading a checkpoint, a `config.json` or a tokenizer file, or matching a checkpoint to
    /// the model (missing / unexpected keys, shapes, corrupt files, ...): the loading error
    /// every crate of the workspace shares.
    #[error(transparent)]
    Load(#[from] flux_io::Error),

    /// A config holds values this crate cannot run (zero sizes, a width the heads do not
    /// divide, a tensor of the wrong rank for inference).
    #[error("invalid text-encoder config: {0}")]
    InvalidConfig(String),

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
