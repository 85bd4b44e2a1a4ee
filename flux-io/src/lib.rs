//! Checkpoint files as the FLUX workspace's models read them: what every model crate opens,
//! and the loading error they all report.
//!
//! - [`Checkpoint`] opens a model the way users keep it (one `.safetensors` or `.gguf` file, a
//!   folder of shards with its index, a diffusers pipeline folder's subfolder) with its
//!   `config.json` ([`read_json`]).
//! - [`Weights`] is its memory-mapped tensors under their stored names, decoded one at a time
//!   to burn's [`TensorData`](burn::tensor::TensorData) (f32, f16, bf16, f64, fp8 e4m3fn/e5m2;
//!   GGUF files through [`flux_gguf`] with every legacy and K block type, ComfyUI's
//!   `comfy.gguf.orig_shape` applied), or handed out as stored bytes ([`Raw`]) to keep a
//!   quantized weight quantized; each tensor's pages are given back once read.
//! - A [`KeyMap`] per checkpoint layout says which stored tensor(s) make each parameter of a
//!   model ([`Source`]: one key, a concatenation, swapped halves).
//! - [`Error`] names what went wrong (file, key, shapes); model crates wrap it as their
//!   `Error::Load`.
//!
//! Building a model from these tensors is the layers crate's (`flux-nn`).

mod checkpoint;
mod error;
mod gguf_tensors;
mod keymap;
mod safetensors_file;
mod stored;
mod weights;

pub use checkpoint::{Checkpoint, read_json};
pub use error::{Error, Result};
pub use keymap::{KeyMap, Source};
pub use safetensors_file::SafetensorsFile;
pub use stored::{Raw, TensorMeta};
pub use weights::Weights;
