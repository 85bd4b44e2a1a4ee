//! The error type of `flux-vae`.

/// Everything that can go wrong while loading or running the autoencoder.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading the checkpoint or its `config.json`, or matching it to the model (missing or
    /// unexpected keys, shapes, corrupt files): the loading error every crate shares.
    #[error(transparent)]
    Load(#[from] flux_io::Error),

    /// A configuration value is inconsistent (e.g. channels not divisible by the group count).
    #[error("invalid autoencoder config: {0}")]
    InvalidConfig(String),

    /// An image side is not a multiple of what the model needs.
    #[error(
        "image size {height}x{width} (h x w) is not a multiple of {multiple}; crop or resize it to a multiple of {multiple}"
    )]
    BadImageSize {
        /// Height in pixels.
        height: usize,
        /// Width in pixels.
        width: usize,
        /// The required multiple.
        multiple: usize,
    },

    /// A tensor argument has the wrong rank, channel count or batch size.
    #[error("bad input: {0}")]
    BadInput(String),

    /// The model produced (or was given) NaN or infinite values.
    #[error("{0} contains NaN or infinite values")]
    NonFinite(&'static str),
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
