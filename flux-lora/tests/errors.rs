//! LoRA files that must not load, each rejected with the key named, and names for models that
//! take no LoRA reported, not skipped (lenient mode).

use std::path::Path;

use flux_lora::{LoraFile, Resolved, Route, Target, Targets};
use flux_testkit::{ramp, write_safetensors as write};

/// The one model of these tests; kohya's `lora_te2_` (T5) names are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Model;

fn route(stem: &str) -> Route<'_, Model> {
    if stem.starts_with("lora_te2_") {
        return Route::Unsupported("T5 text-encoder LoRAs are not supported");
    }
    match stem.strip_prefix("lora_unet_") {
        Some(name) => Route::To {
            component: Model,
            name,
            kohya: true,
        },
        None => Route::To {
            component: Model,
            name: stem,
            kohya: false,
        },
    }
}

/// Two layers: `blocks.0.proj` 32 -> 16 with a bias, `blocks.0.gate` 32 -> 8 without.
fn targets() -> Targets {
    let mut t = Targets::new();
    t.insert("blocks.0.proj", Target::whole("proj", 32, 16));
    t.insert("blocks.0.gate", Target::whole("gate", 32, 8));
    t
}

fn resolve(path: &Path, lenient: bool) -> flux_io::Result<Resolved<Model>> {
    let file = LoraFile::open(path)?;
    flux_lora::resolve(&[(file, 1.0)], route, &[(Model, &targets())], lenient)
}

fn good(prefix: &str) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    vec![
        (
            format!("{prefix}.lora_down.weight"),
            vec![4, 32],
            ramp(128, 0.01),
        ),
        (
            format!("{prefix}.lora_up.weight"),
            vec![16, 4],
            ramp(64, 0.02),
        ),
        (format!("{prefix}.alpha"), vec![], vec![2.0]),
    ]
}

fn refs(t: &[(String, Vec<usize>, Vec<f32>)]) -> Vec<(&str, Vec<usize>, Vec<f32>)> {
    t.iter()
        .map(|(n, s, v)| (n.as_str(), s.clone(), v.clone()))
        .collect()
}

fn message(r: flux_io::Result<Resolved<Model>>) -> String {
    r.map(|_| ()).unwrap_err().to_string()
}

#[test]
fn bad_files_are_errors_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ok = write(d, "ok.safetensors", &refs(&good("lora_unet_blocks_0_proj")));
    assert!(resolve(&ok, false).is_ok());

    // Truncated: the header promises more bytes than the file holds.
    let bytes = std::fs::read(&ok).unwrap();
    let cut = d.join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() - 10]).unwrap();
    let err = message(resolve(&cut, false));
    assert!(err.contains("cut.safetensors"), "{err}");

    let mut wrong = good("lora_unet_blocks_0_proj");
    wrong[0].1 = vec![4, 33];
    wrong[0].2 = ramp(132, 0.01);
    let err = message(resolve(
        &write(d, "shape.safetensors", &refs(&wrong)),
        false,
    ));
    assert!(
        err.contains("lora_unet_blocks_0_proj") && err.contains("[16, 33]"),
        "{err}"
    );
    assert!(err.contains("[16, 32]"), "{err}");

    let mut rank = good("lora_unet_blocks_0_proj");
    rank[1] = (rank[1].0.clone(), vec![8, 8], ramp(64, 0.02));
    let err = message(resolve(&write(d, "rank.safetensors", &refs(&rank)), false));
    assert!(
        err.contains("lora_up.weight") && err.contains("do not multiply"),
        "{err}"
    );

    let mut nan = good("lora_unet_blocks_0_proj");
    nan[1].2[5] = f32::NAN;
    let err = message(resolve(&write(d, "nan.safetensors", &refs(&nan)), false));
    assert!(
        err.contains("lora_unet_blocks_0_proj.lora_up.weight") && err.contains("NaN"),
        "{err}"
    );

    let half = good("lora_unet_blocks_0_proj")[..1].to_vec();
    let err = message(resolve(&write(d, "half.safetensors", &refs(&half)), false));
    assert!(
        err.contains("lora_unet_blocks_0_proj.lora_down.weight") && err.contains("no matching"),
        "{err}"
    );

    let mut dora = good("lora_unet_blocks_0_proj");
    dora.push((
        "lora_unet_blocks_0_proj.dora_scale".into(),
        vec![16],
        vec![1.0; 16],
    ));
    let err = message(resolve(&write(d, "dora.safetensors", &refs(&dora)), false));
    assert!(err.contains("dora_scale") && err.contains("DoRA"), "{err}");

    let mut mixed = good("lora_unet_blocks_0_proj");
    mixed.push((
        "lora_unet_blocks_0_proj.hada_w1_a".into(),
        vec![16, 2],
        ramp(32, 0.1),
    ));
    let err = message(resolve(
        &write(d, "mixed.safetensors", &refs(&mixed)),
        false,
    ));
    assert!(
        err.contains("lora_unet_blocks_0_proj") && err.contains("LoRA and LoHa"),
        "{err}"
    );

    let stray = vec![("model.weird_tensor".to_string(), vec![2], vec![0.0, 1.0])];
    let err = message(resolve(
        &write(d, "stray.safetensors", &refs(&stray)),
        false,
    ));
    assert!(err.contains("model.weird_tensor"), "{err}");
}

#[test]
fn loras_for_other_models_are_named_not_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sdxl = good("lora_unet_down_blocks_0_attentions_0_proj_in");
    let err = message(resolve(&write(d, "sdxl.safetensors", &refs(&sdxl)), false));
    assert!(
        err.contains("lora_unet_down_blocks_0_attentions_0_proj_in"),
        "{err}"
    );
    assert!(err.contains("SDXL"), "{err}");

    let mut t5 = good("lora_unet_blocks_0_proj");
    t5.extend(good("lora_te2_encoder_block_0_layer_0_SelfAttention_q"));
    let path = write(d, "t5.safetensors", &refs(&t5));
    let err = message(resolve(&path, false));
    assert!(
        err.contains("lora_te2_encoder_block_0_layer_0_SelfAttention_q") && err.contains("T5"),
        "{err}"
    );

    // Lenient: the unmatched names are reported, the rest applies.
    let resolved = resolve(&path, true).unwrap();
    let report = &resolved.reports[0];
    assert_eq!(report.layers[&Model], 1);
    assert_eq!(
        report.unmatched,
        vec!["lora_te2_encoder_block_0_layer_0_SelfAttention_q"]
    );
    // ...but a LoRA of which nothing matches is an error even then: it would do nothing.
    let err = message(resolve(&write(d, "sdxl2.safetensors", &refs(&sdxl)), true));
    assert!(err.contains("would do nothing"), "{err}");
}

/// BFL control LoRAs' extras, checked: a replaced norm scale of the wrong size, a widening
/// update on a layer that may not widen, a `lora_B.bias` without its factors, the same scale
/// replaced by two LoRAs.
#[test]
fn control_lora_extras_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut t = targets();
    t.insert_param("blocks.0.norm.query_norm.scale", "norm.scale", vec![8]);
    t.insert(
        "img_in",
        Target {
            widen: true,
            ..Target::whole("img_in", 16, 8)
        },
    );
    let resolve_with = |path: &Path, t: &Targets| {
        flux_lora::resolve(
            &[(LoraFile::open(path).unwrap(), 1.0)],
            route,
            &[(Model, t)],
            false,
        )
    };
    let scale = |n: usize| ("blocks.0.norm.query_norm.scale", vec![n], vec![1.5; n]);

    let ok = write(d, "ok.safetensors", &[scale(8)]);
    let resolved = resolve_with(&ok, &t).unwrap();
    assert_eq!(resolved.reports[0].format, flux_lora::LoraFormat::Control);

    let err = message(resolve_with(&write(d, "size.safetensors", &[scale(9)]), &t));
    assert!(
        err.contains("query_norm.scale") && err.contains("[9]"),
        "{err}"
    );

    // `img_in` may widen (16 -> 24 inputs); `blocks.0.proj` may not.
    let wide = |module: &str, rows: usize| {
        vec![
            (
                format!("{module}.lora_A.weight"),
                vec![2, 24],
                ramp(48, 0.01),
            ),
            (
                format!("{module}.lora_B.weight"),
                vec![rows, 2],
                ramp(2 * rows, 0.01),
            ),
            (
                format!("{module}.lora_B.bias"),
                vec![rows],
                ramp(rows, 0.01),
            ),
        ]
    };
    let resolved =
        resolve_with(&write(d, "wide.safetensors", &refs(&wide("img_in", 8))), &t).unwrap();
    let adapters = &resolved.adapters[&Model];
    assert_eq!(adapters.layer_input("img_in"), Some(24));
    let err = message(resolve_with(
        &write(d, "narrow.safetensors", &refs(&wide("blocks.0.proj", 16))),
        &t,
    ));
    assert!(
        err.contains("[16, 24]") && err.contains("[16, 32]"),
        "{err}"
    );

    let orphan = write(
        d,
        "orphan.safetensors",
        &[("img_in.lora_B.bias", vec![8], vec![0.1; 8])],
    );
    let err = LoraFile::open(&orphan).unwrap_err().to_string();
    assert!(err.contains("img_in.lora_B.bias"), "{err}");

    let twice = flux_lora::resolve(
        &[
            (LoraFile::open(&ok).unwrap(), 1.0),
            (LoraFile::open(&ok).unwrap(), 0.5),
        ],
        route,
        &[(Model, &t)],
        false,
    );
    let err = message(twice);
    assert!(err.contains("replaced by two"), "{err}");
}
