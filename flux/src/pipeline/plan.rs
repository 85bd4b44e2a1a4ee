//! Checking a request and filling in the model's defaults before any model runs.

use burn::tensor::backend::Backend;

use super::Pipeline;
use crate::{Error, GenerateRequest, ModelKind, Result};

/// A request with the model's defaults filled in and checked: exactly what
/// [`Pipeline::generate`] runs, and what a caller should print or record with the images
/// (the CLI writes it into the PNG metadata).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Resolved {
    /// The model the pipeline runs.
    pub model: ModelKind,
    /// Sampler steps of the full schedule (img2img runs the last ones).
    pub steps: usize,
    /// Guidance scale; `None` for [schnell], which has no guidance input.
    pub guidance: Option<f32>,
    /// Seed of the initial noise.
    pub seed: u64,
    /// Image width in pixels.
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
    /// What the request asked for that will not happen, said plainly (a negative prompt
    /// without a true CFG scale above 1 does nothing, as in diffusers).
    pub warnings: Vec<String>,
}

impl<B: Backend> Pipeline<B> {
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
            ModelKind::Dev => r.guidance.or(self.kind.default_guidance()),
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
        if let Some((image, strength)) = &r.init_image {
            if !(*strength > 0.0 && *strength <= 1.0) {
                return bad(format!("img2img strength {strength} must be in (0, 1]"));
            }
            if flux_sampler::img2img_start(steps, *strength) >= steps {
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
        Ok(Resolved {
            model: self.kind,
            steps,
            guidance,
            seed: r.seed,
            width: r.width,
            height: r.height,
            batch,
            loras,
            true_cfg,
            negative_prompts,
            warnings,
        })
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
