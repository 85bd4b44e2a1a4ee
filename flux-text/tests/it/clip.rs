//! CLIP text encoder parity with transformers' `CLIPTextModel` (fixtures of
//! `scripts/reference/gen_text.py`), loading layouts, pooling and errors.

use crate::common::{Fx, Nd, fixture, ids, max_abs_err, read};
use burn::tensor::{Int, Tensor, TensorData};
use flux_nn::FluxBackend;
use flux_text::{ClipConfig, ClipTextEncoder, Error, LoadConfig, load_clip, load_clip_with};

const IO: &str = "clip_io.safetensors";

fn check<B: FluxBackend>(
    model: &ClipTextEncoder<B>,
    suffix: &str,
    device: &B::Device,
) -> (f32, f32) {
    let out = model.forward(ids::<B>(IO, "ids", device));
    let hidden = max_abs_err(
        out.last_hidden_state,
        &read(IO, &format!("last_hidden_state{suffix}")),
    );
    let pooled = max_abs_err(out.pooled, &read(IO, &format!("pooled{suffix}")));
    println!(
        "CLIP{suffix} ({}): last_hidden_state {hidden:.3e}, pooled {pooled:.3e}",
        std::any::type_name::<B>()
    );
    (hidden, pooled)
}

#[test]
fn hf_folder_matches_transformers() {
    let device = Default::default();
    let model = load_clip::<Nd>(fixture("clip"), &device).unwrap();
    assert_eq!(model.config(), &ClipConfig::tiny());
    let (hidden, pooled) = check(&model, "", &device);
    assert!(hidden <= 1e-4 && pooled <= 1e-4);
}

#[test]
fn hf_folder_matches_transformers_on_flex() {
    let device = Default::default();
    let model = load_clip::<Fx>(fixture("clip"), &device).unwrap();
    let (hidden, pooled) = check(&model, "", &device);
    assert!(hidden <= 1e-4 && pooled <= 1e-4);
}

#[test]
fn bf16_single_file_with_projection_matches() {
    // ComfyUI-style file: no config.json, bf16, an extra `text_projection.weight` (ignored).
    // The head count is not stored: the tiny model's is passed explicitly.
    let device = Default::default();
    let path = fixture("clip_l_bf16.safetensors");
    let model = load_clip_with::<Nd>(&path, &device, cfg(ClipConfig::tiny())).unwrap();
    let (hidden, pooled) = check(&model, "_bf16", &device);
    assert!(hidden <= 1e-4 && pooled <= 1e-4);
}

#[test]
fn inference_reads_sizes_and_assumes_64_wide_heads() {
    let device = Default::default();
    let model = load_clip::<Nd>(fixture("clip_l_bf16.safetensors"), &device).unwrap();
    let expected = ClipConfig {
        num_attention_heads: 1,
        ..ClipConfig::tiny()
    };
    assert_eq!(model.config(), &expected);
}

#[test]
fn pooled_row_is_the_first_eos() {
    // Row 0 of the fixture closes at position 9 (EOS = 999 = the largest id) and pads with EOS.
    let device = Default::default();
    let model = load_clip::<Nd>(fixture("clip"), &device).unwrap();
    let out = model.forward(ids::<Nd>(IO, "ids", &device));
    let at_eos = out.last_hidden_state.slice([0..1, 9..10]).reshape([1, 64]);
    let row0 = out.pooled.slice([0..1, 0..64]);
    assert_eq!(at_eos.into_data(), row0.into_data());
}

#[test]
fn too_long_or_out_of_vocab_is_an_error() {
    let device = Default::default();
    let model = load_clip::<Nd>(fixture("clip"), &device).unwrap();
    let long = Tensor::<Nd, 2, Int>::zeros([1, 78], &device);
    assert!(matches!(model.try_forward(long), Err(Error::BadInput(_))));
    let ids = Tensor::<Nd, 2, Int>::from_data(TensorData::new(vec![0i64, 1000], [1, 2]), &device);
    assert!(matches!(model.try_forward(ids), Err(Error::BadInput(_))));
}

#[test]
fn t5_weights_are_not_clip() {
    let err = load_clip::<Nd>(fixture("t5_bf16.safetensors"), &Default::default()).unwrap_err();
    assert!(
        err.to_string()
            .contains("text_model.embeddings.token_embedding.weight"),
        "{err}"
    );
}

/// Options with an explicit config.
fn cfg<C>(config: C) -> LoadConfig<C> {
    LoadConfig {
        config: Some(config),
        dtype: None,
        ..Default::default()
    }
}
