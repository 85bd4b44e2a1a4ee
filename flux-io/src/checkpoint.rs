//! Opening a model's checkpoint the way users keep them: one `.safetensors` file, a folder of
//! shards, or a whole diffusers pipeline folder holding the model's subfolder; and the
//! `config.json` beside the weights.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::{Error, Result, Weights};

/// A model's weights (memory-mapped, nothing read yet) and where its `config.json` is.
#[derive(Debug)]
pub struct Checkpoint {
    weights: Weights,
    path: PathBuf,
    config_path: Option<PathBuf>,
}

impl Checkpoint {
    /// Opens `path`: a `.safetensors` file, a folder of them (sharded, with or without a
    /// `*.safetensors.index.json`), or a pipeline folder that holds `component/` (e.g.
    /// `"transformer"`, `"vae"`, `"text_encoder_2"`), which then stands for that subfolder.
    ///
    /// The `config.json` is the one in the weights' folder: for a folder, its own; for a
    /// single file, its folder's only when the file has a name the Hugging Face libraries
    /// save under (`model*.safetensors`, `diffusion_pytorch_model*.safetensors`), so that a
    /// file in a shared download folder never picks up an unrelated config.
    ///
    /// # Errors
    /// As [`Weights::open`].
    pub fn open(path: impl AsRef<Path>, component: Option<&str>) -> Result<Self> {
        let path = path.as_ref();
        let path = match component.map(|c| path.join(c)) {
            Some(sub) if path.is_dir() && sub.is_dir() => sub,
            _ => path.to_path_buf(),
        };
        let weights = Weights::open(&path)?;
        let config_path = config_beside(&path);
        Ok(Self {
            weights,
            path,
            config_path,
        })
    }

    /// The tensors.
    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    /// The file or folder the weights were read from (the subfolder, for a pipeline folder).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The `config.json` beside the weights, if any.
    pub fn config_path(&self) -> Option<&Path> {
        self.config_path.as_deref()
    }

    /// The `config.json` parsed as `T`, if there is one.
    ///
    /// # Errors
    /// [`Error::Io`] when it cannot be read, [`Error::BadConfig`] when it does not parse as `T`.
    pub fn config<T: DeserializeOwned>(&self) -> Result<Option<T>> {
        self.config_path.as_deref().map(read_json).transpose()
    }
}

/// Reads a JSON file as `T`.
///
/// # Errors
/// [`Error::Io`], or [`Error::BadConfig`] naming the file and the parser's message.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| Error::BadConfig {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// The `config.json` that belongs to the weights at `path` (see [`Checkpoint::open`]).
fn config_beside(path: &Path) -> Option<PathBuf> {
    let dir = if path.is_dir() {
        path
    } else {
        let name = path.file_name()?.to_str()?;
        let hf_name = name.starts_with("model") || name.starts_with("diffusion_pytorch_model");
        if !hf_name {
            return None;
        }
        path.parent()?
    };
    let file = dir.join("config.json");
    file.is_file().then_some(file)
}
