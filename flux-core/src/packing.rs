//! Packing latents into 2x2-patch tokens and back, and the position ids of both streams.

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};

use crate::f32_tensor::f32_tensor;
use crate::{Error, Result};

/// Checks an image size: both sides positive multiples of 16 (8 for the VAE x 2 for packing).
///
/// # Errors
/// [`Error::BadInput`] naming the offending side.
pub fn check_image_size(width: usize, height: usize) -> Result<()> {
    for (name, v) in [("width", width), ("height", height)] {
        if v == 0 || v % 16 != 0 {
            return Err(Error::BadInput(format!(
                "{name} {v} must be a positive multiple of 16 (the VAE downsamples by 8, then 2x2 patches are packed)"
            )));
        }
    }
    Ok(())
}

/// Latents `[b, c, h, w]` -> tokens `[b, (h/2)(w/2), c*4]`, channel-major within a token
/// (`b c (h ph) (w pw) -> b (h w) (c ph pw)`).
///
/// # Errors
/// [`Error::BadInput`] if `h` or `w` is odd.
pub fn pack<B: Backend>(latents: Tensor<B, 4>) -> Result<Tensor<B, 3>> {
    let [b, c, h, w] = latents.dims();
    if h % 2 != 0 || w % 2 != 0 {
        return Err(Error::BadInput(format!(
            "latent size {h}x{w} must be even to pack 2x2 patches"
        )));
    }
    Ok(latents
        .reshape([b, c, h / 2, 2, w / 2, 2])
        .permute([0, 2, 4, 1, 3, 5])
        .reshape([b, (h / 2) * (w / 2), c * 4]))
}

/// Tokens `[b, (h/2)(w/2), c*4]` -> latents `[b, c, h, w]`, the inverse of [`pack`], for a latent
/// grid of `h x w` (the image size / 8).
///
/// # Errors
/// [`Error::BadInput`] if the token count or width does not fit `h x w`.
pub fn unpack<B: Backend>(tokens: Tensor<B, 3>, h: usize, w: usize) -> Result<Tensor<B, 4>> {
    let [b, n, cp] = tokens.dims();
    if !h.is_multiple_of(2) || !w.is_multiple_of(2) || n != (h / 2) * (w / 2) || cp % 4 != 0 {
        return Err(Error::BadInput(format!(
            "cannot unpack tokens {:?} into a {h}x{w} latent grid",
            [b, n, cp]
        )));
    }
    let c = cp / 4;
    Ok(tokens
        .reshape([b, h / 2, w / 2, c, 2, 2])
        .permute([0, 3, 1, 4, 2, 5])
        .reshape([b, c, h, w]))
}

/// Position ids of the image tokens of a `height x width` image: `(0, row, col)` per 2x2 latent
/// patch, row-major, in f32.
///
/// # Shapes
/// - returns `[batch, (height/16)(width/16), 3]`
///
/// # Errors
/// [`Error::BadInput`] if a side is not a positive multiple of 16.
pub fn img_ids<B: Backend>(
    batch: usize,
    height: usize,
    width: usize,
    device: &B::Device,
) -> Result<Tensor<B, 3>> {
    img_ids_at(batch, height, width, 0.0, device)
}

/// [`img_ids`] with `index` as the first coordinate: `(index, row, col)`. Kontext's reference
/// image tokens take index 1 (the noisy image's are 0), each on its own row/column grid.
///
/// # Shapes
/// - returns `[batch, (height/16)(width/16), 3]`
///
/// # Errors
/// [`Error::BadInput`] if a side is not a positive multiple of 16.
pub fn img_ids_at<B: Backend>(
    batch: usize,
    height: usize,
    width: usize,
    index: f32,
    device: &B::Device,
) -> Result<Tensor<B, 3>> {
    check_image_size(width, height)?;
    let (rows, cols) = (height / 16, width / 16);
    let ids: Vec<f32> = (0..rows)
        .flat_map(|r| (0..cols).flat_map(move |c| [index, r as f32, c as f32]))
        .collect();
    let ids = f32_tensor::<B, 3>(ids, [1, rows * cols, 3], device);
    Ok(ids.repeat_dim(0, batch))
}

/// FLUX.1 Fill's mask as the transformer takes it (diffusers' `prepare_mask_latents`): each
/// 8x8 pixel block folded into 64 channels (`(py, px)` row-major), then packed like latents,
/// so every token carries its 16x16 pixels' mask values.
///
/// # Shapes
/// - mask: `[b, 1, h, w]` pixels -> `[b, (h/16)(w/16), 256]`
///
/// # Errors
/// [`Error::BadInput`] for more than one channel or sides that are not multiples of 16.
pub fn pack_mask<B: Backend>(mask: Tensor<B, 4>) -> Result<Tensor<B, 3>> {
    let [b, c, h, w] = mask.dims();
    if c != 1 {
        return Err(Error::BadInput(format!(
            "the mask has {c} channels, expected 1"
        )));
    }
    check_image_size(w, h)?;
    let blocks = mask
        .reshape([b, h / 8, 8, w / 8, 8])
        .permute([0, 2, 4, 1, 3])
        .reshape([b, 64, h / 8, w / 8]);
    pack(blocks)
}

/// Position ids of `n_txt` text tokens: all zeros, f32.
///
/// # Shapes
/// - returns `[batch, n_txt, 3]`
pub fn txt_ids<B: Backend>(batch: usize, n_txt: usize, device: &B::Device) -> Tensor<B, 3> {
    Tensor::zeros([batch, n_txt, 3], (device, DType::F32))
}
