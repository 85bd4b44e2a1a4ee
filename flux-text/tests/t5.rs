//! T5 encoder parity with transformers' `T5EncoderModel` (fixtures of
//! `scripts/reference/gen_text.py`), loading layouts, config inference and errors.

mod common;

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use common::{Fx, Nd, fixture, ids, max_abs_err, read};
use flux_text::{Error, T5Config, load_t5, load_t5_with, relative_position_bucket};

fn parity<B: Backend>(path: &str, reference: &str, device: &B::Device) -> f32 {
    let model = load_t5::<B>(fixture(path), device).unwrap();
    let out = model.forward(ids::<B>("t5_io.safetensors", "ids", device));
    let err = max_abs_err(out, &read("t5_io.safetensors", reference));
    println!(
        "T5 {path} ({}): max abs err {err:.3e}",
        std::any::type_name::<B>()
    );
    err
}

#[test]
fn hf_folder_matches_transformers() {
    assert!(parity::<Nd>("t5", "hidden", &Default::default()) <= 1e-4);
}

#[test]
fn hf_folder_matches_transformers_on_flex() {
    assert!(parity::<Fx>("t5", "hidden", &Default::default()) <= 1e-4);
}

#[test]
fn sharded_folder_matches_transformers() {
    assert!(parity::<Nd>("t5_sharded", "hidden", &Default::default()) <= 1e-4);
}

#[test]
fn bf16_single_file_with_duplicate_embedding_matches() {
    // No config.json: the config is inferred; the file holds `shared.weight` and its copy
    // `encoder.embed_tokens.weight`. The reference ran the bf16-rounded weights in f32.
    assert!(parity::<Nd>("t5_bf16.safetensors", "hidden_bf16", &Default::default()) <= 1e-4);
}

#[test]
fn config_is_read_or_inferred() {
    let device = Default::default();
    let from_json = load_t5::<Nd>(fixture("t5"), &device).unwrap();
    let inferred = load_t5::<Nd>(fixture("t5_bf16.safetensors"), &device).unwrap();
    assert_eq!(from_json.config(), &T5Config::tiny());
    assert_eq!(inferred.config(), &T5Config::tiny());
}

#[test]
fn relative_buckets_follow_t5() {
    // Values of transformers' `_relative_position_bucket(bidirectional=True, 32, 128)`.
    let cases = [
        (0, 0),
        (-1, 1),
        (1, 17),
        (-7, 7),
        (-8, 8),
        (-12, 9),
        (-16, 10),
        (-127, 15),
        (-500, 15),
        (8, 24),
        (32, 28),
        (127, 31),
        (1000, 31),
    ];
    for (rel, bucket) in cases {
        assert_eq!(
            relative_position_bucket(rel, 32, 128),
            bucket,
            "relative position {rel}"
        );
    }
}

#[test]
fn bad_ids_are_errors() {
    let device = Default::default();
    let model = load_t5::<Nd>(fixture("t5"), &device).unwrap();
    let ids = Tensor::<Nd, 2, Int>::from_data(TensorData::new(vec![1i64, 300], [1, 2]), &device);
    let err = model.try_forward(ids).unwrap_err();
    assert!(matches!(err, Error::BadInput(_)), "{err}");
    assert!(err.to_string().contains("300"), "{err}");
    let empty =
        Tensor::<Nd, 2, Int>::from_data(TensorData::new(Vec::<i64>::new(), [1, 0]), &device);
    assert!(matches!(model.try_forward(empty), Err(Error::BadInput(_))));
}

#[test]
fn wrong_config_names_the_key() {
    let device = Default::default();
    let config = T5Config {
        d_ff: 48,
        ..T5Config::tiny()
    };
    let err = load_t5_with::<Nd>(fixture("t5"), &device, Some(config), None).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            Error::Checkpoint(flux_core::Error::ShapeMismatch { .. })
        ),
        "{msg}"
    );
    assert!(msg.contains("DenseReluDense.wi_"), "{msg}");
}

#[test]
fn clip_weights_are_not_t5() {
    let err = load_t5::<Nd>(fixture("clip"), &Default::default()).unwrap_err();
    // config.json is CLIP's: it lacks T5's fields.
    assert!(matches!(err, Error::Config(_)), "{err}");
    let err = load_t5::<Nd>(fixture("clip_l_bf16.safetensors"), &Default::default()).unwrap_err();
    assert!(
        err.to_string().contains("shared.weight") || err.to_string().contains("embed_tokens"),
        "{err}"
    );
}

#[test]
fn missing_file_is_an_error() {
    let err = load_t5::<Nd>(fixture("nope.safetensors"), &Default::default()).unwrap_err();
    assert!(matches!(err, Error::Checkpoint(_)), "{err}");
}
