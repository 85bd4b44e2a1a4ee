//! FLUX.1 Redux's image prompt: the SigLIP vision tower (google/siglip-so400m-patch14-384)
//! turns an image into 729 tokens, and the Redux embedder maps them to T5's width, where they
//! join the prompt's tokens (diffusers `FluxPriorReduxPipeline`).
//!
//! It lives beside the text encoders because it is one: it encodes a prompt (an image) into the
//! transformer's text stream, and SigLIP's layers are CLIP's (non-causal, tanh GELU).

mod config;
mod embedder;
mod image;
mod load;
mod siglip;

pub use config::{ReduxConfig, SiglipVisionConfig};
pub use embedder::ReduxEmbedder;
pub use image::SiglipImageProcessor;
pub use load::{load_redux_embedder, load_siglip, load_siglip_with, read_siglip_config};
pub use siglip::SiglipVisionEncoder;
