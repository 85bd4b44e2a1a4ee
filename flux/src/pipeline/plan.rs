//! Checking a request and filling in the model's defaults before any model runs.

use flux_nn::FluxBackend;
use flux_sampler::{Sampler, Spacing};

use super::Pipeline;
use crate::request::strength_as_typed;
use crate::tools::{KONTEXT_MAX_AREA, kontext_output_size, kontext_reference_size};
use crate::{Error, GenerateRequest, ModelKind, Result, Variant};

/// A request with the model's defaults filled in and checked: exactly what
/// [`Pipeline::generate`] runs, and what a caller should print or record with the images
/// (the CLI writes it into the PNG metadata).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Resolved {
    /// The model the pipeline runs.
    pub model: ModelKind,
    /// What it conditions on besides the prompt (Kontext, Fill, Control).
    pub variant: Variant,
    /// Kontext: the size the reference images are resized to and encoded at.
    pub reference_size: Option<(usize, usize)>,
    /// Sampler steps of the full schedule (img2img runs the last ones).
    pub steps: usize,
    /// Guidance scale; `None` for \[schnell\], which has no guidance input.
    pub guidance: Option<f32>,
    /// Seed of the initial noise.
    pub seed: u64,
    /// Image width in pixels (for Kontext, the requested aspect ratio at its `max_area`).
    pub width: usize,
    /// Image height in pixels.
    pub height: usize,
    /// Images in the batch (prompts × images per prompt).
    pub batch: usize,
    /// Each LoRA's file name and the strength it runs at.
    pub loras: Vec<(String, f32)>,
    /// The true classifier-free guidance scale when it runs (a negative prompt and a scale
    /// above 1), else `None`.
    pub true_cfg: Option<f32>,
    /// One negative prompt per prompt when true CFG runs (a single one repeated), else empty.
    pub negative_prompts: Vec<String>,
    /// The solver.
    pub sampler: Sampler,
    /// The sigma spacing.
    pub sigmas: Spacing,
    /// The step cache, if any.
    pub cache: Option<flux_sampler::Cache>,
    /// What the request asked for that will not happen, said plainly (a negative prompt
    /// without a true CFG scale above 1 does nothing, as in diffusers).
    pub warnings: Vec<String>,
}

impl<B: FluxBackend> Pipeline<B> {
    /// The request with this pipeline's model defaults filled in (steps, guidance), checked
    /// the way [`Pipeline::generate`] checks it, without running anything.
    ///
    /// # Errors
    /// [`Error::BadRequest`] for an empty prompt, a size that is not a multiple of 16, zero
    /// steps, a non-finite guidance, latents of the wrong size or with NaNs, a bad img2img
    /// strength or an empty init image.
    pub fn resolve(&self, r: &GenerateRequest) -> Result<Resolved> {
        let bad = |m: String| Err(Error::BadRequest(m));
        if r.prompts.is_empty() {
            return bad("no prompt given".into());
        }
        if let Some(i) = r.prompts.iter().position(|p| p.trim().is_empty())
            && r.redux_images.is_empty()
        {
            return bad(format!("prompt {i} is empty"));
        }
        self.check_redux(r)?;
        if r.images_per_prompt == 0 {
            return bad("images_per_prompt must be at least 1".into());
        }
        self.check_tool_inputs(r)?;
        let (width, height, reference_size) = self.output_size(r)?;
        flux_core::check_image_size(width, height)?;
        let steps = r
            .steps
            .or(self.variant.default_steps())
            .unwrap_or(self.kind.default_steps());
        if steps == 0 {
            return bad("steps must be at least 1".into());
        }
        let guidance = match self.kind {
            ModelKind::Dev => r
                .guidance
                .or(self.variant.default_guidance())
                .or(self.kind.default_guidance()),
            ModelKind::Schnell => None,
        };
        if guidance.is_some_and(|g| !g.is_finite()) {
            return bad("guidance must be finite".into());
        }
        let batch = r.batch_size();
        if let Some(latents) = &r.latents {
            let expected = batch * 16 * (height / 8) * (width / 8);
            if latents.len() != expected {
                return bad(format!(
                    "initial latents hold {} values; [{batch}, 16, {}, {}] needs {expected}",
                    latents.len(),
                    height / 8,
                    width / 8
                ));
            }
            if latents.iter().any(|v| !v.is_finite()) {
                return bad("initial latents contain NaN or infinite values".into());
            }
        }
        if let Some((image, strength)) = &r.init_image {
            if !(*strength > 0.0 && *strength <= 1.0) {
                return bad(format!("img2img strength {strength} must be in (0, 1]"));
            }
            if flux_sampler::img2img_start(steps, strength_as_typed(*strength)) >= steps {
                return bad(format!(
                    "img2img strength {strength} leaves none of the {steps} steps to run"
                ));
            }
            if image.width() == 0 || image.height() == 0 {
                return bad("the init image is empty".into());
            }
        }
        let loras = self.request_loras(r)?;
        let (true_cfg, negative_prompts, warnings) = true_cfg(r)?;
        self.check_sampling(r)?;
        Ok(Resolved {
            model: self.kind,
            variant: self.variant,
            reference_size,
            steps,
            guidance,
            seed: r.seed,
            width,
            height,
            batch,
            loras,
            true_cfg,
            negative_prompts,
            sampler: r.sampler,
            sigmas: r.sigmas,
            cache: r.cache.clone(),
            warnings,
        })
    }

    /// The sampler, spacing and cache can run together on this model and request.
    fn check_sampling(&self, r: &GenerateRequest) -> Result<()> {
        let bad = |m: String| Err(Error::BadRequest(m));
        if let Some(cache) = &r.cache {
            cache.validate().map_err(Error::BadRequest)?;
        }
        if r.sampler == Sampler::DpmPp2m {
            if r.sigmas != Spacing::Flux {
                return bad(format!(
                    "the {} sigma spacing needs the euler sampler: diffusers' DPM-Solver \
                     spaces Karras/exponential/beta sigmas of a different noise schedule",
                    r.sigmas
                ));
            }
            if !self.kind.shifted() {
                return bad(
                    "dpmpp-2m needs a model with a resolution-dependent shift ([dev]); \
                     diffusers' FluxPipeline cannot run it on [schnell] either"
                        .into(),
                );
            }
            if r.init_image.is_some() {
                return bad(
                    "dpmpp-2m cannot start from a partly noised image (img2img, Fill): \
                     diffusers' DPM-Solver has no scale_noise; use euler"
                        .into(),
                );
            }
        }
        Ok(())
    }
}

/// A `(width, height)` in pixels.
type Size = (usize, usize);

impl<B: FluxBackend> Pipeline<B> {
    /// The size that runs, and Kontext's reference size.
    fn output_size(&self, r: &GenerateRequest) -> Result<(usize, usize, Option<Size>)> {
        if self.variant != Variant::Kontext {
            return Ok((r.width, r.height, None));
        }
        let max_area = r.max_area.unwrap_or(KONTEXT_MAX_AREA);
        let (width, height) =
            kontext_output_size(r.width, r.height, max_area).ok_or_else(|| {
                Error::BadRequest(format!(
                    "{}x{} at max_area {max_area} leaves no pixels: raise max_area",
                    r.width, r.height
                ))
            })?;
        let reference = match r.reference_images.first() {
            Some(image) => {
                let (w, h) = (image.width() as usize, image.height() as usize);
                Some(kontext_reference_size(w, h, r.auto_resize).ok_or_else(|| {
                    Error::BadRequest(format!(
                        "the reference image is {w}x{h}: too small to encode (at least 16x16)"
                    ))
                })?)
            }
            None => None,
        };
        Ok((width, height, reference))
    }

    /// Redux images need the Redux models, finite strengths, and no true CFG (the negative
    /// prompt's text would be shorter than the prompt's text and image tokens).
    fn check_redux(&self, r: &GenerateRequest) -> Result<()> {
        let bad = |m: String| Err(Error::BadRequest(m));
        if r.redux_images.is_empty() {
            return Ok(());
        }
        if self.redux.is_none() {
            return bad(
                "Redux images need the Redux models: build the pipeline with \
                 PipelineBuilder::redux (CLI: --redux DIR)"
                    .into(),
            );
        }
        for (i, redux) in r.redux_images.iter().enumerate() {
            if !(redux.strength.is_finite() && redux.pooled_strength.is_finite()) {
                return bad(format!("Redux image {i}: strengths must be finite"));
            }
            if redux.image.width() == 0 || redux.image.height() == 0 {
                return bad(format!("Redux image {i} is empty"));
            }
        }
        if r.true_cfg.is_some_and(|s| s > 1.0) && !r.negative_prompts.is_empty() {
            return bad(
                "true CFG with Redux images is not supported: the negative prompt has no \
                        image tokens to pair with"
                    .into(),
            );
        }
        Ok(())
    }

    /// The inputs each variant takes, and nothing else: a clear error for an input the model
    /// cannot use (it would be silently ignored) or a missing one it needs.
    fn check_tool_inputs(&self, r: &GenerateRequest) -> Result<()> {
        let bad = |m: String| Err(Error::BadRequest(m));
        let v = self.variant;
        let given = [
            (
                !r.reference_images.is_empty(),
                "a reference image to edit",
                Variant::Kontext,
            ),
            (r.mask.is_some(), "a mask", Variant::Fill),
            (
                !r.control_images.is_empty(),
                "a control image",
                Variant::Control,
            ),
        ];
        for (present, what, needs) in given {
            if present && v != needs {
                return bad(format!(
                    "{what} needs a FLUX.1 {} model; this one is {v} ({})",
                    match needs {
                        Variant::Kontext => "Kontext [dev]",
                        Variant::Fill => "Fill [dev] (384 input channels)",
                        _ => "Canny/Depth [dev] or a control LoRA (128 input channels)",
                    },
                    self.transformer_in_channels
                ));
            }
        }
        let per_prompt = |n: usize, what: &str| {
            if n > 1 && n != r.prompts.len() {
                bad(format!(
                    "{n} {what} for {} prompts: give one, or one per prompt",
                    r.prompts.len()
                ))
            } else {
                Ok(())
            }
        };
        per_prompt(r.reference_images.len(), "reference images")?;
        per_prompt(r.control_images.len(), "control images")?;
        let empty = |image: &image::DynamicImage| image.width() == 0 || image.height() == 0;
        if r.reference_images
            .iter()
            .chain(&r.control_images)
            .chain(&r.mask)
            .any(empty)
        {
            return bad("an input image is empty".into());
        }
        match v {
            Variant::Fill if r.init_image.is_none() || r.mask.is_none() => bad(
                "a Fill model repaints part of an image: give the image and its mask (white: repaint)"
                    .into(),
            ),
            Variant::Control if r.control_images.is_empty() => bad(
                "a control model needs a control image (an edge or depth map)".into(),
            ),
            Variant::Kontext | Variant::Control if r.init_image.is_some() => bad(format!(
                "a {v} model does not start from an init image (img2img)"
            )),
            _ => Ok(()),
        }
    }
}

/// diffusers' rule: true CFG runs when a negative prompt is given and the scale is above 1.
fn true_cfg(r: &GenerateRequest) -> Result<(Option<f32>, Vec<String>, Vec<String>)> {
    let negatives = &r.negative_prompts;
    if negatives.len() > 1 && negatives.len() != r.prompts.len() {
        return Err(Error::BadRequest(format!(
            "{} negative prompts for {} prompts: give one, or one per prompt",
            negatives.len(),
            r.prompts.len()
        )));
    }
    if let Some(scale) = r.true_cfg
        && !(scale.is_finite() && scale >= 0.0)
    {
        return Err(Error::BadRequest(format!(
            "true CFG scale {scale} must be finite and not negative"
        )));
    }
    let mut warnings = Vec::new();
    match (r.true_cfg, negatives.is_empty()) {
        (Some(scale), false) if scale > 1.0 => {
            let negatives = if negatives.len() == 1 {
                vec![negatives[0].clone(); r.prompts.len()]
            } else {
                negatives.clone()
            };
            return Ok((Some(scale), negatives, warnings));
        }
        (scale, false) => warnings.push(format!(
            "the negative prompt is ignored: it acts only with a true CFG scale above 1 \
             (given: {}); [dev] is guidance-distilled, so it does nothing on its own",
            scale.map_or("none".to_string(), |s| s.to_string())
        )),
        (Some(scale), true) if scale > 1.0 => warnings.push(format!(
            "true CFG scale {scale} is ignored: it needs a negative prompt"
        )),
        _ => {}
    }
    Ok((None, Vec::new(), warnings))
}
