//! [`ReduxFiles`]: where FLUX.1 Redux's two models are.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The FLUX.1 Redux files: the SigLIP vision tower and the Redux embedder, and the image
/// processor's config when there is one (else so400m's, at the tower's image size).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReduxFiles {
    /// SigLIP (`image_encoder/` of FLUX.1-Redux-dev, google/siglip-so400m-patch14-384, or
    /// ComfyUI's `sigclip_vision_patch14_384.safetensors`).
    pub image_encoder: PathBuf,
    /// The Redux embedder (`image_embedder/`, or BFL's `flux1-redux-dev.safetensors`).
    pub image_embedder: PathBuf,
    /// `preprocessor_config.json` (`feature_extractor/`), if any.
    pub preprocessor: Option<PathBuf>,
}

impl ReduxFiles {
    /// The files of a FLUX.1-Redux-dev folder (`huggingface-cli download
    /// black-forest-labs/FLUX.1-Redux-dev --local-dir FLUX.1-Redux-dev`, gated like \[dev\]):
    /// `image_encoder/`, `image_embedder/` (or BFL's `flux1-redux-dev.safetensors` beside),
    /// `feature_extractor/preprocessor_config.json`.
    ///
    /// # Errors
    /// [`Error::MissingFiles`] naming what is absent.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let pick = |names: &[&str]| names.iter().map(|n| dir.join(n)).find(|p| p.exists());
        let encoder = pick(&["image_encoder"]);
        let embedder = pick(&["image_embedder", "flux1-redux-dev.safetensors"]);
        match (encoder, embedder) {
            (Some(image_encoder), Some(image_embedder)) => Ok(Self {
                image_encoder,
                image_embedder,
                preprocessor: pick(&["feature_extractor/preprocessor_config.json"]),
            }),
            (encoder, embedder) => {
                let mut missing = Vec::new();
                if encoder.is_none() {
                    missing.push(dir.join("image_encoder").display().to_string());
                }
                if embedder.is_none() {
                    missing.push(dir.join("image_embedder").display().to_string());
                }
                Err(Error::MissingFiles {
                    missing,
                    hint: "download black-forest-labs/FLUX.1-Redux-dev (gated: accept its licence \
                           and set HF_TOKEN), or pass the SigLIP and Redux files separately"
                        .into(),
                })
            }
        }
    }
}
