//! [`Pipeline`]: text encoders, transformer, sampler and VAE, from a prompt to images.

use std::path::PathBuf;
use std::time::Instant;

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Tensor, TensorData};
use flux_core::Flux;
use flux_text::{ClipTextEncoder, ClipTokenizer, T5Encoder, T5Tokenizer};
use flux_vae::AutoEncoder;
use image::RgbImage;

use crate::files::{ClipTokenizerFiles, ModelFiles};
use crate::request::{Control, GenerateRequest, Progress, Stage};
use crate::{Error, ModelKind, Result};

/// CLIP's context length.
const CLIP_MAX_LEN: usize = 77;

/// When the models are in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MemoryMode {
    /// Load everything in `build` and keep it: fastest for many calls.
    #[default]
    Resident,
    /// Load each model when its stage runs and drop it after: the text encoders are gone
    /// before the transformer loads, and the transformer before the VAE decodes. Peak memory is
    /// the largest single model (the transformer) instead of the sum; every call reloads.
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
pub struct PipelineBuilder<B: Backend> {
    from: Option<WeightsFrom>,
    kind: Option<ModelKind>,
    device: B::Device,
    dtype: Option<DType>,
    memory: MemoryMode,
    t5_max_len: Option<usize>,
}

impl<B: Backend> PipelineBuilder<B> {
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
    /// the hub cache (`HF_TOKEN` for the gated [dev] repository).
    #[cfg(feature = "hub")]
    pub fn hub_repo(mut self, repo: impl Into<String>) -> Self {
        self.from = Some(WeightsFrom::Hub {
            repo: repo.into(),
            revision: None,
        });
        self
    }

    /// Forces the model kind (default: inferred from the transformer — guidance embedding
    /// means [dev]).
    pub fn kind(mut self, kind: ModelKind) -> Self {
        self.kind = Some(kind);
        self
    }

    /// The device to run on.
    pub fn device(mut self, device: B::Device) -> Self {
        self.device = device;
        self
    }

    /// Float dtype of the weights and activations (default: the device's default float).
    pub fn dtype(mut self, dtype: DType) -> Self {
        self.dtype = Some(dtype);
        self
    }

    /// Memory mode (default [`MemoryMode::Resident`]).
    pub fn memory(mut self, memory: MemoryMode) -> Self {
        self.memory = memory;
        self
    }

    /// T5 sequence length (default: 512 for [dev], 256 for [schnell], as trained).
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
        let mut pipeline = Pipeline {
            files,
            kind,
            device: self.device,
            dtype: self.dtype,
            memory: self.memory,
            t5_max_len,
            clip_tokenizer,
            t5_tokenizer,
            resident: None,
        };
        if pipeline.memory == MemoryMode::Resident {
            pipeline.resident = Some(Models {
                clip: pipeline.load_clip()?,
                t5: pipeline.load_t5()?,
                transformer: pipeline.load_transformer()?,
                vae: pipeline.load_vae()?,
            });
        }
        Ok(pipeline)
    }
}

/// The four models, when resident.
#[derive(Debug)]
struct Models<B: Backend> {
    clip: ClipTextEncoder<B>,
    t5: T5Encoder<B>,
    transformer: Flux<B>,
    vae: AutoEncoder<B>,
}

/// FLUX.1 text-to-image (and image-to-image), reproducing diffusers' `FluxPipeline`.
#[derive(Debug)]
pub struct Pipeline<B: Backend> {
    files: ModelFiles,
    kind: ModelKind,
    device: B::Device,
    dtype: Option<DType>,
    memory: MemoryMode,
    t5_max_len: usize,
    clip_tokenizer: ClipTokenizer,
    t5_tokenizer: T5Tokenizer,
    resident: Option<Models<B>>,
}

impl<B: Backend> Pipeline<B> {
    /// A builder on the backend's default device.
    pub fn builder() -> PipelineBuilder<B> {
        PipelineBuilder {
            from: None,
            kind: None,
            device: B::Device::default(),
            dtype: None,
            memory: MemoryMode::default(),
            t5_max_len: None,
        }
    }

    /// [dev] or [schnell].
    pub fn kind(&self) -> ModelKind {
        self.kind
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
        self.generate_with_progress(request, |_| Control::Continue)
    }

    /// [`Pipeline::generate`] reporting progress; the callback can cancel.
    ///
    /// # Errors
    /// As [`Pipeline::generate`], plus [`Error::Cancelled`].
    pub fn generate_with_progress(
        &self,
        request: &GenerateRequest,
        on_progress: impl FnMut(Progress) -> Control,
    ) -> Result<Vec<RgbImage>> {
        let values = self.generate_float_with_progress(request, on_progress)?;
        Ok(to_rgb8(
            &values,
            request.batch_size(),
            request.height,
            request.width,
        ))
    }

    /// [`Pipeline::generate_float`] reporting progress; the callback can cancel.
    ///
    /// # Errors
    /// As [`Pipeline::generate_with_progress`].
    pub fn generate_float_with_progress(
        &self,
        request: &GenerateRequest,
        mut on_progress: impl FnMut(Progress) -> Control,
    ) -> Result<Vec<f32>> {
        let start = Instant::now();
        let mut report = |stage, step, total| match on_progress(Progress {
            stage,
            step,
            total,
            elapsed: start.elapsed(),
        }) {
            Control::Continue => Ok(()),
            Control::Cancel => Err(Error::Cancelled),
        };
        let plan = self.plan(request)?;

        report(Stage::Encoding, 0, 1)?;
        let (txt, pooled) = self.encode_prompts(request)?;
        report(Stage::Encoding, 1, 1)?;

        let latents = self.denoise(request, &plan, txt, pooled, &mut report)?;

        report(Stage::Decoding, 0, 1)?;
        let images = self.decode(latents)?;
        report(Stage::Decoding, 1, 1)?;
        Ok(images)
    }

    /// Generates the request's images as diffusers' `output_type="np"` does: floats in [0, 1],
    /// `[b, height, width, 3]` row-major (see [`to_rgb8`]).
    ///
    /// # Errors
    /// As [`Pipeline::generate`].
    pub fn generate_float(&self, request: &GenerateRequest) -> Result<Vec<f32>> {
        self.generate_float_with_progress(request, |_| Control::Continue)
    }
}

/// Quantises float images `[b, h, w, 3]` in [0, 1] to 8-bit like diffusers' `numpy_to_pil`:
/// `round(x * 255)`, ties to even.
pub fn to_rgb8(values: &[f32], batch: usize, height: usize, width: usize) -> Vec<RgbImage> {
    let per_image = height * width * 3;
    values
        .chunks_exact(per_image)
        .take(batch)
        .map(|img| {
            let bytes = img
                .iter()
                .map(|v| (v * 255.0).round_ties_even() as u8)
                .collect();
            RgbImage::from_raw(width as u32, height as u32, bytes).expect("h * w * 3 values")
        })
        .collect()
}

/// Validated request values.
struct Plan {
    steps: usize,
    guidance: Option<f32>,
    batch: usize,
}

impl<B: Backend> Pipeline<B> {
    fn plan(&self, r: &GenerateRequest) -> Result<Plan> {
        let bad = |m: String| Err(Error::BadRequest(m));
        if r.prompts.is_empty() {
            return bad("no prompt given".into());
        }
        if let Some(i) = r.prompts.iter().position(|p| p.trim().is_empty()) {
            return bad(format!("prompt {i} is empty"));
        }
        if r.images_per_prompt == 0 {
            return bad("images_per_prompt must be at least 1".into());
        }
        flux_core::check_image_size(r.width, r.height)?;
        let steps = r.steps.unwrap_or(self.kind.default_steps());
        if steps == 0 {
            return bad("steps must be at least 1".into());
        }
        let guidance = match self.kind {
            ModelKind::Dev => Some(r.guidance.or(self.kind.default_guidance()).unwrap_or(3.5)),
            ModelKind::Schnell => None,
        };
        if guidance.is_some_and(|g| !g.is_finite()) {
            return bad("guidance must be finite".into());
        }
        let batch = r.batch_size();
        if let Some(latents) = &r.latents {
            let expected = batch * 16 * (r.height / 8) * (r.width / 8);
            if latents.len() != expected {
                return bad(format!(
                    "initial latents hold {} values; [{batch}, 16, {}, {}] needs {expected}",
                    latents.len(),
                    r.height / 8,
                    r.width / 8
                ));
            }
            if latents.iter().any(|v| !v.is_finite()) {
                return bad("initial latents contain NaN or infinite values".into());
            }
        }
        if let Some((_, strength)) = &r.init_image
            && !(*strength > 0.0 && *strength <= 1.0)
        {
            return bad(format!("img2img strength {strength} must be in (0, 1]"));
        }
        Ok(Plan {
            steps,
            guidance,
            batch,
        })
    }
}

/// Loading and running each stage.
impl<B: Backend> Pipeline<B> {
    fn load_clip(&self) -> Result<ClipTextEncoder<B>> {
        Ok(flux_text::load_clip::<B>(&self.files.clip, &self.device)?)
    }

    fn load_t5(&self) -> Result<T5Encoder<B>> {
        Ok(flux_text::load_t5::<B>(&self.files.t5, &self.device)?)
    }

    fn load_transformer(&self) -> Result<Flux<B>> {
        let options = flux_core::LoadConfig {
            config: None,
            dtype: self.dtype,
        };
        Ok(flux_core::load_with::<B>(
            &self.files.transformer,
            &self.device,
            options,
        )?)
    }

    fn load_vae(&self) -> Result<AutoEncoder<B>> {
        Ok(flux_vae::load::<B>(&self.files.vae, &self.device)?)
    }

    /// Token ids of every prompt, `[n, len]`.
    fn ids(&self, rows: Vec<Vec<u32>>, len: usize) -> Tensor<B, 2, Int> {
        let n = rows.len();
        let flat: Vec<i64> = rows.into_iter().flatten().map(i64::from).collect();
        Tensor::from_data(TensorData::new(flat, [n, len]), &self.device)
    }

    /// T5 tokens `[b, len, 4096]` and pooled CLIP `[b, 768]`, each prompt repeated
    /// `images_per_prompt` times (consecutively, like diffusers).
    fn encode_prompts(&self, r: &GenerateRequest) -> Result<(Tensor<B, 3>, Tensor<B, 2>)> {
        let clip_ids = r
            .prompts
            .iter()
            .map(|p| self.clip_tokenizer.encode(p, CLIP_MAX_LEN))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let t5_ids = r
            .prompts
            .iter()
            .map(|p| self.t5_tokenizer.encode(p, self.t5_max_len))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let clip_ids = self.ids(clip_ids, CLIP_MAX_LEN);
        let t5_ids = self.ids(t5_ids, self.t5_max_len);
        let (pooled, txt) = match &self.resident {
            Some(m) => (
                m.clip.try_forward(clip_ids)?.pooled,
                m.t5.try_forward(t5_ids)?,
            ),
            None => {
                // Sequential: each encoder lives only for its own forward.
                let pooled = self.load_clip()?.try_forward(clip_ids)?.pooled;
                let txt = self.load_t5()?.try_forward(t5_ids)?;
                (pooled, txt)
            }
        };
        let n = r.images_per_prompt;
        let [p, len, width] = txt.dims();
        let txt = txt
            .unsqueeze_dim::<4>(1)
            .repeat_dim(1, n)
            .reshape([p * n, len, width]);
        let [_, dim] = pooled.dims();
        let pooled = pooled
            .unsqueeze_dim::<3>(1)
            .repeat_dim(1, n)
            .reshape([p * n, dim]);
        Ok((txt, pooled))
    }
}

/// The progress reporter `generate_with_progress` threads through the stages.
type Report<'a> = dyn FnMut(Stage, usize, usize) -> Result<()> + 'a;

impl<B: Backend> Pipeline<B> {
    /// Initial noise (or the caller's latents), then the Euler loop; returns unpacked latents
    /// `[b, 16, h/8, w/8]`.
    fn denoise(
        &self,
        r: &GenerateRequest,
        plan: &Plan,
        txt: Tensor<B, 3>,
        pooled: Tensor<B, 2>,
        report: &mut Report<'_>,
    ) -> Result<Tensor<B, 4>> {
        let device = &self.device;
        let shape = flux_sampler::diffusers_latent_shape(plan.batch, r.height, r.width);
        let [b, _, lh, lw] = shape;
        let noise: Tensor<B, 4> = match &r.latents {
            Some(values) => Tensor::from_data(TensorData::new(values.clone(), shape), device),
            // Same seed, same noise as diffusers' `FluxPipeline` (torch's CPU generator).
            None => {
                flux_sampler::noise_tensor(r.seed, shape, flux_sampler::NoiseDtype::F32, device)?
            }
        };
        let n_img = (lh / 2) * (lw / 2);
        let shift = self.kind.shifted().then(flux_sampler::Shift::default);
        let schedule = flux_sampler::Schedule::new(
            flux_sampler::ScheduleKind::Diffusers,
            plan.steps,
            n_img,
            shift,
        )?;
        if r.init_image.is_some() {
            return Err(Error::BadRequest(
                "img2img is not available yet: the VAE encoder path is being built".into(),
            ));
        }
        let x = flux_core::pack(noise)?;
        let img_ids = flux_core::img_ids::<B>(b, r.height, r.width, device)?;
        let [_, n_txt, _] = txt.dims();
        let txt_ids = flux_core::txt_ids::<B>(b, n_txt, device);

        let loaded;
        let transformer = match &self.resident {
            Some(m) => &m.transformer,
            None => {
                report(Stage::Loading, 0, 1)?;
                loaded = self.load_transformer()?;
                report(Stage::Loading, 1, 1)?;
                &loaded
            }
        };
        let pe = transformer.rope(txt_ids, img_ids)?;
        let guidance = plan.guidance.map(|g| Tensor::<B, 1>::full([b], g, device));
        let mut velocity = |x: &Tensor<B, 3>, step: &flux_sampler::Step| -> Result<Tensor<B, 3>> {
            let t = Tensor::<B, 1>::full([b], step.t, device);
            Ok(transformer.try_forward_with_rope(
                x.clone(),
                txt.clone(),
                &pe,
                t,
                pooled.clone(),
                guidance.clone(),
            )?)
        };
        let total = schedule.num_steps();
        let mut cancelled = false;
        let result = flux_sampler::denoise(&mut velocity, x, &schedule, |step| {
            match report(Stage::Denoising, step.index, total) {
                Ok(()) => std::ops::ControlFlow::Continue(()),
                Err(_) => {
                    cancelled = true;
                    std::ops::ControlFlow::Break(())
                }
            }
        })?;
        let latents = result.finished().ok_or(Error::Cancelled)?;
        if cancelled {
            return Err(Error::Cancelled);
        }
        report(Stage::Denoising, total, total)?;
        Ok(flux_core::unpack(latents, lh, lw)?)
    }

    /// VAE decode and diffusers' post-processing to `output_type="np"`: `(x / 2 + 0.5)
    /// .clamp(0, 1)`, channels last, `[b, h, w, 3]` row-major.
    fn decode(&self, latents: Tensor<B, 4>) -> Result<Vec<f32>> {
        let image = match &self.resident {
            Some(m) => m.vae.decode(latents)?,
            None => self.load_vae()?.decode(latents)?,
        };
        let image = ((image / 2.0 + 0.5).clamp(0.0, 1.0)).permute([0, 2, 3, 1]);
        let values: Vec<f32> = image
            .cast(DType::F32)
            .into_data()
            .to_vec()
            .map_err(|e| Error::Output(format!("reading the decoded image: {e:?}")))?;
        if values.iter().any(|v| !v.is_finite()) {
            return Err(Error::Output(
                "the decoded image contains NaN or infinite values".into(),
            ));
        }
        Ok(values)
    }
}
