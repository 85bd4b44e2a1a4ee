//! Image <-> tensor conversions.

use crate::common::{B, fixture, io};
use flux_vae::{image_to_tensor, images_to_tensor, tensor_to_images};
use image::RgbImage;

fn pattern(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 7 + y) as u8, (y * 13) as u8, ((x ^ y) * 5) as u8])
    })
}

#[test]
fn round_trip_is_exact() {
    let device = Default::default();
    let img = pattern(48, 64);
    let t = image_to_tensor::<B>(&img, &device);
    assert_eq!(t.dims(), [1, 3, 64, 48]);
    let min: f32 = t.clone().min().into_scalar();
    let max: f32 = t.clone().max().into_scalar();
    assert!(min >= -1.0 && max <= 1.0);
    // Pixel (x=5, y=2), green channel: 2*13 = 26 -> 26/127.5 - 1.
    let v: f32 = t.clone().slice([0..1, 1..2, 2..3, 5..6]).into_scalar();
    assert!((v - (26.0 / 127.5 - 1.0)).abs() < 1e-6);
    let back = tensor_to_images(t).unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!(back[0], img);
}

#[test]
fn batches() {
    let device = Default::default();
    let a = pattern(16, 8);
    let b = RgbImage::from_pixel(16, 8, image::Rgb([255, 0, 128]));
    let t = images_to_tensor::<B>(&[a.clone(), b.clone()], &device).unwrap();
    assert_eq!(t.dims(), [2, 3, 8, 16]);
    assert_eq!(tensor_to_images(t).unwrap(), vec![a.clone(), b]);
    let e = images_to_tensor::<B>(&[a, pattern(8, 8)], &device).unwrap_err();
    assert!(e.to_string().contains("different sizes"), "{e}");
    let e = images_to_tensor::<B>(&[], &device).unwrap_err();
    assert!(e.to_string().contains("empty batch"), "{e}");
}

#[test]
fn out_of_range_values_clamp() {
    let device = Default::default();
    let src = pattern(64, 8);
    let t = image_to_tensor::<B>(&src, &device) * 3.0;
    let img = &tensor_to_images(t).unwrap()[0];
    for (a, b) in src.pixels().zip(img.pixels()) {
        for (&v, &out) in a.0.iter().zip(&b.0) {
            // diffusers' post-processing: (x / 2 + 0.5).clamp(0, 1), * 255, round half to even.
            let x = 3.0 * (2.0 * (f32::from(v) / 255.0) - 1.0);
            let unit = (x / 2.0 + 0.5).clamp(0.0, 1.0);
            assert_eq!(out, (unit * 255.0).round_ties_even() as u8);
        }
    }
    assert!(img.pixels().any(|p| p.0.contains(&255)));
    assert!(img.pixels().any(|p| p.0.contains(&0)));
    let e = tensor_to_images(burn::tensor::Tensor::<B, 4>::zeros([1, 4, 2, 2], &device));
    let e = e.unwrap_err().to_string();
    assert!(e.contains("[1, 4, 2, 2] is not an RGB batch"), "{e}");
}

#[test]
fn decoded_images_match_the_reference_pixels() {
    // The tiny VAE's decode of the fixture latents, as 8-bit images, against diffusers' decode
    // of the same latents quantised the same way (`gen_vae.py`'s `decoded`).
    let device = Default::default();
    let vae = flux_vae::load::<B>(fixture("diffusers/vae"), &device).unwrap();
    let ours = tensor_to_images(vae.decode(io::<B>("latents_in", &device)).unwrap()).unwrap();
    let reference = tensor_to_images(io::<B>("decoded", &device)).unwrap();
    assert_eq!(ours.len(), reference.len());
    let (mut same, mut total, mut worst) = (0usize, 0usize, 0u8);
    for (a, b) in ours.iter().zip(&reference) {
        assert_eq!(a.dimensions(), b.dimensions());
        for (&x, &y) in a.as_raw().iter().zip(b.as_raw()) {
            total += 1;
            same += usize::from(x == y);
            worst = worst.max(x.abs_diff(y));
        }
    }
    let share = same as f64 / total as f64;
    eprintln!("VAE decode as 8-bit: {share:.5} identical, max {worst} level(s) apart");
    assert!(
        share >= 0.999 && worst <= 1,
        "{share} identical, max diff {worst}"
    );
    // And the image -> latents -> image path keeps the size.
    let img = pattern(48, 64);
    let latents = vae.encode(image_to_tensor::<B>(&img, &device)).unwrap();
    assert_eq!(latents.dims(), [1, 16, 8, 6]);
    let out = tensor_to_images(vae.decode(latents).unwrap()).unwrap();
    assert_eq!(out[0].dimensions(), (48, 64));
}
