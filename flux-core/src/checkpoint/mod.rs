//! `flux_core::load`: a FLUX transformer from a released checkpoint, whatever its layout.

mod bfl;
mod diffusers;
mod infer;
mod write_gguf;

use std::path::Path;

use burn::module::Module;
use burn::tensor::DType;
use burn::tensor::backend::Backend;
use flux_io::quant::Quantization;
use flux_io::{Checkpoint, HostParams, KeyMap, LoadOptions, Loader, Weights, load_module};

use crate::blocks::{Blocks, HostBlocks};
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
}

/// Loads a FLUX transformer: a `.safetensors` file, a `.gguf` file (city96's and
/// stable-diffusion.cpp's quantized FLUX files, whose linear weights stay quantized in memory
/// and are dequantized one layer at a time as they are used), or a folder (diffusers `transformer/` with shards and index, or a whole diffusers
/// pipeline folder holding `transformer/`). BFL, ComfyUI and diffusers key layouts; f32, f16,
/// bf16, fp8 (e4m3fn, e5m2, ComfyUI scaled) and the GGUF block types stored; the config is inferred from the tensor shapes (and `config.json` when present).
/// Tensors are read one at a time from memory-mapped files.
///
/// # Errors
/// Every [`Error`] of reading and matching a checkpoint: I/O, corrupt or truncated files,
/// unknown layout, missing or unexpected keys (named), shape mismatches, unsupported dtypes.
pub fn load<B: Backend>(path: impl AsRef<Path>, device: &B::Device) -> Result<Flux<B>> {
    load_with(path, device, LoadConfig::default())
}

/// [`load`] with options.
///
/// # Errors
/// As [`load`], plus [`Error::InvalidConfig`] for an invalid explicit config.
pub fn load_with<B: Backend>(
    path: impl AsRef<Path>,
    device: &B::Device,
    options: LoadConfig,
) -> Result<Flux<B>> {
    let checkpoint = Checkpoint::open(path, Some("transformer"))?;
    let weights = checkpoint.weights();
    let layout = CheckpointLayout::detect(weights)?;
    let config = match options.config {
        Some(config) => {
            config.validate()?;
            config
        }
        None => infer_config(&checkpoint, &layout)?,
    };
    let mut model = config.init::<B>(device);
    let offload = options.offload_blocks;
    let options = LoadOptions {
        dtype: options.dtype,
        quantization: options.quantization,
        deny_unexpected: true,
    };
    let map = layout.key_map();
    if !offload {
        return Ok(load_module(model, weights, map.as_ref(), device, options)?);
    }
    // Offloaded: everything but the blocks on the device, then each block read onto the device
    // and moved to host memory before the next, so the device never holds more than one.
    let mut loader = Loader::new(weights, map.as_ref(), device, options);
    let double = take_resident(&mut model.double_blocks);
    let single = take_resident(&mut model.single_blocks);
    let mut model = loader.load(model, &[]);
    model.double_blocks = load_to_host(&mut loader, double, "double_blocks");
    model.single_blocks = load_to_host(&mut loader, single, "single_blocks");
    loader.finish()?;
    Ok(model)
}

/// The resident blocks of a freshly built model, leaving an empty offloaded stack.
fn take_resident<B: Backend, M: Module<B>>(blocks: &mut Blocks<B, M>) -> Vec<M> {
    match std::mem::replace(blocks, Blocks::Offloaded(HostBlocks::new(Vec::new()))) {
        Blocks::Resident(blocks) => blocks,
        Blocks::Offloaded(_) => Vec::new(),
    }
}

/// Loads each block of the list `name` and moves it to host memory before the next. Every
/// block is read even after an error, so that all missing tensors get named; only complete
/// blocks are moved.
fn load_to_host<B: Backend, M: Module<B>>(
    loader: &mut Loader<'_, B>,
    blocks: Vec<M>,
    name: &str,
) -> Blocks<B, M> {
    let mut host = Vec::with_capacity(blocks.len());
    for (i, block) in blocks.into_iter().enumerate() {
        let block = loader.load(block, &[name, &i.to_string()]);
        if loader.ok() {
            host.push(HostParams::from_module(block));
        }
    }
    Blocks::Offloaded(HostBlocks::new(host))
}

/// Reads the config of the checkpoint at `path` (headers only: no tensor is loaded), e.g. to
/// tell [dev] from [schnell] before committing memory to the weights.
///
/// # Errors
/// As [`load`], short of the weights themselves.
pub fn read_config(path: impl AsRef<Path>) -> Result<FluxConfig> {
    let checkpoint = Checkpoint::open(path, Some("transformer"))?;
    let layout = CheckpointLayout::detect(checkpoint.weights())?;
    infer_config(&checkpoint, &layout)
}
