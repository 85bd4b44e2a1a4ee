//! Loading the CLIP text tower from the FLUX.1 repository's `text_encoder/` folder or
//! ComfyUI's `clip_l.safetensors` (both transformers' `CLIPTextModel` keys, `text_model.*`).

use std::path::Path;

use flux_io::{Checkpoint, KeyMap, Source, Weights};
use flux_nn::{FluxBackend, LoadConfig, load_module};

use super::{ClipConfig, ClipTextEncoder};
use crate::Result;
use crate::hf::tower_config;

/// transformers' names, up to the `text_model.` prefix, which the FLUX.1 repository and
/// ComfyUI files have and transformers 5's `save_pretrained` leaves out.
struct ClipKeys {
    prefixed: bool,
}

/// Whether the checkpoint uses the `text_model.` prefix.
pub(crate) fn is_prefixed(weights: &Weights) -> bool {
    !weights.contains("embeddings.token_embedding.weight")
}

impl KeyMap for ClipKeys {
    fn source(&self, path: &str) -> Source {
        let path = if self.prefixed {
            path
        } else {
            path.strip_prefix("text_model.").unwrap_or(path)
        };
        Source::Key(path.to_string())
    }

    /// Buffers and the CLIPModel / CLIPTextModelWithProjection extras FLUX does not use.
    fn ignored(&self, key: &str) -> bool {
        matches!(
            key.strip_prefix("text_model.").unwrap_or(key),
            "embeddings.position_ids" | "text_projection.weight" | "logit_scale"
        )
    }
}

/// Loads the CLIP text encoder from a `.safetensors` file, an HF folder, or a FLUX.1 pipeline
/// folder (its `text_encoder/`).
///
/// The config comes from `config.json` (a `CLIPTextConfig`, or a `CLIPConfig`'s `text_config`)
/// when there is one, from the tensor shapes otherwise ([`ClipConfig::infer`]).
///
/// # Errors
/// As [`crate::load_t5`].
pub fn load_clip<B: FluxBackend>(
    path: impl AsRef<Path>,
    device: &B::Device,
) -> Result<ClipTextEncoder<B>> {
    load_clip_with(path, device, LoadConfig::default())
}

/// [`load_clip`] with an explicit config, parameter dtype (`None`: device default) and/or LoRA
/// updates ([`flux_lora::resolve`]d against [`ClipConfig::lora_targets`]).
///
/// # Errors
/// As [`crate::load_t5`].
pub fn load_clip_with<B: FluxBackend>(
    path: impl AsRef<Path>,
    device: &B::Device,
    options: LoadConfig<ClipConfig>,
) -> Result<ClipTextEncoder<B>> {
    let checkpoint = Checkpoint::open(path, Some("text_encoder"))?;
    let weights = checkpoint.weights();
    let config = match options.config.clone() {
        Some(config) => config,
        None => config_of(&checkpoint)?,
    };
    config.validate()?;
    let keys = ClipKeys {
        prefixed: is_prefixed(weights),
    };
    Ok(load_module(weights, &keys, device, &options, |init| {
        config.init_with(init)
    })?)
}

/// The config of the CLIP checkpoint at `path` (its `config.json`, else inferred from the
/// tensor shapes; headers only, no tensor read), e.g. to resolve LoRAs before loading.
///
/// # Errors
/// As [`load_clip`], short of the weights themselves.
pub fn read_clip_config(path: impl AsRef<Path>) -> Result<ClipConfig> {
    let checkpoint = Checkpoint::open(path, Some("text_encoder"))?;
    let config = config_of(&checkpoint)?;
    config.validate()?;
    Ok(config)
}

fn config_of(checkpoint: &Checkpoint) -> Result<ClipConfig> {
    match tower_config(checkpoint, "text_config")? {
        Some(config) => Ok(config),
        None => ClipConfig::infer(checkpoint.weights()),
    }
}
