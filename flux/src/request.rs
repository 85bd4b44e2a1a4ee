//! What to generate: [`GenerateRequest`], and the progress reports a caller can watch.

use std::time::Duration;

use image::DynamicImage;

/// One generation call: prompts, size, sampler settings and the source of the initial noise.
///
/// Built with [`GenerateRequest::new`] and the `with_*` methods; defaults follow the released
/// models (see [`crate::ModelKind`]): [dev] 28 steps, guidance 3.5; [schnell] 4 steps.
#[derive(Debug, Clone)]
#[must_use]
pub struct GenerateRequest {
    /// One prompt per image (or per group of `images_per_prompt` images).
    pub prompts: Vec<String>,
    /// Image width in pixels (a multiple of 16).
    pub width: usize,
    /// Image height in pixels (a multiple of 16).
    pub height: usize,
    /// Sampler steps; `None`: the model's default.
    pub steps: Option<usize>,
    /// Guidance scale ([dev] only); `None`: the model's default.
    pub guidance: Option<f32>,
    /// Seed of the initial noise.
    pub seed: u64,
    /// Images per prompt.
    pub images_per_prompt: usize,
    /// Initial latents `[b, 16, h/8, w/8]` (row-major values) instead of seeded noise.
    pub latents: Option<Vec<f32>>,
    /// img2img: the image to start from and the strength in (0, 1], diffusers'
    /// `FluxImg2ImgPipeline` semantics: the last `⌊steps·strength⌋`-ish steps run (exactly,
    /// from step `int(steps − steps·strength)` on) starting from the image's latents noised to
    /// that step's sigma; 1 ignores the image's content. The image is resized to
    /// `width × height` when its size differs.
    pub init_image: Option<(DynamicImage, f64)>,
    /// The strength of each of the pipeline's LoRAs for this request (in the order they were
    /// given to the builder); `None`: as loaded. Needs the run-time LoRA mode.
    pub lora_scales: Option<Vec<f32>>,
    /// Negative prompts: one for every prompt, or one per prompt. They act only with
    /// [`GenerateRequest::true_cfg`] above 1 (diffusers' rule; [`crate::Resolved::warnings`]
    /// says when one is given without it). An empty string is a valid negative prompt.
    pub negative_prompts: Vec<String>,
    /// True classifier-free guidance scale (diffusers' `true_cfg_scale`): above 1, with a
    /// negative prompt, every step runs the transformer on the prompt and on the negative
    /// prompt and moves along `neg + scale · (pos − neg)` (twice the transformer's work).
    /// `None`: off. [dev] is guidance-distilled, so without this a negative prompt does nothing.
    pub true_cfg: Option<f32>,
}

impl GenerateRequest {
    /// A 1024x1024 request for `prompt` with the model's default steps and guidance, seed 0.
    pub fn new(prompt: impl Into<String>) -> Self {
        Self {
            prompts: vec![prompt.into()],
            width: 1024,
            height: 1024,
            steps: None,
            guidance: None,
            seed: 0,
            images_per_prompt: 1,
            latents: None,
            init_image: None,
            lora_scales: None,
            negative_prompts: Vec::new(),
            true_cfg: None,
        }
    }

    /// Several prompts in one batch.
    pub fn batch(prompts: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            prompts: prompts.into_iter().map(Into::into).collect(),
            ..Self::new("")
        }
    }

    /// Image size in pixels.
    pub fn with_size(mut self, width: usize, height: usize) -> Self {
        (self.width, self.height) = (width, height);
        self
    }

    /// Sampler steps.
    pub fn with_steps(mut self, steps: usize) -> Self {
        self.steps = Some(steps);
        self
    }

    /// Guidance scale.
    pub fn with_guidance(mut self, guidance: f32) -> Self {
        self.guidance = Some(guidance);
        self
    }

    /// Seed of the initial noise.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Images per prompt.
    pub fn with_images_per_prompt(mut self, n: usize) -> Self {
        self.images_per_prompt = n;
        self
    }

    /// Initial latents `[b, 16, h/8, w/8]`, row-major.
    pub fn with_latents(mut self, latents: Vec<f32>) -> Self {
        self.latents = Some(latents);
        self
    }

    /// The strength of each of the pipeline's LoRAs for this request, in the order they were
    /// given to the builder (run-time LoRA mode; the loaded model is not changed).
    pub fn with_lora_scales(mut self, scales: impl Into<Vec<f32>>) -> Self {
        self.lora_scales = Some(scales.into());
        self
    }

    /// A negative prompt for every prompt of the request (acts with [`Self::with_true_cfg`]).
    pub fn with_negative_prompt(mut self, negative: impl Into<String>) -> Self {
        self.negative_prompts = vec![negative.into()];
        self
    }

    /// One negative prompt per prompt, in order.
    pub fn with_negative_prompts(
        mut self,
        negatives: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        self.negative_prompts = negatives.into_iter().map(Into::into).collect();
        self
    }

    /// True classifier-free guidance at `scale` (see [`GenerateRequest::true_cfg`]).
    pub fn with_true_cfg(mut self, scale: f32) -> Self {
        self.true_cfg = Some(scale);
        self
    }

    /// img2img from `image` with `strength` in (0, 1].
    pub fn with_init_image(mut self, image: DynamicImage, strength: f64) -> Self {
        self.init_image = Some((image, strength));
        self
    }

    /// Total number of images.
    pub fn batch_size(&self) -> usize {
        self.prompts.len() * self.images_per_prompt
    }
}

/// The stage a [`Progress`] report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stage {
    /// Loading weights.
    Loading,
    /// Running the text encoders.
    Encoding,
    /// Encoding the img2img init image with the VAE.
    EncodingImage,
    /// A sampler step.
    Denoising,
    /// Decoding latents with the VAE.
    Decoding,
}

/// A progress report: `step` of `total` within `stage`, `elapsed` since `generate` began.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// What is running.
    pub stage: Stage,
    /// Steps done in this stage.
    pub step: usize,
    /// Steps in this stage.
    pub total: usize,
    /// Time since the call began.
    pub elapsed: Duration,
}
