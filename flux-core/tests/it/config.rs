//! Config inference from checkpoints, presets, packing and position ids.

use crate::common::fixture;
use burn::backend::NdArray;
use burn::tensor::{Tensor, TensorData};
use flux_core::{CheckpointLayout, FluxConfig, read_config};
use flux_io::Weights;

type B = NdArray<f32>;

#[test]
fn presets_match_the_released_models() {
    let dev = FluxConfig::dev();
    assert_eq!(
        (
            dev.hidden_size,
            dev.num_heads,
            dev.depth,
            dev.depth_single_blocks
        ),
        (3072, 24, 19, 38)
    );
    assert_eq!(dev.axes_dim, [16, 56, 56]);
    assert_eq!(dev.head_dim(), 128);
    assert_eq!(dev.mlp_hidden_dim(), 12288);
    assert!(dev.guidance_embed && !FluxConfig::schnell().guidance_embed);
    assert_eq!(FluxConfig::default_axes_dim(128), Some([16, 56, 56]));
    assert_eq!(FluxConfig::default_axes_dim(16), None);
}

#[test]
fn config_is_inferred_from_every_layout() {
    let expected = FluxConfig {
        vec_in_dim: 32,
        context_in_dim: 48,
        ..FluxConfig::tiny()
    };
    for file in [
        "bfl.safetensors",
        "bfl_bf16.safetensors",
        "diffusers",
        "diffusers_f16.safetensors",
        "comfy_fp8_scaled.safetensors",
    ] {
        let model = flux_core::load::<B>(fixture(&format!("dev_tiny/{file}")), &Default::default())
            .unwrap();
        assert_eq!(model.config(), &expected, "{file}");
    }
    let schnell =
        flux_core::load::<B>(fixture("schnell_tiny/bfl.safetensors"), &Default::default()).unwrap();
    assert_eq!(
        schnell.config(),
        &FluxConfig {
            guidance_embed: false,
            depth_single_blocks: 1,
            ..expected.clone()
        }
    );
}

#[test]
fn rope_axes_come_from_config_json() {
    let path = fixture("heads4/diffusers");
    let weights = Weights::open(&path).unwrap();
    let layout = CheckpointLayout::detect(&weights).unwrap();
    assert_eq!(layout, CheckpointLayout::Diffusers);
    let config = read_config(&path).unwrap();
    assert_eq!(
        (config.num_heads, config.depth, config.axes_dim),
        (4, 2, [4, 6, 6])
    );
    // Without config.json, head dim 16 has no standard split: a clear error, not a guess.
    let bare = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&path).unwrap() {
        let entry = entry.unwrap().path();
        if entry.extension().is_some_and(|e| e == "safetensors") {
            std::fs::copy(&entry, bare.path().join(entry.file_name().unwrap())).unwrap();
        }
    }
    let err = read_config(bare.path()).unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot infer the RoPE axes for head dimension 16"),
        "{err}"
    );
}

#[test]
fn comfy_prefix_is_detected() {
    let weights = Weights::open(fixture("dev_tiny/comfy_fp8_scaled.safetensors")).unwrap();
    assert_eq!(
        CheckpointLayout::detect(&weights).unwrap(),
        CheckpointLayout::Bfl {
            prefix: "model.diffusion_model.".into()
        }
    );
}

#[test]
fn pack_unpack_round_trip_and_order() {
    let device = Default::default();
    let latents = Tensor::<B, 1, burn::tensor::Int>::arange(0..2 * 16 * 4 * 6, &device)
        .float()
        .reshape([2, 16, 4, 6]);
    let tokens = flux_core::pack(latents.clone()).unwrap();
    assert_eq!(tokens.dims(), [2, 6, 64]);
    // Token 1 is the patch at latent rows 0..2, cols 2..4; channel-major (c, ph, pw) inside.
    let t: Vec<f32> = tokens.clone().narrow(1, 1, 1).into_data().to_vec().unwrap();
    let at = |b: usize, c: usize, y: usize, x: usize| ((b * 16 + c) * 4 + y) * 6 + x;
    assert_eq!(
        &t[..5],
        &[
            at(0, 0, 0, 2),
            at(0, 0, 0, 3),
            at(0, 0, 1, 2),
            at(0, 0, 1, 3),
            at(0, 1, 0, 2)
        ]
        .map(|v| v as f32)
    );
    let back = flux_core::unpack(tokens, 4, 6).unwrap();
    back.into_data().assert_eq(&latents.into_data(), true);
    let odd = flux_core::pack(Tensor::<B, 4>::zeros([1, 16, 3, 4], &device)).unwrap_err();
    assert!(odd.to_string().contains("3x4 must be even"), "{odd}");
    let misfit = flux_core::unpack(Tensor::<B, 3>::zeros([1, 5, 64], &device), 4, 6).unwrap_err();
    assert!(
        misfit.to_string().contains("[1, 5, 64] into a 4x6"),
        "{misfit}"
    );
}

#[test]
fn position_ids() {
    let device = Default::default();
    let ids = flux_core::img_ids::<B>(2, 32, 48, &device).unwrap();
    assert_eq!(ids.dims(), [2, 6, 3]);
    let expected: Vec<f32> = vec![
        0., 0., 0., 0., 0., 1., 0., 0., 2., 0., 1., 0., 0., 1., 1., 0., 1., 2.,
    ];
    ids.narrow(0, 1, 1)
        .into_data()
        .assert_eq(&TensorData::new(expected, [1, 6, 3]), true);
    assert_eq!(flux_core::txt_ids::<B>(1, 512, &device).dims(), [1, 512, 3]);
    for (w, h) in [(1000, 1024), (1024, 0), (24, 32)] {
        let err = flux_core::img_ids::<B>(1, h, w, &device).unwrap_err();
        assert!(err.to_string().contains("multiple of 16"), "{err}");
    }
}
