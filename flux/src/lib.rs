//! FLUX.1 [dev] and [schnell] text-to-image inference on burn.
//!
//! This facade re-exports the workspace's crates:
//! - [`core`] (`flux-core`): the flow-matching transformer and checkpoint loading;
//!
//! and owns what ties them together: where the weights are ([`ModelFiles`], the Hugging Face
//! Hub with the `hub` feature), what to generate ([`GenerateRequest`]), progress reports, and
//! PNG output that records how an image was made ([`save_png`]).

pub use flux_core as core;

mod error;
mod files;
#[cfg(feature = "hub")]
pub mod hub;
mod kind;
mod png;
mod request;

pub use error::{Error, Result};
pub use files::{ClipTokenizerFiles, ModelFiles};
pub use kind::ModelKind;
pub use png::{ImageMetadata, read_png_text, save_png};
pub use request::{Control, GenerateRequest, Progress, Stage};
