//! FLUX.1 \[dev\] and \[schnell\] text-to-image inference on burn.
//!
//! This facade re-exports the workspace's crates — [`core`] (the transformer), [`text`] (T5,
//! CLIP, SigLIP), [`vae`] (the autoencoder), [`sampler`] (schedule, Euler, torch-compatible
//! noise), [`io`] (checkpoint files), [`gguf`], [`lora`], [`nn`] (the backend seam and shared
//! layers) — with [`burn`] itself and its [`backend`]s, and owns [`Pipeline`], which ties them
//! together the way diffusers' `FluxPipeline` does: where the weights are ([`ModelFiles`], the
//! Hugging Face Hub with the `hub` feature), what to generate ([`GenerateRequest`]), progress
//! reports that can cancel, and PNG output that records how an image was made ([`save_png`]).
//! [`EngineBuilder`] picks the device at run time and plans the dtype and memory mode.
//!
//! ```no_run
//! use flux::backend::Cpu;
//! use flux::{GenerateRequest, Pipeline};
//!
//! # fn main() -> flux::Result<()> {
//! let pipeline = Pipeline::<Cpu>::builder().model_dir("FLUX.1-schnell").build()?;
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

/// The burn this crate is built on: its tensors, devices and backends, at the version the
/// pipeline's models were built with.
pub use burn;
/// A float type for [`PipelineBuilder::dtype`] and [`EngineBuilder::dtype`].
pub use burn::tensor::DType;

/// The backends a [`Pipeline`] runs on, each behind the cargo feature of the same name.
pub mod backend {
    /// The CPU backend: burn-flex with the `flex` feature (the default, the faster of the two;
    /// docs/performance.md), else burn-ndarray with `ndarray`.
    #[cfg(feature = "flex")]
    pub type Cpu = burn::backend::Flex;
    /// The CPU backend: burn-flex with the `flex` feature (the default, the faster of the two;
    /// docs/performance.md), else burn-ndarray with `ndarray`.
    #[cfg(all(feature = "ndarray", not(feature = "flex")))]
    pub type Cpu = burn::backend::NdArray;
    #[cfg(feature = "cuda")]
    pub use burn::backend::Cuda;
    #[cfg(feature = "flex")]
    pub use burn::backend::Flex;
    #[cfg(feature = "ndarray")]
    pub use burn::backend::NdArray;
    #[cfg(feature = "wgpu")]
    pub use burn::backend::Wgpu;
}

// The README's library example compiles as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;

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
pub use flux_sampler::{Cache, CacheStats, MagCache, MagRatios, Sampler, Spacing};
pub use kind::ModelKind;
pub use memory::{MemoryPlan, ModelSizes};
pub use pipeline::{
    Component, LoraReport, MemoryMode, Pipeline, PipelineBuilder, Resolved, resolve_loras,
};
pub use png::{ImageMetadata, read_png_text, save_png};
pub use redux_files::ReduxFiles;
pub use request::{GenerateRequest, Progress, ReduxImage, Stage};
pub use variant::Variant;
