//! The facade's error: one variant per crate, wrapped with `#[from]`.

/// Any error of the FLUX pipeline.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Loading or running the transformer.
    #[error(transparent)]
    Core(#[from] flux_core::Error),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
