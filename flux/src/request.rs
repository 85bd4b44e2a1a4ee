//! What to generate: [`GenerateRequest`], and the progress reports a caller can watch.

use std::time::Duration;

use flux_sampler::{Cache, CacheStats, Sampler, Spacing};
use image::DynamicImage;

/// One generation call: prompts, size, sampler settings and the source of the initial noise.
///
/// Built with [`GenerateRequest::new`] and the `with_*` methods; defaults follow the released
/// models (see [`crate::ModelKind`]): \[dev\] 28 steps, guidance 3.5; \[schnell\] 4 steps.
#[derive(Debug, Clone)]
#[must_use]
#[non_exhaustive]
pub struct GenerateRequest {
    /// One prompt per image (or per group of `images_per_prompt` images).
    pub prompts: Vec<String>,
    /// Image width in pixels (a multiple of 16).
    pub width: usize,
    /// Image height in pixels (a multiple of 16).
    pub height: usize,
    /// Sampler steps; `None`: the model's default.
    pub steps: Option<usize>,
    /// Guidance scale (\[dev\] only); `None`: the model's default.
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
    /// `width × height` when its size differs. The strength enters the schedule as the decimal
    /// it prints as (0.6 is Python's 0.6, not 0.6000000238), so a strength picks the same first step as the
    /// same number typed into diffusers.
    pub init_image: Option<(DynamicImage, f32)>,
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
    /// `None`: off. \[dev\] is guidance-distilled, so without this a negative prompt does nothing.
    pub true_cfg: Option<f32>,
    /// Kontext: the images to edit (one for every prompt, or one per prompt), VAE-encoded and
    /// appended to the image tokens. All are resized to the size the first one gets
    /// ([`GenerateRequest::auto_resize`]).
    pub reference_images: Vec<DynamicImage>,
    /// Kontext: the output area in pixels (default [`crate::tools::KONTEXT_MAX_AREA`],
    /// 1024²). As in diffusers, the output keeps the requested aspect ratio at this area, so
    /// `width × height` only sets the shape ([`crate::Resolved`] has the size that runs).
    pub max_area: Option<usize>,
    /// Kontext: resize the reference images to the trained resolution nearest their aspect
    /// ratio (default on, as diffusers); off keeps their size (rounded down to multiples of 16).
    pub auto_resize: bool,
    /// Fill: the mask (white: repaint, black: keep; binarized at half intensity) for the
    /// image in [`GenerateRequest::init_image`] (strength 1 repaints the masked area from
    /// pure noise, diffusers' default).
    pub mask: Option<DynamicImage>,
    /// Control (FLUX.1 Canny / Depth \[dev\], or a control LoRA): the control image (an edge or
    /// depth map), resized to the output size. One for every prompt, or one per prompt.
    pub control_images: Vec<DynamicImage>,
    /// Redux: images whose SigLIP tokens join the prompt's (image variation and image
    /// prompting; the pipeline needs [`crate::PipelineBuilder::redux`]). With an empty prompt
    /// the text part is zeros, as diffusers' Redux prior without text encoders makes it.
    pub redux_images: Vec<ReduxImage>,
    /// The solver (default Euler, FLUX's own; [`Sampler::DpmPp2m`] as diffusers'
    /// `DPMSolverMultistepScheduler` with flow sigmas, text-to-image, Kontext and Control).
    pub sampler: Sampler,
    /// How the sigmas are spaced (default FLUX's shifted grid; Karras, exponential and beta
    /// as diffusers' `use_*_sigmas`, with Euler).
    pub sigmas: Spacing,
    /// A step cache (First-Block Cache, MagCache, TeaCache): fewer transformer calls, at a
    /// cost in fidelity that its threshold sets. `None`: every step computed.
    pub cache: Option<Cache>,
}

/// One Redux image and its weights (diffusers' `prompt_embeds_scale` and
/// `pooled_prompt_embeds_scale`). Several images are combined as diffusers combines them: the
/// weighted sum of `[prompt tokens, image tokens] · strength` over the images (and of the
/// pooled vector · `pooled_strength`).
#[derive(Debug, Clone)]
pub struct ReduxImage {
    /// The image.
    pub image: DynamicImage,
    /// Weight of its tokens (and of a copy of the prompt's).
    pub strength: f32,
    /// Weight of a copy of the pooled CLIP vector.
    pub pooled_strength: f32,
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
            reference_images: Vec::new(),
            max_area: None,
            auto_resize: true,
            mask: None,
            control_images: Vec::new(),
            redux_images: Vec::new(),
            sampler: Sampler::Euler,
            sigmas: Spacing::Flux,
            cache: None,
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
    pub fn with_init_image(mut self, image: DynamicImage, strength: f32) -> Self {
        self.init_image = Some((image, strength));
        self
    }

    /// Kontext: edit `image` (see [`GenerateRequest::reference_images`]).
    pub fn with_reference_image(mut self, image: DynamicImage) -> Self {
        self.reference_images = vec![image];
        self
    }

    /// Kontext: one image to edit per prompt, in order.
    pub fn with_reference_images(mut self, images: impl IntoIterator<Item = DynamicImage>) -> Self {
        self.reference_images = images.into_iter().collect();
        self
    }

    /// Kontext: the output area in pixels (see [`GenerateRequest::max_area`]).
    pub fn with_max_area(mut self, pixels: usize) -> Self {
        self.max_area = Some(pixels);
        self
    }

    /// Kontext: whether reference images are resized to the nearest trained resolution.
    pub fn with_auto_resize(mut self, auto_resize: bool) -> Self {
        self.auto_resize = auto_resize;
        self
    }

    /// Fill: repaint the white part of `mask` in `image` (strength 1: from pure noise).
    /// For outpainting, make both with [`crate::tools::outpaint_canvas`].
    pub fn with_fill(mut self, image: DynamicImage, mask: DynamicImage) -> Self {
        self.init_image = Some((image, 1.0));
        self.mask = Some(mask);
        self
    }

    /// Fill: the mask for the init image set by [`GenerateRequest::with_init_image`] (whose
    /// strength then applies, as diffusers' `strength`).
    pub fn with_mask(mut self, mask: DynamicImage) -> Self {
        self.mask = Some(mask);
        self
    }

    /// Control: condition on `image` (an edge or depth map).
    pub fn with_control_image(mut self, image: DynamicImage) -> Self {
        self.control_images = vec![image];
        self
    }

    /// Control: one control image per prompt, in order.
    pub fn with_control_images(mut self, images: impl IntoIterator<Item = DynamicImage>) -> Self {
        self.control_images = images.into_iter().collect();
        self
    }

    /// Redux: add `image` at `strength` (1: as diffusers' default; pooled weight 1).
    pub fn with_redux_image(mut self, image: DynamicImage, strength: f32) -> Self {
        self.redux_images.push(ReduxImage {
            image,
            strength,
            pooled_strength: 1.0,
        });
        self
    }

    /// The solver (see [`GenerateRequest::sampler`]).
    pub fn with_sampler(mut self, sampler: Sampler) -> Self {
        self.sampler = sampler;
        self
    }

    /// The sigma spacing (see [`GenerateRequest::sigmas`]).
    pub fn with_sigmas(mut self, spacing: Spacing) -> Self {
        self.sigmas = spacing;
        self
    }

    /// A step cache (see [`GenerateRequest::cache`]).
    pub fn with_cache(mut self, cache: Cache) -> Self {
        self.cache = Some(cache);
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
    /// Encoding the img2img init image (or a tool's reference, masked or control image) with
    /// the VAE.
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
    /// With a step cache: the transformer calls computed and reused so far (true CFG counts
    /// both branches' calls).
    pub cache: Option<CacheStats>,
}

/// A strength as the f64 a user typing the same decimal into Python gets: the shortest decimal
/// that round-trips the f32 (what it prints as), parsed. `f64::from(0.6f32)` is
/// 0.6000000238…, which starts 20 steps at strength 0.6 at step 7 where diffusers starts at 8.
pub(crate) fn strength_as_typed(strength: f32) -> f64 {
    strength
        .to_string()
        .parse()
        .unwrap_or_else(|_| f64::from(strength))
}

#[cfg(test)]
mod tests {
    use super::strength_as_typed;

    #[test]
    fn strengths_enter_the_schedule_as_typed() {
        assert_eq!(strength_as_typed(0.6), 0.6);
        // diffusers: int(20 - 20 * 0.6) = 8.
        assert_eq!(flux_sampler::img2img_start(20, strength_as_typed(0.6)), 8);
        // Through f64::from the same strength would run one step more.
        assert_eq!(flux_sampler::img2img_start(20, f64::from(0.6f32)), 7);
        assert_eq!(flux_sampler::img2img_start(50, strength_as_typed(0.3)), 35);
        assert_eq!(strength_as_typed(0.35), 0.35);
        assert_eq!(strength_as_typed(1.0), 1.0);
    }
}
