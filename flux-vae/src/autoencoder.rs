//! The autoencoder: encode images to FLUX latents and decode them back.

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, ElementConversion, Tensor};
use flux_nn::FluxBackend;

use crate::decoder::Decoder;
use crate::encoder::Encoder;
use crate::tiling::run_tiled;
use crate::{AutoEncoderConfig, Error, Result, Tiling};

/// FLUX's autoencoder (BFL `AutoEncoder`): latents are `scale * (z - shift)`. Parameter
/// paths are the BFL `ae.safetensors` keys (`encoder.*`, `decoder.*`).
#[derive(Module, Debug)]
pub struct AutoEncoder<B: Backend> {
    pub(crate) encoder: Encoder<B>,
    pub(crate) decoder: Decoder<B>,
    #[module(skip)]
    pub(crate) config: AutoEncoderConfig,
    #[module(skip)]
    pub(crate) tiling: Tiling,
}

impl<B: FluxBackend> AutoEncoder<B> {
    /// The configuration it was built with.
    pub fn config(&self) -> &AutoEncoderConfig {
        &self.config
    }

    /// The float dtype of the weights, and of the activations inside the networks (group-norm
    /// statistics and the mid-block attention run in f32 whatever it is). `encode` and
    /// `decode` take and return tensors of any float dtype: inputs are cast to this one, and
    /// results come back in the input's dtype, so f32 latents give an f32 image.
    pub fn dtype(&self) -> DType {
        self.decoder.conv_in.weight.val().dtype()
    }

    /// The tiling policy (default: [`Tiling::default`]).
    pub fn tiling(&self) -> Tiling {
        self.tiling
    }

    /// Sets the tiling policy.
    #[must_use]
    pub fn with_tiling(mut self, tiling: Tiling) -> Self {
        self.tiling = tiling;
        self
    }

    /// Encodes images to FLUX latents: the mode (mean) of the latent distribution,
    /// scaled and shifted, `scale_factor * (mean - shift_factor)`.
    ///
    /// # Shapes
    /// `image`: `[b, 3, h, w]` in `[-1, 1]`, `h` and `w` multiples of 8 ->
    /// `[b, z_channels, h/8, w/8]`.
    ///
    /// # Errors
    /// [`Error::BadInput`] for a wrong channel count or an empty batch,
    /// [`Error::BadImageSize`] for sides that are not multiples of 8, [`Error::NonFinite`].
    pub fn encode(&self, image: Tensor<B, 4>) -> Result<Tensor<B, 4>> {
        let (mean, _) = self.moments(image)?;
        self.scale(mean)
    }

    /// Encodes with a sample of the latent distribution: `mean + std * noise`, then scaled and
    /// shifted like [`Self::encode`]. Draw `noise` from a standard normal with the RNG of your
    /// choice (e.g. flux-sampler's torch-compatible one).
    ///
    /// # Shapes
    /// `image`: `[b, 3, h, w]`; `noise`: `[b, z_channels, h/8, w/8]` -> same as `noise`.
    ///
    /// # Errors
    /// As [`Self::encode`], and [`Error::BadInput`] when `noise` has another shape.
    pub fn encode_sample(&self, image: Tensor<B, 4>, noise: Tensor<B, 4>) -> Result<Tensor<B, 4>> {
        let (mean, logvar) = self.moments(image)?;
        if noise.dims() != mean.dims() {
            return Err(Error::BadInput(format!(
                "noise has shape {:?}, the latent is {:?}",
                noise.dims(),
                mean.dims()
            )));
        }
        let std = (logvar.clamp(-30.0, 20.0) * 0.5).exp();
        self.scale(mean + std * noise)
    }

    /// Decodes FLUX latents: un-scales (`z = latents / scale_factor + shift_factor`) and runs
    /// the decoder, tiled when [`Self::tiling`] says so.
    ///
    /// # Shapes
    /// `latents`: `[b, z_channels, h, w]` -> image `[b, 3, 8h, 8w]`, roughly in `[-1, 1]`.
    ///
    /// # Errors
    /// [`Error::BadInput`] for a wrong channel count or an empty batch,
    /// [`Error::NonFinite`] for NaN/inf latents or output.
    pub fn decode(&self, latents: Tensor<B, 4>) -> Result<Tensor<B, 4>> {
        let [b, c, h, w] = latents.dims();
        if b == 0 || h == 0 || w == 0 || c != self.config.z_channels {
            return Err(Error::BadInput(format!(
                "latents of shape {:?}: expected [b > 0, {}, h > 0, w > 0]",
                latents.dims(),
                self.config.z_channels
            )));
        }
        check_finite(&latents, "the latents to decode")?;
        let io = latents.dtype();
        let z = (latents / self.config.scale_factor + self.config.shift_factor).cast(self.dtype());
        let f = self.config.downscale();
        let image = match self.tiling.tiles_for(h, w) {
            Some(tiles) => run_tiled(z, [h, w], (1, f), tiles, |t| self.decoder.forward(t)),
            None => self.decoder.forward(z),
        }
        .cast(io);
        check_finite(&image, "the decoded image")?;
        Ok(image)
    }

    /// Runs the encoder (tiled when asked): (mean, log-variance).
    fn moments(&self, image: Tensor<B, 4>) -> Result<(Tensor<B, 4>, Tensor<B, 4>)> {
        let [b, c, h, w] = image.dims();
        if b == 0 || c != self.config.in_channels {
            return Err(Error::BadInput(format!(
                "image of shape {:?}: expected [b > 0, {}, h, w]",
                image.dims(),
                self.config.in_channels
            )));
        }
        let f = self.config.downscale();
        if h == 0 || w == 0 || h % f != 0 || w % f != 0 {
            return Err(Error::BadImageSize {
                height: h,
                width: w,
                multiple: f,
            });
        }
        let io = image.dtype();
        let image = image.cast(self.dtype());
        let moments = match self.tiling.tiles_for(h / f, w / f) {
            Some(tiles) => run_tiled(image, [h / f, w / f], (f, 1), tiles, |t| {
                self.encoder.forward(t)
            }),
            None => self.encoder.forward(image),
        }
        .cast(io);
        check_finite(&moments, "the encoded latent")?;
        let z = self.config.z_channels;
        let mean = moments.clone().narrow(1, 0, z);
        let logvar = moments.narrow(1, z, z);
        Ok((mean, logvar))
    }

    fn scale(&self, z: Tensor<B, 4>) -> Result<Tensor<B, 4>> {
        Ok((z - self.config.shift_factor) * self.config.scale_factor)
    }
}

/// [`Error::NonFinite`] when `x` holds a NaN or an infinity.
pub(crate) fn check_finite<B: Backend>(x: &Tensor<B, 4>, what: &'static str) -> Result<()> {
    let bad: i64 = x
        .clone()
        .is_finite()
        .bool_not()
        .int()
        .sum()
        .into_scalar()
        .elem();
    if bad > 0 {
        return Err(Error::NonFinite(what));
    }
    Ok(())
}
