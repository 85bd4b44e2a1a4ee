//! LoRA updates built into the layers: merged and run-time agree, strengths change per
//! request from the built model, bias differences need a bias, and updates that find no
//! layer are an error.

use std::path::Path;

use burn::backend::NdArray;
use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use flux_io::Weights;
use flux_lora::{Adapters, LoraFile, LoraMode, Route, Target, Targets};
use flux_nn::{FluxBackend, Init, Linear, LoadOptions, Loader, LoraSlots};
use flux_testkit::max_abs_diff as diff;

use crate::common::{Same, ramp, write};

type Nd = NdArray<f32>;

#[derive(Module, Debug)]
struct Tiny<B: Backend> {
    proj: Linear<B>,
    gate: Linear<B>,
    #[module(skip)]
    lora: LoraSlots,
}

/// `proj` 32 -> 16 with a bias, `gate` 32 -> 8 without.
fn build<B: FluxBackend>(init: &Init<B>) -> Tiny<B> {
    let model = Tiny {
        proj: init.linear("proj", 32, 16, true),
        gate: init.linear("gate", 32, 8, false),
        lora: LoraSlots::default(),
    };
    Tiny {
        lora: init.lora_slots(),
        ..model
    }
}

fn checkpoint(dir: &Path) -> Weights {
    let path = write(
        dir,
        "tiny.safetensors",
        &[
            ("proj.weight", vec![16, 32], ramp(512, 0.02)),
            ("proj.bias", vec![16], ramp(16, 0.1)),
            ("gate.weight", vec![8, 32], ramp(256, 0.03)),
        ],
    );
    Weights::open(path).unwrap()
}

fn load(
    weights: &Weights,
    adapters: Option<&Adapters>,
    mode: LoraMode,
) -> flux_io::Result<Tiny<Nd>> {
    let loader = Loader::new(weights, &Same, LoadOptions::default());
    let init = Init::load(&loader, &Default::default());
    let init = match adapters {
        Some(a) => init.with_adapters(a, mode),
        None => init,
    };
    let model = build(&init);
    loader.finish()?;
    init.finish()?;
    Ok(model)
}

fn run(m: &Tiny<Nd>) -> Vec<f32> {
    let x = Tensor::<Nd, 2>::from_data(
        TensorData::new(ramp(96, 0.05), [3, 32]),
        &Default::default(),
    );
    let y = Tensor::cat(vec![m.proj.forward(x.clone()), m.gate.forward(x)], 1);
    y.into_data().to_vec().unwrap()
}

fn targets() -> Targets {
    let mut t = Targets::new();
    t.insert("blocks.0.proj", Target::whole("proj", 32, 16));
    t.insert("blocks.0.gate", Target::whole("gate", 32, 8));
    t
}

fn route(stem: &str) -> Route<'_, ()> {
    Route::To {
        component: (),
        name: stem.strip_prefix("lora_unet_").unwrap_or(stem),
        kohya: true,
    }
}

/// A LoRA on both layers (rank 4, alpha 2) and a bias difference on `proj` (or on `bias_on`).
fn adapters(dir: &Path, bias_on: &str) -> Adapters {
    let factors = |m: &str, out: usize| {
        vec![
            (
                format!("lora_unet_blocks_0_{m}.lora_down.weight"),
                vec![4, 32],
                ramp(128, 0.01),
            ),
            (
                format!("lora_unet_blocks_0_{m}.lora_up.weight"),
                vec![out, 4],
                ramp(4 * out, 0.02),
            ),
            (format!("lora_unet_blocks_0_{m}.alpha"), vec![], vec![2.0]),
        ]
    };
    let mut t = factors("proj", 16);
    t.extend(factors("gate", 8));
    let rows = if bias_on == "proj" { 16 } else { 8 };
    t.push((
        format!("lora_unet_blocks_0_{bias_on}.diff_b"),
        vec![rows],
        ramp(rows, 0.1),
    ));
    let refs: Vec<(&str, Vec<usize>, Vec<f32>)> = t
        .iter()
        .map(|(n, s, v)| (n.as_str(), s.clone(), v.clone()))
        .collect();
    let path = write(dir, &format!("lora_{bias_on}.safetensors"), &refs);
    let file = LoraFile::open(path).unwrap();
    let mut resolved =
        flux_lora::resolve(&[(file, 1.0)], route, &[((), &targets())], false).unwrap();
    resolved.adapters.remove(&()).unwrap()
}

#[test]
fn merged_and_runtime_agree_and_strengths_change_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let weights = checkpoint(dir.path());
    let adapters = adapters(dir.path(), "proj");
    let base = run(&load(&weights, None, LoraMode::Merged).unwrap());
    let merged = load(&weights, Some(&adapters), LoraMode::Merged).unwrap();
    let runtime = load(&weights, Some(&adapters), LoraMode::Runtime).unwrap();
    assert!(merged.proj.lora().is_none() && merged.gate.lora().is_none());
    assert_eq!(runtime.proj.lora().map(|l| l.rank()), Some(4));
    assert_eq!(runtime.gate.lora().map(|l| l.rank()), Some(4));
    let (m, r) = (run(&merged), run(&runtime));
    assert!(diff(&m, &r) < 1e-5, "{}", diff(&m, &r));
    assert!(diff(&m, &base) > 0.05, "the LoRA must change the output");

    // Strength 0 from the built model is the base model: the run-time scales go to 0 and
    // the merged bias difference is taken back out.
    let zero = adapters.with_scales(&[0.0]).unwrap();
    let slots = runtime.lora.clone();
    let (rescaled, n) = slots.rescale(runtime.clone(), &zero);
    assert_eq!(n, 3, "two scale vectors and one bias");
    assert!(diff(&run(&rescaled), &base) < 1e-5);
    // Strength 0.5 equals a model built at 0.5.
    let half = adapters.with_scales(&[0.5]).unwrap();
    let (rescaled, _) = slots.rescale(runtime, &half);
    let built = load(&weights, Some(&half), LoraMode::Merged).unwrap();
    assert!(diff(&run(&rescaled), &run(&built)) < 1e-5);
}

#[test]
fn updates_must_fit_their_layers() {
    let dir = tempfile::tempdir().unwrap();
    let weights = checkpoint(dir.path());
    // A bias difference on a layer without a bias.
    let nobias = adapters(dir.path(), "gate");
    let err = load(&weights, Some(&nobias), LoraMode::Merged)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(err.contains("gate") && err.contains("no bias"), "{err}");

    // Updates resolved for a layer the model does not build.
    let mut t = targets();
    t.insert("blocks.0.extra", Target::whole("extra", 32, 16));
    let refs = [
        (
            "lora_unet_blocks_0_extra.lora_down.weight",
            vec![2, 32],
            ramp(64, 0.01),
        ),
        (
            "lora_unet_blocks_0_extra.lora_up.weight",
            vec![16, 2],
            ramp(32, 0.01),
        ),
    ];
    let file = LoraFile::open(write(dir.path(), "extra.safetensors", &refs)).unwrap();
    let resolved = flux_lora::resolve(&[(file, 1.0)], route, &[((), &t)], false).unwrap();
    let err = load(&weights, Some(&resolved.adapters[&()]), LoraMode::Runtime)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("extra") && err.contains("does not have"),
        "{err}"
    );
}
