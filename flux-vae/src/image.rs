//! Conversions between `image` crate images and `[b, 3, h, w]` tensors in `[-1, 1]`.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use image::{DynamicImage, RgbImage};

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

/// Any image (converted to 8-bit RGB) as a `[1, 3, h, w]` tensor in `[-1, 1]`.
pub fn dynamic_image_to_tensor<B: Backend>(
    image: &DynamicImage,
    device: &B::Device,
) -> Tensor<B, 4> {
    image_to_tensor(&image.to_rgb8(), device)
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

/// A `[b, 3, h, w]` tensor in `[-1, 1]` as RGB images: clamped, `(v + 1) * 127.5`, rounded.
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
    let data = ((tensor.clamp(-1.0, 1.0) + 1.0) * 127.5)
        .into_data()
        .convert::<f32>();
    let values = data
        .as_slice::<f32>()
        .map_err(|e| Error::BadInput(format!("cannot read the image tensor: {e:?}")))?;
    let (hw, plane) = (h * w, 3 * h * w);
    Ok((0..b)
        .map(|n| {
            let base = n * plane;
            RgbImage::from_fn(w as u32, h as u32, |x, y| {
                let i = base + y as usize * w + x as usize;
                // Values are clamped to [0, 255] above, so the casts cannot wrap.
                let px = |c: usize| values[i + c * hw].round() as u8;
                image::Rgb([px(0), px(1), px(2)])
            })
        })
        .collect())
}
