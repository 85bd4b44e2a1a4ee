//! T5 encoder parity with transformers' `T5EncoderModel` (fixtures of
//! `scripts/reference/gen_text.py`), loading layouts, config inference and errors.

use crate::common::{Fx, Nd, fixture, ids, max_abs_err, read};
use burn::tensor::{Int, Tensor, TensorData};
use flux_nn::FluxBackend;
use flux_text::{Error, LoadConfig, T5Config, load_t5, load_t5_with};

fn parity<B: FluxBackend>(path: &str, reference: &str, device: &B::Device) -> f32 {
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
    let err = load_t5_with::<Nd>(
        fixture("t5"),
        &device,
        LoadConfig {
            config: Some(config),
            dtype: None,
            ..Default::default()
        },
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, Error::Load(flux_io::Error::ShapeMismatch { .. })),
        "{msg}"
    );
    assert!(msg.contains("DenseReluDense.wi_"), "{msg}");
}

#[test]
fn clip_weights_are_not_t5() {
    let err = load_t5::<Nd>(fixture("clip"), &Default::default()).unwrap_err();
    // config.json is CLIP's: it lacks T5's fields.
    assert!(
        matches!(err, Error::Load(flux_io::Error::BadConfig { .. })),
        "{err}"
    );
    let err = load_t5::<Nd>(fixture("clip_l_bf16.safetensors"), &Default::default()).unwrap_err();
    assert!(
        err.to_string().contains("shared.weight") || err.to_string().contains("embed_tokens"),
        "{err}"
    );
}

#[test]
fn missing_file_is_an_error() {
    let err = load_t5::<Nd>(fixture("nope.safetensors"), &Default::default()).unwrap_err();
    assert!(matches!(err, Error::Load(_)), "{err}");
}

/// Copies `t5/model.safetensors` into `dir`, renaming (`Some(new)`) or dropping (`None`) keys,
/// plus an optional extra copy of one tensor under another name (`(new, source)`).
fn rewrite(
    dir: &std::path::Path,
    rename: impl Fn(&str) -> Option<String>,
    extra: Option<(&str, &str)>,
) -> std::path::PathBuf {
    use flux_io::SafetensorsFile;
    use safetensors::tensor::TensorView;
    let src = SafetensorsFile::open(fixture("t5/model.safetensors")).unwrap();
    let mut tensors = Vec::new();
    for name in src.names() {
        let Some(new) = rename(name) else { continue };
        let info = src.info(name).unwrap();
        let view =
            TensorView::new(info.dtype, info.shape.clone(), src.bytes(name).unwrap()).unwrap();
        if let Some((copy, _)) = extra.filter(|(_, source)| *source == name) {
            tensors.push((copy.to_string(), view.clone()));
        }
        tensors.push((new, view));
    }
    let path = dir.join("t5.safetensors");
    safetensors::serialize_to_file(tensors, None, &path).unwrap();
    path
}

#[test]
fn embed_tokens_only_file_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = rewrite(
        dir.path(),
        |k| {
            Some(if k == "shared.weight" {
                "encoder.embed_tokens.weight".into()
            } else {
                k.into()
            })
        },
        None,
    );
    let device = Default::default();
    let model = load_t5::<Nd>(&path, &device).unwrap();
    let out = model.forward(ids::<Nd>("t5_io.safetensors", "ids", &device));
    assert!(max_abs_err(out, &read("t5_io.safetensors", "hidden")) <= 1e-4);
}

#[test]
fn missing_and_unexpected_keys_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let wo = "encoder.block.1.layer.1.DenseReluDense.wo.weight";
    let path = rewrite(dir.path(), |k| (k != wo).then(|| k.to_string()), None);
    let err = load_t5::<Nd>(&path, &Default::default()).unwrap_err();
    assert!(
        matches!(&err, Error::Load(flux_io::Error::MissingKeys(keys)) if keys == &[wo]),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let stray = "encoder.block.1.layer.1.DenseReluDense.wx.weight";
    let path = rewrite(dir.path(), |k| Some(k.to_string()), Some((stray, wo)));
    let err = load_t5::<Nd>(&path, &Default::default()).unwrap_err();
    assert!(
        matches!(&err, Error::Load(flux_io::Error::UnexpectedKeys(keys)) if keys == &[stray]),
        "{err}"
    );
}

#[test]
fn t5_v1_0_is_unsupported() {
    let dir = tempfile::tempdir().unwrap();
    let path = rewrite(dir.path(), |k| Some(k.replace("wi_0", "wi")), None);
    let err = load_t5::<Nd>(&path, &Default::default()).unwrap_err();
    assert!(matches!(err, Error::Unsupported(_)), "{err}");
}

#[test]
fn fp8_e4m3fn_single_file_matches() {
    // ComfyUI's t5xxl_fp8_e4m3fn layout: linear weights in fp8, embedding/norms/bias in f16.
    // The reference ran the same rounded weights in f32.
    let err = parity::<Nd>(
        "t5_fp8_e4m3fn.safetensors",
        "hidden_fp8",
        &Default::default(),
    );
    assert!(err <= 1e-4);
}

/// T5 encoder GGUFs in llama.cpp's names (city96's files), quantized by gguf-py, against
/// transformers on gguf-py's dequantized weights (scripts/reference/gen_gguf_t5.py).
#[test]
fn gguf_in_llama_cpp_names() {
    let device = Default::default();
    for ty in ["q8_0", "q4_0"] {
        let model = load_t5::<Nd>(fixture(&format!("t5_gguf/{ty}.gguf")), &device).unwrap();
        assert_eq!(model.config().num_layers, 2);
        let out = model.forward(ids::<Nd>("t5_io.safetensors", "ids", &device));
        let err = max_abs_err(
            out.clone(),
            &read("t5_gguf/expected.safetensors", &format!("hidden_{ty}")),
        );
        let cost = max_abs_err(out, &read("t5_io.safetensors", "hidden"));
        println!(
            "T5 {ty}.gguf: max abs err {err:.3e} vs transformers on the dequantized weights, \
             {cost:.3e} vs the f32 model"
        );
        assert!(err <= 1e-4, "{ty}: {err}");
    }
    // A FLUX GGUF is not a T5 encoder.
    let flux = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../flux-core/tests/fixtures/dev_tiny/gguf/q8_0.gguf"
    );
    let err = load_t5::<Nd>(flux, &device).unwrap_err();
    assert!(err.to_string().contains("`flux`"), "{err}");
}
