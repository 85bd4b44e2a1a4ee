//! Every loading and input error provoked on purpose, with its message checked.

use std::collections::BTreeMap;
use std::path::Path;

use crate::common::{Inputs, fixture};
use burn::backend::NdArray;
use burn::tensor::Tensor;
use flux_core::{Error, FluxConfig, LoadConfig};
use flux_io::{SafetensorsFile, Weights};
use safetensors::Dtype;
use safetensors::tensor::TensorView;

type B = NdArray<f32>;

/// All tensors of a file as (dtype, shape, bytes), to be edited and written back.
pub type Tensors = BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>;

fn read_all(path: &Path) -> Tensors {
    let file = SafetensorsFile::open(path).unwrap();
    file.names()
        .map(|n| {
            let info = file.info(n).unwrap();
            (
                n.to_string(),
                (
                    info.dtype,
                    info.shape.clone(),
                    file.bytes(n).unwrap().to_vec(),
                ),
            )
        })
        .collect()
}

fn write_all(tensors: &Tensors, path: &Path) {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(k, (d, s, b))| (k.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// Writes a copy of the safetensors file `src` edited by `edit` to `dst`.
pub fn edit_file(src: &Path, dst: &Path, edit: impl FnOnce(&mut Tensors)) {
    let mut tensors = read_all(src);
    edit(&mut tensors);
    write_all(&tensors, dst);
}

/// Loads a copy of the tiny [dev] BFL file edited by `edit`.
fn load_edited(edit: impl FnOnce(&mut Tensors)) -> Result<flux_core::Flux<B>, Error> {
    load_edited_with(edit, LoadConfig::default())
}

/// [`load_edited`] with load options.
pub fn load_edited_with(
    edit: impl FnOnce(&mut Tensors),
    options: LoadConfig,
) -> Result<flux_core::Flux<B>, Error> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edited.safetensors");
    edit_file(&fixture("dev_tiny/bfl.safetensors"), &path, edit);
    flux_core::load_with::<B>(&path, &Default::default(), options)
}

pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[test]
fn missing_keys_are_all_named() {
    let err = load_edited(|t| {
        t.remove("double_blocks.0.img_attn.proj.weight");
        t.remove("single_blocks.1.linear2.bias");
    })
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, Error::Load(flux_io::Error::MissingKeys(ref k)) if k.len() == 2),
        "{msg}"
    );
    assert!(
        msg.contains("double_blocks.0.img_attn.proj.weight"),
        "{msg}"
    );
    assert!(msg.contains("single_blocks.1.linear2.bias"), "{msg}");
}

#[test]
fn unexpected_keys_are_listed() {
    let err = load_edited(|t| {
        t.insert(
            "double_blocks.0.extra.weight".into(),
            (Dtype::F32, vec![2], f32_bytes(&[1.0, 2.0])),
        );
    })
    .unwrap_err();
    assert!(
        matches!(err, Error::Load(flux_io::Error::UnexpectedKeys(_))),
        "{err}"
    );
    assert!(
        err.to_string().contains("double_blocks.0.extra.weight"),
        "{err}"
    );
}

#[test]
fn shape_mismatch_names_key_expected_and_found() {
    let err = load_edited(|t| {
        t.insert(
            "txt_in.bias".into(),
            (Dtype::F32, vec![65], f32_bytes(&[0.5; 65])),
        );
    })
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, Error::Load(flux_io::Error::ShapeMismatch { .. })),
        "{msg}"
    );
    assert!(
        msg.contains("txt_in.bias") && msg.contains("[64]") && msg.contains("[65]"),
        "{msg}"
    );
}

#[test]
fn linear_shape_mismatch_is_reported_in_checkpoint_convention() {
    // A transposed linear weight: the error shows PyTorch's [out, in] convention.
    let err = load_edited(|t| {
        let (_, shape, bytes) = t.remove("double_blocks.0.img_attn.proj.weight").unwrap();
        t.insert(
            "double_blocks.0.img_attn.proj.weight".into(),
            (Dtype::F32, vec![shape[0] / 2, shape[1] * 2], bytes),
        );
    })
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("img_attn.proj.weight")
            && msg.contains("[64, 64]")
            && msg.contains("[32, 128]"),
        "{msg}"
    );
}

#[test]
fn unsupported_dtype_is_named() {
    let err = load_edited(|t| {
        let (_, shape, bytes) = t.remove("txt_in.bias").unwrap();
        t.insert("txt_in.bias".into(), (Dtype::I32, shape, bytes));
    })
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, Error::Load(flux_io::Error::UnsupportedDtype { .. })),
        "{msg}"
    );
    assert!(msg.contains("txt_in.bias") && msg.contains("I32"), "{msg}");
}

#[test]
fn nan_weights_are_rejected() {
    let err = load_edited(|t| {
        let mut values = vec![0.0f32; 64];
        values[3] = f32::NAN;
        t.insert(
            "txt_in.bias".into(),
            (Dtype::F32, vec![64], f32_bytes(&values)),
        );
    })
    .unwrap_err();
    assert!(
        matches!(err, Error::Load(flux_io::Error::NonFinite(ref k)) if k == "txt_in.bias"),
        "{err}"
    );
}

#[test]
fn nan_linear_weights_are_rejected() {
    // Linear weights take their own read on the CPU backends (transposed straight from the
    // file): f32 and bf16 stored, a NaN and an infinity.
    let mut f32_values = vec![0.0f32; 64 * 48];
    f32_values[100] = f32::NAN;
    let mut bf16_bytes = vec![0u8; 64 * 48 * 2];
    bf16_bytes[2 * 77..2 * 78].copy_from_slice(&0x7f80u16.to_le_bytes());
    for (dtype, bytes) in [
        (Dtype::F32, f32_bytes(&f32_values)),
        (Dtype::BF16, bf16_bytes),
    ] {
        let err = load_edited(|t| {
            t.insert("txt_in.weight".into(), (dtype, vec![64, 48], bytes));
        })
        .unwrap_err();
        assert!(
            matches!(err, Error::Load(flux_io::Error::NonFinite(ref k)) if k == "txt_in.weight"),
            "{dtype:?}: {err}"
        );
    }
}

#[test]
fn truncated_file_is_corrupt() {
    let bytes = std::fs::read(fixture("dev_tiny/bfl.safetensors")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("truncated.safetensors");
    std::fs::write(&path, &bytes[..bytes.len() - 1000]).unwrap();
    let err = flux_core::load::<B>(&path, &Default::default()).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, Error::Load(flux_io::Error::Corrupt { .. })),
        "{msg}"
    );
    assert!(
        msg.contains("truncated.safetensors") && msg.contains("truncated or corrupt"),
        "{msg}"
    );
}

#[test]
fn garbage_file_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.safetensors");
    std::fs::write(&path, b"this is not a safetensors file at all").unwrap();
    let err = flux_core::load::<B>(&path, &Default::default()).unwrap_err();
    assert!(
        matches!(err, Error::Load(flux_io::Error::Corrupt { .. })),
        "{err}"
    );
}

#[test]
fn missing_path_is_an_io_error() {
    let err = flux_core::load::<B>("/nonexistent/flux1-dev.safetensors", &Default::default())
        .unwrap_err();
    assert!(
        matches!(err, Error::Load(flux_io::Error::Io { .. })),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("/nonexistent/flux1-dev.safetensors"),
        "{err}"
    );
}

#[test]
fn empty_folder_has_no_weights() {
    let dir = tempfile::tempdir().unwrap();
    let err = flux_core::load::<B>(dir.path(), &Default::default()).unwrap_err();
    assert!(
        matches!(err, Error::Load(flux_io::Error::NoWeights(_))),
        "{err}"
    );
    assert!(err.to_string().contains("no .safetensors weights"), "{err}");
}

#[test]
fn shard_index_pointing_nowhere_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("diffusion_pytorch_model.safetensors.index.json"),
        r#"{"metadata": {}, "weight_map": {"x_embedder.weight": "diffusion_pytorch_model-00001-of-00002.safetensors"}}"#,
    )
    .unwrap();
    let err = flux_core::load::<B>(dir.path(), &Default::default()).unwrap_err();
    assert!(
        matches!(err, Error::Load(flux_io::Error::BadIndex { .. })),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("diffusion_pytorch_model-00001-of-00002.safetensors"),
        "{err}"
    );
}

#[test]
fn unknown_layout_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vae.safetensors");
    let mut t = Tensors::new();
    t.insert(
        "decoder.conv_in.weight".into(),
        (Dtype::F32, vec![1], f32_bytes(&[1.0])),
    );
    write_all(&t, &path);
    let err = flux_core::load::<B>(&path, &Default::default()).unwrap_err();
    assert!(
        matches!(err, Error::Load(flux_io::Error::UnknownLayout(_))),
        "{err}"
    );
    assert!(err.to_string().contains("decoder.conv_in.weight"), "{err}");
}

#[test]
fn duplicate_keys_across_shards_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = Tensors::new();
    t.insert(
        "img_in.weight".into(),
        (Dtype::F32, vec![1], f32_bytes(&[1.0])),
    );
    write_all(&t, &dir.path().join("a.safetensors"));
    write_all(&t, &dir.path().join("b.safetensors"));
    let err = Weights::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, flux_io::Error::DuplicateKey { ref key, .. } if key == "img_in.weight"),
        "{err}"
    );
}

#[test]
fn invalid_configs_are_rejected() {
    let cases = [
        (
            FluxConfig {
                num_heads: 5,
                ..FluxConfig::tiny()
            },
            "not divisible",
        ),
        (
            FluxConfig {
                axes_dim: [4, 14, 12],
                ..FluxConfig::tiny()
            },
            "sums to 30",
        ),
        (
            FluxConfig {
                axes_dim: [5, 13, 14],
                ..FluxConfig::tiny()
            },
            "even",
        ),
        (
            FluxConfig {
                num_heads: 0,
                ..FluxConfig::tiny()
            },
            "positive",
        ),
    ];
    for (config, expected) in cases {
        let err = config.validate().unwrap_err();
        assert!(
            err.to_string().contains(expected),
            "{err} should mention {expected}"
        );
        let init = std::panic::catch_unwind(|| config.init::<B>(&Default::default()));
        let message = init
            .map(|_| ())
            .expect_err("init of an invalid config must not build a model");
        let message = message.downcast_ref::<String>().expect("a formatted panic");
        assert_eq!(*message, err.to_string());
    }
    FluxConfig::dev().validate().unwrap();
    FluxConfig::schnell().validate().unwrap();
}

#[test]
fn bad_forward_inputs_are_errors() {
    let device = Default::default();
    let io = Weights::open(fixture("dev_tiny/io.safetensors")).unwrap();
    let model = flux_core::load::<B>(fixture("dev_tiny/bfl.safetensors"), &device).unwrap();
    let x = Inputs::<B>::read(&io, &device);
    let run = |img: Tensor<B, 3>, txt: Tensor<B, 3>, guidance: Option<Tensor<B, 1>>| {
        model.try_forward(
            img,
            x.img_ids.clone(),
            txt,
            x.txt_ids.clone(),
            x.timesteps.clone(),
            x.y.clone(),
            guidance,
        )
    };
    let err = run(x.img.clone(), x.txt.clone(), None).unwrap_err();
    assert!(
        err.to_string().contains("guidance value is required"),
        "{err}"
    );
    let err = run(
        x.img.clone().narrow(2, 0, 32),
        x.txt.clone(),
        x.guidance.clone(),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("img has shape [2, 24, 32], expected [2, 24, 64]"),
        "{err}"
    );
    let err = run(
        x.img.clone(),
        x.txt.clone().narrow(1, 0, 3),
        x.guidance.clone(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("txt_ids"), "{err}");
}

#[test]
fn one_by_one_conv_shapes_load_into_linear_layers() {
    // `[out, in, 1, 1]` is the same linear map as `[out, in]` (how 1x1 convs are stored).
    let model = load_edited(|t| {
        let (d, shape, bytes) = t.remove("double_blocks.0.img_attn.proj.weight").unwrap();
        t.insert(
            "double_blocks.0.img_attn.proj.weight".into(),
            (d, vec![shape[0], shape[1], 1, 1], bytes),
        );
    });
    assert!(model.is_ok(), "{:?}", model.err());
    // Any other reshape is still a mismatch.
    let err = load_edited(|t| {
        let (d, _, bytes) = t.remove("double_blocks.0.img_attn.proj.weight").unwrap();
        t.insert(
            "double_blocks.0.img_attn.proj.weight".into(),
            (d, vec![64, 1, 64], bytes),
        );
    })
    .unwrap_err();
    assert!(
        matches!(err, Error::Load(flux_io::Error::ShapeMismatch { .. })),
        "{err}"
    );
}
