//! Loading a T5 encoder from the layouts users have: the FLUX.1 repository's
//! `text_encoder_2/` folder (sharded, `config.json`), ComfyUI's single `t5xxl_*.safetensors`
//! files (f16, bf16, fp8 e4m3fn, scaled fp8), both in transformers' `T5EncoderModel` keys, and
//! T5 encoder GGUF files in llama.cpp's names (city96's `t5-v1_1-xxl-encoder-*.gguf`).

use std::path::Path;

use flux_io::{Checkpoint, KeyMap, Source, Weights};
use flux_nn::{FluxBackend, LoadConfig, load_module};

use super::names::T5Names;
use super::{T5Config, T5Encoder, T5Precision};
use crate::Result;

/// The tied embedding is stored as `shared.weight` (transformers' `save_pretrained`), as
/// `encoder.embed_tokens.weight`, or as both (some single-file exports): one is read, the
/// other ignored.
/// llama.cpp's GGUF names map onto transformers' ([`T5Names`]).
struct T5Keys {
    embedding: &'static str,
    names: T5Names,
}

impl T5Keys {
    fn new(weights: &Weights) -> Self {
        let embedding = if weights.contains("shared.weight") {
            "shared.weight"
        } else {
            "encoder.embed_tokens.weight"
        };
        Self {
            embedding,
            names: T5Names::detect(weights),
        }
    }
}

/// Module path -> checkpoint key (the module names T5's two sub-layers by role, the checkpoint
/// by position: `layer.0` attention, `layer.1` feed-forward).
const RENAMES: [(&str, &str); 4] = [
    (".attention_norm.", ".layer.0.layer_norm."),
    (".self_attention.", ".layer.0.SelfAttention."),
    (".ff_norm.", ".layer.1.layer_norm."),
    (".dense_relu_dense.", ".layer.1.DenseReluDense."),
];

impl KeyMap for T5Keys {
    fn source(&self, path: &str) -> Source {
        if path == "shared.weight" {
            return Source::Key(self.names.key(self.embedding));
        }
        let key = RENAMES
            .iter()
            .find(|(from, _)| path.contains(from))
            .map_or_else(|| path.to_string(), |(from, to)| path.replacen(from, to, 1));
        Source::Key(self.names.key(&key))
    }

    fn ignored(&self, key: &str) -> bool {
        matches!(key, "shared.weight" | "encoder.embed_tokens.weight") && key != self.embedding
    }
}

/// Loads a T5 v1.1 encoder from a `.safetensors` file, a T5 encoder `.gguf` file (llama.cpp
/// names, every GGUF block type; linear weights stay quantized in memory unless
/// [`LoadConfig::quantization`] says otherwise), an HF folder (sharded or not), or a FLUX.1
/// pipeline folder (its `text_encoder_2/`).
///
/// The config comes from `config.json` when there is one, from the tensor shapes otherwise.
/// Weights are converted to the device's default float dtype; the half-precision policy is
/// [`T5Precision::F32Residual`].
///
/// # Errors
/// [`crate::Error::Load`] for unreadable or corrupt files, missing / unexpected keys (all
/// named), shape mismatches, unsupported dtypes, non-finite weights, a `config.json` that does
/// not parse; [`crate::Error::InvalidConfig`] / [`crate::Error::Unsupported`] for a config
/// this crate cannot run.
pub fn load_t5<B: FluxBackend>(path: impl AsRef<Path>, device: &B::Device) -> Result<T5Encoder<B>> {
    load_t5_with(path, device, LoadConfig::default())
}

/// [`load_t5`] with an explicit config (overriding `config.json` and shape inference) and/or
/// parameter dtype (e.g. `DType::F16` or `DType::BF16`; `None`: the device's default).
///
/// # Errors
/// As [`load_t5`].
pub fn load_t5_with<B: FluxBackend>(
    path: impl AsRef<Path>,
    device: &B::Device,
    options: LoadConfig<T5Config>,
) -> Result<T5Encoder<B>> {
    let checkpoint = Checkpoint::open(path, Some("text_encoder_2"))?;
    let weights = checkpoint.weights();
    weights.expect_gguf_architecture(&["t5encoder", "t5"], "T5 encoder")?;
    let config = match options.config.clone() {
        Some(config) => config,
        None => match checkpoint.config::<T5Config>()? {
            Some(config) => config,
            None => T5Config::infer(weights)?,
        },
    };
    config.validate()?;
    let keys = T5Keys::new(weights);
    let model = load_module(weights, &keys, device, &options, |init| {
        config.init_with(init)
    })?;
    Ok(model.with_precision(T5Precision::F32Residual))
}
