//! The diffusers `FluxTransformer2DModel` key layout, mapped onto BFL's: separate q/k/v (and
//! `proj_mlp`) are fused by concatenation, `norm_out.linear` has its (scale, shift) halves
//! swapped into BFL's (shift, scale). The table mirrors diffusers' own BFL converter
//! (`convert_flux_transformer_checkpoint_to_diffusers`) in the other direction.

use super::bfl::bfl_key;
use flux_io::{KeyMap, Source};

/// Modules outside the blocks: BFL module -> diffusers module.
const GLOBAL: &[(&str, &str)] = &[
    ("img_in", "x_embedder"),
    ("txt_in", "context_embedder"),
    (
        "time_in.in_layer",
        "time_text_embed.timestep_embedder.linear_1",
    ),
    (
        "time_in.out_layer",
        "time_text_embed.timestep_embedder.linear_2",
    ),
    (
        "vector_in.in_layer",
        "time_text_embed.text_embedder.linear_1",
    ),
    (
        "vector_in.out_layer",
        "time_text_embed.text_embedder.linear_2",
    ),
    (
        "guidance_in.in_layer",
        "time_text_embed.guidance_embedder.linear_1",
    ),
    (
        "guidance_in.out_layer",
        "time_text_embed.guidance_embedder.linear_2",
    ),
    ("final_layer.linear", "proj_out"),
];

/// Inside `double_blocks.{i}` -> `transformer_blocks.{i}`: BFL module -> diffusers module(s).
const DOUBLE: &[(&str, &[&str])] = &[
    ("img_mod.lin", &["norm1.linear"]),
    ("txt_mod.lin", &["norm1_context.linear"]),
    ("img_attn.qkv", &["attn.to_q", "attn.to_k", "attn.to_v"]),
    (
        "txt_attn.qkv",
        &["attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"],
    ),
    ("img_attn.norm.query_norm", &["attn.norm_q"]),
    ("img_attn.norm.key_norm", &["attn.norm_k"]),
    ("txt_attn.norm.query_norm", &["attn.norm_added_q"]),
    ("txt_attn.norm.key_norm", &["attn.norm_added_k"]),
    ("img_attn.proj", &["attn.to_out.0"]),
    ("txt_attn.proj", &["attn.to_add_out"]),
    ("img_mlp.0", &["ff.net.0.proj"]),
    ("img_mlp.2", &["ff.net.2"]),
    ("txt_mlp.0", &["ff_context.net.0.proj"]),
    ("txt_mlp.2", &["ff_context.net.2"]),
];

/// Inside `single_blocks.{i}` -> `single_transformer_blocks.{i}`.
const SINGLE: &[(&str, &[&str])] = &[
    (
        "linear1",
        &["attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"],
    ),
    ("linear2", &["proj_out"]),
    ("norm.query_norm", &["attn.norm_q"]),
    ("norm.key_norm", &["attn.norm_k"]),
    ("modulation.lin", &["norm.linear"]),
];

/// diffusers layout, keys at the top level of the file(s).
#[derive(Debug, Clone, Default)]
pub(crate) struct DiffusersKeys;

impl KeyMap for DiffusersKeys {
    fn source(&self, path: &str) -> Source {
        let key = bfl_key(path);
        // BFL's RMSNorm parameter is `scale`; diffusers' is `weight`.
        let (module, leaf) = key.rsplit_once('.').unwrap_or(("", &key));
        let leaf = if leaf == "scale" { "weight" } else { leaf };

        if module == "final_layer.adaLN_modulation.1" {
            return Source::SwapHalves(format!("norm_out.linear.{leaf}"));
        }
        if let Some((_, to)) = GLOBAL.iter().find(|(from, _)| *from == module) {
            return Source::Key(format!("{to}.{leaf}"));
        }
        for (block, table, diffusers_block) in [
            ("double_blocks.", DOUBLE, "transformer_blocks."),
            ("single_blocks.", SINGLE, "single_transformer_blocks."),
        ] {
            let Some((index, inner)) = module.strip_prefix(block).and_then(|r| r.split_once('.'))
            else {
                continue;
            };
            if let Some((_, to)) = table.iter().find(|(from, _)| *from == inner) {
                let keys: Vec<String> = to
                    .iter()
                    .map(|t| format!("{diffusers_block}{index}.{t}.{leaf}"))
                    .collect();
                return match <[String; 1]>::try_from(keys) {
                    Ok([single]) => Source::Key(single),
                    Err(keys) => Source::Concat(keys),
                };
            }
        }
        // Not in the table: report the BFL name, so the missing-key error says what was sought.
        Source::Key(key)
    }
}
