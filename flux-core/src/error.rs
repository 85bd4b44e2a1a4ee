//! The error type of `flux-core`.

/// Everything that can go wrong while loading or running a FLUX transformer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading the checkpoint or matching it to the model failed (missing or unexpected keys,
    /// shapes, corrupt files, ...): the loading error every crate of the workspace shares.
    #[error(transparent)]
    Load(#[from] flux_io::Error),

    /// A configuration value is inconsistent (e.g. the head dimension does not divide the width).
    #[error("invalid transformer config: {0}")]
    InvalidConfig(String),

    /// An input tensor given to the model has the wrong shape or values.
    #[error("bad input: {0}")]
    BadInput(String),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
