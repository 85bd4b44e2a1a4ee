//! `flux_core::load`: a FLUX transformer from a released checkpoint, whatever its layout.

mod bfl;
mod diffusers;
mod infer;
mod write_gguf;

use std::path::Path;

use burn::tensor::DType;
use flux_io::{Checkpoint, KeyMap, Weights};
use flux_lora::{Adapters, LoraMode};
use flux_nn::quant::Quantization;
use flux_nn::{FluxBackend, Init, LoadOptions, Loader};

use crate::{Flux, FluxConfig, Result};
use bfl::BflKeys;

pub(crate) use bfl::bfl_key;
pub(crate) use diffusers::DiffusersKeys;
use infer::infer_config;
pub use write_gguf::{GgufSummary, write_gguf};

/// The key layouts a FLUX transformer checkpoint comes in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointLayout {
    /// BFL's own keys (`img_in.weight`, `double_blocks.0.img_attn.qkv.weight`, ...) under
    /// `prefix`: empty for `flux1-dev.safetensors`, `model.diffusion_model.` for ComfyUI files.
    Bfl {
        /// Prefix of every transformer key.
        prefix: String,
    },
    /// diffusers' `FluxTransformer2DModel` keys (`x_embedder.weight`, `transformer_blocks.0.attn.to_q.weight`, ...).
    Diffusers,
}

impl CheckpointLayout {
    /// Recognises the layout from the stored keys.
    ///
    /// # Errors
    /// [`flux_io::Error::UnknownLayout`] listing a few of the keys found.
    pub fn detect(weights: &Weights) -> flux_io::Result<Self> {
        const COMFY: &str = "model.diffusion_model.";
        weights.expect_gguf_architecture(&["flux"], "FLUX transformer")?;
        if weights.contains(&format!("{COMFY}img_in.weight")) {
            return Ok(Self::Bfl {
                prefix: COMFY.into(),
            });
        }
        if weights.contains("img_in.weight") {
            return Ok(Self::Bfl {
                prefix: String::new(),
            });
        }
        if weights.contains("x_embedder.weight") {
            return Ok(Self::Diffusers);
        }
        let sample: Vec<&str> = weights.keys().take(8).collect();
        Err(flux_io::Error::UnknownLayout(format!(
            "no `img_in.weight` (BFL), `model.diffusion_model.img_in.weight` (ComfyUI) or \
             `x_embedder.weight` (diffusers) among {} tensors; first keys: {sample:?}",
            weights.len()
        )))
    }

    pub(crate) fn key_map(&self) -> Box<dyn KeyMap> {
        match self {
            Self::Bfl { prefix } => Box::new(BflKeys {
                prefix: prefix.clone(),
            }),
            Self::Diffusers => Box::new(DiffusersKeys),
        }
    }
}

/// Options of [`load_with`].
#[derive(Debug, Clone, Default)]
pub struct LoadConfig {
    /// Use this config instead of inferring one from the tensor shapes (it must still match
    /// them). Needed only for unusual RoPE splits in files that carry no `config.json`.
    pub config: Option<FluxConfig>,
    /// Float dtype of the parameters; `None`: the device's default float dtype.
    pub dtype: Option<DType>,
    /// Block-level offload ([`Flux::offload_blocks`]): load the blocks one at a time,
    /// moving each to host memory before the next, so the device never holds more than the
    /// resident part and one block.
    pub offload_blocks: bool,
    /// How the linear weights are held: GGUF block types and fp8 stay quantized in memory
    /// (default), everything dense, or dense weights quantized at load (`--quantize`).
    pub quantization: Quantization,
    /// LoRA updates to build the model with: [`flux_lora::resolve`]d against
    /// [`FluxConfig::lora_targets`]. A control LoRA (BFL's Canny/Depth, whose `img_in` update
    /// takes 128 inputs) makes \[dev\] a control model: `img_in` gets zero weights for the
    /// control latents until the update lands on them, as diffusers expands the layer.
    pub adapters: Option<Adapters>,
    /// How the LoRA updates are applied ([`LoraMode`]): merged into the weights (default) or
    /// held beside them, so that [`Flux::rescale_lora`] can change their strengths.
    pub lora_mode: LoraMode,
}

/// Loads a FLUX transformer: a `.safetensors` file, a `.gguf` file (city96's and
/// stable-diffusion.cpp's quantized FLUX files, whose linear weights stay quantized in memory
/// and are dequantized one layer at a time as they are used), or a folder (diffusers `transformer/` with shards and index, or a whole diffusers
/// pipeline folder holding `transformer/`). BFL, ComfyUI and diffusers key layouts; f32, f16,
/// bf16, fp8 (e4m3fn, e5m2, ComfyUI scaled) and the GGUF block types stored; the config is inferred from the tensor shapes (and `config.json` when present).
/// Tensors are read one at a time from memory-mapped files.
///
/// # Errors
/// Every [`Error`](crate::Error) of reading and matching a checkpoint: I/O, corrupt or truncated files,
/// unknown layout, missing or unexpected keys (named), shape mismatches, unsupported dtypes.
pub fn load<B: FluxBackend>(path: impl AsRef<Path>, device: &B::Device) -> Result<Flux<B>> {
    load_with(path, device, LoadConfig::default())
}

/// [`load`] with options.
///
/// # Errors
/// As [`load`], plus [`Error::InvalidConfig`](crate::Error::InvalidConfig) for an invalid explicit config.
pub fn load_with<B: FluxBackend>(
    path: impl AsRef<Path>,
    device: &B::Device,
    options: LoadConfig,
) -> Result<Flux<B>> {
    let checkpoint = Checkpoint::open(path, Some("transformer"))?;
    let weights = checkpoint.weights();
    let layout = CheckpointLayout::detect(weights)?;
    let mut config = match options.config {
        Some(config) => {
            config.validate()?;
            config
        }
        None => infer_config(&checkpoint, &layout)?,
    };
    if let Some(input) = options
        .adapters
        .as_ref()
        .and_then(|a| a.layer_input("img_in"))
    {
        // A control LoRA: [dev] becomes a control model, `img_in` taking the noisy latents'
        // 64 channels and the control latents' 64.
        config.in_channels = config.in_channels.max(input);
    }
    let map = layout.key_map();
    let load_options = LoadOptions {
        dtype: options.dtype,
        quantization: options.quantization,
        deny_unexpected: true,
    };
    let loader = Loader::new(weights, map.as_ref(), load_options);
    let mut init = Init::load(&loader, device);
    if let Some(adapters) = &options.adapters {
        init = init.with_adapters(adapters, options.lora_mode);
    }
    // Offloaded: each block read onto the device and moved to host memory before the next,
    // so the device never holds more than the resident part and one block.
    let model = Flux::new(config, &init, options.offload_blocks);
    loader.finish()?;
    init.finish()?;
    Ok(model)
}

/// Reads the config of the checkpoint at `path` (headers only: no tensor is loaded), e.g. to
/// tell \[dev\] from \[schnell\] before committing memory to the weights.
///
/// # Errors
/// As [`load`], short of the weights themselves.
pub fn read_config(path: impl AsRef<Path>) -> Result<FluxConfig> {
    let checkpoint = Checkpoint::open(path, Some("transformer"))?;
    let layout = CheckpointLayout::detect(checkpoint.weights())?;
    infer_config(&checkpoint, &layout)
}
