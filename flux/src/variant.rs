//! [`Variant`]: what a FLUX.1 transformer takes besides the prompt (an image to edit, a
//! masked image, a control image), and how it is recognised.

use std::fmt;
use std::path::Path;

/// The FLUX.1 model a transformer is, by what it conditions on. Fill and the control models
/// have wider inputs than \[dev\] (their conditioning is concatenated to the latent channels);
/// Kontext has \[dev\]'s shapes exactly (its reference image arrives as extra tokens), so it is
/// recognised by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Variant {
    /// FLUX.1 \[dev\] / \[schnell\]: text to image (and img2img).
    #[default]
    TextToImage,
    /// FLUX.1 Kontext \[dev\] (diffusers `FluxKontextPipeline`): edits reference images with an
    /// instruction; their latents are appended to the image tokens with position ids whose
    /// first coordinate is 1.
    Kontext,
    /// FLUX.1 Fill \[dev\] (`FluxFillPipeline`): inpainting and outpainting; the masked image's
    /// latents (64 packed channels) and the mask (256) are concatenated to the noisy latents'
    /// 64: 384 input channels.
    Fill,
    /// FLUX.1 Canny / Depth \[dev\] (`FluxControlPipeline`), or \[dev\] with BFL's control LoRA:
    /// the control image's latents concatenated to the noisy latents: 128 input channels.
    Control,
}

impl Variant {
    /// The variant of a transformer with `in_channels` inputs per token and `out_channels`
    /// outputs: 6× the output is Fill, 2× is a control model; equal widths are Kontext when
    /// `name` (a file or folder name, or the diffusers `model_index.json` class) says so,
    /// else text-to-image. `None` for input widths no FLUX.1 model has.
    pub fn detect(in_channels: usize, out_channels: usize, name: &str) -> Option<Self> {
        if in_channels == out_channels {
            Some(if name.to_ascii_lowercase().contains("kontext") {
                Self::Kontext
            } else {
                Self::TextToImage
            })
        } else if in_channels == 6 * out_channels {
            Some(Self::Fill)
        } else if in_channels == 2 * out_channels {
            Some(Self::Control)
        } else {
            None
        }
    }

    /// What to look for "kontext" in: the transformer file's path (a folder named
    /// `FLUX.1-Kontext-dev`, the hub cache's `models--black-forest-labs--FLUX.1-Kontext-dev`,
    /// a file `flux1-kontext-dev.safetensors`) and, for a diffusers folder, the pipeline class
    /// in its `model_index.json` (`FluxKontextPipeline`).
    pub(crate) fn name_hint(transformer: &Path) -> String {
        // The last components only: a user's home folder is no evidence.
        let tail: Vec<_> = transformer.components().rev().take(3).collect();
        let mut hint: String = tail
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        for dir in transformer.ancestors().skip(1).take(3) {
            if let Ok(text) = std::fs::read_to_string(dir.join("model_index.json")) {
                hint.push(' ');
                hint.push_str(&text);
                break;
            }
        }
        hint
    }

    /// Input channels per token for a model whose output has `out_channels`.
    pub fn in_channels(self, out_channels: usize) -> usize {
        match self {
            Self::TextToImage | Self::Kontext => out_channels,
            Self::Fill => 6 * out_channels,
            Self::Control => 2 * out_channels,
        }
    }

    /// diffusers' default steps for the variant's pipeline, where it differs from the
    /// model kind's (`FluxFillPipeline`: 50).
    pub(crate) fn default_steps(self) -> Option<usize> {
        match self {
            Self::Fill => Some(50),
            _ => None,
        }
    }

    /// diffusers' default guidance for the variant's pipeline, where it differs from the
    /// model kind's (`FluxFillPipeline`: 30).
    pub(crate) fn default_guidance(self) -> Option<f32> {
        match self {
            Self::Fill => Some(30.0),
            _ => None,
        }
    }

    /// The short name written into PNG metadata (`kontext`, `fill`, `control`; `None` for
    /// text-to-image).
    pub fn tool_name(self) -> Option<&'static str> {
        match self {
            Self::TextToImage => None,
            Self::Kontext => Some("kontext"),
            Self::Fill => Some("fill"),
            Self::Control => Some("control"),
        }
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TextToImage => "text-to-image",
            Self::Kontext => "Kontext (image editing)",
            Self::Fill => "Fill (inpainting)",
            Self::Control => "Control (structure conditioning)",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_each_variant_from_its_widths_and_name() {
        assert_eq!(
            Variant::detect(64, 64, "FLUX.1-dev"),
            Some(Variant::TextToImage)
        );
        assert_eq!(
            Variant::detect(64, 64, "/m/flux1-Kontext-dev.safetensors"),
            Some(Variant::Kontext)
        );
        assert_eq!(Variant::detect(384, 64, "x"), Some(Variant::Fill));
        assert_eq!(Variant::detect(128, 64, "x"), Some(Variant::Control));
        assert_eq!(Variant::detect(96, 64, "x"), None);
        for v in [Variant::Fill, Variant::Control, Variant::TextToImage] {
            assert_eq!(Variant::detect(v.in_channels(64), 64, ""), Some(v));
        }
    }
}
