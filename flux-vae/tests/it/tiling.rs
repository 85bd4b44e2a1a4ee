//! Tiled encode/decode against untiled, and input checks.

use std::time::Instant;

use crate::common::{B, fixture, fixture_tensor, io, max_abs, seeded};
use burn::tensor::Tensor;
use flux_vae::{TileConfig, Tiling};

fn vae(tiling: Tiling) -> flux_vae::AutoEncoder<B> {
    flux_vae::load::<B>(fixture("diffusers/vae"), &Default::default())
        .unwrap()
        .with_tiling(tiling)
}

#[test]
fn tiled_decode_close_to_untiled() {
    let device = Default::default();
    // 48x40 latents -> 384x320 image; tiles of 24 latents overlapping by 8: 3x2 tiles.
    let latents = seeded::<B>([1, 16, 48, 40], 7, &device);
    let t0 = Instant::now();
    let full = vae(Tiling::Never).decode(latents.clone()).unwrap();
    let t_full = t0.elapsed();
    let tiles = TileConfig {
        tile: 24,
        overlap: 8,
    };
    let t0 = Instant::now();
    let tiled = vae(Tiling::Always(tiles)).decode(latents.clone()).unwrap();
    let t_tiled = t0.elapsed();
    let range: f32 = full.clone().abs().max().into_scalar();
    let err = max_abs(tiled.clone(), full.clone());
    let mean: f32 = (tiled.clone() - full.clone()).abs().mean().into_scalar();
    eprintln!(
        "decode 384x320: untiled {t_full:?}, tiled {t_tiled:?}; tiled vs untiled max {err:.3e}, mean {mean:.3e}, output range {range:.2}"
    );
    // The mid attention sees one tile instead of the whole latent: not exact, but close.
    assert!(mean < 0.02 * range, "mean {mean} vs range {range}");
    assert!(err < 0.25 * range, "max {err} vs range {range}");
    // Auto chooses tiles above its threshold and matches Always with the same tiles.
    let auto = vae(Tiling::Auto {
        tiles,
        above: 32 * 32,
    })
    .decode(latents)
    .unwrap();
    assert_eq!(max_abs(auto, tiled), 0.0);
}

#[test]
fn one_tile_is_exact() {
    let device = Default::default();
    let tiles = TileConfig {
        tile: 64,
        overlap: 16,
    };
    let latents = io::<B>("latents_in", &device);
    let tiled = vae(Tiling::Always(tiles)).decode(latents).unwrap();
    assert!(max_abs(tiled, io::<B>("decoded", &device)) <= 1e-4);
}

#[test]
fn tiled_encode_close_to_untiled() {
    let device = Default::default();
    let image = seeded::<B>([1, 3, 256, 192], 11, &device).clamp(-1.0, 1.0);
    let full = vae(Tiling::Never).encode(image.clone()).unwrap();
    let tiles = TileConfig {
        tile: 16,
        overlap: 6,
    };
    let tiled = vae(Tiling::Always(tiles)).encode(image).unwrap();
    let range: f32 = full.clone().abs().max().into_scalar();
    let err = max_abs(tiled.clone(), full.clone());
    let mean: f32 = (tiled - full).abs().mean().into_scalar();
    eprintln!("encode 256x192: tiled vs untiled max {err:.3e}, mean {mean:.3e}, range {range:.2}");
    assert!(mean < 0.05 * range, "mean {mean} vs range {range}");
}

#[test]
fn bad_inputs_are_errors() {
    let device = Default::default();
    let v = vae(Tiling::default());
    let e = v
        .encode(Tensor::<B, 4>::zeros([1, 3, 60, 48], &device))
        .unwrap_err()
        .to_string();
    assert!(e.contains("60x48") && e.contains("multiple of 8"), "{e}");
    let e = v
        .encode(Tensor::<B, 4>::zeros([1, 4, 64, 48], &device))
        .unwrap_err()
        .to_string();
    assert!(e.contains("[1, 4, 64, 48]"), "{e}");
    let e = v
        .decode(Tensor::<B, 4>::zeros([1, 8, 8, 6], &device))
        .unwrap_err()
        .to_string();
    assert!(e.contains("expected [b > 0, 16"), "{e}");
    let nan = Tensor::<B, 4>::zeros([1, 16, 8, 6], &device).div_scalar(0.0);
    let e = v.decode(nan).unwrap_err().to_string();
    assert!(e.contains("NaN"), "{e}");
}

/// Tiled encode and decode against `gen_vae_tiled.py`: the same tiling scheme implemented again
/// in Python around diffusers' encoder and decoder, on seeded inputs (tiles of 8 latents
/// overlapping by 2: 3x2 tiles).
#[test]
fn tiled_matches_the_reference_tiling() {
    let device = Default::default();
    let tiles = TileConfig {
        tile: 8,
        overlap: 2,
    };
    let vae = vae(Tiling::Always(tiles));
    let read = |key: &str| fixture_tensor::<B>("tiled.safetensors", key, &device);
    let dec = max_abs(vae.decode(read("latents")).unwrap(), read("decoded"));
    let enc = max_abs(vae.encode(read("image")).unwrap(), read("encoded"));
    eprintln!("tiled vs reference tiling: decode max abs err {dec:.3e}, encode {enc:.3e}");
    assert!(dec <= 1e-4, "tiled decode {dec}");
    assert!(enc <= 1e-4, "tiled encode {enc}");
}
