//! The facade's error: the shared loading error, one variant per crate for the rest, and the
//! pipeline's own. A crate's `Load` error arrives as [`Error::Load`] whichever model it came
//! from (a missing T5 key and a missing transformer key read alike), and the sampler's
//! cancellation as [`Error::Cancelled`].

/// Any error of the FLUX pipeline.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading a checkpoint, `config.json` or tokenizer file, or matching a checkpoint to its
    /// model: missing or unexpected keys (named), shapes, corrupt files, unsupported dtypes.
    #[error(transparent)]
    Load(#[from] flux_io::Error),

    /// Running the transformer (bad inputs, an invalid config).
    #[error(transparent)]
    Core(flux_core::Error),

    /// Tokenizing or running the text encoders.
    #[error(transparent)]
    Text(flux_text::Error),

    /// Running the autoencoder.
    #[error(transparent)]
    Vae(flux_vae::Error),

    /// Schedule, noise or the sampler loop.
    #[error(transparent)]
    Sampler(flux_sampler::Error),

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
    #[error("{message}")]
    Output {
        /// What was being done, with the path where there is one.
        message: String,
        /// The I/O or PNG error underneath, when there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl Error {
    /// An [`Error::Output`] for `message` caused by `source`.
    pub(crate) fn output(
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Output {
            message: message.into(),
            source: Some(source.into()),
        }
    }
}

impl From<flux_core::Error> for Error {
    fn from(e: flux_core::Error) -> Self {
        match e {
            flux_core::Error::Load(e) => Self::Load(e),
            e => Self::Core(e),
        }
    }
}

impl From<flux_text::Error> for Error {
    fn from(e: flux_text::Error) -> Self {
        match e {
            flux_text::Error::Load(e) => Self::Load(e),
            e => Self::Text(e),
        }
    }
}

impl From<flux_vae::Error> for Error {
    fn from(e: flux_vae::Error) -> Self {
        match e {
            flux_vae::Error::Load(e) => Self::Load(e),
            e => Self::Vae(e),
        }
    }
}

impl From<flux_sampler::Error> for Error {
    fn from(e: flux_sampler::Error) -> Self {
        match e {
            flux_sampler::Error::Cancelled { .. } => Self::Cancelled,
            e => Self::Sampler(e),
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
