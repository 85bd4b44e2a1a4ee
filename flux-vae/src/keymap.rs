//! Checkpoint key tables. Module paths are the BFL `ae.safetensors` keys, so BFL is the
//! identity; diffusers' `AutoencoderKL` is mapped onto it (the inverse of diffusers'
//! `convert_ldm_vae_checkpoint`).
//!
//! | BFL (module path)                        | diffusers                                          |
//! |------------------------------------------|----------------------------------------------------|
//! | `{e,d}.norm_out.*`                       | `{e,d}.conv_norm_out.*`                            |
//! | `encoder.down.{i}.block.{j}.*`           | `encoder.down_blocks.{i}.resnets.{j}.*`            |
//! | `encoder.down.{i}.downsample.conv.*`     | `encoder.down_blocks.{i}.downsamplers.0.conv.*`    |
//! | `decoder.up.{i}.block.{j}.*`             | `decoder.up_blocks.{n-1-i}.resnets.{j}.*` (reversed) |
//! | `decoder.up.{i}.upsample.conv.*`         | `decoder.up_blocks.{n-1-i}.upsamplers.0.conv.*`    |
//! | `*.nin_shortcut.*`                       | `*.conv_shortcut.*`                                |
//! | `{e,d}.mid.block_{k}.*`                  | `{e,d}.mid_block.resnets.{k-1}.*`                  |
//! | `{e,d}.mid.attn_1.{norm,q,k,v,proj_out}` | `{e,d}.mid_block.attentions.0.{group_norm,to_q,to_k,to_v,to_out.0}` |
//!
//! diffusers stores the attention projections as `Linear` weights `[out, in]`; BFL as 1x1
//! convolutions `[out, in, 1, 1]`: the loader reshapes shapes that differ only by size-1 axes.

use flux_io::{KeyMap, Source, Weights};

/// Renames of single path segments (BFL -> diffusers).
const SEGMENTS: &[(&str, &str)] = &[
    ("norm_out", "conv_norm_out"),
    ("nin_shortcut", "conv_shortcut"),
    ("norm", "group_norm"),
    ("q", "to_q"),
    ("k", "to_k"),
    ("v", "to_v"),
    ("proj_out", "to_out.0"),
];

/// The BFL layout: module paths are the keys.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BflKeys;

impl KeyMap for BflKeys {
    fn source(&self, path: &str) -> Source {
        Source::Key(path.to_string())
    }
}

/// The diffusers `AutoencoderKL` layout of a model with `levels` resolution levels.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DiffusersKeys {
    /// Number of levels (`len(block_out_channels)`), needed to reverse the decoder's.
    pub(crate) levels: usize,
}

impl DiffusersKeys {
    /// The diffusers key of a BFL path.
    pub fn key(&self, path: &str) -> String {
        let parts: Vec<&str> = path.split('.').collect();
        let mut out: Vec<String> = Vec::with_capacity(parts.len() + 2);
        let mut i = 0;
        while i < parts.len() {
            let seg = parts[i];
            let next = parts.get(i + 1).copied();
            match (seg, next) {
                ("down", Some(n)) => {
                    out.push(format!("down_blocks.{n}"));
                    i += 1;
                }
                ("up", Some(n)) => {
                    let idx = n.parse::<usize>().map_or(n.to_string(), |n| {
                        self.levels.saturating_sub(1 + n).to_string()
                    });
                    out.push(format!("up_blocks.{idx}"));
                    i += 1;
                }
                ("block", Some(n)) if n.parse::<usize>().is_ok() => {
                    out.push(format!("resnets.{n}"));
                    i += 1;
                }
                ("downsample", _) => out.push("downsamplers.0".into()),
                ("upsample", _) => out.push("upsamplers.0".into()),
                ("mid", Some(n)) if n.starts_with("block_") => {
                    let k = n["block_".len()..].parse::<usize>().unwrap_or(1);
                    out.push(format!("mid_block.resnets.{}", k.saturating_sub(1)));
                    i += 1;
                }
                ("mid", Some("attn_1")) => {
                    out.push("mid_block.attentions.0".into());
                    i += 1;
                }
                _ if i + 1 < parts.len() => {
                    let renamed = SEGMENTS.iter().find(|(b, _)| *b == seg).map(|(_, d)| *d);
                    out.push(renamed.unwrap_or(seg).to_string());
                }
                _ => out.push(seg.to_string()),
            }
            i += 1;
        }
        out.join(".")
    }
}

impl KeyMap for DiffusersKeys {
    fn source(&self, path: &str) -> Source {
        Source::Key(self.key(path))
    }
}

/// Which layout a checkpoint uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// BFL `ae.safetensors`.
    Bfl,
    /// diffusers `AutoencoderKL`.
    Diffusers,
}

impl Layout {
    /// diffusers when any key has diffusers' block names, else BFL.
    pub fn detect(weights: &Weights) -> Self {
        let diffusers = weights.keys().any(|k| {
            k.starts_with("encoder.down_blocks.")
                || k.starts_with("decoder.up_blocks.")
                || k.contains(".mid_block.")
                || k.contains(".conv_norm_out.")
        });
        if diffusers {
            Layout::Diffusers
        } else {
            Layout::Bfl
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diffusers_keys() {
        let m = DiffusersKeys { levels: 4 };
        for (bfl, d) in [
            ("encoder.conv_in.weight", "encoder.conv_in.weight"),
            ("encoder.norm_out.bias", "encoder.conv_norm_out.bias"),
            (
                "encoder.down.1.block.0.nin_shortcut.weight",
                "encoder.down_blocks.1.resnets.0.conv_shortcut.weight",
            ),
            (
                "encoder.down.2.downsample.conv.bias",
                "encoder.down_blocks.2.downsamplers.0.conv.bias",
            ),
            (
                "decoder.up.0.block.2.norm1.weight",
                "decoder.up_blocks.3.resnets.2.norm1.weight",
            ),
            (
                "decoder.up.3.upsample.conv.weight",
                "decoder.up_blocks.0.upsamplers.0.conv.weight",
            ),
            (
                "decoder.mid.block_2.conv1.weight",
                "decoder.mid_block.resnets.1.conv1.weight",
            ),
            (
                "encoder.mid.attn_1.norm.weight",
                "encoder.mid_block.attentions.0.group_norm.weight",
            ),
            (
                "encoder.mid.attn_1.proj_out.bias",
                "encoder.mid_block.attentions.0.to_out.0.bias",
            ),
            (
                "decoder.mid.attn_1.q.weight",
                "decoder.mid_block.attentions.0.to_q.weight",
            ),
        ] {
            assert_eq!(m.key(bfl), d);
        }
    }
}
