//! The FLUX.1 conditioning encoders on burn: the text encoders and their tokenizers, and
//! Redux's image encoder (an image prompt that joins the text tokens).
//!
//! - [`T5Encoder`]: the T5 v1.1 XXL encoder (FLUX's `text_encoder_2`), loaded by [`load_t5`].
//!   Half precision: the residual stream stays in f32 ([`T5Precision`]).
//! - [`ClipTextEncoder`]: the CLIP ViT-L/14 text tower (`text_encoder`), loaded by
//!   [`load_clip`]; its pooled output is FLUX's `vec` input.
//! - [`ClipTokenizer`], [`T5Tokenizer`]: the `tokenizers` crate, padded and truncated the way
//!   the FLUX pipelines call them, truncation reported ([`Encoded`]).
//! - [`SiglipVisionEncoder`] and [`ReduxEmbedder`]: FLUX.1 Redux (SigLIP so400m's tokens
//!   mapped to T5's width), loaded by [`load_siglip`] and [`load_redux_embedder`]; images
//!   prepared by [`SiglipImageProcessor`].
//!
//! Checkpoints: a `.safetensors` file (ComfyUI's `clip_l.safetensors`, `t5xxl_fp16.safetensors`,
//! `t5xxl_fp8_e4m3fn.safetensors`) or an HF folder (`text_encoder/`, `text_encoder_2/`, sharded,
//! `config.json` read when present), through `flux-io`; the models are built in the form their
//! checkpoints store (`flux_nn::Init`).

mod clip;
mod error;
mod hf;
mod redux;
mod t5;
mod tokenizer;

pub use clip::{
    ClipConfig, ClipOutput, ClipTextEncoder, load_clip, load_clip_with, read_clip_config,
};
pub use error::{Error, Result};
/// Options of [`load_t5_with`] (`LoadConfig<T5Config>`) and [`load_clip_with`]
/// (`LoadConfig<ClipConfig>`): an explicit config, the parameters' dtype, quantization and
/// (CLIP) LoRA updates.
pub use flux_nn::LoadConfig;
pub use redux::{
    ReduxConfig, ReduxEmbedder, SiglipImageProcessor, SiglipVisionConfig, SiglipVisionEncoder,
    load_redux_embedder, load_siglip, load_siglip_with, read_siglip_config,
};
pub use t5::{T5Config, T5Encoder, T5Precision, load_t5, load_t5_with};
pub use tokenizer::{ClipTokenizer, Encoded, T5Tokenizer};
