//! Inferring [`FluxConfig`] from tensor shapes (and diffusers' `config.json` where present).

use flux_io::{Checkpoint, Source, Weights};

use super::CheckpointLayout;
use crate::{Error, FluxConfig, Result};

/// The stored shape behind a BFL-named parameter, following the layout's key table
/// (concatenated sources add up along dimension 0).
fn shape(weights: &Weights, layout: &CheckpointLayout, path: &str) -> Option<Vec<usize>> {
    let source = layout.key_map().source(path);
    let keys: Vec<String> = match source {
        Source::Key(k) | Source::SwapHalves(k) => vec![k],
        Source::Concat(ks) => ks,
    };
    let mut shapes = keys.iter().map(|k| weights.meta(k).map(|m| m.shape));
    let mut total = shapes.next()??;
    for s in shapes {
        total[0] += s?[0];
    }
    Some(total)
}

/// Infers the config of the FLUX transformer in `checkpoint`.
///
/// Widths, depths, head count (from the q/k norm width), MLP ratio, qkv bias and guidance are
/// read from tensor shapes. The RoPE split cannot be: it is taken from the checkpoint's
/// `config.json` (`axes_dims_rope`) when it has one, else the released models' proportions (hd/8, 7hd/16, 7hd/16).
///
/// # Errors
/// [`Error::MissingKeys`] when a tensor needed for inference is absent,
/// [`Error::InvalidConfig`] when the shapes are inconsistent or no RoPE split fits.
pub(crate) fn infer_config(
    checkpoint: &Checkpoint,
    layout: &CheckpointLayout,
) -> Result<FluxConfig> {
    let weights = checkpoint.weights();
    let need = |path: &str| {
        shape(weights, layout, path)
            .ok_or_else(|| flux_io::Error::MissingKeys(vec![path.to_string()]))
    };
    let dims2 = |path: &str| -> Result<[usize; 2]> {
        let s = need(path)?;
        Ok(
            <[usize; 2]>::try_from(s.clone()).map_err(|_| flux_io::Error::ShapeMismatch {
                key: path.to_string(),
                expected: vec![0, 0],
                found: s,
            })?,
        )
    };
    let [hidden, in_channels] = dims2("img_in.weight")?;
    let [_, context_in_dim] = dims2("txt_in.weight")?;
    let [_, vec_in_dim] = dims2("vector_in.in_layer.weight")?;
    let [out_channels, _] = dims2("final_layer.linear.weight")?;
    let count = |f: &dyn Fn(usize) -> String| {
        (0..)
            .take_while(|&i| shape(weights, layout, &f(i)).is_some())
            .count()
    };
    let depth = count(&|i| format!("double_blocks.{i}.img_mod.lin.weight"));
    let depth_single_blocks = count(&|i| format!("single_blocks.{i}.modulation.lin.weight"));
    let norm_key = if depth > 0 {
        "double_blocks.0.img_attn.norm.query_norm.scale"
    } else {
        "single_blocks.0.norm.query_norm.scale"
    };
    let head_dim = need(norm_key)?[0];
    if head_dim == 0 || hidden % head_dim != 0 {
        return Err(Error::InvalidConfig(format!(
            "q/k norm width {head_dim} does not divide the model width {hidden}"
        )));
    }
    let mlp_hidden = if depth > 0 {
        dims2("double_blocks.0.img_mlp.in_layer.weight")?[0]
    } else {
        dims2("single_blocks.0.linear1.weight")?[0].saturating_sub(3 * hidden)
    };
    let qkv_bias = if depth > 0 {
        shape(weights, layout, "double_blocks.0.img_attn.qkv.bias").is_some()
    } else {
        true
    };
    let guidance_embed = shape(weights, layout, "guidance_in.in_layer.weight").is_some();
    let axes_dim = match read_axes(checkpoint)? {
        Some(axes) => axes,
        None => FluxConfig::default_axes_dim(head_dim).ok_or_else(|| {
            Error::InvalidConfig(format!(
                "cannot infer the RoPE axes for head dimension {head_dim}: pass a config"
            ))
        })?,
    };
    let config = FluxConfig {
        in_channels,
        out_channels,
        vec_in_dim,
        context_in_dim,
        hidden_size: hidden,
        mlp_ratio: mlp_hidden as f64 / hidden as f64,
        num_heads: hidden / head_dim,
        depth,
        depth_single_blocks,
        axes_dim,
        theta: 10_000.0,
        qkv_bias,
        guidance_embed,
    };
    config.validate()?;
    Ok(config)
}

/// `axes_dims_rope` from a diffusers transformer `config.json`, when there is one.
fn read_axes(checkpoint: &Checkpoint) -> Result<Option<[usize; 3]>> {
    #[derive(serde::Deserialize)]
    struct Axes {
        axes_dims_rope: Option<[usize; 3]>,
    }
    Ok(checkpoint.config::<Axes>()?.and_then(|a| a.axes_dims_rope))
}
