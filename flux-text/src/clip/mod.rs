//! The CLIP ViT-L/14 text tower (FLUX's `text_encoder`).

mod config;
mod load;
mod lora;
pub(crate) mod model;

pub use config::ClipConfig;
pub use load::{load_clip, load_clip_with, read_clip_config};
pub use model::{ClipOutput, ClipTextEncoder};
