//! The BFL key layout (`flux1-dev.safetensors`), optionally behind a prefix (ComfyUI's
//! `model.diffusion_model.`). Module field names already are BFL's keys, except where Python
//! used indices or capitals that Rust field names cannot hold.

use flux_io::{KeyMap, Source};

/// Field-name fixes from our module paths to BFL's keys.
const RENAMES: &[(&str, &str)] = &[
    ("_mlp.in_layer.", "_mlp.0."),
    ("_mlp.out_layer.", "_mlp.2."),
    (
        "final_layer.ada_ln_modulation.",
        "final_layer.adaLN_modulation.1.",
    ),
];

/// The BFL key of a module parameter path.
pub(crate) fn bfl_key(path: &str) -> String {
    RENAMES
        .iter()
        .fold(path.to_string(), |key, (from, to)| key.replace(from, to))
}

/// BFL layout under `prefix` (empty for BFL's own files).
#[derive(Debug, Clone)]
pub(crate) struct BflKeys {
    pub prefix: String,
}

impl KeyMap for BflKeys {
    fn source(&self, path: &str) -> Source {
        Source::Key(format!("{}{}", self.prefix, bfl_key(path)))
    }

    fn ignored(&self, key: &str) -> bool {
        // An all-in-one ComfyUI checkpoint also holds the VAE and text encoders; scaled-fp8 files
        // carry a marker tensor and per-layer input scales that dequantised weights do not need.
        !key.starts_with(&self.prefix)
            || key.ends_with("scaled_fp8")
            || key.ends_with(".scale_input")
    }
}
