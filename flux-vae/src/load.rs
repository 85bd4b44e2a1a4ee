//! Loading a checkpoint (BFL or diffusers layout) with its config inferred from shapes.

use std::path::Path;

use flux_io::{Checkpoint, KeyMap, Source, Weights};
use flux_nn::{FluxBackend, load_module};

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
/// [`Error::Load`] for unreadable/corrupt files or `config.json`, missing or unexpected keys
/// (all named) and shape mismatches; [`Error::InvalidConfig`].
pub fn load<B: FluxBackend>(path: impl AsRef<Path>, device: &B::Device) -> Result<AutoEncoder<B>> {
    load_with::<B>(path, device, LoadConfig::default())
}

/// Options of [`load_with`]: an explicit config (e.g. a group count the shapes cannot tell;
/// the shapes are still checked against the checkpoint) and the parameters' dtype (see
/// [`AutoEncoder::dtype`] for what stays in f32).
pub type LoadConfig = flux_nn::LoadConfig<AutoEncoderConfig>;

/// [`load`] with options.
///
/// # Errors
/// As [`load`].
pub fn load_with<B: FluxBackend>(
    path: impl AsRef<Path>,
    device: &B::Device,
    options: LoadConfig,
) -> Result<AutoEncoder<B>> {
    let checkpoint = Checkpoint::open(path, Some("vae"))?;
    let weights = checkpoint.weights();
    let map = key_map(weights);
    let config = match options.config.clone() {
        Some(config) => config,
        None => {
            let mut config = infer_config(weights, map.as_ref())?;
            if let Some(json) = checkpoint.config::<ConfigJson>()? {
                json.apply(&mut config);
            }
            config
        }
    };
    config.validate()?;
    Ok(load_module(
        weights,
        map.as_ref(),
        device,
        &options,
        |init| config.init_with(init),
    )?)
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
    let s =
        shape(weights, map, path).ok_or_else(|| flux_io::Error::MissingKeys(vec![key.clone()]))?;
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

/// What a diffusers `AutoencoderKL` `config.json` says beyond the shapes.
#[derive(serde::Deserialize)]
struct ConfigJson {
    scaling_factor: Option<f64>,
    shift_factor: Option<f64>,
    norm_num_groups: Option<usize>,
}

impl ConfigJson {
    fn apply(self, config: &mut AutoEncoderConfig) {
        config.scale_factor = self.scaling_factor.unwrap_or(config.scale_factor);
        config.shift_factor = self.shift_factor.unwrap_or(config.shift_factor);
        config.norm_groups = self.norm_num_groups.unwrap_or(config.norm_groups);
    }
}
