//! The two spellings of a T5 encoder checkpoint's keys: transformers'
//! (`encoder.block.N.layer.0.SelfAttention.q.weight`: HF folders, ComfyUI's safetensors files)
//! and llama.cpp's (`enc.blk.N.attn_q.weight`: T5 encoder GGUF files as city96 publishes them
//! and ComfyUI-GGUF reads them).

use flux_io::Weights;

/// transformers' name inside a block -> llama.cpp's.
const LLAMA_BLOCK: [(&str, &str); 10] = [
    ("layer.0.SelfAttention.q.weight", "attn_q.weight"),
    ("layer.0.SelfAttention.k.weight", "attn_k.weight"),
    ("layer.0.SelfAttention.v.weight", "attn_v.weight"),
    ("layer.0.SelfAttention.o.weight", "attn_o.weight"),
    (
        "layer.0.SelfAttention.relative_attention_bias.weight",
        "attn_rel_b.weight",
    ),
    ("layer.0.layer_norm.weight", "attn_norm.weight"),
    ("layer.1.DenseReluDense.wi_0.weight", "ffn_gate.weight"),
    ("layer.1.DenseReluDense.wi_1.weight", "ffn_up.weight"),
    ("layer.1.DenseReluDense.wo.weight", "ffn_down.weight"),
    ("layer.1.layer_norm.weight", "ffn_norm.weight"),
];

/// How a T5 checkpoint names its tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum T5Names {
    /// transformers' `T5EncoderModel` keys.
    Transformers,
    /// llama.cpp's GGUF names.
    LlamaCpp,
}

impl T5Names {
    /// llama.cpp's when the checkpoint has its embedding or first attention under those names.
    pub(crate) fn detect(weights: &Weights) -> Self {
        if weights.contains("token_embd.weight") || weights.contains("enc.blk.0.attn_q.weight") {
            Self::LlamaCpp
        } else {
            Self::Transformers
        }
    }

    /// The stored name of the tensor transformers calls `key` (unknown keys unchanged).
    pub(crate) fn key(self, key: &str) -> String {
        match self {
            Self::Transformers => key.to_string(),
            Self::LlamaCpp => llama_cpp(key).unwrap_or_else(|| key.to_string()),
        }
    }

    /// The prefix of the blocks' keys (`encoder.block.` / `enc.blk.`).
    pub(crate) fn block_prefix(self) -> &'static str {
        match self {
            Self::Transformers => "encoder.block.",
            Self::LlamaCpp => "enc.blk.",
        }
    }
}

fn llama_cpp(key: &str) -> Option<String> {
    match key {
        "shared.weight" | "encoder.embed_tokens.weight" => return Some("token_embd.weight".into()),
        "encoder.final_layer_norm.weight" => return Some("enc.output_norm.weight".into()),
        _ => {}
    }
    let (n, inner) = key.strip_prefix("encoder.block.")?.split_once('.')?;
    let (_, to) = LLAMA_BLOCK.iter().find(|(from, _)| *from == inner)?;
    Some(format!("enc.blk.{n}.{to}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama_cpp_names() {
        let n = T5Names::LlamaCpp;
        assert_eq!(n.key("shared.weight"), "token_embd.weight");
        assert_eq!(
            n.key("encoder.block.3.layer.1.DenseReluDense.wi_1.weight"),
            "enc.blk.3.ffn_up.weight"
        );
        assert_eq!(
            n.key("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"),
            "enc.blk.0.attn_rel_b.weight"
        );
        assert_eq!(
            n.key("encoder.final_layer_norm.weight"),
            "enc.output_norm.weight"
        );
        assert_eq!(T5Names::Transformers.key("shared.weight"), "shared.weight");
    }
}
