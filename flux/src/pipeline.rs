//! [`Pipeline`]: text encoders, transformer, sampler and VAE, from a prompt to images.

mod condition;
mod denoise;
mod lora;
mod plan;
mod redux;
mod text;
mod vae;

pub use lora::{Component, LoraReport, resolve_loras};
pub use plan::Resolved;

use std::borrow::Cow;
use std::cell::Cell;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Instant;

use burn::tensor::DType;
use flux_core::{Flux, FluxConfig, Quantization};
use flux_lora::LoraMode;
use flux_nn::FluxBackend;
use flux_sampler::Cache;
use flux_text::{ClipTextEncoder, ClipTokenizer, T5Encoder, T5Tokenizer};
use flux_vae::AutoEncoder;
use image::RgbImage;

use crate::files::{ClipTokenizerFiles, ModelFiles};
use crate::redux_files::ReduxFiles;
use crate::request::{GenerateRequest, Progress, Stage};
use crate::{Error, ModelKind, Result, Variant};

/// CLIP's context length.
const CLIP_MAX_LEN: usize = 77;

/// When the models are in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MemoryMode {
    /// Load everything in `build` and keep it: fastest for many calls. FLUX.1-dev in bf16:
    /// 33.7 GB of weights (transformer 23.8, T5-XXL 9.5, CLIP and VAE 0.4).
    #[default]
    Resident,
    /// Load each model when its stage runs and drop it after: the text encoders are gone
    /// before the transformer loads, and the transformer before the VAE decodes. Peak memory is
    /// the largest single model (the transformer) instead of the sum; every call reloads.
    /// FLUX.1-dev in bf16: 23.8 GB of weights at the peak (docs/architecture.md has the table).
    Sequential,
}

/// Where the weights come from.
#[derive(Debug, Clone)]
enum WeightsFrom {
    Dir(PathBuf),
    Files(Box<ModelFiles>),
    #[cfg(feature = "hub")]
    Hub {
        repo: String,
        revision: Option<String>,
    },
}

/// Builds a [`Pipeline`]; errors are deferred to [`PipelineBuilder::build`].
#[derive(Debug)]
#[must_use]
pub struct PipelineBuilder<B: FluxBackend> {
    from: Option<WeightsFrom>,
    kind: Option<ModelKind>,
    variant: Option<Variant>,
    device: B::Device,
    dtype: Option<DType>,
    memory: MemoryMode,
    offload_blocks: bool,
    quantization: Quantization,
    t5_max_len: Option<usize>,
    loras: Vec<(PathBuf, f32)>,
    lora_mode: LoraMode,
    lora_lenient: bool,
    max_batch: Option<usize>,
    redux: Option<ReduxFiles>,
}

impl<B: FluxBackend> PipelineBuilder<B> {
    /// A local FLUX.1 folder in the Hugging Face repository layout.
    pub fn model_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.from = Some(WeightsFrom::Dir(dir.into()));
        self
    }

    /// Separate files (e.g. ComfyUI's `flux1-dev-fp8.safetensors`, `ae.safetensors`,
    /// `clip_l.safetensors`, `t5xxl_fp16.safetensors` and the two tokenizers).
    pub fn files(mut self, files: ModelFiles) -> Self {
        self.from = Some(WeightsFrom::Files(Box::new(files)));
        self
    }

    /// A Hugging Face Hub repository, e.g. `black-forest-labs/FLUX.1-schnell`, downloaded into
    /// the hub cache (`HF_TOKEN` for the gated \[dev\] repository).
    #[cfg(feature = "hub")]
    pub fn hub_repo(mut self, repo: impl Into<String>) -> Self {
        self.from = Some(WeightsFrom::Hub {
            repo: repo.into(),
            revision: None,
        });
        self
    }

    /// Forces the model kind (default: inferred from the transformer — guidance embedding
    /// means \[dev\]).
    pub fn kind(mut self, kind: ModelKind) -> Self {
        self.kind = Some(kind);
        self
    }

    /// Forces the variant (default: detected — the transformer's input width tells Fill
    /// (384) and the control models (128, also \[dev\] with a control LoRA) apart; Kontext has
    /// \[dev\]'s shapes and is recognised by "kontext" in the transformer's path or the
    /// folder's `model_index.json`: pass [`Variant::Kontext`] for a file named otherwise).
    pub fn variant(mut self, variant: Variant) -> Self {
        self.variant = Some(variant);
        self
    }

    /// The device to run on.
    pub fn device(mut self, device: B::Device) -> Self {
        self.device = device;
        self
    }

    /// Float dtype of the weights and activations of all four models (default: the device's
    /// default float). `BF16` is what the released weights are stored in; `F16` on devices
    /// without bf16 (T5 then keeps its residual stream in f32, which f16 overflows). Norm
    /// statistics, softmax, RoPE and the sampler's latents stay in f32 (docs/backends.md).
    pub fn dtype(mut self, dtype: DType) -> Self {
        self.dtype = Some(dtype);
        self
    }

    /// Memory mode (default [`MemoryMode::Resident`]).
    pub fn memory(mut self, memory: MemoryMode) -> Self {
        self.memory = memory;
        self
    }

    /// Block-level offload of the transformer (default off): its blocks stay in host memory
    /// and are uploaded one at a time as each step runs them, so the device holds 0.8 GB of
    /// the transformer's 23.8 GB (bf16) at the price of moving the rest across every step.
    /// For GPUs smaller than the model; combine with [`MemoryMode::Sequential`] to keep the
    /// text encoders off the device too. See [`flux_core::Flux::offload_blocks`].
    pub fn offload_blocks(mut self, offload: bool) -> Self {
        self.offload_blocks = offload;
        self
    }

    /// How linear weights are held (default [`Quantization::AsStored`]: GGUF and fp8 files
    /// stay quantized in memory, each layer dequantized just before its matmul).
    /// [`Quantization::To`] quantizes the dense weights of the transformer and T5 as they
    /// load (`--quantize q8_0`: about half of bf16's memory, `q4_0` about 28 %); CLIP and the
    /// VAE stay dense (0.25 GB together in bf16). [`Quantization::Dequantize`] makes every
    /// model dense.
    pub fn quantization(mut self, quantization: Quantization) -> Self {
        self.quantization = quantization;
        self
    }

    /// Adds a LoRA file at `strength` (1 = as trained; repeat for several, each with its own
    /// strength). Every format FLUX LoRAs come in is recognised from its keys
    /// ([`flux_lora::LoraFormat`]); its updates to the transformer and to CLIP are
    /// matched to their layers when the pipeline is built, and a LoRA with module names that
    /// match nothing is an error there (see [`PipelineBuilder::lora_lenient`]), never a
    /// silent no-op. [`Pipeline::lora_reports`] says what each one touched.
    pub fn lora(mut self, path: impl Into<PathBuf>, strength: f32) -> Self {
        self.loras.push((path.into(), strength));
        self
    }

    /// How LoRAs are applied (default [`LoraMode::Merged`]: into the weights at load, no
    /// cost per step). [`LoraMode::Runtime`] keeps them beside the weights, so
    /// [`GenerateRequest::with_lora_scales`] can change their strengths per request; LoRAs
    /// on quantized layers always run that way.
    pub fn lora_mode(mut self, mode: LoraMode) -> Self {
        self.lora_mode = mode;
        self
    }

    /// Accept LoRAs with module names that match no layer (reported in
    /// [`Pipeline::lora_reports`] instead of failing the build). Default off.
    pub fn lora_lenient(mut self, lenient: bool) -> Self {
        self.lora_lenient = lenient;
        self
    }

    /// At most `rows` images per transformer call (true CFG counts each image twice). Default:
    /// the whole batch in one call on GPUs; one image per call on the CPU backends, where
    /// batched calls measured slower per image (`small`: 646 ms per image alone, 960–1070 ms
    /// per image at batch 2–4; docs/performance.md). Smaller chunks hold fewer activations
    /// at once; the images are the same either way (each image's noise is drawn for the
    /// whole batch, as diffusers draws it).
    pub fn max_batch(mut self, rows: usize) -> Self {
        self.max_batch = Some(rows.max(1));
        self
    }

    /// FLUX.1 Redux's models (SigLIP and the Redux embedder), for requests with Redux images
    /// ([`GenerateRequest::with_redux_image`]); loaded with the others.
    pub fn redux(mut self, files: ReduxFiles) -> Self {
        self.redux = Some(files);
        self
    }

    /// T5 sequence length (default: 512 for \[dev\], 256 for \[schnell\], as trained).
    pub fn t5_max_len(mut self, len: usize) -> Self {
        self.t5_max_len = Some(len);
        self
    }

    /// Resolves the files, reads the tokenizers and (in resident mode) loads every model.
    ///
    /// # Errors
    /// [`Error::NoWeights`] if no source was given; [`Error::MissingFiles`] naming what to
    /// download; any loading error of the four crates (corrupt files, missing keys, ...).
    pub fn build(self) -> Result<Pipeline<B>> {
        let files = match self.from.ok_or(Error::NoWeights)? {
            WeightsFrom::Dir(dir) => ModelFiles::from_dir(dir)?,
            WeightsFrom::Files(files) => {
                files.check()?;
                *files
            }
            #[cfg(feature = "hub")]
            WeightsFrom::Hub { repo, revision } => {
                crate::hub::download(&repo, revision.as_deref())?
            }
        };
        let config = flux_core::read_config(&files.transformer)?;
        let kind = self.kind.unwrap_or_else(|| ModelKind::of(&config));
        if kind == ModelKind::Dev && !config.guidance_embed {
            return Err(Error::BadRequest(
                "the transformer has no guidance embedding: it is [schnell], not [dev]".into(),
            ));
        }
        let clip_tokenizer = match &files.clip_tokenizer {
            ClipTokenizerFiles::Json(path) => ClipTokenizer::from_file(path)?,
            ClipTokenizerFiles::VocabMerges { vocab, merges } => {
                ClipTokenizer::from_vocab_merges(vocab, merges)?
            }
        };
        let t5_tokenizer = T5Tokenizer::from_file(&files.t5_tokenizer)?;
        let t5_max_len = self.t5_max_len.unwrap_or(kind.t5_max_len());
        let loras = if self.loras.is_empty() {
            None
        } else {
            let clip = flux_text::read_clip_config(&files.clip)?;
            Some(lora::Loras::open::<B>(
                &self.loras,
                self.lora_mode,
                self.lora_lenient,
                &config,
                &clip,
                &self.device,
            )?)
        };
        // A control LoRA widens [dev]'s input to take the control latents.
        let in_channels = loras
            .as_ref()
            .and_then(lora::Loras::transformer_input)
            .unwrap_or(0)
            .max(config.in_channels);
        let detected = Variant::detect(
            in_channels,
            config.out_channels,
            &Variant::name_hint(&files.transformer),
        );
        let variant = match (self.variant, detected) {
            (Some(v), _) if v.in_channels(config.out_channels) == in_channels => v,
            (Some(v), _) => {
                return Err(Error::BadRequest(format!(
                    "the transformer takes {in_channels} input channels; a {v} model takes {}",
                    v.in_channels(config.out_channels)
                )));
            }
            (None, Some(v)) => v,
            (None, None) => {
                return Err(Error::BadRequest(format!(
                    "the transformer takes {in_channels} input channels for {} output channels: \
                     no FLUX.1 model has that shape",
                    config.out_channels
                )));
            }
        };
        let redux = self.redux.map(redux::ReduxSetup::new).transpose()?;
        let mut pipeline = Pipeline {
            files,
            config,
            redux,
            kind,
            variant,
            transformer_in_channels: in_channels,
            device: self.device,
            dtype: self.dtype,
            memory: self.memory,
            offload_blocks: self.offload_blocks,
            quantization: self.quantization,
            t5_max_len,
            clip_tokenizer,
            t5_tokenizer,
            loras,
            max_batch: self.max_batch,
            resident: None,
        };
        if pipeline.memory == MemoryMode::Resident {
            pipeline.resident = Some(Models {
                clip: pipeline.load_clip()?,
                t5: pipeline.load_t5()?,
                transformer: pipeline.load_transformer()?,
                vae: pipeline.load_vae()?,
                redux: match pipeline.redux {
                    Some(_) => Some(pipeline.load_redux()?),
                    None => None,
                },
            });
        }
        Ok(pipeline)
    }
}

/// The four models, when resident.
#[derive(Debug)]
struct Models<B: FluxBackend> {
    clip: ClipTextEncoder<B>,
    t5: T5Encoder<B>,
    transformer: Flux<B>,
    vae: AutoEncoder<B>,
    redux: Option<redux::ReduxModels<B>>,
}

/// FLUX.1 text-to-image (and image-to-image), reproducing diffusers' `FluxPipeline`.
#[derive(Debug)]
pub struct Pipeline<B: FluxBackend> {
    files: ModelFiles,
    /// The transformer's config as stored (before LoRAs).
    config: FluxConfig,
    redux: Option<redux::ReduxSetup>,
    kind: ModelKind,
    variant: Variant,
    /// The transformer's input channels per token (after a control LoRA widens them).
    transformer_in_channels: usize,
    device: B::Device,
    dtype: Option<DType>,
    memory: MemoryMode,
    offload_blocks: bool,
    quantization: Quantization,
    t5_max_len: usize,
    clip_tokenizer: ClipTokenizer,
    t5_tokenizer: T5Tokenizer,
    loras: Option<lora::Loras>,
    max_batch: Option<usize>,
    resident: Option<Models<B>>,
}

impl<B: FluxBackend> Pipeline<B> {
    /// How the small models (CLIP, the VAE, SigLIP, the Redux embedder) load: in the
    /// pipeline's dtype, config from the checkpoint, never quantized at load (stored
    /// quantization is kept).
    fn dense_load_config<C>(&self) -> flux_nn::LoadConfig<C> {
        let quantization = match self.quantization {
            Quantization::To(_) => Quantization::AsStored,
            q => q,
        };
        flux_nn::LoadConfig {
            dtype: self.dtype,
            quantization,
            ..Default::default()
        }
    }

    /// A builder on the backend's default device.
    pub fn builder() -> PipelineBuilder<B> {
        PipelineBuilder {
            from: None,
            kind: None,
            variant: None,
            device: B::Device::default(),
            dtype: None,
            memory: MemoryMode::default(),
            offload_blocks: false,
            quantization: Quantization::AsStored,
            t5_max_len: None,
            loras: Vec::new(),
            lora_mode: LoraMode::default(),
            lora_lenient: false,
            max_batch: None,
            redux: None,
        }
    }

    /// \[dev\] or \[schnell\].
    pub fn kind(&self) -> ModelKind {
        self.kind
    }

    /// What the model conditions on besides the prompt.
    pub fn variant(&self) -> Variant {
        self.variant
    }

    /// The files in use.
    pub fn files(&self) -> &ModelFiles {
        &self.files
    }

    /// Generates the request's images.
    ///
    /// # Errors
    /// [`Error::BadRequest`] for invalid requests (empty prompt, size not a multiple of 16,
    /// zero steps, ...), and any model error.
    pub fn generate(&self, request: &GenerateRequest) -> Result<Vec<RgbImage>> {
        self.generate_with_progress(request, |_| ControlFlow::Continue(()))
    }

    /// [`Pipeline::generate`] reporting progress; the callback returns
    /// [`ControlFlow::Break`] to cancel.
    ///
    /// # Errors
    /// As [`Pipeline::generate`], plus [`Error::Cancelled`].
    pub fn generate_with_progress(
        &self,
        request: &GenerateRequest,
        on_progress: impl FnMut(Progress) -> ControlFlow<()>,
    ) -> Result<Vec<RgbImage>> {
        // The size that ran is the plan's (Kontext fits the request's aspect to its area).
        let (values, plan, _) = self.run(request, on_progress)?;
        Ok(flux_vae::rgb8_images(
            &values,
            request.batch_size(),
            plan.height,
            plan.width,
        ))
    }

    /// [`Pipeline::generate_float`] reporting progress; the callback can cancel.
    ///
    /// # Errors
    /// As [`Pipeline::generate_with_progress`].
    pub fn generate_float_with_progress(
        &self,
        request: &GenerateRequest,
        on_progress: impl FnMut(Progress) -> ControlFlow<()>,
    ) -> Result<Vec<f32>> {
        Ok(self.run(request, on_progress)?.0)
    }

    /// Runs `request` with MagCache in calibration mode (nothing is skipped) and returns its
    /// images and the magnitude ratios it measured, one per step of the run (diffusers'
    /// `MagCacheConfig(calibrate=True)`): pass them back as [`flux_sampler::MagRatios::Custom`]
    /// to cache a model whose ratios are not FLUX.1's.
    ///
    /// # Errors
    /// As [`Pipeline::generate`].
    pub fn calibrate_mag_cache(
        &self,
        request: &GenerateRequest,
    ) -> Result<(Vec<RgbImage>, Vec<f32>)> {
        let mut mag = flux_sampler::MagCache::flux(0.0);
        mag.ratios = flux_sampler::MagRatios::Calibrate;
        let request = request.clone().with_cache(Cache::Mag(mag));
        let (values, plan, calibration) = self.run(&request, |_| ControlFlow::Continue(()))?;
        let images = flux_vae::rgb8_images(&values, request.batch_size(), plan.height, plan.width);
        Ok((images, calibration.unwrap_or_default()))
    }

    /// Resolves the request, then encodes, denoises and decodes: the images as floats, the
    /// plan they ran with and MagCache calibration's ratios when calibrating.
    fn run(
        &self,
        request: &GenerateRequest,
        mut on_progress: impl FnMut(Progress) -> ControlFlow<()>,
    ) -> Result<(Vec<f32>, Resolved, Option<Vec<f32>>)> {
        let start = Instant::now();
        let cache_stats = Cell::new(None);
        let mut report = |stage, step, total| {
            let progress = Progress {
                stage,
                step,
                total,
                elapsed: start.elapsed(),
                cache: cache_stats.get(),
            };
            match on_progress(progress) {
                ControlFlow::Continue(()) => Ok(()),
                ControlFlow::Break(()) => Err(Error::Cancelled),
            }
        };
        let resolved = self.resolve(request)?;

        report(Stage::Encoding, 0, 1)?;
        let redux_only =
            !request.redux_images.is_empty() && request.prompts.iter().all(|p| p.trim().is_empty());
        let (prompts, negatives) = if redux_only {
            // diffusers' Redux prior without text encoders: no prompt, zeros.
            (self.zero_text(resolved.batch), None)
        } else {
            self.encode_prompts(request, &resolved.negative_prompts)?
        };
        let prompts = self.with_redux(request, prompts)?;
        report(Stage::Encoding, 1, 1)?;

        let negative = negatives.zip(resolved.true_cfg);
        let (latents, calibration) = self.denoise(
            request,
            &resolved,
            prompts,
            negative,
            &mut report,
            &cache_stats,
        )?;

        report(Stage::Decoding, 0, 1)?;
        let images = self.decode(latents)?;
        report(Stage::Decoding, 1, 1)?;
        Ok((images, resolved, calibration))
    }

    /// Generates the request's images as diffusers' `output_type="np"` does: floats in [0, 1],
    /// `[b, height, width, 3]` row-major (quantised to 8 bits by [`flux_vae::rgb8_images`]).
    ///
    /// # Errors
    /// As [`Pipeline::generate`].
    pub fn generate_float(&self, request: &GenerateRequest) -> Result<Vec<f32>> {
        self.generate_float_with_progress(request, |_| ControlFlow::Continue(()))
    }

    /// A model: borrowed when resident, loaded for this call when sequential (and dropped by
    /// the caller when done with it).
    fn model<'a, T: Clone>(
        &'a self,
        resident: impl FnOnce(&'a Models<B>) -> &'a T,
        load: impl FnOnce(&Self) -> Result<T>,
    ) -> Result<Cow<'a, T>> {
        match &self.resident {
            Some(models) => Ok(Cow::Borrowed(resident(models))),
            None => load(self).map(Cow::Owned),
        }
    }
}
