//! Where a pipeline's weights and tokenizers are: a diffusers-layout FLUX.1 folder, separate
//! files as ComfyUI users keep them, or a Hugging Face Hub repository.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The CLIP tokenizer files: a `tokenizer.json`, or the `vocab.json` + `merges.txt` pair the
/// FLUX.1 repositories ship.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClipTokenizerFiles {
    /// A `tokenizers` JSON file.
    Json(PathBuf),
    /// BPE vocabulary and merges.
    VocabMerges {
        /// `vocab.json`.
        vocab: PathBuf,
        /// `merges.txt`.
        merges: PathBuf,
    },
}

/// Every file a pipeline reads. Weights may be a `.safetensors` file or a folder (sharded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFiles {
    /// The FLUX transformer (BFL, ComfyUI or diffusers layout).
    pub transformer: PathBuf,
    /// The autoencoder (`ae.safetensors` or diffusers `vae/`).
    pub vae: PathBuf,
    /// CLIP-L text encoder (`text_encoder/` or `clip_l.safetensors`).
    pub clip: PathBuf,
    /// T5-XXL encoder (`text_encoder_2/` or `t5xxl_fp16.safetensors`).
    pub t5: PathBuf,
    /// CLIP tokenizer.
    pub clip_tokenizer: ClipTokenizerFiles,
    /// T5 tokenizer (`tokenizer_2/tokenizer.json`).
    pub t5_tokenizer: PathBuf,
}

/// What to download for the FLUX.1 weights, said once for every "not found" message.
pub(crate) const WHERE_TO_GET: &str = "download a FLUX.1 repository in the diffusers layout \
(e.g. `huggingface-cli download black-forest-labs/FLUX.1-schnell --local-dir FLUX.1-schnell`; \
FLUX.1-dev is gated: accept its licence on huggingface.co and set HF_TOKEN) and pass that folder";

impl ModelFiles {
    /// The files of a FLUX.1 folder in the Hugging Face repository layout: `transformer/`
    /// (or BFL's `flux1-dev.safetensors` / `flux1-schnell.safetensors` at the top), `vae/` (or
    /// `ae.safetensors`), `text_encoder/`, `text_encoder_2/`, `tokenizer/`, `tokenizer_2/`.
    ///
    /// # Errors
    /// [`Error::MissingFiles`] listing every part that is absent, with what to download.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        Self::from_dir_with(dir, None, None)
    }

    /// [`ModelFiles::from_dir`] with the transformer and/or T5 taken from the given files
    /// instead (e.g. city96's `flux1-dev-Q4_0.gguf` and `t5-v1_1-xxl-encoder-Q8_0.gguf` with
    /// the rest of a FLUX.1 folder): those parts need not be in `dir`.
    ///
    /// # Errors
    /// [`Error::MissingFiles`] listing every part that is absent, the given files included.
    pub fn from_dir_with(
        dir: impl AsRef<Path>,
        transformer: Option<PathBuf>,
        t5: Option<PathBuf>,
    ) -> Result<Self> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(Error::MissingFiles {
                missing: vec![dir.display().to_string()],
                hint: WHERE_TO_GET.into(),
            });
        }
        let mut missing = Vec::new();
        for given in transformer.iter().chain(&t5) {
            if !given.exists() {
                missing.push(given.display().to_string());
            }
        }
        let mut first = |candidates: &[&str]| -> PathBuf {
            let found = candidates.iter().map(|c| dir.join(c)).find(|p| p.exists());
            found.unwrap_or_else(|| {
                missing.push(dir.join(candidates[0]).display().to_string());
                dir.join(candidates[0])
            })
        };
        let transformer = transformer.unwrap_or_else(|| {
            first(&[
                "transformer",
                "flux1-dev.safetensors",
                "flux1-schnell.safetensors",
            ])
        });
        let vae = first(&["vae", "ae.safetensors"]);
        let clip = first(&["text_encoder"]);
        let t5 = t5.unwrap_or_else(|| first(&["text_encoder_2"]));
        let t5_tokenizer = first(&["tokenizer_2/tokenizer.json"]);
        let tok = dir.join("tokenizer");
        let clip_tokenizer = if tok.join("tokenizer.json").is_file() {
            ClipTokenizerFiles::Json(tok.join("tokenizer.json"))
        } else {
            let vocab = first(&["tokenizer/vocab.json"]);
            let merges = first(&["tokenizer/merges.txt"]);
            ClipTokenizerFiles::VocabMerges { vocab, merges }
        };
        if !missing.is_empty() {
            return Err(Error::MissingFiles {
                missing,
                hint: WHERE_TO_GET.into(),
            });
        }
        Ok(Self {
            transformer,
            vae,
            clip,
            t5,
            clip_tokenizer,
            t5_tokenizer,
        })
    }

    /// Checks that every named file or folder exists.
    ///
    /// # Errors
    /// [`Error::MissingFiles`] listing the absent ones.
    pub fn check(&self) -> Result<()> {
        let mut paths = vec![
            &self.transformer,
            &self.vae,
            &self.clip,
            &self.t5,
            &self.t5_tokenizer,
        ];
        match &self.clip_tokenizer {
            ClipTokenizerFiles::Json(p) => paths.push(p),
            ClipTokenizerFiles::VocabMerges { vocab, merges } => paths.extend([vocab, merges]),
        }
        let missing: Vec<String> = paths
            .into_iter()
            .filter(|p| !p.exists())
            .map(|p| p.display().to_string())
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(Error::MissingFiles {
                missing,
                hint: WHERE_TO_GET.into(),
            })
        }
    }
}
