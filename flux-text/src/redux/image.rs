//! [`SiglipImageProcessor`]: images as SigLIP takes them (transformers'
//! `SiglipImageProcessor`: RGB, resized, rescaled, normalized).

use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use image::DynamicImage;
use image::imageops::{self, FilterType};
use serde::Deserialize;

use crate::{Error, Result};

/// The preprocessing of `preprocessor_config.json` (FLUX.1-Redux-dev's `feature_extractor/`).
#[derive(Debug, Clone, PartialEq)]
pub struct SiglipImageProcessor {
    /// Output `(height, width)` in pixels.
    pub size: (usize, usize),
    /// Factor from 8-bit values (`1/255`).
    pub rescale_factor: f64,
    /// Per-channel mean subtracted after rescaling.
    pub image_mean: [f64; 3],
    /// Per-channel divisor after the mean.
    pub image_std: [f64; 3],
}

#[derive(Deserialize)]
struct Json {
    size: Option<Size>,
    rescale_factor: Option<f64>,
    image_mean: Option<[f64; 3]>,
    image_std: Option<[f64; 3]>,
}

#[derive(Deserialize)]
struct Size {
    height: usize,
    width: usize,
}

impl SiglipImageProcessor {
    /// google/siglip-so400m-patch14-384's: 384², `1/255`, mean and std 0.5 (pixels to
    /// `[-1, 1]`).
    pub fn so400m_patch14_384() -> Self {
        Self {
            size: (384, 384),
            rescale_factor: 1.0 / 255.0,
            image_mean: [0.5; 3],
            image_std: [0.5; 3],
        }
    }

    /// Reads a `preprocessor_config.json` (missing fields: so400m's).
    ///
    /// # Errors
    /// [`Error::Load`] if the file cannot be read or parsed.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bad = |reason: String| -> Error {
            flux_io::Error::BadConfig {
                path: path.into(),
                reason,
            }
            .into()
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let json: Json = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let default = Self::so400m_patch14_384();
        Ok(Self {
            size: json.size.map_or(default.size, |s| (s.height, s.width)),
            rescale_factor: json.rescale_factor.unwrap_or(default.rescale_factor),
            image_mean: json.image_mean.unwrap_or(default.image_mean),
            image_std: json.image_std.unwrap_or(default.image_std),
        })
    }

    /// `image` as SigLIP's input: RGB, resized to [`Self::size`] when its size differs
    /// (bicubic; torchvision's antialiased bicubic, which transformers 5 uses, and the `image`
    /// crate's Catmull-Rom differ by up to one 8-bit level, so pass an image of that size for
    /// bit-level parity), then `(v · rescale − mean) / std`.
    ///
    /// # Shapes
    /// Returns `[1, 3, height, width]`.
    ///
    /// # Errors
    /// [`Error::BadInput`] for an empty image.
    pub fn preprocess<B: Backend>(
        &self,
        image: &DynamicImage,
        device: &B::Device,
    ) -> Result<Tensor<B, 4>> {
        if image.width() == 0 || image.height() == 0 {
            return Err(Error::BadInput("the Redux image is empty".into()));
        }
        let (h, w) = self.size;
        let mut rgb = image.to_rgb8();
        if rgb.dimensions() != (w as u32, h as u32) {
            rgb = imageops::resize(&rgb, w as u32, h as u32, FilterType::CatmullRom);
        }
        // transformers' fused rescale-and-normalize, in f32: `(v − mean/r) / (std/r)`
        // (so400m: `(v − 127.5) / 127.5`).
        let mean = self.image_mean.map(|m| (m / self.rescale_factor) as f32);
        let std = self.image_std.map(|s| (s / self.rescale_factor) as f32);
        let mut values = vec![0.0f32; 3 * h * w];
        for (i, p) in rgb.pixels().enumerate() {
            for c in 0..3 {
                values[c * h * w + i] = (f32::from(p.0[c]) - mean[c]) / std[c];
            }
        }
        Ok(Tensor::from_data(
            TensorData::new(values, [1, 3, h, w]),
            device,
        ))
    }
}
