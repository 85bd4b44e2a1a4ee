//! The T5 v1.1 encoder stack (transformers `T5EncoderModel`): embedding, blocks, final norm.

use burn::module::Module;
use burn::nn::Embedding;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, FloatDType, Int, Tensor};
use flux_nn::{FluxBackend, Init, ParamBytes};

use super::T5Config;
use super::attention::T5Attention;
use super::layers::{T5DenseGatedActDense, T5LayerNorm};
use crate::{Error, Result};

/// How an encoder with half-precision weights keeps its activations finite.
///
/// T5-XXL's feed-forward output grows past f16's largest value (65504) on real prompts, which
/// turns the naive f16 forward into `inf`/`NaN`. transformers keeps `wo` in f32
/// (`_keep_in_fp32_modules = ["wo"]`) and clamps the residual stream to `f16::MAX - 1000`;
/// we instead keep the residual stream itself in f32, so nothing is clamped and the f16 result
/// follows the f32 one. With f32 (or bf16, whose range is f32's) weights both modes agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum T5Precision {
    /// Residual stream, layer norms and the feed-forward output projection `wo` in f32; the
    /// other matmuls, the attention and the gated GELU in the weights' dtype.
    #[default]
    F32Residual,
    /// Everything in the weights' dtype. Overflows in f16 on T5-XXL; kept to measure that.
    Native,
}

/// One encoder block: self-attention sub-layer then feed-forward sub-layer, each pre-normed
/// with a residual connection (`layer.0` and `layer.1` in the checkpoint).
#[derive(Module, Debug)]
pub struct T5Block<B: Backend> {
    /// `layer.0.layer_norm`.
    pub(crate) attention_norm: T5LayerNorm<B>,
    /// `layer.0.SelfAttention`.
    pub(crate) self_attention: T5Attention<B>,
    /// `layer.1.layer_norm`.
    pub(crate) ff_norm: T5LayerNorm<B>,
    /// `layer.1.DenseReluDense`.
    pub(crate) dense_relu_dense: T5DenseGatedActDense<B>,
}

impl<B: FluxBackend> T5Block<B> {
    fn new(config: &T5Config, first: bool, init: &Init<B>) -> Self {
        let (d, eps) = (config.d_model, config.layer_norm_epsilon);
        Self {
            attention_norm: T5LayerNorm::new(d, eps, &init.at("attention_norm")),
            self_attention: T5Attention::new(config, first, &init.at("self_attention")),
            ff_norm: T5LayerNorm::new(d, eps, &init.at("ff_norm")),
            dense_relu_dense: T5DenseGatedActDense::new(config, &init.at("dense_relu_dense")),
        }
    }

    /// # Shapes
    /// - x: `[batch, len, d_model]` residual stream (f32 or the compute dtype)
    /// - bias: `[1, heads, len, len]`
    /// - output: `[batch, len, d_model]` in `x`'s dtype
    pub fn forward(&self, x: Tensor<B, 3>, bias: Tensor<B, 4>, compute: DType) -> Tensor<B, 3> {
        let residual = x.dtype();
        let h = self.attention_norm.forward(x.clone(), compute);
        let x = x + self.self_attention.forward(h, bias).cast(float(residual));
        let h = self.ff_norm.forward(x.clone(), compute);
        x.clone() + self.dense_relu_dense.forward(h).cast(float(residual))
    }
}

/// The encoder stack: `block.N` and `final_layer_norm`.
#[derive(Module, Debug)]
pub struct T5Stack<B: Backend> {
    /// The blocks; only `block.0` holds the relative position bias table.
    pub(crate) block: Vec<T5Block<B>>,
    /// The norm after the last block.
    pub(crate) final_layer_norm: T5LayerNorm<B>,
}

/// The T5 v1.1 encoder as FLUX uses it: token ids to the last hidden state (no attention mask:
/// FLUX pads with id 0 and attends to the padding, as the reference pipeline does).
#[derive(Module, Debug)]
pub struct T5Encoder<B: Backend> {
    /// The token embedding (`shared.weight`, tied with `encoder.embed_tokens.weight`).
    pub(crate) shared: Embedding<B>,
    /// The blocks and final norm.
    pub(crate) encoder: T5Stack<B>,
    #[module(skip)]
    config: T5Config,
    #[module(skip)]
    precision: T5Precision,
    /// What the parameters hold, as built.
    #[module(skip)]
    held: ParamBytes,
}

impl T5Config {
    /// A randomly initialised model with this config (parameters drawn lazily, on first use).
    pub fn init<B: FluxBackend>(&self, device: &B::Device) -> T5Encoder<B> {
        self.init_with(&Init::random(device))
    }

    /// The model with this config built by `init` ([`crate::load_t5`] reads a checkpoint).
    /// Module names are transformers' (`encoder.block.N.layer.0.SelfAttention.q`), with the
    /// two sub-layers named by role (`attention_norm`, `self_attention`, `ff_norm`,
    /// `dense_relu_dense`) where transformers numbers them.
    pub fn init_with<B: FluxBackend>(&self, init: &Init<B>) -> T5Encoder<B> {
        let encoder = init.at("encoder");
        let blocks = encoder.at("block");
        T5Encoder {
            shared: init.embedding("shared", self.vocab_size, self.d_model),
            encoder: T5Stack {
                block: (0..self.num_layers)
                    .map(|i| T5Block::new(self, i == 0, &blocks.at(i)))
                    .collect(),
                final_layer_norm: T5LayerNorm::new(
                    self.d_model,
                    self.layer_norm_epsilon,
                    &encoder.at("final_layer_norm"),
                ),
            },
            config: self.clone(),
            precision: T5Precision::default(),
            held: ParamBytes::default(),
        }
        .with_held(init.held())
    }
}

impl<B: FluxBackend> T5Encoder<B> {
    /// The hyper-parameters.
    pub fn config(&self) -> &T5Config {
        &self.config
    }

    /// What the parameters hold (dense, quantized), as built.
    pub fn param_bytes(&self) -> ParamBytes {
        self.held
    }

    fn with_held(self, held: ParamBytes) -> Self {
        Self { held, ..self }
    }

    /// The half-precision policy in use.
    pub fn precision(&self) -> T5Precision {
        self.precision
    }

    /// Switches the half-precision policy. [`T5Precision::F32Residual`] casts every `wo` to f32
    /// (24 x 4096 x 10240 weights for T5-XXL: 4.0 GB instead of 2.0 GB in f16, so the encoder
    /// takes about 11.5 GB instead of 9.5 GB, as transformers' fp32 `wo` does);
    /// [`T5Precision::Native`] casts them to the dtype of the other weights.
    pub fn with_precision(mut self, precision: T5Precision) -> Self {
        let target = match precision {
            T5Precision::F32Residual => FloatDType::F32,
            T5Precision::Native => float(self.shared.weight.val().dtype()),
        };
        self.encoder.block = self
            .encoder
            .block
            .into_iter()
            .map(|mut b| {
                b.dense_relu_dense.wo = b.dense_relu_dense.wo.cast(target);
                b
            })
            .collect();
        self.precision = precision;
        self
    }

    /// The last hidden state (after the final layer norm), in the weights' dtype.
    ///
    /// # Shapes
    /// - ids: `[batch, len]` token ids
    /// - output: `[batch, len, d_model]`
    ///
    /// # Panics
    /// On an empty input or ids outside the vocabulary; [`T5Encoder::try_forward`] returns
    /// an error instead (the same pair as `flux_core::Flux`, for the same reason: `forward`
    /// keeps burn's infallible module signature).
    pub fn forward(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        match self.try_forward(ids) {
            Ok(out) => out,
            Err(e) => panic!("{e}"),
        }
    }

    /// [`T5Encoder::forward`], with bad ids reported as [`Error::BadInput`].
    ///
    /// # Shapes
    /// - ids: `[batch, len]` -> `[batch, len, d_model]`
    ///
    /// # Errors
    /// [`Error::BadInput`] for an empty batch or sequence, or ids `>= vocab_size`.
    pub fn try_forward(&self, ids: Tensor<B, 2, Int>) -> Result<Tensor<B, 3>> {
        check_ids(&ids, self.config.vocab_size)?;
        let [_, len] = ids.dims();
        let device = ids.device();
        let compute = self.shared.weight.val().dtype();
        let x = self.shared.forward(ids);
        let x = match self.precision {
            T5Precision::F32Residual => x.cast(FloatDType::F32),
            T5Precision::Native => x,
        };
        let first = &self.encoder.block[0].self_attention;
        let bias = first
            .position_bias(len, &device)
            .ok_or_else(|| Error::BadInput("block 0 has no relative position bias".into()))?;
        let x = self
            .encoder
            .block
            .iter()
            .fold(x, |x, block| block.forward(x, bias.clone(), compute));
        Ok(self.encoder.final_layer_norm.forward(x, compute))
    }
}

/// Rejects empty inputs and ids outside `0..vocab` (reads the ids back to the host).
pub(crate) fn check_ids<B: Backend>(ids: &Tensor<B, 2, Int>, vocab: usize) -> Result<Vec<i64>> {
    let [batch, len] = ids.dims();
    if batch == 0 || len == 0 {
        return Err(Error::BadInput(format!(
            "empty token ids of shape [{batch}, {len}]"
        )));
    }
    let values: Vec<i64> = ids
        .to_data()
        .convert::<i64>()
        .into_vec()
        .map_err(|e| Error::BadInput(format!("token ids: {e:?}")))?;
    if let Some(bad) = values.iter().find(|&&v| v < 0 || v as usize >= vocab) {
        return Err(Error::BadInput(format!(
            "token id {bad} is outside the vocabulary of {vocab} tokens"
        )));
    }
    Ok(values)
}

pub(crate) fn float(dtype: DType) -> FloatDType {
    match dtype {
        DType::F64 => FloatDType::F64,
        DType::F16 => FloatDType::F16,
        DType::BF16 => FloatDType::BF16,
        _ => FloatDType::F32,
    }
}
