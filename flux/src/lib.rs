//! FLUX.1 [dev] and [schnell] text-to-image inference on burn.
//!
//! This facade re-exports the workspace's crates — [`core`] (the transformer), [`text`] (T5
//! and CLIP), [`vae`] (the autoencoder), [`sampler`] (schedule, Euler, torch-compatible noise),
//! [`io`] (checkpoint files, loading, the shared layers and CPU kernels) — and owns [`Pipeline`], which ties them together the way diffusers'
//! `FluxPipeline` does: where the weights are ([`ModelFiles`], the Hugging Face Hub with the
//! `hub` feature), what to generate ([`GenerateRequest`]), progress reports that can cancel,
//! and PNG output that records how an image was made ([`save_png`]).
//!
//! ```no_run
//! use burn::backend::Flex;
//! use flux::{GenerateRequest, Pipeline};
//!
//! # fn main() -> flux::Result<()> {
//! let pipeline = Pipeline::<Flex>::builder().model_dir("FLUX.1-schnell").build()?;
//! let images = pipeline.generate(&GenerateRequest::new("a cat in a tiny hat").with_seed(42))?;
//! images[0].save("cat.png").expect("writable");
//! # Ok(())
//! # }
//! ```

pub use flux_core as core;
pub use flux_gguf as gguf;
pub use flux_io as io;
pub use flux_lora as lora;
pub use flux_nn as nn;
pub use flux_sampler as sampler;
pub use flux_text as text;
pub use flux_vae as vae;

mod allocator;
mod engine;
mod error;
mod files;
#[cfg(feature = "hub")]
pub mod hub;
mod kind;
mod memory;
mod pipeline;
mod png;
mod redux_files;
mod request;
pub mod tools;
mod variant;

pub use allocator::retain_freed_memory;
pub use engine::{Device, Engine, EngineBuilder, Plan};
pub use error::{Error, Result};
pub use files::{ClipTokenizerFiles, ModelFiles};
pub use flux_core::{QuantType, Quantization};
pub use flux_lora::{LoraFormat, LoraMode};
pub use flux_nn::FluxBackend;
pub use kind::ModelKind;
pub use memory::{MemoryPlan, ModelSizes};
pub use pipeline::{
    Component, LoraReport, MemoryMode, Pipeline, PipelineBuilder, Resolved, resolve_loras,
};
pub use png::{ImageMetadata, read_png_text, save_png};
pub use redux_files::ReduxFiles;
pub use request::{GenerateRequest, Progress, ReduxImage, Stage};
pub use variant::Variant;
