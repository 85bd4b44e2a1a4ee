//! Loading a checkpoint (BFL or diffusers layout) with its config inferred from shapes.

use std::path::{Path, PathBuf};

use burn::tensor::DType;
use burn::tensor::backend::Backend;
use flux_core::io::{KeyMap, LoadOptions, Source, Weights, load_module};

use crate::autoencoder::AutoEncoderModules;
use crate::keymap::{BflKeys, DiffusersKeys, Layout};
use crate::{AutoEncoder, AutoEncoderConfig, Error, Result};

/// Loads an autoencoder from `path`: a `.safetensors` file (BFL `ae.safetensors` or diffusers
/// `diffusion_pytorch_model.safetensors`), a diffusers `vae/` folder (its `config.json` gives
/// scale, shift and group count), or a diffusers pipeline folder holding `vae/`.
/// f32/f16/bf16 weights are converted to the device's float type.
///
/// The config is inferred from tensor shapes; without a `config.json` the scale, shift and
/// group count are FLUX's ([`AutoEncoderConfig::flux`]).
///
/// # Errors
/// [`Error::Core`] for unreadable/corrupt files, missing or unexpected keys (all named) and
/// shape mismatches; [`Error::BadConfigJson`]; [`Error::InvalidConfig`].
pub fn load<B: Backend>(path: impl AsRef<Path>, device: &B::Device) -> Result<AutoEncoder<B>> {
    load_with(path, device, LoadConfig::default())
}

/// Options of [`load_with`].
#[derive(Debug, Clone, Default)]
pub struct LoadConfig {
    /// Use this config instead of inferring one (e.g. a group count the shapes cannot tell);
    /// the shapes are still checked against the checkpoint.
    pub config: Option<AutoEncoderConfig>,
    /// Float dtype of the parameters (`F16`, `BF16` on backends that have them); `None`: the
    /// device's default float dtype. See [`AutoEncoder::dtype`] for what stays in f32.
    pub dtype: Option<DType>,
}

/// [`load`] with options.
///
/// # Errors
/// As [`load`].
pub fn load_with<B: Backend>(
    path: impl AsRef<Path>,
    device: &B::Device,
    options: LoadConfig,
) -> Result<AutoEncoder<B>> {
    let (weights, json) = open(path.as_ref())?;
    let map = key_map(&weights);
    let config = match options.config {
        Some(config) => config,
        None => {
            let mut config = infer_config(&weights, map.as_ref())?;
            if let Some(json) = json {
                apply_config_json(&mut config, &json)?;
            }
            config
        }
    };
    let model = config.init::<B>(device)?;
    let modules = AutoEncoderModules {
        encoder: model.encoder,
        decoder: model.decoder,
    };
    let options = LoadOptions {
        dtype: options.dtype,
        deny_unexpected: true,
    };
    let modules = load_module(modules, &weights, map.as_ref(), device, options)?;
    Ok(AutoEncoder::from_modules(modules, config))
}

/// Loads with an explicit config (e.g. a group count the shapes cannot tell); the shapes are
/// still checked against the checkpoint.
///
/// # Errors
/// As [`load`].
pub fn load_with_config<B: Backend>(
    path: impl AsRef<Path>,
    config: &AutoEncoderConfig,
    device: &B::Device,
) -> Result<AutoEncoder<B>> {
    let options = LoadConfig {
        config: Some(config.clone()),
        dtype: None,
    };
    load_with(path, device, options)
}

/// Opens the weights and finds a diffusers `config.json` next to them.
fn open(path: &Path) -> Result<(Weights, Option<PathBuf>)> {
    let dir = if path.join("vae").is_dir() {
        path.join("vae")
    } else {
        path.to_path_buf()
    };
    let json = if dir.is_dir() {
        Some(dir.join("config.json"))
    } else {
        dir.parent().map(|p| p.join("config.json"))
    }
    .filter(|p| p.is_file());
    Ok((Weights::open(&dir)?, json))
}

fn key_map(weights: &Weights) -> Box<dyn KeyMap> {
    match Layout::detect(weights) {
        Layout::Bfl => Box::new(BflKeys),
        Layout::Diffusers => {
            let levels = (0..)
                .take_while(|i| {
                    weights.contains(&format!("decoder.up_blocks.{i}.resnets.0.conv1.weight"))
                })
                .count();
            Box::new(DiffusersKeys { levels })
        }
    }
}

/// The stored shape of the tensor that makes the BFL parameter `path`.
fn shape(weights: &Weights, map: &dyn KeyMap, path: &str) -> Option<Vec<usize>> {
    match map.source(path) {
        Source::Key(k) => weights.meta(&k).map(|m| m.shape),
        _ => None,
    }
}

fn require(weights: &Weights, map: &dyn KeyMap, path: &str, rank: usize) -> Result<Vec<usize>> {
    let key = match map.source(path) {
        Source::Key(k) => k,
        other => return Err(Error::InvalidConfig(format!("unexpected source {other:?}"))),
    };
    let s = shape(weights, map, path)
        .ok_or_else(|| flux_core::Error::MissingKeys(vec![key.clone()]))?;
    if s.len() != rank {
        return Err(Error::InvalidConfig(format!(
            "`{key}` has shape {s:?}; a rank-{rank} tensor was expected"
        )));
    }
    Ok(s)
}

/// Infers widths, levels, resnet count and latent channels from the stored shapes.
fn infer_config(weights: &Weights, map: &dyn KeyMap) -> Result<AutoEncoderConfig> {
    let conv_in = require(weights, map, "encoder.conv_in.weight", 4)?;
    let (ch, in_channels) = (conv_in[0], conv_in[1]);
    let mut ch_mult = Vec::new();
    while let Some(s) = shape(
        weights,
        map,
        &format!("encoder.down.{}.block.0.conv1.weight", ch_mult.len()),
    ) {
        if ch == 0 || s.is_empty() || s[0] % ch != 0 {
            return Err(Error::InvalidConfig(format!(
                "level {} width {s:?} is not a multiple of conv_in's {ch}",
                ch_mult.len()
            )));
        }
        ch_mult.push(s[0] / ch);
    }
    if ch_mult.is_empty() {
        require(weights, map, "encoder.down.0.block.0.conv1.weight", 4)?;
    }
    let num_res_blocks = (0..)
        .take_while(|j| {
            shape(
                weights,
                map,
                &format!("encoder.down.0.block.{j}.conv1.weight"),
            )
            .is_some()
        })
        .count();
    let z_channels = require(weights, map, "decoder.conv_in.weight", 4)?[1];
    let out_ch = require(weights, map, "decoder.conv_out.weight", 4)?[0];
    Ok(AutoEncoderConfig {
        in_channels,
        ch,
        out_ch,
        ch_mult,
        num_res_blocks,
        z_channels,
        ..AutoEncoderConfig::flux()
    })
}

/// Reads `scaling_factor`, `shift_factor` and `norm_num_groups` from a diffusers config.
fn apply_config_json(config: &mut AutoEncoderConfig, path: &Path) -> Result<()> {
    let bad = |reason: String| Error::BadConfigJson {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let float = |name: &str| json.get(name).and_then(serde_json::Value::as_f64);
    if let Some(v) = float("scaling_factor") {
        config.scale_factor = v;
    }
    if let Some(v) = float("shift_factor") {
        config.shift_factor = v;
    }
    if let Some(v) = json.get("norm_num_groups") {
        let groups = v
            .as_u64()
            .ok_or_else(|| bad(format!("norm_num_groups {v} is not a positive integer")))?;
        config.norm_groups = usize::try_from(groups).map_err(|e| bad(e.to_string()))?;
    }
    Ok(())
}
