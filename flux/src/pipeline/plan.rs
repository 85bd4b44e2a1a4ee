//! Checking a request before any model runs.

use burn::tensor::backend::Backend;

use super::Pipeline;
use crate::{Error, GenerateRequest, ModelKind, Result};

/// Validated request values.
pub(super) struct Plan {
    /// Sampler steps of the full schedule (img2img runs the last ones).
    pub steps: usize,
    /// Guidance scale; `None` for [schnell].
    pub guidance: Option<f32>,
    /// Images in the batch.
    pub batch: usize,
}

impl<B: Backend> Pipeline<B> {
    pub(super) fn plan(&self, r: &GenerateRequest) -> Result<Plan> {
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
        Ok(Plan {
            steps,
            guidance,
            batch,
        })
    }
}
