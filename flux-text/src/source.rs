//! Opening a text-encoder checkpoint: a `.safetensors` file, or an HF folder whose
//! `config.json` is read when present.

use std::path::{Path, PathBuf};

use flux_core::io::Weights;
use serde::de::DeserializeOwned;

use crate::{Error, Result};

/// The weights of a checkpoint and the parsed `config.json` next to them, if any.
pub(crate) struct Checkpoint<C> {
    pub weights: Weights,
    pub config: Option<C>,
    pub path: PathBuf,
}

/// Opens `path` (file or folder, sharded or not) and parses `config.json` when the path is a
/// folder holding one.
pub(crate) fn open<C: DeserializeOwned>(path: &Path) -> Result<Checkpoint<C>> {
    let weights = Weights::open(path)?;
    let config_path = path.join("config.json");
    let config = if path.is_dir() && config_path.is_file() {
        let text = std::fs::read_to_string(&config_path).map_err(|source| Error::Io {
            path: config_path.clone(),
            source,
        })?;
        Some(
            serde_json::from_str(&text)
                .map_err(|e| Error::Config(format!("{}: {e}", config_path.display())))?,
        )
    } else {
        None
    };
    Ok(Checkpoint {
        weights,
        config,
        path: path.to_path_buf(),
    })
}

/// The shape of a stored tensor, or a missing-key error naming it.
pub(crate) fn shape(weights: &Weights, key: &str) -> Result<Vec<usize>> {
    weights
        .meta(key)
        .map(|m| m.shape)
        .ok_or_else(|| flux_core::Error::MissingKeys(vec![key.to_string()]).into())
}

/// How many consecutive `{prefix}{i}.` groups the checkpoint holds (layers of a stack).
pub(crate) fn count_layers(weights: &Weights, prefix: &str) -> usize {
    let mut n = 0;
    while weights.keys().any(|k| {
        k.strip_prefix(prefix)
            .is_some_and(|r| r.starts_with(&format!("{n}.")))
    }) {
        n += 1;
    }
    n
}
