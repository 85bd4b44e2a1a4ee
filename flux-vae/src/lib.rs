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

pub use attention::AttnBlock;
pub use autoencoder::{AutoEncoder, AutoEncoderModules};
pub use config::AutoEncoderConfig;
pub use decoder::{Decoder, UpLevel};
pub use encoder::{DownLevel, Encoder, MidBlock};
pub use error::{Error, Result};
pub use image::{dynamic_image_to_tensor, image_to_tensor, images_to_tensor, tensor_to_images};
pub use keymap::{BflKeys, DiffusersKeys, Layout};
pub use load::{LoadConfig, load, load_with, load_with_config};
pub use norm::GroupNorm;
pub use resnet::ResnetBlock;
pub use sample::{Downsample, Upsample};
pub use tiling::{TileConfig, Tiling};
