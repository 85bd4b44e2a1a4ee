//! Decodes random latents with the tiny fixture VAE, tiled or not, for peak-memory measurement:
//! `/usr/bin/time -v cargo run -p flux-vae --release --example decode_mem -- <size> <tiled|untiled>`.

use std::time::Instant;

use burn::backend::NdArray;
use burn::tensor::{Distribution, Tensor};
use flux_vae::{TileConfig, Tiling};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let size: usize = args.get(1).map_or(Ok(512), |s| s.parse())?;
    let tiling = match args.get(2).map(String::as_str) {
        Some("untiled") => Tiling::Never,
        _ => Tiling::Always(TileConfig {
            tile: 64,
            overlap: 16,
        }),
    };
    let device = Default::default();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/diffusers/vae");
    let vae = flux_vae::load::<NdArray<f32>>(path, &device)?.with_tiling(tiling);
    let latents = Tensor::random(
        [1, 16, size / 8, size / 8],
        Distribution::Normal(0.0, 1.0),
        &device,
    );
    let t0 = Instant::now();
    let image = vae.decode(latents)?;
    println!(
        "{size}x{size} {tiling:?}: {:?} in {:?}",
        image.dims(),
        t0.elapsed()
    );
    Ok(())
}
