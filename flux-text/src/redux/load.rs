//! Loading the Redux parts from the released FLUX.1-Redux-dev folder (`image_encoder/`,
//! `image_embedder/`) or single files (ComfyUI's `sigclip_vision_patch14_384.safetensors`,
//! BFL's `flux1-redux-dev.safetensors`): both use the keys transformers and diffusers write.

use std::path::Path;

use flux_io::{Checkpoint, KeyMap, Source};
use flux_nn::{FluxBackend, LoadConfig, load_module};

use super::{ReduxConfig, ReduxEmbedder, SiglipVisionConfig, SiglipVisionEncoder};
use crate::Result;
use crate::hf::tower_config;

/// transformers' `SiglipVisionModel` keys, under `vision_model.`.
struct SiglipKeys;

impl KeyMap for SiglipKeys {
    fn source(&self, path: &str) -> Source {
        Source::Key(path.to_string())
    }

    /// The attention-pooling head (Redux takes every token), buffers, and a full
    /// `SiglipModel`'s text tower and logit scale.
    fn ignored(&self, key: &str) -> bool {
        key.starts_with("vision_model.head.")
            || key == "vision_model.embeddings.position_ids"
            || key.starts_with("text_model.")
            || key.starts_with("logit_")
    }
}

/// Loads the SigLIP vision tower from a `.safetensors` file, an HF folder, or a FLUX.1-Redux
/// folder (its `image_encoder/`).
///
/// The config comes from `config.json` (a `SiglipVisionConfig`, or a `SiglipConfig`'s
/// `vision_config`) when there is one, from the tensor shapes otherwise
/// ([`SiglipVisionConfig::infer`]).
///
/// # Errors
/// As [`crate::load_t5`]; unexpected keys are named.
pub fn load_siglip<B: FluxBackend>(
    path: impl AsRef<Path>,
    device: &B::Device,
) -> Result<SiglipVisionEncoder<B>> {
    load_siglip_with(path, device, LoadConfig::default())
}

/// [`load_siglip`] with an explicit config and/or parameter dtype.
///
/// # Errors
/// As [`load_siglip`].
pub fn load_siglip_with<B: FluxBackend>(
    path: impl AsRef<Path>,
    device: &B::Device,
    options: LoadConfig<SiglipVisionConfig>,
) -> Result<SiglipVisionEncoder<B>> {
    let checkpoint = Checkpoint::open(path, Some("image_encoder"))?;
    let weights = checkpoint.weights();
    let config = match options.config.clone() {
        Some(config) => config,
        None => siglip_config(&checkpoint)?,
    };
    config.validate()?;
    Ok(load_module(
        weights,
        &SiglipKeys,
        device,
        &options,
        |init| config.init_with(init),
    )?)
}

/// The config of the SigLIP checkpoint at `path` (headers and `config.json` only).
///
/// # Errors
/// As [`load_siglip`], short of the weights themselves.
pub fn read_siglip_config(path: impl AsRef<Path>) -> Result<SiglipVisionConfig> {
    let config = siglip_config(&Checkpoint::open(path, Some("image_encoder"))?)?;
    config.validate()?;
    Ok(config)
}

/// `config.json` (a `SiglipVisionConfig`, or a `SiglipConfig`'s `vision_config`), else inferred.
fn siglip_config(checkpoint: &Checkpoint) -> Result<SiglipVisionConfig> {
    match tower_config(checkpoint, "vision_config")? {
        Some(config) => Ok(config),
        None => SiglipVisionConfig::infer(checkpoint.weights(), "vision_model."),
    }
}

/// The checkpoint keys are the module's.
struct ReduxKeys;

impl KeyMap for ReduxKeys {
    fn source(&self, path: &str) -> Source {
        Source::Key(path.to_string())
    }
}

/// Loads the Redux embedder from `flux1-redux-dev.safetensors`, or a FLUX.1-Redux folder (its
/// `image_embedder/`); widths from `config.json`, else from `redux_up`'s shape.
///
/// # Errors
/// As [`load_siglip`].
pub fn load_redux_embedder<B: FluxBackend>(
    path: impl AsRef<Path>,
    device: &B::Device,
    options: LoadConfig<ReduxConfig>,
) -> Result<ReduxEmbedder<B>> {
    let checkpoint = Checkpoint::open(path, Some("image_embedder"))?;
    let weights = checkpoint.weights();
    let config = match options.config {
        Some(config) => config,
        None => match checkpoint.config::<ReduxConfig>()? {
            Some(config) => config,
            None => {
                let shape = weights
                    .meta("redux_up.weight")
                    .map(|m| m.shape)
                    .ok_or_else(|| flux_io::Error::MissingKeys(vec!["redux_up.weight".into()]))?;
                let [up, redux_dim] = shape[..] else {
                    return Err(crate::Error::InvalidConfig(format!(
                        "redux_up.weight has shape {shape:?}"
                    )));
                };
                ReduxConfig {
                    redux_dim,
                    txt_in_features: up / 3,
                }
            }
        },
    };
    Ok(load_module(
        weights,
        &ReduxKeys,
        device,
        &options,
        |init| config.init_with(init),
    )?)
}
