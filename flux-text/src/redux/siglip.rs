//! The SigLIP vision tower (transformers `SiglipVisionModel`, up to `last_hidden_state`):
//! patch embedding, learned positions, pre-norm encoder layers, final norm.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Embedding, LayerNorm, LayerNormConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Tensor};
use flux_nn::{FluxBackend, Init};

use super::SiglipVisionConfig;
use crate::clip::model::{ClipEncoder, LayerShape, norm};
use crate::{Error, Result};

/// Patches (a strided convolution) plus learned absolute positions.
#[derive(Module, Debug)]
pub struct SiglipEmbeddings<B: Backend> {
    /// `[hidden, channels, patch, patch]`, stride `patch`.
    pub(crate) patch_embedding: Conv2d<B>,
    /// `[num_patches, hidden]`.
    pub(crate) position_embedding: Embedding<B>,
}

/// `vision_model`: embeddings, encoder, final norm (the attention-pooling `head` is not
/// needed: Redux takes every token).
#[derive(Module, Debug)]
pub struct SiglipVisionTransformer<B: Backend> {
    /// Patch and position embeddings.
    pub(crate) embeddings: SiglipEmbeddings<B>,
    /// Non-causal pre-norm layers (CLIP's, with tanh GELU).
    pub(crate) encoder: ClipEncoder<B>,
    /// Norm after the last layer.
    pub(crate) post_layernorm: LayerNorm<B>,
}

/// The SigLIP vision encoder; its parameters sit under `vision_model.` as in the checkpoints.
#[derive(Module, Debug)]
pub struct SiglipVisionEncoder<B: Backend> {
    /// The transformer.
    pub(crate) vision_model: SiglipVisionTransformer<B>,
    #[module(skip)]
    config: SiglipVisionConfig,
}

impl SiglipVisionConfig {
    /// A randomly initialised model with this config (parameters drawn lazily).
    ///
    /// # Panics
    /// If the config is invalid ([`SiglipVisionConfig::validate`]).
    pub fn init<B: FluxBackend>(&self, device: &B::Device) -> SiglipVisionEncoder<B> {
        self.init_with(&Init::random(device))
    }

    /// The model with this config built by `init` ([`super::load_siglip`] reads a checkpoint),
    /// under transformers' names (`vision_model.encoder.layers.N.self_attn.q_proj`).
    ///
    /// # Panics
    /// If the config is invalid ([`SiglipVisionConfig::validate`]).
    pub fn init_with<B: FluxBackend>(&self, init: &Init<B>) -> SiglipVisionEncoder<B> {
        if let Err(e) = self.validate() {
            panic!("{e}");
        }
        let h = self.hidden_size;
        let p = self.patch_size;
        let layer = LayerShape {
            hidden: h,
            intermediate: self.intermediate_size,
            heads: self.num_attention_heads,
            eps: self.layer_norm_eps,
            act: self.act(),
            causal: false,
        };
        let vm = init.at("vision_model");
        let embeddings = vm.at("embeddings");
        let layers = vm.at("encoder").at("layers");
        let patches = Conv2dConfig::new([self.num_channels, h], [p, p]).with_stride([p, p]);
        let norm = LayerNormConfig::new(h).with_epsilon(self.layer_norm_eps);
        SiglipVisionEncoder {
            vision_model: SiglipVisionTransformer {
                embeddings: SiglipEmbeddings {
                    patch_embedding: embeddings.conv2d("patch_embedding", &patches),
                    position_embedding: embeddings.embedding(
                        "position_embedding",
                        self.num_patches(),
                        h,
                    ),
                },
                encoder: ClipEncoder {
                    layers: (0..self.num_hidden_layers)
                        .map(|i| layer.init(&layers.at(i)))
                        .collect(),
                },
                post_layernorm: vm.layer_norm("post_layernorm", &norm),
            },
            config: self.clone(),
        }
    }
}

impl<B: FluxBackend> SiglipVisionEncoder<B> {
    /// The hyper-parameters.
    pub fn config(&self) -> &SiglipVisionConfig {
        &self.config
    }

    /// The float dtype of the weights.
    pub fn dtype(&self) -> DType {
        self.vision_model.post_layernorm.gamma.val().dtype()
    }

    /// `last_hidden_state` of preprocessed images ([`super::SiglipImageProcessor`]).
    ///
    /// # Shapes
    /// - pixels: `[batch, channels, image_size, image_size]` in `[-1, 1]`
    /// - returns `[batch, num_patches, hidden]` (so400m: `[batch, 729, 1152]`)
    ///
    /// # Errors
    /// [`Error::BadInput`] for another image shape or an empty batch.
    pub fn forward(&self, pixels: Tensor<B, 4>) -> Result<Tensor<B, 3>> {
        let c = &self.config;
        let [b, channels, h, w] = pixels.dims();
        if b == 0 || channels != c.num_channels || h != c.image_size || w != c.image_size {
            return Err(Error::BadInput(format!(
                "SigLIP takes [b > 0, {}, {s}, {s}] pixels, got {:?}",
                c.num_channels,
                pixels.dims(),
                s = c.image_size
            )));
        }
        let vm = &self.vision_model;
        let device = pixels.device();
        let patches = vm
            .embeddings
            .patch_embedding
            .forward(pixels.cast(self.dtype()));
        let n = c.num_patches();
        // [b, hidden, grid, grid] -> [b, grid², hidden], row-major patches.
        let x = patches.reshape([b, c.hidden_size, n]).swap_dims(1, 2);
        let positions = Tensor::<B, 1, Int>::arange(0..n as i64, &device).reshape([1, n]);
        let x = x + vm.embeddings.position_embedding.forward(positions);
        let x = vm
            .encoder
            .layers
            .iter()
            .fold(x, |x, layer| layer.forward(x));
        Ok(norm(&vm.post_layernorm, c.layer_norm_eps, x))
    }
}
