//! The text encoders at benchmark sizes: CLIP-L as released (77 tokens), and T5 narrowed for
//! CPUs (`small`) or as released (`xxl`, 512 tokens: for GPUs).

use burn::tensor::{Int, Tensor, TensorData};
use flux::FluxBackend;
use flux_text::{ClipConfig, T5Config};

/// A T5 size by name: (`config`, tokens).
pub fn t5_size(name: &str) -> Option<(T5Config, usize)> {
    match name {
        "tiny" => Some((T5Config::tiny(), 64)),
        // 4 layers of width 512 (8 heads of 64, gated-GELU FFN 1024) over 256 tokens.
        "small" => Some((
            T5Config {
                d_model: 512,
                d_kv: 64,
                d_ff: 1024,
                num_layers: 4,
                num_heads: 8,
                ..T5Config::xxl()
            },
            256,
        )),
        "xxl" => Some((T5Config::xxl(), 512)),
        _ => None,
    }
}

/// The CLIP size by name: (`config`, tokens); `small` is CLIP-L itself (123 M parameters).
pub fn clip_size(name: &str) -> Option<(ClipConfig, usize)> {
    match name {
        "tiny" => Some((ClipConfig::tiny(), 77)),
        "small" | "l" => Some((ClipConfig::vit_l_14(), 77)),
        _ => None,
    }
}

/// Deterministic token ids in `[3, vocab)` ending with `eos` (batch 1).
pub fn token_ids<B: FluxBackend>(
    n: usize,
    vocab: usize,
    eos: i64,
    device: &B::Device,
) -> Tensor<B, 2, Int> {
    let mut ids: Vec<i64> = (0..n)
        .map(|i| 3 + (i * 7919 % (vocab - 3)) as i64)
        .collect();
    if let Some(last) = ids.last_mut() {
        *last = eos;
    }
    Tensor::from_data(TensorData::new(ids, [1, n]), device)
}
