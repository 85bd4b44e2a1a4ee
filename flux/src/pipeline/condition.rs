//! What the FLUX.1 tools feed the transformer beside the noisy latents: Kontext's reference
//! tokens, Fill's masked-image latents and mask, the control image's latents.

use burn::tensor::{Tensor, TensorData};
use flux_nn::FluxBackend;
use flux_sampler::TorchGenerator;
use image::DynamicImage;

use super::{Pipeline, Resolved};
use crate::{GenerateRequest, Result, tools};

/// The transformer's conditioning input for one call's batch, built once before the loop.
#[derive(Debug, Clone)]
pub(super) enum Condition<B: FluxBackend> {
    /// Text to image, img2img, and Kontext without a reference image.
    None,
    /// Kontext: the reference images' packed latents `[b, m, 64]`, appended after the noisy
    /// tokens, with their position ids `[1, m, 3]` (`(1, row, col)`). The transformer's
    /// velocity is kept for the noisy tokens only.
    Tokens {
        tokens: Tensor<B, 3>,
        ids: Tensor<B, 3>,
    },
    /// Fill (`[b, n, 320]`: masked-image latents and mask) and Control (`[b, n, 64]`: control
    /// latents), concatenated to the noisy tokens' channels.
    Channels(Tensor<B, 3>),
}

impl<B: FluxBackend> Condition<B> {
    /// Every row twice (true CFG runs the prompts and the negative prompts as one batch).
    pub(super) fn doubled(self) -> Self {
        let twice = |t: Tensor<B, 3>| Tensor::cat(vec![t.clone(), t], 0);
        match self {
            Self::None => Self::None,
            Self::Tokens { tokens, ids } => Self::Tokens {
                tokens: twice(tokens),
                ids,
            },
            Self::Channels(c) => Self::Channels(twice(c)),
        }
    }

    /// The transformer's input for rows `start..start + n` of the noisy tokens `x` (already
    /// narrowed to those rows).
    pub(super) fn input(&self, x: Tensor<B, 3>, start: usize, n: usize) -> Tensor<B, 3> {
        match self {
            Self::None => x,
            Self::Tokens { tokens, .. } => {
                Tensor::cat(vec![x, tokens.clone().narrow(0, start, n)], 1)
            }
            Self::Channels(c) => Tensor::cat(vec![x, c.clone().narrow(0, start, n)], 2),
        }
    }

    /// Image position ids `[n, n_img, 3]` extended with the reference tokens' for Kontext.
    pub(super) fn ids(&self, img_ids: Tensor<B, 3>) -> Tensor<B, 3> {
        match self {
            Self::Tokens { ids, .. } => {
                let n = img_ids.dims()[0];
                Tensor::cat(vec![img_ids, ids.clone().repeat_dim(0, n)], 1)
            }
            _ => img_ids,
        }
    }
}

/// Row `i` of a batch of `prompts × per_prompt` images takes image `i / per_prompt` when there
/// is one image per prompt, else the only one.
fn image_rows(images: usize, per_prompt: usize, batch: usize) -> Vec<usize> {
    (0..batch)
        .map(|i| if images == 1 { 0 } else { i / per_prompt })
        .collect()
}

/// Rows `rows` of `t` (one per image), stacked.
fn select_rows<B: FluxBackend, const D: usize>(t: Tensor<B, D>, rows: &[usize]) -> Tensor<B, D> {
    let parts = rows.iter().map(|&i| t.clone().narrow(0, i, 1)).collect();
    Tensor::cat(parts, 0)
}

impl<B: FluxBackend> Pipeline<B> {
    /// Kontext (diffusers' `FluxKontextPipeline.prepare_latents`): each reference image at
    /// the reference size, encoded to its posterior's mode (no draw), packed; ids `(1, r, c)`
    /// over the reference's own token grid.
    pub(super) fn kontext_condition(
        &self,
        r: &GenerateRequest,
        plan: &Resolved,
    ) -> Result<Condition<B>> {
        let Some((w, h)) = plan.reference_size else {
            return Ok(Condition::None);
        };
        let pixels = r
            .reference_images
            .iter()
            .map(|image| self.pixels(image, w, h))
            .collect();
        let latents = self.encode_mode(Tensor::cat(pixels, 0))?;
        let rows = image_rows(r.reference_images.len(), r.images_per_prompt, plan.batch);
        let tokens = flux_core::pack(select_rows(latents, &rows))?;
        let ids = flux_core::img_ids_at(1, h, w, 1.0, &self.device)?;
        Ok(Condition::Tokens { tokens, ids })
    }

    /// Fill (`FluxFillPipeline.prepare_mask_latents`): the mask binarized at the output size;
    /// the image at `[-1, 1]` times `1 − mask` encoded to a posterior sample (the generator's
    /// next `[1, 16, h/8, w/8]` draw) and packed to 64 channels; the mask's 8×8 pixel blocks
    /// folded into 64 channels and packed to 256; both repeated over the batch: `[b, n, 320]`.
    pub(super) fn fill_condition(
        &self,
        r: &GenerateRequest,
        plan: &Resolved,
        generator: &mut TorchGenerator,
    ) -> Result<Condition<B>> {
        let (Some((image, _)), Some(mask)) = (&r.init_image, &r.mask) else {
            unreachable!("resolve checks a Fill request has an image and a mask");
        };
        let (w, h) = (plan.width, plan.height);
        let mask: Tensor<B, 4> = Tensor::from_data(
            TensorData::new(tools::fill_mask(mask, w, h), [1, 1, h, w]),
            &self.device,
        );
        let masked = self.pixels(image, w, h) * (mask.clone().neg() + 1.0);
        let latents = flux_core::pack(self.encode_sampled(masked, generator)?)?;
        let mask = flux_core::pack_mask(mask)?;
        let condition = Tensor::cat(vec![latents, mask], 2).repeat_dim(0, plan.batch);
        Ok(Condition::Channels(condition))
    }

    /// Control (`FluxControlPipeline`): the control image at the output size, one row per
    /// image of the batch, encoded to posterior samples (the generator's next
    /// `[b, 16, h/8, w/8]` draw), packed: `[b, n, 64]`.
    pub(super) fn control_condition(
        &self,
        r: &GenerateRequest,
        plan: &Resolved,
        generator: &mut TorchGenerator,
    ) -> Result<Condition<B>> {
        let images: Vec<&DynamicImage> = r.control_images.iter().collect();
        let pixels: Vec<_> = images
            .iter()
            .map(|image| self.pixels(image, plan.width, plan.height))
            .collect();
        let rows = image_rows(images.len(), r.images_per_prompt, plan.batch);
        let pixels = select_rows(Tensor::cat(pixels, 0), &rows);
        let latents = self.encode_sampled(pixels, generator)?;
        Ok(Condition::Channels(flux_core::pack(latents)?))
    }
}

#[cfg(test)]
mod tests {
    use super::image_rows;

    #[test]
    fn one_image_serves_every_row_and_several_go_with_their_prompts() {
        assert_eq!(image_rows(1, 2, 4), [0, 0, 0, 0]);
        assert_eq!(image_rows(2, 2, 4), [0, 0, 1, 1]);
        assert_eq!(image_rows(3, 1, 3), [0, 1, 2]);
    }
}
