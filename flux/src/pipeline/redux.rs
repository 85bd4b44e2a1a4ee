//! Redux (diffusers `FluxPriorReduxPipeline`): images encoded by SigLIP and the Redux
//! embedder, joined to the prompt's T5 tokens.

use burn::tensor::{DType, Tensor};
use flux_nn::FluxBackend;
use flux_text::{ReduxEmbedder, SiglipImageProcessor, SiglipVisionEncoder};

use super::Pipeline;
use super::text::Encoded;
use crate::{Error, GenerateRequest, ReduxFiles, Result};

/// The Redux files and the image processor read from them at build.
#[derive(Debug, Clone)]
pub(super) struct ReduxSetup {
    pub files: ReduxFiles,
    pub processor: SiglipImageProcessor,
}

impl ReduxSetup {
    /// The processor from `preprocessor_config.json`, else so400m's at the tower's size; its
    /// size must be the tower's.
    pub(super) fn new(files: ReduxFiles) -> Result<Self> {
        let config = flux_text::read_siglip_config(&files.image_encoder)?;
        let processor = match &files.preprocessor {
            Some(path) => SiglipImageProcessor::from_file(path)?,
            None => SiglipImageProcessor {
                size: (config.image_size, config.image_size),
                ..SiglipImageProcessor::so400m_patch14_384()
            },
        };
        if processor.size != (config.image_size, config.image_size) {
            return Err(Error::BadRequest(format!(
                "the Redux image processor makes {:?} images; the SigLIP tower takes {}²",
                processor.size, config.image_size
            )));
        }
        Ok(Self { files, processor })
    }
}

/// SigLIP and the Redux embedder.
#[derive(Debug, Clone)]
pub(super) struct ReduxModels<B: FluxBackend> {
    siglip: SiglipVisionEncoder<B>,
    embedder: ReduxEmbedder<B>,
}

impl<B: FluxBackend> Pipeline<B> {
    pub(super) fn load_redux(&self) -> Result<ReduxModels<B>> {
        let setup = self.redux.as_ref().ok_or_else(no_redux)?;
        let siglip = flux_text::load_siglip_with::<B>(
            &setup.files.image_encoder,
            &self.device,
            self.dense_load_config(),
        )?;
        let embedder = flux_text::load_redux_embedder::<B>(
            &setup.files.image_embedder,
            &self.device,
            self.dense_load_config(),
        )?;
        let (width, redux) = (siglip.config().hidden_size, *embedder.config());
        if redux.redux_dim != width || redux.txt_in_features != self.config.context_in_dim {
            return Err(Error::BadRequest(format!(
                "the Redux embedder maps {} to {} features; SigLIP gives {width} and the \
                 transformer takes {}",
                redux.redux_dim, redux.txt_in_features, self.config.context_in_dim
            )));
        }
        Ok(ReduxModels { siglip, embedder })
    }

    /// Zeros in place of the text encoders' output for `rows` image rows: what diffusers' Redux
    /// prior uses without text encoders (an empty prompt here).
    pub(super) fn zero_text(&self, rows: usize) -> Encoded<B> {
        let c = &self.config;
        (
            Tensor::zeros([rows, self.t5_max_len, c.context_in_dim], &self.device),
            Tensor::zeros([rows, c.vec_in_dim], &self.device),
        )
    }

    /// The prompts' encodings with the request's Redux images joined, as diffusers' prior
    /// does: `Σᵢ sᵢ · [txt, imageᵢ]` and `Σᵢ pᵢ · pooled` (sᵢ, pᵢ the image's strengths).
    /// Rows whose prompt is empty take zeros for the text.
    ///
    /// # Shapes
    /// `[b, len, width]`, `[b, dim]` -> `[b, len + tokens, width]`, `[b, dim]`.
    pub(super) fn with_redux(
        &self,
        r: &GenerateRequest,
        (txt, pooled): Encoded<B>,
    ) -> Result<Encoded<B>> {
        if r.redux_images.is_empty() {
            return Ok((txt, pooled));
        }
        let [b, _, _] = txt.dims();
        let models = self.model(
            |m| m.redux.as_ref().expect("loaded with the pipeline"),
            Self::load_redux,
        )?;
        let setup = self.redux.as_ref().ok_or_else(no_redux)?;
        // Empty prompts: zero text rows (one 0/1 factor per row, images per prompt repeated).
        let keep: Vec<f32> = r
            .prompts
            .iter()
            .flat_map(|p| std::iter::repeat_n(f32::from(!p.trim().is_empty()), r.images_per_prompt))
            .collect();
        let keep = Tensor::<B, 1>::from_floats(keep.as_slice(), &self.device);
        let txt = txt.cast(DType::F32) * keep.clone().reshape([b, 1, 1]);
        let pooled = pooled.cast(DType::F32) * keep.reshape([b, 1]);
        let mut sum: Option<Encoded<B>> = None;
        for redux in &r.redux_images {
            let pixels = setup
                .processor
                .preprocess::<B>(&redux.image, &self.device)?;
            let tokens = models.embedder.forward(models.siglip.forward(pixels)?);
            let tokens = tokens.cast(DType::F32).repeat_dim(0, b);
            let row = Tensor::cat(vec![txt.clone(), tokens], 1) * redux.strength;
            let vec = pooled.clone() * redux.pooled_strength;
            sum = Some(match sum {
                None => (row, vec),
                Some((t, p)) => (t + row, p + vec),
            });
        }
        Ok(sum.expect("at least one Redux image"))
    }
}

fn no_redux() -> Error {
    Error::BadRequest(
        "Redux images need the Redux models: build the pipeline with \
         PipelineBuilder::redux(ReduxFiles::from_dir(\"FLUX.1-Redux-dev\")?) (CLI: --redux DIR)"
            .into(),
    )
}
