//! Every load error provoked, and its message checked.

use std::collections::HashMap;
use std::path::Path;

use crate::common::{B, fixture};
use flux_io::Weights;
use flux_vae::{AutoEncoderConfig, LoadConfig, load, load_with};

/// Writes the BFL fixture's tensors, edited by `edit`, to `path` (as f32).
fn rewrite(path: &Path, edit: impl FnOnce(&mut HashMap<String, (Vec<usize>, Vec<f32>)>)) {
    let w = Weights::open(fixture("ae_tiny.safetensors")).unwrap();
    let mut t: HashMap<String, (Vec<usize>, Vec<f32>)> = w
        .keys()
        .map(|k| {
            let d = w.data(k).unwrap().convert::<f32>();
            (
                k.to_string(),
                (d.shape.to_vec(), d.to_vec::<f32>().unwrap()),
            )
        })
        .collect();
    edit(&mut t);
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = t
        .into_iter()
        .map(|(k, (s, v))| (k, s, v.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect();
    let views: Vec<(&str, safetensors::tensor::TensorView<'_>)> = bytes
        .iter()
        .map(|(k, s, b)| {
            let v = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b);
            (k.as_str(), v.unwrap())
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

fn err_bfl(path: &Path) -> String {
    load_with::<B>(path, &Default::default(), tiny())
        .unwrap_err()
        .to_string()
}

#[test]
fn missing_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ae.safetensors");
    rewrite(&path, |t| {
        t.remove("decoder.up.2.block.1.conv2.weight");
    });
    let e = err_bfl(&path);
    assert!(
        e.contains("missing key") && e.contains("decoder.up.2.block.1.conv2.weight"),
        "{e}"
    );
}

#[test]
fn missing_key_named_in_diffusers_layout() {
    let dir = tempfile::tempdir().unwrap();
    let src = Weights::open(fixture("diffusers/vae")).unwrap();
    assert!(src.contains("decoder.up_blocks.2.resnets.0.conv_shortcut.weight"));
    // Same file without config.json: FLUX's 32 groups would not fit, so give the config.
    let path = dir.path().join("vae.safetensors");
    let keep: Vec<String> = src
        .keys()
        .filter(|k| *k != "encoder.mid_block.attentions.0.to_q.weight")
        .map(str::to_string)
        .collect();
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = keep
        .iter()
        .map(|k| {
            let d = src.data(k).unwrap().convert::<f32>();
            (k.clone(), d.shape.to_vec(), d.as_bytes().to_vec())
        })
        .collect();
    let views: Vec<(&str, safetensors::tensor::TensorView<'_>)> = data
        .iter()
        .map(|(k, s, b)| {
            let v = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b);
            (k.as_str(), v.unwrap())
        })
        .collect();
    safetensors::serialize_to_file(views, None, &path).unwrap();
    let e = err_bfl(&path);
    assert!(
        e.contains("encoder.mid_block.attentions.0.to_q.weight"),
        "{e}"
    );
}

#[test]
fn shape_mismatch_names_key_and_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ae.safetensors");
    rewrite(&path, |t| {
        t.insert("encoder.norm_out.weight".into(), (vec![7], vec![1.0; 7]));
    });
    let e = err_bfl(&path);
    assert!(
        e.contains("shape mismatch") && e.contains("encoder.norm_out.weight"),
        "{e}"
    );
    assert!(e.contains("[24]") && e.contains("[7]"), "{e}");
}

#[test]
fn unexpected_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ae.safetensors");
    rewrite(&path, |t| {
        t.insert("encoder.extra.weight".into(), (vec![2], vec![0.0; 2]));
    });
    let e = err_bfl(&path);
    assert!(
        e.contains("unexpected") && e.contains("encoder.extra.weight"),
        "{e}"
    );
}

#[test]
fn nan_weight_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ae.safetensors");
    rewrite(&path, |t| {
        t.get_mut("decoder.conv_out.bias").unwrap().1[0] = f32::NAN;
    });
    let e = err_bfl(&path);
    assert!(e.contains("decoder.conv_out.bias"), "{e}");
}

#[test]
fn truncated_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ae.safetensors");
    let bytes = std::fs::read(fixture("ae_tiny.safetensors")).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let e = err_bfl(&path);
    assert!(e.contains("truncated or corrupt"), "{e}");
    let e = load::<B>(&path, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("truncated or corrupt"), "{e}");
}

#[test]
fn missing_file_and_bad_config_json() {
    let e = load::<B>("/nonexistent/ae.safetensors", &Default::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/ae.safetensors"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    let vae = dir.path().join("vae");
    std::fs::create_dir(&vae).unwrap();
    std::fs::copy(
        fixture("diffusers/vae/diffusion_pytorch_model.safetensors"),
        vae.join("diffusion_pytorch_model.safetensors"),
    )
    .unwrap();
    std::fs::write(vae.join("config.json"), "{ not json").unwrap();
    let e = load::<B>(&vae, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("bad config") && e.contains("vae/config.json"),
        "{e}"
    );
}

#[test]
fn invalid_config_is_an_error() {
    let config = AutoEncoderConfig {
        norm_groups: 3,
        ..AutoEncoderConfig::tiny()
    };
    let e = config.validate().unwrap_err().to_string();
    assert!(e.contains("3 GroupNorm groups"), "{e}");
    let init = std::panic::catch_unwind(|| config.init::<B>(&Default::default()));
    let message = init
        .map(|_| ())
        .expect_err("init of an invalid config must not build a model");
    let message = message.downcast_ref::<String>().expect("a formatted panic");
    assert_eq!(*message, e);
    // Loading with it is an error, not a panic.
    let options = LoadConfig {
        config: Some(config),
        dtype: None,
        ..Default::default()
    };
    let e = load_with::<B>(fixture("ae_tiny.safetensors"), &Default::default(), options)
        .unwrap_err()
        .to_string();
    assert!(e.contains("3 GroupNorm groups"), "{e}");
}

/// Options with the tiny config.
fn tiny() -> LoadConfig {
    LoadConfig {
        config: Some(AutoEncoderConfig::tiny()),
        dtype: None,
        ..Default::default()
    }
}
