//! The autoencoder's decoder at benchmark sizes: `tiny` (the test config, 64x64 image),
//! `patch` (the FLUX VAE as released, 64x64 image), `small` (FLUX VAE, 256x256 image),
//! `dev` (FLUX VAE, 1024x1024: for GPUs).

use burn::tensor::{Distribution, Tensor};
use flux::FluxBackend;
use flux_vae::AutoEncoderConfig;

/// A decode size by name: (`config`, image side in pixels).
pub fn vae_size(name: &str) -> Option<(AutoEncoderConfig, usize)> {
    match name {
        "tiny" => Some((AutoEncoderConfig::tiny(), 64)),
        "patch" => Some((AutoEncoderConfig::flux(), 64)),
        "small" => Some((AutoEncoderConfig::flux(), 256)),
        "dev" => Some((AutoEncoderConfig::flux(), 1024)),
        _ => None,
    }
}

/// Random latents `[1, z_channels, side / 8, side / 8]` for an image of `side` pixels.
pub fn latents<B: FluxBackend>(
    config: &AutoEncoderConfig,
    side: usize,
    device: &B::Device,
) -> Tensor<B, 4> {
    let shape = [1, config.z_channels, side / 8, side / 8];
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
}
