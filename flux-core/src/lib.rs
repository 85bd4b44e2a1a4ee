//! The FLUX.1 rectified-flow transformer on burn.
//!
//! [`FluxConfig`] holds the hyper-parameters (with the released [`FluxConfig::dev`] and
//! [`FluxConfig::schnell`] presets), [`Flux`] the model, whose `forward` has the reference
//! implementation's signature, and [`load`] / [`load_with`] read the released checkpoints: BFL
//! single files (also behind ComfyUI's `model.diffusion_model.` prefix, fp8 included) and
//! diffusers folders. Files, key tables and the loading error come from `flux-io`; the layers,
//! the backend seam ([`flux_nn::FluxBackend`]) and building in the stored form from `flux-nn`,
//! which every model crate of the workspace shares.
//!
//! The blocks follow BFL's `src/flux/modules/layers.py`, one file each. Those a user composes
//! into a model of their own (a ControlNet, a different depth) are public: [`EmbedNd`] (3-axis
//! RoPE), [`DoubleStreamBlock`], [`SingleStreamBlock`], [`timestep_embedding`]; [`pack`] and
//! [`unpack`] with the position ids are what a custom sampler loop needs around [`Flux`].

mod attention;
mod blocks;
mod cache;
mod checkpoint;
mod config;
mod double_block;
mod embed;
mod error;
mod f32_tensor;
mod last_layer;
mod lora;
mod mlp;
mod model;
mod modulation;
mod norm;
mod packing;
mod rope;
mod single_block;

pub use cache::BranchCaches;
pub use checkpoint::{
    CheckpointLayout, GgufSummary, LoadConfig, load, load_with, read_config, write_gguf,
};
pub use config::FluxConfig;
pub use double_block::DoubleStreamBlock;
pub use embed::timestep_embedding;
pub use error::{Error, Result};
pub use flux_nn::quant::{QuantType, Quantization};
pub use model::{Flux, Hidden};
pub use packing::{check_image_size, img_ids, img_ids_at, pack, pack_mask, txt_ids, unpack};
pub use rope::{EmbedNd, RopeTable};
pub use single_block::SingleStreamBlock;
