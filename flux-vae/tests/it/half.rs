//! Half precision: the autoencoder with f16 and bf16 weights and activations (burn's Flex
//! backend; NdArray has no half tensors) against the f32 reference outputs of diffusers.
//!
//! What stays in f32 inside a half VAE: group-norm statistics, the mid-block attention's
//! scores and softmax, the latent scale/shift and the blending of tiles. Inputs and outputs
//! keep the caller's dtype (f32 here).

use crate::common::{fixture, io, max_abs};
use burn::backend::Flex;
use burn::tensor::{DType, Tensor};
use flux_vae::{AutoEncoder, AutoEncoderConfig, LoadConfig, TileConfig, Tiling};

fn vae(dtype: DType) -> AutoEncoder<Flex> {
    let options = LoadConfig {
        config: Some(AutoEncoderConfig::tiny()),
        dtype: Some(dtype),
        ..Default::default()
    };
    let vae =
        flux_vae::load_with::<Flex>(fixture("ae_tiny.safetensors"), &Default::default(), options)
            .unwrap();
    assert_eq!(vae.dtype(), dtype);
    vae
}

/// (encode, decode) max abs errors against the f32 reference.
fn half_errors(dtype: DType) -> (f32, f32) {
    let device = Default::default();
    let vae = vae(dtype);
    let latents = vae.encode(io::<Flex>("image", &device)).unwrap();
    assert_eq!(latents.dtype(), DType::F32, "f32 in, f32 out");
    let enc = max_abs(latents, io::<Flex>("latents", &device));
    let image = vae.decode(io::<Flex>("latents_in", &device)).unwrap();
    assert_eq!(image.dtype(), DType::F32);
    let range: f32 = io::<Flex>("decoded", &device).abs().max().into_scalar();
    let dec = max_abs(image, io::<Flex>("decoded", &device));
    eprintln!(
        "VAE {dtype:?} on Flex vs the f32 reference: encode {enc:.3e}, decode {dec:.3e} (image range {range:.2})"
    );
    (enc, dec)
}

// Bounds: twice the measured errors (f16: encode 1.6e-3, decode 1.08e-2; bf16: 9.5e-3 and
// 8.9e-2, on images in [-3, 3]). The convolutions accumulate in f32 (checked on Flex: a bf16
// conv's error is one bf16 rounding of its output), so these are the activations' own rounding
// carried through the 2-level tiny decoder's ~20 convolutions.
#[test]
fn f16_vae_follows_f32() {
    let (enc, dec) = half_errors(DType::F16);
    assert!(
        enc <= 3.2e-3 && dec <= 2.2e-2,
        "f16 encode {enc}, decode {dec}"
    );
}

#[test]
fn bf16_vae_follows_f32() {
    let (enc, dec) = half_errors(DType::BF16);
    assert!(
        enc <= 1.9e-2 && dec <= 0.18,
        "bf16 encode {enc}, decode {dec}"
    );
}

#[test]
fn half_errors_are_rounding_limited() {
    // bf16 keeps 3 fewer mantissa bits than f16: its error should be ~8x f16's (6.1x encode,
    // 8.2x decode measured), as rounding errors scale.
    let (f16, bf16) = (half_errors(DType::F16), half_errors(DType::BF16));
    for ratio in [bf16.0 / f16.0, bf16.1 / f16.1] {
        assert!((3.0..20.0).contains(&ratio), "bf16/f16 error ratio {ratio}");
    }
}

#[test]
fn tiled_half_decode_blends_in_f32() {
    let device = Default::default();
    let tiles = Tiling::Always(TileConfig {
        tile: 4,
        overlap: 2,
    });
    let latents = io::<Flex>("latents_in", &device);
    let f32_tiled = vae(DType::F32)
        .with_tiling(tiles)
        .decode(latents.clone())
        .unwrap();
    let half = vae(DType::F16).with_tiling(tiles).decode(latents).unwrap();
    assert_eq!(half.dtype(), DType::F32);
    let err = max_abs(half, f32_tiled);
    eprintln!("VAE F16 tiled decode vs f32 tiled: {err:.3e}");
    // As untiled f16 (1.27e-2 measured): blending adds no error of its own.
    assert!(err <= 2.5e-2, "{err}");
}

#[test]
fn half_vae_keeps_bad_latents_an_error() {
    let device = Default::default();
    let nan = Tensor::<Flex, 4>::full([1, 16, 4, 4], f32::NAN, &device);
    let e = vae(DType::BF16).decode(nan).unwrap_err();
    assert!(
        matches!(e, flux_vae::Error::NonFinite("the latents to decode")),
        "{e}"
    );
}
