//! Conversions between `image` crate images and `[b, 3, h, w]` tensors in `[-1, 1]`.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use image::RgbImage;

use crate::{Error, Result};

/// One RGB image as a `[1, 3, h, w]` tensor in `[-1, 1]`: `2 · (v / 255) − 1` in `f32`, the
/// exact arithmetic of diffusers' `VaeImageProcessor` (`pil_to_numpy`, then `normalize`).
pub fn image_to_tensor<B: Backend>(image: &RgbImage, device: &B::Device) -> Tensor<B, 4> {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let mut planar = vec![0.0f32; 3 * h * w];
    for (x, y, p) in image.enumerate_pixels() {
        let i = y as usize * w + x as usize;
        for c in 0..3 {
            planar[c * h * w + i] = 2.0 * (f32::from(p.0[c]) / 255.0) - 1.0;
        }
    }
    Tensor::from_data(TensorData::new(planar, [1, 3, h, w]), device)
}

/// A batch of equally sized RGB images as `[b, 3, h, w]` in `[-1, 1]`.
///
/// # Errors
/// [`Error::BadInput`] for an empty batch or images of different sizes.
pub fn images_to_tensor<B: Backend>(
    images: &[RgbImage],
    device: &B::Device,
) -> Result<Tensor<B, 4>> {
    let first = images
        .first()
        .ok_or_else(|| Error::BadInput("empty batch of images".into()))?;
    if let Some(other) = images.iter().find(|i| i.dimensions() != first.dimensions()) {
        return Err(Error::BadInput(format!(
            "images of different sizes in one batch: {:?} and {:?} (w, h)",
            first.dimensions(),
            other.dimensions()
        )));
    }
    let tensors = images.iter().map(|i| image_to_tensor(i, device)).collect();
    Ok(Tensor::cat(tensors, 0))
}

/// A `[b, 3, h, w]` tensor in `[-1, 1]` as RGB images, with diffusers' post-processing:
/// `(x / 2 + 0.5).clamp(0, 1)`, then [`rgb8_images`].
///
/// # Errors
/// [`Error::BadInput`] when the tensor does not have 3 channels.
pub fn tensor_to_images<B: Backend>(tensor: Tensor<B, 4>) -> Result<Vec<RgbImage>> {
    let [b, c, h, w] = tensor.dims();
    if c != 3 {
        return Err(Error::BadInput(format!(
            "tensor of shape {:?} is not an RGB batch [b, 3, h, w]",
            tensor.dims()
        )));
    }
    let unit = (tensor / 2.0 + 0.5).clamp(0.0, 1.0).permute([0, 2, 3, 1]);
    let values = unit
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| Error::BadInput(format!("cannot read the image tensor: {e:?}")))?;
    Ok(rgb8_images(&values, b, h, w))
}

/// Channels-last values in `[0, 1]`, `[batch, height, width, 3]` row-major, as 8-bit RGB
/// images: `round(v · 255)` with ties to even, as diffusers' `numpy_to_pil` rounds (numpy's
/// `round`). The one 8-bit quantiser of the workspace. Values outside `[0, 1]` saturate.
///
/// # Panics
/// If `values` holds fewer than `batch · height · width · 3` values.
pub fn rgb8_images(values: &[f32], batch: usize, height: usize, width: usize) -> Vec<RgbImage> {
    let per_image = height * width * 3;
    assert!(
        values.len() >= batch * per_image,
        "{} values cannot hold {batch} images of {height}x{width}",
        values.len()
    );
    values
        .chunks_exact(per_image)
        .take(batch)
        .map(|img| {
            // `as u8` saturates, so out-of-range values clamp to 0 and 255.
            let bytes = img
                .iter()
                .map(|v| (v * 255.0).round_ties_even() as u8)
                .collect();
            RgbImage::from_raw(width as u32, height as u32, bytes).expect("h * w * 3 values")
        })
        .collect()
}
