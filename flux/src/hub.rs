//! Fetching a FLUX.1 repository from the Hugging Face Hub (`hf-hub`, blocking, into the hub
//! cache), so that `Pipeline::builder().hub_repo("black-forest-labs/FLUX.1-schnell")` works.

use std::path::{Path, PathBuf};

use hf_hub::api::sync::{ApiBuilder, ApiRepo};
use hf_hub::{Repo, RepoType};

use crate::files::ModelFiles;
use crate::{Error, Result};

/// The files of a FLUX.1 repository in the diffusers layout that a pipeline reads; the weight
/// shards are found through the index files.
const FILES: &[&str] = &[
    "model_index.json",
    "transformer/config.json",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "text_encoder_2/config.json",
    "tokenizer/vocab.json",
    "tokenizer/merges.txt",
    "tokenizer/special_tokens_map.json",
    "tokenizer/tokenizer_config.json",
    "tokenizer_2/tokenizer.json",
    "tokenizer_2/special_tokens_map.json",
    "tokenizer_2/tokenizer_config.json",
];

/// Sharded weights: (index file, folder).
const SHARDED: &[(&str, &str)] = &[
    (
        "transformer/diffusion_pytorch_model.safetensors.index.json",
        "transformer",
    ),
    (
        "text_encoder_2/model.safetensors.index.json",
        "text_encoder_2",
    ),
];

/// Downloads (or finds in the cache) every file of `repo` a pipeline needs and returns them.
/// The token comes from `HF_TOKEN`, else the hub cache's token file; `HF_HOME` and
/// `HF_ENDPOINT` are honoured.
///
/// # Errors
/// [`Error::Hub`] naming the repository, the file and what failed (offline, gated without a
/// token, not found), with what to do about it.
pub fn download(repo: &str, revision: Option<&str>) -> Result<ModelFiles> {
    download_with(
        repo,
        &HubOptions {
            revision: revision.map(str::to_string),
            ..HubOptions::default()
        },
    )
}

/// Where and what to fetch; `None` fields take the environment's defaults.
#[derive(Debug, Clone, Default)]
pub struct HubOptions {
    /// Branch, tag or commit (default `main`).
    pub revision: Option<String>,
    /// Hub endpoint (default `HF_ENDPOINT`, else huggingface.co).
    pub endpoint: Option<String>,
    /// Cache folder (default `$HF_HOME/hub`).
    pub cache_dir: Option<PathBuf>,
}

/// [`download`] with explicit options.
///
/// # Errors
/// As [`download`].
pub fn download_with(repo: &str, options: &HubOptions) -> Result<ModelFiles> {
    let hub_error = |file: &str, e: &dyn std::fmt::Display| Error::Hub {
        repo: repo.to_string(),
        file: file.to_string(),
        message: e.to_string(),
    };
    let mut builder = ApiBuilder::from_env().with_progress(true).with_retries(1);
    if let Ok(token) = std::env::var("HF_TOKEN") {
        builder = builder.with_token(Some(token));
    }
    if let Some(endpoint) = &options.endpoint {
        builder = builder.with_endpoint(endpoint.clone());
    }
    if let Some(cache) = &options.cache_dir {
        builder = builder.with_cache_dir(cache.clone());
    }
    let api = builder.build().map_err(|e| hub_error("(client)", &e))?;
    let hub_repo = match &options.revision {
        Some(rev) => Repo::with_revision(repo.to_string(), RepoType::Model, rev.clone()),
        None => Repo::model(repo.to_string()),
    };
    let api_repo = api.repo(hub_repo);
    let fetch = |file: &str| api_repo.get(file).map_err(|e| hub_error(file, &e));
    let model_index = fetch(FILES[0])?;
    for file in &FILES[1..] {
        fetch(file)?;
    }
    for (index, _) in SHARDED {
        fetch_shards(&api_repo, &fetch(index)?, index, &hub_error)?;
    }
    // BFL's `ae.safetensors` is not needed: the diffusers `vae/` is fetched above.
    let snapshot: PathBuf = model_index
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    ModelFiles::from_dir(snapshot)
}

/// Fetches every shard named by an index file.
fn fetch_shards(
    api: &ApiRepo,
    index_path: &Path,
    index: &str,
    hub_error: &dyn Fn(&str, &dyn std::fmt::Display) -> Error,
) -> Result<()> {
    let text = std::fs::read_to_string(index_path).map_err(|e| hub_error(index, &e))?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| hub_error(index, &e))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| hub_error(index, &"no weight_map"))?;
    let mut shards: Vec<&str> = map.values().filter_map(|v| v.as_str()).collect();
    shards.sort_unstable();
    shards.dedup();
    let folder = index.rsplit_once('/').map_or("", |(f, _)| f);
    for shard in shards {
        let file = format!("{folder}/{shard}");
        api.get(&file).map_err(|e| hub_error(&file, &e))?;
    }
    Ok(())
}
