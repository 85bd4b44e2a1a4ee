//! The FLUX.1 rectified-flow transformer on burn.
//!
//! [`FluxConfig`] holds the hyper-parameters (with the released [`FluxConfig::dev`] and
//! [`FluxConfig::schnell`] presets), [`Flux`] the model, whose `forward` has the reference
//! implementation's signature, and [`load`] reads the released checkpoints: BFL single files
//! (also behind ComfyUI's `model.diffusion_model.` prefix, fp8 included) and diffusers folders.
//! [`io`] is the safetensors machinery the other crates of the workspace share.
//!
//! The blocks follow BFL's `src/flux/modules/layers.py`, one file each: [`EmbedNd`] (3-axis
//! RoPE), [`Modulation`], [`DoubleStreamBlock`], [`SingleStreamBlock`], [`LastLayer`].

mod attention;
mod checkpoint;
mod config;
mod device;
mod double_block;
mod embed;
mod error;
mod host;
mod host_kernels;
pub mod io;
mod last_layer;
mod mlp;
mod model;
mod modulation;
mod norm;
mod offload;
mod packing;
mod rope;
mod single_block;
mod threads;

pub use attention::{SelfAttention, attention, attention_in_f32, split_qkv};
pub use checkpoint::{CheckpointLayout, LoadConfig, infer_config, load, load_with, read_config};
pub use config::FluxConfig;
pub use device::check_device;
pub use double_block::DoubleStreamBlock;
pub use embed::{MlpEmbedder, timestep_embedding};
pub use error::{Error, Result};
pub use last_layer::LastLayer;
pub use mlp::{Mlp, gelu_tanh};
pub use model::Flux;
pub use modulation::{Modulation, ModulationOut};
pub use norm::{QkNorm, RmsNorm, in_f32, layer_norm};
pub use offload::HostParams;
pub use packing::{check_image_size, img_ids, pack, txt_ids, unpack};
pub use rope::{EmbedNd, RopeTable, apply_rope};
pub use single_block::SingleStreamBlock;
