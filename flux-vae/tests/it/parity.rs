//! Encode/decode parity with diffusers' `AutoencoderKL` (fixtures from gen_vae.py).

use crate::common::{B, fixture, io, max_abs};
use flux_nn::FluxBackend;
use flux_vae::{AutoEncoder, AutoEncoderConfig, Tiling};

const TOL: f32 = 1e-4;

fn check<Bk: FluxBackend>(
    vae: &AutoEncoder<Bk>,
    device: &Bk::Device,
    decoded_key: &str,
    tag: &str,
) {
    let vae_untiled = vae;
    assert_eq!(vae_untiled.config().downscale(), 8);
    let latents = vae.encode(io::<Bk>("image", device)).unwrap();
    let enc = max_abs(latents, io::<Bk>("latents", device));
    let image = vae.decode(io::<Bk>("latents_in", device)).unwrap();
    let dec = max_abs(image, io::<Bk>(decoded_key, device));
    eprintln!("{tag}: encode max abs err {enc:.3e}, decode {dec:.3e}");
    assert!(enc <= TOL, "{tag} encode error {enc}");
    assert!(dec <= TOL, "{tag} decode error {dec}");
}

#[test]
fn diffusers_folder_infers_config() {
    let device = Default::default();
    let vae = flux_vae::load::<B>(fixture("diffusers/vae"), &device).unwrap();
    assert_eq!(vae.config(), &AutoEncoderConfig::tiny());
    check(&vae, &device, "decoded", "diffusers folder");
}

#[test]
fn diffusers_pipeline_root_and_file() {
    let device = Default::default();
    let vae = flux_vae::load::<B>(fixture("diffusers"), &device).unwrap();
    assert_eq!(vae.config().norm_groups, 4);
    let file = fixture("diffusers/vae/diffusion_pytorch_model.safetensors");
    let vae = flux_vae::load::<B>(file, &device).unwrap();
    // config.json next to the file is read too.
    assert_eq!(vae.config(), &AutoEncoderConfig::tiny());
    check(&vae, &device, "decoded", "diffusers file");
}

#[test]
fn bfl_layout() {
    let device = Default::default();
    let path = fixture("ae_tiny.safetensors");
    // Shapes give everything but the group count; FLUX's 32 does not divide 8 channels.
    let inferred = flux_vae::load::<B>(&path, &device).unwrap_err().to_string();
    assert!(
        inferred.contains("cannot be split into 32 GroupNorm groups"),
        "{inferred}"
    );
    let vae = load_tiny(&path);
    check(&vae, &device, "decoded", "BFL f32");
}

#[test]
fn bfl_bf16_stored() {
    let device = Default::default();
    let path = fixture("ae_tiny_bf16.safetensors");
    let vae = load_tiny(&path);
    let image = vae.decode(io::<B>("latents_in", &device)).unwrap();
    let dec = max_abs(image, io::<B>("decoded_bf16", &device));
    eprintln!("BFL bf16: decode max abs err {dec:.3e}");
    assert!(dec <= TOL, "bf16 decode error {dec}");
}

#[test]
fn flex_backend() {
    type F = burn::backend::Flex;
    let device = Default::default();
    let vae = flux_vae::load::<F>(fixture("diffusers/vae"), &device).unwrap();
    check(&vae, &device, "decoded", "diffusers on Flex");
}

#[test]
fn sampling_with_zero_noise_is_the_mode() {
    let device = Default::default();
    let vae = flux_vae::load::<B>(fixture("diffusers/vae"), &device)
        .unwrap()
        .with_tiling(Tiling::Never);
    let image = io::<B>("image", &device);
    let mode = vae.encode(image.clone()).unwrap();
    let zero = vae.encode_sample(image.clone(), mode.zeros_like()).unwrap();
    assert!(max_abs(zero, mode.clone()) == 0.0);
    let noisy = vae.encode_sample(image, mode.ones_like()).unwrap();
    assert!(max_abs(noisy, mode) > 1e-3);
}

/// A BFL-layout tiny VAE (its group count is not in the shapes: given explicitly).
fn load_tiny(path: &std::path::Path) -> AutoEncoder<B> {
    let options = flux_vae::LoadConfig {
        config: Some(AutoEncoderConfig::tiny()),
        dtype: None,
        ..Default::default()
    };
    flux_vae::load_with::<B>(path, &Default::default(), options).unwrap()
}
