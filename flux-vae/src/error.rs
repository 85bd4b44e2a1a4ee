//! The error type of `flux-vae`.

use std::path::PathBuf;

/// Everything that can go wrong while loading or running the autoencoder.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or matching the checkpoint failed (missing/unexpected keys, shapes, corrupt file).
    #[error(transparent)]
    Core(#[from] flux_core::Error),

    /// A configuration value is inconsistent (e.g. channels not divisible by the group count).
    #[error("invalid autoencoder config: {0}")]
    InvalidConfig(String),

    /// The diffusers `config.json` next to the weights could not be read.
    #[error("bad VAE config {path}: {reason}")]
    BadConfigJson {
        /// The `config.json` file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

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
