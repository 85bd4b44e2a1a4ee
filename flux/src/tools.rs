//! Image preparation for the FLUX.1 tools: Kontext's resolutions, Fill's mask and outpainting
//! canvas, and a Canny edge map for the control models.

use image::imageops::{self, FilterType};
use image::{DynamicImage, GrayImage, Luma, Rgb, RgbImage};

use crate::{Error, Result};

/// The resolutions Kontext was trained at, `(width, height)` (diffusers'
/// `PREFERRED_KONTEXT_RESOLUTIONS`, from BFL's reference code).
pub const PREFERRED_KONTEXT_RESOLUTIONS: [(usize, usize); 17] = [
    (672, 1568),
    (688, 1504),
    (720, 1456),
    (752, 1392),
    (800, 1328),
    (832, 1248),
    (880, 1184),
    (944, 1104),
    (1024, 1024),
    (1104, 944),
    (1184, 880),
    (1248, 832),
    (1328, 800),
    (1392, 752),
    (1456, 720),
    (1504, 688),
    (1568, 672),
];

/// Kontext's default output area, `1024²` pixels (diffusers' `max_area`).
pub const KONTEXT_MAX_AREA: usize = 1024 * 1024;

/// The size Kontext resizes a `width × height` reference image to, as diffusers'
/// `FluxKontextPipeline` does: sides rounded down to multiples of 16; with `auto_resize`, the
/// preferred resolution of the nearest aspect ratio (ties to the narrower); then both sides
/// rounded down to multiples of 16 again. `None` when a side would be 0.
pub fn kontext_reference_size(
    width: usize,
    height: usize,
    auto_resize: bool,
) -> Option<(usize, usize)> {
    let (w, h) = (width - width % 16, height - height % 16);
    if w == 0 || h == 0 {
        return None;
    }
    let (mut w, mut h) = (w, h);
    if auto_resize {
        let aspect = w as f64 / h as f64;
        // Python's `min` over `(|aspect − w/h|, w, h)` tuples.
        (w, h) = PREFERRED_KONTEXT_RESOLUTIONS
            .iter()
            .copied()
            .min_by(|a, b| {
                let key = |(w, h): (usize, usize)| (aspect - w as f64 / h as f64).abs();
                key(*a).total_cmp(&key(*b)).then(a.cmp(b))
            })
            .expect("the list is not empty");
    }
    let (w, h) = (w / 16 * 16, h / 16 * 16);
    (w > 0 && h > 0).then_some((w, h))
}

/// The output size Kontext generates for a requested `width × height`: the same aspect ratio
/// at `max_area` pixels, each side rounded (half to even, as Python) and then down to a
/// multiple of 16 (diffusers' `FluxKontextPipeline.__call__`). `None` when a side would be 0.
pub fn kontext_output_size(width: usize, height: usize, max_area: usize) -> Option<(usize, usize)> {
    if width == 0 || height == 0 {
        return None;
    }
    let aspect = width as f64 / height as f64;
    let area = max_area as f64;
    let w = (area * aspect).powf(0.5).round_ties_even() as usize / 16 * 16;
    let h = (area / aspect).powf(0.5).round_ties_even() as usize / 16 * 16;
    (w > 0 && h > 0).then_some((w, h))
}

/// Fill's mask as diffusers' mask processor makes it: to grayscale with PIL's `convert("L")`
/// (`(19595 R + 38470 G + 7471 B + 2¹⁵) >> 16`; a grayscale image as it is, alpha ignored),
/// resized to `width × height` (Lanczos) when its size differs, then binarized: 1 (repaint)
/// where the value is at least half of 255, else 0 (keep).
///
/// # Shapes
/// Returns `height · width` values in {0, 1}, row-major.
pub fn fill_mask(mask: &DynamicImage, width: usize, height: usize) -> Vec<f32> {
    let gray: GrayImage = match mask {
        DynamicImage::ImageLuma8(gray) => gray.clone(),
        other => {
            let rgb = other.to_rgb8();
            GrayImage::from_fn(rgb.width(), rgb.height(), |x, y| {
                let [r, g, b] = rgb.get_pixel(x, y).0.map(u32::from);
                Luma([((19595 * r + 38470 * g + 7471 * b + 0x8000) >> 16) as u8])
            })
        }
    };
    let (w, h) = (width as u32, height as u32);
    let gray = if gray.dimensions() == (w, h) {
        gray
    } else {
        imageops::resize(&gray, w, h, FilterType::Lanczos3)
    };
    gray.pixels()
        .map(|p| {
            if f32::from(p.0[0]) / 255.0 < 0.5 {
                0.0
            } else {
                1.0
            }
        })
        .collect()
}

/// An outpainting canvas for Fill: `image` placed on a larger canvas with `left`, `top`,
/// `right`, `bottom` pixels added (filled with mid-gray, which Fill masks out anyway), and the
/// mask that repaints exactly the added border (white) and keeps the image (black).
///
/// # Errors
/// [`Error::BadRequest`] if nothing is added or the canvas sides are not multiples of 16 (FLUX
/// needs them: pad so that `left + width + right` and `top + height + bottom` are).
pub fn outpaint_canvas(
    image: &DynamicImage,
    [left, top, right, bottom]: [u32; 4],
) -> Result<(DynamicImage, DynamicImage)> {
    let (w, h) = (image.width(), image.height());
    let (cw, ch) = (left + w + right, top + h + bottom);
    if left + top + right + bottom == 0 {
        return Err(Error::BadRequest(
            "outpainting adds nothing: give at least one side a positive width".into(),
        ));
    }
    if cw % 16 != 0 || ch % 16 != 0 {
        return Err(Error::BadRequest(format!(
            "the outpainting canvas is {cw}x{ch}; both sides must be multiples of 16 \
             (the image is {w}x{h}: choose the padding so that they are)"
        )));
    }
    let mut canvas = RgbImage::from_pixel(cw, ch, Rgb([127, 127, 127]));
    imageops::replace(&mut canvas, &image.to_rgb8(), left.into(), top.into());
    let mask = GrayImage::from_fn(cw, ch, |x, y| {
        let inside = x >= left && x < left + w && y >= top && y < top + h;
        Luma([if inside { 0 } else { 255 }])
    });
    Ok((
        DynamicImage::ImageRgb8(canvas),
        DynamicImage::ImageLuma8(mask),
    ))
}

/// A Canny edge map of a photo for FLUX.1 Canny \[dev\]: white edges on black, as three equal
/// channels (what diffusers' examples feed it, from `controlnet_aux`'s `CannyDetector` with
/// thresholds 50 and 200). Computed by `imageproc` on the photo's luma; OpenCV's Canny
/// (`controlnet_aux`) differs in its smoothing, so edge maps agree in shape, not pixel by
/// pixel.
#[cfg(feature = "canny")]
pub fn canny_edges(image: &DynamicImage, low: f32, high: f32) -> DynamicImage {
    let edges = imageproc::edges::canny(&image.to_luma8(), low, high);
    DynamicImage::ImageRgb8(DynamicImage::ImageLuma8(edges).to_rgb8())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outpaint_canvas_masks_exactly_the_border() {
        let image = DynamicImage::ImageRgb8(RgbImage::from_pixel(32, 16, Rgb([200, 10, 10])));
        let (canvas, mask) = outpaint_canvas(&image, [16, 0, 0, 16]).unwrap();
        assert_eq!((canvas.width(), canvas.height()), (48, 32));
        let (canvas, mask) = (canvas.to_rgb8(), mask.to_luma8());
        assert_eq!(canvas.get_pixel(16, 0).0, [200, 10, 10]);
        assert_eq!(canvas.get_pixel(15, 0).0, [127, 127, 127]);
        assert_eq!(mask.get_pixel(16, 15).0, [0]);
        assert_eq!(mask.get_pixel(15, 15).0, [255]);
        assert_eq!(mask.get_pixel(16, 16).0, [255]);
        assert!(outpaint_canvas(&image, [0; 4]).is_err());
        assert!(outpaint_canvas(&image, [8, 0, 0, 0]).is_err());
    }

    #[test]
    fn fill_mask_uses_pil_grayscale_and_binarizes_at_half() {
        // 127 and 128 straddle the threshold; PIL's L of (200, 50, 50) is 95, of (50, 200, 50) 138.
        let rgb = RgbImage::from_fn(4, 1, |x, _| match x {
            0 => Rgb([127, 127, 127]),
            1 => Rgb([128, 128, 128]),
            2 => Rgb([200, 50, 50]),
            _ => Rgb([50, 200, 50]),
        });
        let mask = fill_mask(&DynamicImage::ImageRgb8(rgb), 4, 1);
        assert_eq!(mask, [0.0, 1.0, 0.0, 1.0]);
    }

    #[cfg(feature = "canny")]
    #[test]
    fn canny_finds_the_edges_of_a_square() {
        let image = RgbImage::from_fn(64, 64, |x, y| {
            let inside = (16..48).contains(&x) && (16..48).contains(&y);
            Rgb(if inside { [255; 3] } else { [0; 3] })
        });
        let edges = canny_edges(&DynamicImage::ImageRgb8(image), 50.0, 200.0).to_rgb8();
        let on = |x, y| edges.get_pixel(x, y).0 == [255; 3];
        assert!((14..18).any(|x| on(x, 32)), "left edge");
        assert!(!on(32, 32) && !on(2, 2), "flat areas have no edges");
    }
}
