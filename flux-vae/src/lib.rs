//! FLUX.1's 16-channel autoencoder on burn.
//!
//! [`AutoEncoder::encode`] maps images in `[-1, 1]` to FLUX latents
//! (`scale_factor * (mean - shift_factor)`), [`AutoEncoder::decode`] maps them back. [`load`]
//! reads BFL `ae.safetensors` or diffusers `AutoencoderKL` weights. Large images are encoded and
//! decoded in overlapping tiles ([`Tiling`]); [`image_to_tensor`] and [`tensor_to_images`]
//! convert to and from the `image` crate.

mod attention;
mod autoencoder;
mod config;
mod decoder;
mod encoder;
mod error;
mod image;
mod keymap;
mod load;
mod norm;
mod resnet;
mod sample;
mod tiling;

pub use autoencoder::AutoEncoder;
pub use config::AutoEncoderConfig;
pub use error::{Error, Result};
pub use image::{image_to_tensor, images_to_tensor, rgb8_images, tensor_to_images};
pub use load::{LoadConfig, load, load_with};
pub use tiling::{TileConfig, Tiling};
