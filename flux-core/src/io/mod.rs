//! Reading safetensors checkpoints: memory-mapped files and shard folders ([`Weights`]), and
//! filling burn modules from them through a key table ([`load_module`], [`KeyMap`]).
//!
//! Shared by every crate of the workspace (the VAE and text encoders load through it too).

mod file;
mod loader;
mod weights;

pub use file::SafetensorsFile;
pub use loader::{KeyMap, LoadOptions, Loader, Source, load_module};
pub use weights::{TensorMeta, Weights};
