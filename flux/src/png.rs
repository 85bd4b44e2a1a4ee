//! PNG output that says how an image was made: the generation parameters as text chunks.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use image::RgbImage;

use crate::{Error, Resolved, Result};

/// The parameters written into a PNG's text chunks.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageMetadata {
    /// The prompt.
    pub prompt: String,
    /// The seed of the initial noise.
    pub seed: u64,
    /// Sampler steps.
    pub steps: usize,
    /// Guidance scale (\[dev\]); `None` for \[schnell\].
    pub guidance: Option<f32>,
    /// Model name, e.g. `FLUX.1-dev`.
    pub model: String,
    /// Image width in pixels.
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
    /// The type the weights were quantized to at load (`q4_0`, ...), if they were.
    pub quantization: Option<String>,
    /// Each LoRA's file name and strength.
    pub loras: Vec<(String, f32)>,
    /// The negative prompt and true CFG scale, when true CFG ran.
    pub negative_prompt: Option<(String, f32)>,
    /// The FLUX.1 tool that ran (`kontext`, `fill`, `control`), if one did.
    pub tool: Option<String>,
    /// The tool's inputs as the caller names them, e.g. `("reference_image", "cat.png")`,
    /// `("mask", "mask.png")`, `("control_image", "edges.png")`, `("outpaint", "0,0,256,0")`
    /// (the CLI records its file arguments; the library knows no file names).
    pub tool_inputs: Vec<(&'static str, String)>,
    /// The sampler, when not Euler (`dpmpp-2m`).
    pub sampler: Option<String>,
    /// The sigma spacing, when not FLUX's (`karras`, `exponential`, `beta`).
    pub sigmas: Option<String>,
    /// The step cache and its threshold (`first-block:0.12`), and the transformer calls it
    /// computed and reused when known (`computed 14, reused 14`).
    pub cache: Option<String>,
}

impl ImageMetadata {
    /// The metadata of an image made from `prompt` with the settings `resolved` (what
    /// [`crate::Pipeline::resolve`] returns for the request).
    pub fn new(prompt: &str, resolved: &Resolved) -> Self {
        Self {
            prompt: prompt.to_string(),
            seed: resolved.seed,
            steps: resolved.steps,
            guidance: resolved.guidance,
            model: resolved.model.name().into(),
            width: resolved.width as u32,
            height: resolved.height as u32,
            quantization: None,
            loras: resolved.loras.clone(),
            // The first prompt's (the CLI's one prompt); per-prompt negatives of a batch are
            // the caller's to set.
            negative_prompt: resolved
                .negative_prompts
                .first()
                .cloned()
                .zip(resolved.true_cfg),
            tool: resolved.variant.tool_name().map(str::to_string),
            tool_inputs: Vec::new(),
            sampler: (resolved.sampler != flux_sampler::Sampler::Euler)
                .then(|| resolved.sampler.to_string()),
            sigmas: (resolved.sigmas != flux_sampler::Spacing::Flux)
                .then(|| resolved.sigmas.to_string()),
            cache: resolved.cache.as_ref().map(ToString::to_string),
        }
    }

    /// Adds a run's step-cache counts to [`ImageMetadata::cache`]
    /// (`teacache:0.4 (computed 12, reused 16)`); nothing without a cache.
    pub fn record_cache_counts(&mut self, stats: flux_sampler::CacheStats) {
        if let Some(cache) = &mut self.cache {
            *cache = format!(
                "{cache} (computed {}, reused {})",
                stats.computed, stats.reused
            );
        }
    }

    /// Keyword/value pairs, in the order they are written.
    pub fn entries(&self) -> Vec<(&'static str, String)> {
        let mut entries = vec![
            ("prompt", self.prompt.clone()),
            ("seed", self.seed.to_string()),
            ("steps", self.steps.to_string()),
        ];
        if let Some(g) = self.guidance {
            entries.push(("guidance", g.to_string()));
        }
        entries.extend([
            ("model", self.model.clone()),
            ("size", format!("{}x{}", self.width, self.height)),
        ]);
        if let Some(q) = &self.quantization {
            entries.push(("quantization", q.clone()));
        }
        if let Some((negative, scale)) = &self.negative_prompt {
            entries.push(("negative_prompt", negative.clone()));
            entries.push(("true_cfg", scale.to_string()));
        }
        if let Some(tool) = &self.tool {
            entries.push(("tool", tool.clone()));
        }
        entries.extend(self.tool_inputs.iter().cloned());
        if let Some(sampler) = &self.sampler {
            entries.push(("sampler", sampler.clone()));
        }
        if let Some(sigmas) = &self.sigmas {
            entries.push(("sigmas", sigmas.clone()));
        }
        if let Some(cache) = &self.cache {
            entries.push(("cache", cache.clone()));
        }
        if !self.loras.is_empty() {
            let loras: Vec<String> = self.loras.iter().map(|(n, s)| format!("{n}:{s}")).collect();
            entries.push(("loras", loras.join(", ")));
        }
        entries.push(("software", format!("flux-rs {}", env!("CARGO_PKG_VERSION"))));
        entries
    }
}

/// Writes `image` as an 8-bit RGB PNG at `path` with `meta` as text chunks (`tEXt` when the
/// value is Latin-1, `iTXt` — UTF-8 — otherwise, so any prompt survives).
///
/// # Errors
/// [`Error::Output`] if the file cannot be written.
pub fn save_png(image: &RgbImage, path: impl AsRef<Path>, meta: &ImageMetadata) -> Result<()> {
    let path = path.as_ref();
    let fail = |e: Box<dyn std::error::Error + Send + Sync>| {
        let message = format!("writing {}: {e}", path.display());
        Error::output(message, e)
    };
    let file = File::create(path).map_err(|e| fail(e.into()))?;
    let mut encoder = png::Encoder::new(BufWriter::new(file), image.width(), image.height());
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    for (key, value) in meta.entries() {
        let added = if value.chars().all(|c| (c as u32) < 256) {
            encoder.add_text_chunk(key.into(), value)
        } else {
            encoder.add_itxt_chunk(key.into(), value)
        };
        added.map_err(|e| fail(e.into()))?;
    }
    let mut writer = encoder.write_header().map_err(|e| fail(e.into()))?;
    writer
        .write_image_data(image.as_raw())
        .map_err(|e| fail(e.into()))?;
    writer.finish().map_err(|e| fail(e.into()))
}

/// Reads the text chunks of a PNG file (both `tEXt` and `iTXt`) as keyword/value pairs.
///
/// # Errors
/// [`Error::Output`] if the file cannot be read or decoded.
pub fn read_png_text(path: impl AsRef<Path>) -> Result<Vec<(String, String)>> {
    let path = path.as_ref();
    let fail = |e: Box<dyn std::error::Error + Send + Sync>| {
        let message = format!("reading {}: {e}", path.display());
        Error::output(message, e)
    };
    let file = File::open(path).map_err(|e| fail(e.into()))?;
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_ignore_text_chunk(false);
    let mut reader = decoder.read_info().map_err(|e| fail(e.into()))?;
    let mut buf = vec![0; reader.output_buffer_size().unwrap_or(0)];
    reader.next_frame(&mut buf).map_err(|e| fail(e.into()))?;
    let info = reader.info();
    let mut out: Vec<(String, String)> = info
        .uncompressed_latin1_text
        .iter()
        .map(|c| (c.keyword.clone(), c.text.clone()))
        .collect();
    for chunk in &info.utf8_text {
        out.push((
            chunk.keyword.clone(),
            chunk.get_text().map_err(|e| fail(e.into()))?,
        ));
    }
    Ok(out)
}
