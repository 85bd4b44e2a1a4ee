//! The autoencoder's two jobs: the img2img init image to latents, and latents to pixels.

use burn::tensor::{DType, Tensor};
use flux_nn::FluxBackend;
use flux_sampler::{NoiseDtype, TorchGenerator};
use flux_vae::AutoEncoder;
use image::DynamicImage;
use image::imageops::{self, FilterType};

use super::{Pipeline, Resolved};
use crate::{Error, Result};

impl<B: FluxBackend> Pipeline<B> {
    pub(super) fn load_vae(&self) -> Result<AutoEncoder<B>> {
        Ok(flux_vae::load_with::<B>(
            &self.files.vae,
            &self.device,
            self.dense_load_config(),
        )?)
    }

    /// An image as diffusers' image processor hands it to the VAE: resized to `width ×
    /// height` when its size differs (Lanczos, like diffusers' default `resample="lanczos"`;
    /// PIL's and the `image` crate's filters differ in the last bits, so pass an image of the
    /// requested size for bit-level parity), mapped to `[-1, 1]`.
    ///
    /// # Shapes
    /// Returns `[1, 3, height, width]`.
    pub(super) fn pixels(&self, image: &DynamicImage, width: usize, height: usize) -> Tensor<B, 4> {
        let (w, h) = (width as u32, height as u32);
        let mut rgb = image.to_rgb8();
        if rgb.dimensions() != (w, h) {
            rgb = imageops::resize(&rgb, w, h, FilterType::Lanczos3);
        }
        flux_vae::image_to_tensor::<B>(&rgb, &self.device)
    }

    /// Images `[n, 3, h, w]` encoded to *samples* of the VAE posterior whose noise is the
    /// generator's next `[n, 16, h/8, w/8]` draw, scaled and shifted (diffusers'
    /// `retrieve_latents(vae.encode(x), generator)`).
    pub(super) fn encode_sampled(
        &self,
        pixels: Tensor<B, 4>,
        generator: &mut TorchGenerator,
    ) -> Result<Tensor<B, 4>> {
        let [n, _, h, w] = pixels.dims();
        let vae = self.model(|m| &m.vae, Self::load_vae)?;
        let z = vae.config().z_channels;
        let eps = generator.randn_tensor([n, z, h / 8, w / 8], NoiseDtype::F32, &self.device)?;
        Ok(vae.encode_sample(pixels, eps)?)
    }

    /// Images `[n, 3, h, w]` encoded to the posterior's mode, scaled and shifted (diffusers'
    /// `sample_mode="argmax"`; no draw).
    pub(super) fn encode_mode(&self, pixels: Tensor<B, 4>) -> Result<Tensor<B, 4>> {
        Ok(self.model(|m| &m.vae, Self::load_vae)?.encode(pixels)?)
    }

    /// diffusers' `FluxImg2ImgPipeline` (and `FluxFillPipeline`) image path: the image at the
    /// output size ([`Self::pixels`]), encoded to a posterior sample with the generator's next
    /// `[1, 16, h/8, w/8]` draw, then repeated over the batch.
    ///
    /// # Shapes
    /// Returns `[batch, 16, h/8, w/8]`.
    pub(super) fn encode_init_image(
        &self,
        image: &DynamicImage,
        plan: &Resolved,
        generator: &mut TorchGenerator,
    ) -> Result<Tensor<B, 4>> {
        let pixels = self.pixels(image, plan.width, plan.height);
        let latents = self.encode_sampled(pixels, generator)?;
        Ok(latents.repeat_dim(0, plan.batch))
    }

    /// VAE decode and diffusers' post-processing to `output_type="np"`: `(x / 2 + 0.5)
    /// .clamp(0, 1)`, channels last, `[b, h, w, 3]` row-major.
    pub(super) fn decode(&self, latents: Tensor<B, 4>) -> Result<Vec<f32>> {
        let image = self.model(|m| &m.vae, Self::load_vae)?.decode(latents)?;
        let image = ((image / 2.0 + 0.5).clamp(0.0, 1.0)).permute([0, 2, 3, 1]);
        let values: Vec<f32> =
            image
                .cast(DType::F32)
                .into_data()
                .to_vec()
                .map_err(|e| Error::Output {
                    message: format!("reading the decoded image: {e:?}"),
                    source: None,
                })?;
        if values.iter().any(|v| !v.is_finite()) {
            return Err(Error::Output {
                message: "the decoded image contains NaN or infinite values".into(),
                source: None,
            });
        }
        Ok(values)
    }
}
