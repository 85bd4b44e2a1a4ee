//! The CLIP text transformer (transformers `CLIPTextModel`): embeddings, pre-norm causal
//! encoder layers, final norm, EOS pooling.

use burn::module::Module;
use burn::nn::{Embedding, LayerNorm, LayerNormConfig};
use burn::tensor::activation::gelu;
use burn::tensor::backend::Backend;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{DType, Int, Tensor};
use flux_nn::ops::{attention_f32, in_f32};
use flux_nn::{FluxBackend, Init, Linear, LoraSlots};

use super::ClipConfig;
use crate::t5::check_ids;
use crate::{Error, Result};

/// Token embedding plus learned absolute positions.
#[derive(Module, Debug)]
pub struct ClipEmbeddings<B: Backend> {
    /// `[vocab, hidden]`.
    pub(crate) token_embedding: Embedding<B>,
    /// `[max_positions, hidden]`.
    pub(crate) position_embedding: Embedding<B>,
}

/// Multi-head self-attention with biases, scores scaled by `head_dim^-0.5`: causal in CLIP's
/// text tower, over all tokens in SigLIP's vision tower.
#[derive(Module, Debug)]
pub struct ClipAttention<B: Backend> {
    /// Query projection.
    pub(crate) q_proj: Linear<B>,
    /// Key projection.
    pub(crate) k_proj: Linear<B>,
    /// Value projection.
    pub(crate) v_proj: Linear<B>,
    /// Output projection.
    pub(crate) out_proj: Linear<B>,
    #[module(skip)]
    pub(crate) num_heads: usize,
    #[module(skip)]
    pub(crate) causal: bool,
}

impl<B: FluxBackend> ClipAttention<B> {
    /// # Shapes
    /// - x: `[batch, len, hidden]` -> `[batch, len, hidden]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [batch, len, _] = x.dims();
        let heads = |t: Tensor<B, 3>| {
            t.reshape([batch as i64, len as i64, self.num_heads as i64, -1])
                .swap_dims(1, 2)
        };
        let q = heads(self.q_proj.forward(x.clone()));
        let k = heads(self.k_proj.forward(x.clone()));
        let v = heads(self.v_proj.forward(x));
        let options = AttentionModuleOptions {
            is_causal: self.causal,
            ..Default::default()
        };
        let out = attention_f32(q, k, v, None, options);
        self.out_proj
            .forward(out.swap_dims(1, 2).reshape([batch as i64, len as i64, -1]))
    }
}

/// The MLP activations of the CLIP-style towers (transformers' `hidden_act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Act {
    /// `x * sigmoid(1.702 x)` (OpenAI CLIP).
    QuickGelu,
    /// Exact GELU.
    Gelu,
    /// GELU's tanh approximation (`gelu_pytorch_tanh`: SigLIP).
    GeluTanh,
}

impl Act {
    /// The activation transformers names `name`, if supported.
    pub(crate) fn of(name: &str) -> Option<Self> {
        match name {
            "quick_gelu" => Some(Self::QuickGelu),
            "gelu" => Some(Self::Gelu),
            "gelu_pytorch_tanh" | "gelu_new" => Some(Self::GeluTanh),
            _ => None,
        }
    }
}

/// `fc2(act(fc1(x)))`.
#[derive(Module, Debug)]
pub struct ClipMlp<B: Backend> {
    /// `hidden -> intermediate`.
    pub(crate) fc1: Linear<B>,
    /// `intermediate -> hidden`.
    pub(crate) fc2: Linear<B>,
    #[module(skip)]
    pub(crate) act: Act,
}

impl<B: FluxBackend> ClipMlp<B> {
    /// # Shapes
    /// - x: `[batch, len, hidden]` -> `[batch, len, hidden]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let h = self.fc1.forward(x);
        let h = match self.act {
            Act::QuickGelu => B::quick_gelu(h),
            Act::Gelu => gelu(h),
            Act::GeluTanh => B::gelu_tanh(h),
        };
        self.fc2.forward(h)
    }
}

/// One pre-norm layer: `x + attn(ln1(x))`, then `x + mlp(ln2(x))`.
#[derive(Module, Debug)]
pub struct ClipEncoderLayer<B: Backend> {
    /// Norm before attention.
    pub(crate) layer_norm1: LayerNorm<B>,
    /// Causal self-attention.
    pub(crate) self_attn: ClipAttention<B>,
    /// Norm before the MLP.
    pub(crate) layer_norm2: LayerNorm<B>,
    /// The MLP.
    pub(crate) mlp: ClipMlp<B>,
    #[module(skip)]
    pub(crate) layer_norm_eps: f64,
}

impl<B: FluxBackend> ClipEncoderLayer<B> {
    /// # Shapes
    /// - x: `[batch, len, hidden]` -> `[batch, len, hidden]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let eps = self.layer_norm_eps;
        let x = x.clone() + self.self_attn.forward(norm(&self.layer_norm1, eps, x));
        x.clone() + self.mlp.forward(norm(&self.layer_norm2, eps, x))
    }
}

/// `ln(x)`, with its statistics in f32 when the model runs in half precision (burn's fused
/// layer norm would otherwise sum squares of a 768-wide row in f16, which overflows above
/// |x| ~ 9); f32 models take burn's op as is.
pub(crate) fn norm<B: Backend>(ln: &LayerNorm<B>, eps: f64, x: Tensor<B, 3>) -> Tensor<B, 3> {
    if x.dtype() == DType::F32 {
        return ln.forward(x);
    }
    let normed = in_f32(x, |x| {
        let centered = x.clone() - x.mean_dim(2);
        let var = centered.clone().square().mean_dim(2);
        centered / (var + eps).sqrt()
    });
    let scaled = normed * ln.gamma.val().unsqueeze::<3>();
    match &ln.beta {
        Some(beta) => scaled + beta.val().unsqueeze::<3>(),
        None => scaled,
    }
}

/// The shape of one pre-norm encoder layer.
pub(crate) struct LayerShape {
    pub hidden: usize,
    pub intermediate: usize,
    pub heads: usize,
    pub eps: f64,
    pub act: Act,
    pub causal: bool,
}

impl LayerShape {
    /// A layer of this shape built by `init` (transformers' names: `layer_norm1`,
    /// `self_attn.q_proj`, `mlp.fc1`, ...).
    pub(crate) fn init<B: FluxBackend>(&self, init: &Init<B>) -> ClipEncoderLayer<B> {
        let h = self.hidden;
        let norm = LayerNormConfig::new(h).with_epsilon(self.eps);
        let attn = init.at("self_attn");
        let mlp = init.at("mlp");
        ClipEncoderLayer {
            layer_norm1: init.layer_norm("layer_norm1", &norm),
            self_attn: ClipAttention {
                q_proj: attn.linear("q_proj", h, h, true),
                k_proj: attn.linear("k_proj", h, h, true),
                v_proj: attn.linear("v_proj", h, h, true),
                out_proj: attn.linear("out_proj", h, h, true),
                num_heads: self.heads,
                causal: self.causal,
            },
            layer_norm2: init.layer_norm("layer_norm2", &norm),
            mlp: ClipMlp {
                fc1: mlp.linear("fc1", h, self.intermediate, true),
                fc2: mlp.linear("fc2", self.intermediate, h, true),
                act: self.act,
            },
            layer_norm_eps: self.eps,
        }
    }
}

/// The layers (`encoder.layers.N`).
#[derive(Module, Debug)]
pub struct ClipEncoder<B: Backend> {
    /// Encoder layers.
    pub(crate) layers: Vec<ClipEncoderLayer<B>>,
}

/// `text_model`: embeddings, encoder, final norm.
#[derive(Module, Debug)]
pub struct ClipTextTransformer<B: Backend> {
    /// Token and position embeddings.
    pub(crate) embeddings: ClipEmbeddings<B>,
    /// The layers.
    pub(crate) encoder: ClipEncoder<B>,
    /// Norm after the last layer.
    pub(crate) final_layer_norm: LayerNorm<B>,
}

/// The outputs FLUX uses.
#[derive(Debug, Clone)]
pub struct ClipOutput<B: Backend> {
    /// `[batch, len, hidden]` after the final norm.
    pub last_hidden_state: Tensor<B, 3>,
    /// `[batch, hidden]`: the last hidden state at each row's EOS position (FLUX's `vec` input).
    pub pooled: Tensor<B, 2>,
}

/// The CLIP text encoder (`CLIPTextModel`); its parameters sit under `text_model.` as in the
/// checkpoints.
#[derive(Module, Debug)]
pub struct ClipTextEncoder<B: Backend> {
    /// The transformer.
    pub(crate) text_model: ClipTextTransformer<B>,
    #[module(skip)]
    config: ClipConfig,
    /// Where the run-time LoRA strengths live ([`ClipTextEncoder::rescale_lora`]).
    #[module(skip)]
    pub(crate) lora: LoraSlots,
}

impl ClipConfig {
    /// A randomly initialised model with this config (parameters drawn lazily, on first use).
    pub fn init<B: FluxBackend>(&self, device: &B::Device) -> ClipTextEncoder<B> {
        self.init_with(&Init::random(device))
    }

    /// The model with this config built by `init` ([`crate::load_clip`] reads a checkpoint),
    /// under transformers' names (`text_model.encoder.layers.N.self_attn.q_proj`).
    pub fn init_with<B: FluxBackend>(&self, init: &Init<B>) -> ClipTextEncoder<B> {
        let act = Act::of(&self.hidden_act).unwrap_or(Act::QuickGelu);
        let shape = LayerShape {
            hidden: self.hidden_size,
            intermediate: self.intermediate_size,
            heads: self.num_attention_heads,
            eps: self.layer_norm_eps,
            act,
            causal: true,
        };
        let tm = init.at("text_model");
        let embeddings = tm.at("embeddings");
        let layers = tm.at("encoder").at("layers");
        let norm = LayerNormConfig::new(self.hidden_size).with_epsilon(self.layer_norm_eps);
        let text_model = ClipTextTransformer {
            embeddings: ClipEmbeddings {
                token_embedding: embeddings.embedding(
                    "token_embedding",
                    self.vocab_size,
                    self.hidden_size,
                ),
                position_embedding: embeddings.embedding(
                    "position_embedding",
                    self.max_position_embeddings,
                    self.hidden_size,
                ),
            },
            encoder: ClipEncoder {
                layers: (0..self.num_hidden_layers)
                    .map(|i| shape.init(&layers.at(i)))
                    .collect(),
            },
            final_layer_norm: tm.layer_norm("final_layer_norm", &norm),
        };
        ClipTextEncoder {
            text_model,
            config: self.clone(),
            lora: init.lora_slots(),
        }
    }
}

impl<B: FluxBackend> ClipTextEncoder<B> {
    /// The hyper-parameters.
    pub fn config(&self) -> &ClipConfig {
        &self.config
    }

    /// The float dtype of the weights and of the outputs (layer-norm statistics and the
    /// attention softmax run in f32 whatever it is).
    pub fn dtype(&self) -> DType {
        self.text_model.final_layer_norm.gamma.val().dtype()
    }

    /// Runs the text tower (causal attention, no padding mask, as FLUX calls it).
    ///
    /// # Shapes
    /// - ids: `[batch, len]`, `len <= max_position_embeddings` (77)
    /// - output: `last_hidden_state` `[batch, len, hidden]`, `pooled` `[batch, hidden]`
    ///
    /// # Panics
    /// On an empty input, ids outside the vocabulary or a sequence longer than the position
    /// table; [`ClipTextEncoder::try_forward`] returns an error instead (the pair of
    /// `flux_core::Flux`: `forward` keeps burn's infallible module signature).
    pub fn forward(&self, ids: Tensor<B, 2, Int>) -> ClipOutput<B> {
        match self.try_forward(ids) {
            Ok(out) => out,
            Err(e) => panic!("{e}"),
        }
    }

    /// [`ClipTextEncoder::forward`], with bad ids reported as [`Error::BadInput`].
    ///
    /// # Shapes
    /// As [`ClipTextEncoder::forward`].
    ///
    /// # Errors
    /// [`Error::BadInput`] for an empty batch, ids `>= vocab_size`, or more than
    /// `max_position_embeddings` tokens.
    pub fn try_forward(&self, ids: Tensor<B, 2, Int>) -> Result<ClipOutput<B>> {
        let [batch, len] = ids.dims();
        if len > self.config.max_position_embeddings {
            return Err(Error::BadInput(format!(
                "{len} tokens, but CLIP has {} positions",
                self.config.max_position_embeddings
            )));
        }
        let values = check_ids(&ids, self.config.vocab_size)?;
        let device = ids.device();
        let tm = &self.text_model;
        let positions = Tensor::<B, 1, Int>::arange(0..len as i64, &device).reshape([1, len]);
        let x = tm.embeddings.token_embedding.forward(ids)
            + tm.embeddings.position_embedding.forward(positions);
        let x = tm
            .encoder
            .layers
            .iter()
            .fold(x, |x, layer| layer.forward(x));
        let last_hidden_state = norm(&tm.final_layer_norm, self.config.layer_norm_eps, x);
        let rows: Vec<Tensor<B, 2>> = values
            .chunks(len)
            .enumerate()
            .map(|(b, row)| {
                let p = eos_position(row, self.config.eos_token_id);
                last_hidden_state
                    .clone()
                    .slice([b..b + 1, p..p + 1])
                    .reshape([1, self.config.hidden_size])
            })
            .collect();
        debug_assert_eq!(rows.len(), batch);
        Ok(ClipOutput {
            pooled: Tensor::cat(rows, 0),
            last_hidden_state,
        })
    }
}

/// The pooled position of one row, as transformers picks it: with the legacy
/// `eos_token_id == 2` the (first) largest id, otherwise the first `eos_token_id` (or 0).
pub(crate) fn eos_position(row: &[i64], eos_token_id: i64) -> usize {
    if eos_token_id == 2 {
        let max = row.iter().copied().max().unwrap_or(0);
        row.iter().position(|&v| v == max).unwrap_or(0)
    } else {
        row.iter().position(|&v| v == eos_token_id).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eos_position_follows_transformers() {
        // Legacy configs (`eos_token_id == 2`): the first largest id.
        assert_eq!(eos_position(&[49406, 320, 49407, 49407], 2), 2);
        // Newer configs: the first id equal to `eos_token_id`, 0 if absent.
        assert_eq!(eos_position(&[0, 5, 7, 9, 7], 7), 2);
        assert_eq!(eos_position(&[0, 5, 9], 7), 0);
    }
}
