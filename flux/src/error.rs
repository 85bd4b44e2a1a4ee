//! The facade's error: one variant per crate, wrapped with `#[from]`, plus the pipeline's own.

/// Any error of the FLUX pipeline.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Loading or running the transformer.
    #[error(transparent)]
    Core(#[from] flux_core::Error),

    /// Tokenizing or running the text encoders.
    #[error(transparent)]
    Text(#[from] flux_text::Error),

    /// Loading or running the autoencoder.
    #[error(transparent)]
    Vae(#[from] flux_vae::Error),

    /// Schedule, noise or the sampler loop.
    #[error(transparent)]
    Sampler(#[from] flux_sampler::Error),

    /// No weights were given to the builder.
    #[error("no weights given: call `model_dir`, `files` or `hub_repo` on the pipeline builder")]
    NoWeights,

    /// Files the pipeline needs are absent.
    #[error("missing model files: {}; {hint}", missing.join(", "))]
    MissingFiles {
        /// The absent paths.
        missing: Vec<String>,
        /// What to download, and where from.
        hint: String,
    },

    /// A request that cannot be generated (empty prompt, bad size, ...).
    #[error("bad request: {0}")]
    BadRequest(String),

    /// The progress callback asked to stop.
    #[error("generation cancelled")]
    Cancelled,

    /// Fetching from the Hugging Face Hub failed.
    #[error(
        "could not fetch `{file}` from the Hugging Face Hub repository `{repo}`: {message} \
         (offline? download the repository elsewhere and pass it as a folder; gated [dev]? \
         accept its licence and set HF_TOKEN)"
    )]
    Hub {
        /// Repository id.
        repo: String,
        /// The file being fetched.
        file: String,
        /// What the client reported.
        message: String,
    },

    /// Writing or reading an output image failed.
    #[error("{0}")]
    Output(String),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
