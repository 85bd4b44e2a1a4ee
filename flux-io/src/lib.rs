//! What every model crate of the FLUX workspace shares, so that each of them loads, reports
//! errors and runs its hot ops the same way.
//!
//! - **Files**: [`Checkpoint`] opens a model the way users keep it (one `.safetensors` file, a
//!   folder of shards, a diffusers pipeline folder's subfolder) with its `config.json`;
//!   [`Weights`] is the memory-mapped tensors, read one at a time with dtype conversion (f32,
//!   f16, bf16, f64, fp8 e4m3fn/e5m2, ComfyUI's scaled fp8; GGUF files ([`gguf`]) with every
//!   legacy and K block type).
//! - **Quantized weights** ([`quant`]): GGUF block types and fp8 linear weights stay quantized
//!   in memory ([`nn::Packed`]) and are dequantized one layer at a time, just before their
//!   matmul; dense checkpoints can be quantized at load ([`quant::Quantization`]).
//! - **Loading**: a [`KeyMap`] per layout says which stored tensor(s) make each module
//!   parameter ([`Source`]: one key, a concatenation, swapped halves); [`load_module`] and
//!   [`Loader`] fill a burn module from it, one tensor at a time, never holding two copies,
//!   naming every missing, unexpected, misshapen or non-finite tensor ([`Error`]).
//! - **Layers and ops**: [`nn::Linear`] is the linear layer every model uses (dense or packed;
//!   where adapters will plug in); [`ops`] holds attention, activations and the f32
//!   islands of half-precision models, with burn-flex fast paths chosen by backend type.
//! - **Host memory**: [`HostParams`] keeps a module's weights in host memory for block
//!   offload; [`check_device`] tells whether a GPU backend can start.
//!
//! One convention across the crates built on it: `load(path, &device)` and
//! `load_with(path, &device, LoadConfig)`, errors wrapping this crate's [`Error`] as `Load`.

mod checkpoint;
mod device;
mod error;
pub mod gguf;
mod gguf_tensors;
mod host_params;
mod kernels;
mod keymap;
mod loader;
pub mod lora;
pub mod nn;
pub mod ops;
mod pages;
pub mod quant;
mod safetensors_file;
mod transpose;
mod walk;
mod weights;

pub use checkpoint::{Checkpoint, read_json};
pub use device::check_device;
pub use error::{Error, Result};
pub use host_params::HostParams;
pub use keymap::{KeyMap, Source};
pub use loader::{LoadConfig, LoadOptions, Loader, load_module};
pub use safetensors_file::SafetensorsFile;
pub use weights::{TensorMeta, Weights};
