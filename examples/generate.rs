//! The main job: a prompt in, a PNG out.
//!
//! ```sh
//! cargo run --release --example generate -- --prompt "a cat in a tiny hat" \
//!     --model-dir FLUX.1-schnell --width 1024 --height 1024 --out cat.png
//! ```
//!
//! Weights: a FLUX.1 folder in the Hugging Face layout (`--model-dir`), or a hub repository
//! id (`--repo black-forest-labs/FLUX.1-schnell`, with `HF_TOKEN` for the gated [dev]).

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use burn::tensor::DType;
use clap::{Parser, ValueEnum};
use flux::{
    Device, EngineBuilder, GenerateRequest, ImageMetadata, LoraMode, MemoryMode, ModelFiles,
    Progress, QuantType, Quantization, ReduxFiles, Stage, Variant, save_png,
};
use image::DynamicImage;
use indicatif::{ProgressBar, ProgressStyle};

/// FLUX.1 text-to-image.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// What to draw.
    #[arg(long)]
    prompt: String,
    /// A FLUX.1 folder in the Hugging Face layout (transformer/, vae/, text_encoder/, ...).
    #[arg(long, conflicts_with = "repo")]
    model_dir: Option<PathBuf>,
    /// A Hugging Face Hub repository id, e.g. black-forest-labs/FLUX.1-schnell.
    #[arg(long)]
    repo: Option<String>,
    /// The transformer from this file instead of the folder's: a `.safetensors` (BFL, ComfyUI,
    /// fp8) or a `.gguf` (city96's / stable-diffusion.cpp's quantized FLUX files).
    #[arg(long, requires = "model_dir", conflicts_with = "repo")]
    transformer: Option<PathBuf>,
    /// The T5 encoder from this file instead of the folder's (`.safetensors`, or a T5 encoder
    /// `.gguf` in llama.cpp's names).
    #[arg(long, requires = "model_dir", conflicts_with = "repo")]
    t5: Option<PathBuf>,
    /// Image width (a multiple of 16; default 1024, or the input image's for the tools).
    #[arg(long)]
    width: Option<usize>,
    /// Image height (a multiple of 16; default 1024, or the input image's for the tools).
    #[arg(long)]
    height: Option<usize>,
    /// Sampler steps (default: 28 for [dev], 4 for [schnell]).
    #[arg(long)]
    steps: Option<usize>,
    /// Guidance scale ([dev] only; default 3.5).
    #[arg(long)]
    guidance: Option<f32>,
    /// Seed of the initial noise (same seed, same picture as diffusers).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Images to make.
    #[arg(long, default_value_t = 1)]
    num_images: usize,
    /// Output file; with several images, `_1`, `_2`... are inserted before the extension.
    #[arg(long, default_value = "out.png")]
    out: PathBuf,
    /// Where to run: cpu, wgpu or cuda (the GPU backends need their cargo feature).
    #[arg(long, default_value = "cpu")]
    device: Device,
    /// Float type of weights and activations; `auto` picks from the device and the memory
    /// available (printed).
    #[arg(long, value_enum, default_value_t = DtypeArg::Auto)]
    dtype: DtypeArg,
    /// `resident`: all models loaded once; `sequential`: each model only for its stage (peak
    /// memory is the largest model instead of the sum); `auto` picks from the memory available.
    #[arg(long, value_enum, default_value_t = MemoryArg::Auto)]
    memory: MemoryArg,
    /// Same as `--memory sequential`.
    #[arg(long, conflicts_with = "memory")]
    low_memory: bool,
    /// Memory the automatic choice may plan for, in GB (default: what the OS reports available
    /// for the CPU; a GPU's memory cannot be read here, so pass it). Also `FLUX_AVAILABLE_MEMORY`.
    #[arg(long, env = "FLUX_AVAILABLE_MEMORY")]
    available_memory: Option<f64>,
    /// Print the dtype and memory plan for these files and this machine, then exit without
    /// loading anything ("will it fit?").
    #[arg(long)]
    dry_run: bool,
    /// Hold the transformer's and T5's linear weights quantized, quantizing them as they load
    /// from a float checkpoint: `q8_0` (8.5 bits per weight, about half of bf16's memory),
    /// `q5_1`, `q5_0`, `q4_1`, `q4_k` (ggml's K-quant, 4.625 bits), `q4_0` (4.5 bits, 28 %),
    /// `fp8`. `none` loads every weight dense (a GGUF's too). Default: as stored (GGUF and fp8
    /// files stay quantized in memory). The choice is printed and recorded in the PNG.
    #[arg(long, value_parser = parse_quantization)]
    quantize: Option<Quantization>,
    /// Keep the transformer's blocks in host memory and upload one at a time as each step
    /// runs them: for GPUs smaller than the model (slower: the blocks cross every step).
    #[arg(long)]
    offload_blocks: bool,
    /// img2img: start from this image (resized to --width x --height) instead of pure noise.
    #[arg(long, conflicts_with_all = ["image", "edit", "control_image"])]
    init_image: Option<PathBuf>,
    /// Share of the schedule that runs from the image, in (0, 1] (img2img default 0.6,
    /// Fill default 1: the masked area from pure noise).
    #[arg(long)]
    strength: Option<f32>,
    /// Kontext: the image to edit with the prompt as the instruction ("make the car red").
    /// The output has its aspect ratio at --max-area unless --width/--height say otherwise.
    #[arg(long, conflicts_with_all = ["image", "control_image"])]
    edit: Option<PathBuf>,
    /// Kontext: keep the edited image's size (rounded to 16) instead of resizing it to the
    /// nearest trained resolution.
    #[arg(long, requires = "edit")]
    keep_size: bool,
    /// Kontext: output area in pixels (default 1048576 = 1024²).
    #[arg(long)]
    max_area: Option<usize>,
    /// Fill: the image to inpaint (with --mask) or outpaint (with --outpaint).
    #[arg(long, conflicts_with = "control_image")]
    image: Option<PathBuf>,
    /// Fill: the mask; white is repainted, black kept.
    #[arg(long, requires = "image", conflicts_with = "outpaint")]
    mask: Option<PathBuf>,
    /// Fill: outpaint by LEFT,TOP,RIGHT,BOTTOM pixels (the canvas sides must be multiples of
    /// 16), e.g. `0,0,256,0` extends the image 256 pixels to the right.
    #[arg(long, requires = "image", value_parser = parse_outpaint)]
    outpaint: Option<[u32; 4]>,
    /// Control (FLUX.1 Canny/Depth [dev], or [dev] with a control LoRA): the control image.
    #[arg(long)]
    control_image: Option<PathBuf>,
    /// How to read --control-image: `image` uses it as given (an edge or depth map); `canny`
    /// makes a Canny edge map of a photo (needs the `canny` cargo feature).
    #[arg(long, value_enum, default_value_t = ControlArg::Image, requires = "control_image")]
    control: ControlArg,
    /// Redux: a FLUX.1-Redux-dev folder (`image_encoder/`, `image_embedder/`,
    /// `feature_extractor/`).
    #[arg(long, conflicts_with = "redux_siglip")]
    redux: Option<PathBuf>,
    /// Redux from single files: the SigLIP vision tower (e.g. ComfyUI's
    /// `sigclip_vision_patch14_384.safetensors`) ...
    #[arg(long, requires = "redux_embedder")]
    redux_siglip: Option<PathBuf>,
    /// ... and the Redux embedder (`flux1-redux-dev.safetensors`).
    #[arg(long, requires = "redux_siglip")]
    redux_embedder: Option<PathBuf>,
    /// Redux: an image prompt, `FILE` or `FILE:STRENGTH` (repeatable; several are blended as
    /// diffusers blends them). With `--prompt ""` it makes variations of the image.
    #[arg(long = "redux-image", value_parser = parse_weighted_file)]
    redux_images: Vec<(PathBuf, f32)>,
    /// The model variant, when the file does not say: Kontext has [dev]'s shapes and is
    /// recognised by "kontext" in its path (Fill and Control by their input width).
    #[arg(long, value_enum, default_value_t = VariantArg::Auto)]
    variant: VariantArg,
    /// At most this many images per transformer call (true CFG counts each twice); default:
    /// the whole batch at once. Smaller holds fewer activations; the images are the same.
    #[arg(long)]
    batch_size: Option<usize>,
    /// What the image should not show. Acts only with --true-cfg above 1 ([dev] is
    /// guidance-distilled: a negative prompt needs a second transformer pass per step).
    #[arg(long)]
    negative_prompt: Option<String>,
    /// True classifier-free guidance scale (diffusers' `true_cfg_scale`, e.g. 4): above 1 with
    /// --negative-prompt, each step runs the transformer twice.
    #[arg(long)]
    true_cfg: Option<f32>,
    /// The sampler: `euler` (FLUX's own) or `dpmpp-2m` (DPM-Solver++ 2M as diffusers runs it with
    /// flow sigmas; [dev], from noise).
    #[arg(long, default_value = "euler")]
    sampler: flux::Sampler,
    /// How the sigmas are spaced: `flux` (the shifted grid), `karras`, `exponential` or `beta`
    /// (ComfyUI's `beta` scheduler), as diffusers' flow-match scheduler spaces them.
    #[arg(long, default_value = "flux")]
    sigmas: flux::Spacing,
    /// Skip transformer blocks at steps where they would change little: `first-block:T`,
    /// `teacache:T`, `magcache:T` (T: the threshold; the name alone takes the defaults 0.05,
    /// 0.4, 0.06), or `magcache:calibrate` to print the magnitude ratios of a model.
    #[arg(long)]
    cache: Option<flux::Cache>,
    /// MagCache's magnitude ratios for a model that is not FLUX.1 (what `--cache
    /// magcache:calibrate` printed, comma-separated); FLUX.1's are built in.
    #[arg(long, requires = "cache", value_delimiter = ',')]
    mag_ratios: Vec<f32>,
    /// Apply a LoRA: `FILE` or `FILE:STRENGTH` (default strength 1). Repeat for several.
    /// diffusers/PEFT, kohya, BFL/ComfyUI, XLabs, LoKr and LoHa files are recognised from
    /// their keys; one whose names match no layer is an error (see --lora-lenient).
    #[arg(long = "lora", value_parser = parse_weighted_file)]
    loras: Vec<(PathBuf, f32)>,
    /// `merged`: LoRAs added to the weights at load (no cost per step); `runtime`: kept
    /// beside them (quantized layers always take LoRAs at run time).
    #[arg(long, value_enum, default_value_t = LoraModeArg::Merged)]
    lora_mode: LoraModeArg,
    /// Warn about LoRA module names that match no layer instead of failing.
    #[arg(long)]
    lora_lenient: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, ValueEnum)]
enum ControlArg {
    Image,
    Canny,
}

#[derive(Debug, Clone, Copy, PartialEq, ValueEnum)]
enum VariantArg {
    Auto,
    Text,
    Kontext,
    Fill,
    Control,
}

#[derive(Debug, Clone, Copy, PartialEq, ValueEnum)]
enum LoraModeArg {
    Merged,
    Runtime,
}

#[derive(Debug, Clone, Copy, PartialEq, ValueEnum)]
enum DtypeArg {
    Auto,
    F32,
    Bf16,
    F16,
}

#[derive(Debug, Clone, Copy, PartialEq, ValueEnum)]
enum MemoryArg {
    Auto,
    Resident,
    Sequential,
}

fn main() -> ExitCode {
    // Freed activations stay in the process for the next step (no page faults per step).
    flux::retain_freed_memory();
    match run(&Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let started = Instant::now();
    let files = match (&args.model_dir, &args.repo) {
        (Some(dir), _) => ModelFiles::from_dir_with(dir, args.transformer.clone(), args.t5.clone())
            .map_err(|e| e.to_string())?,
        // `--transformer`/`--t5` require `--model-dir`: with `--repo` the hub download would
        // fetch the replaced parts (24 GB for a transformer) only to ignore them.
        (None, Some(repo)) => flux::hub::download(repo, None).map_err(|e| e.to_string())?,
        (None, None) => {
            return Err(
                "no weights: pass --model-dir DIR (a FLUX.1 folder in the Hugging Face \
                 layout: transformer/, vae/, text_encoder/, text_encoder_2/, tokenizer/, \
                 tokenizer_2/; e.g. `huggingface-cli download black-forest-labs/FLUX.1-schnell \
                 --local-dir FLUX.1-schnell`) or --repo black-forest-labs/FLUX.1-schnell \
                 (FLUX.1-dev is gated: accept its licence and set HF_TOKEN)"
                    .into(),
            );
        }
    };
    let engine = engine_builder(args, files)?;
    let plan = engine.plan().map_err(|e| e.to_string())?;
    if plan.automatic {
        println!("auto: {plan}");
    }
    if !plan.memory.fits {
        eprintln!(
            "warning: even the smallest choice needs about {:.1} GB, more than is available: \
             expect swapping or an out-of-memory stop (try --quantize q8_0 or q4_0)",
            plan.memory.peak_bytes as f64 / 1e9
        );
    }
    let quantization = quantization_label(args, engine.files());
    if let Some(label) = &quantization {
        println!("quantized weights: {label}");
    }
    if args.dry_run {
        return Ok(());
    }
    let pipeline = engine.build().map_err(|e| e.to_string())?;
    for report in pipeline.lora_reports() {
        println!("lora: {report}");
        if !report.unmatched.is_empty() {
            eprintln!(
                "warning: {} module(s) of {} matched no layer and were not applied: {}",
                report.unmatched.len(),
                report.name,
                report.unmatched.join(", ")
            );
        }
    }
    if pipeline.variant() != Variant::TextToImage {
        println!("model: {}", pipeline.variant());
    }
    let load_time = started.elapsed();
    let (request, tool_inputs) = tool_request(args)?;
    let request = request
        .with_seed(args.seed)
        .with_images_per_prompt(args.num_images);
    let request = match args.steps {
        Some(steps) => request.with_steps(steps),
        None => request,
    };
    let request = match args.guidance {
        Some(g) => request.with_guidance(g),
        None => request,
    };
    let request = match &args.negative_prompt {
        Some(negative) => request.with_negative_prompt(negative),
        None => request,
    };
    let request = match args.true_cfg {
        Some(scale) => request.with_true_cfg(scale),
        None => request,
    };
    let request = request.with_sampler(args.sampler).with_sigmas(args.sigmas);
    let calibrate = matches!(
        &args.cache,
        Some(flux::Cache::Mag(m)) if m.ratios == flux::MagRatios::Calibrate
    );
    let request = match (&args.cache, args.mag_ratios.is_empty()) {
        (Some(_), _) if calibrate => request,
        (Some(flux::Cache::Mag(m)), false) => {
            let mut m = m.clone();
            m.ratios = flux::MagRatios::Custom(args.mag_ratios.clone());
            request.with_cache(flux::Cache::Mag(m))
        }
        (Some(_), false) => return Err("--mag-ratios needs --cache magcache:T".into()),
        (Some(cache), true) => request.with_cache(cache.clone()),
        (None, _) => request,
    };
    let resolved = pipeline.resolve(&request).map_err(|e| e.to_string())?;
    for warning in &resolved.warnings {
        eprintln!("warning: {warning}");
    }
    if let Some(scale) = resolved.true_cfg {
        println!("true CFG {scale}: two transformer passes per step");
    }
    let guidance = resolved
        .guidance
        .map_or("none".to_string(), |g| g.to_string());
    println!(
        "{}: {} steps, guidance {guidance}, seed {}, {}x{}",
        resolved.model.name(),
        resolved.steps,
        resolved.seed,
        resolved.width,
        resolved.height
    );
    let steps = resolved.steps;

    let bar = ProgressBar::new(steps as u64).with_style(
        ProgressStyle::with_template(
            "{prefix:>10} [{bar:30}] {pos}/{len} {elapsed_precise} ({per_sec})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let mut stage_times: BTreeMap<&'static str, Duration> = BTreeMap::new();
    let mut stage_start = Duration::ZERO;
    let mut cache_stats = None;
    if calibrate {
        let (images, ratios) = pipeline
            .calibrate_mag_cache(&request)
            .map_err(|e| e.to_string())?;
        let ratios: Vec<String> = ratios.iter().map(f32::to_string).collect();
        println!(
            "magcache ratios ({} steps): [{}]",
            ratios.len(),
            ratios.join(", ")
        );
        return save_images(args, &images, &resolved, &tool_inputs, &quantization, None);
    }
    let images = pipeline
        .generate(&request, &mut |p: Progress| {
            if p.cache.is_some() {
                cache_stats = p.cache;
            }
            let name = match p.stage {
                Stage::Loading => "loading",
                Stage::Encoding => "text",
                Stage::EncodingImage => "vae encode",
                Stage::Denoising => "denoise",
                Stage::Decoding => "vae",
                _ => "other",
            };
            if p.step == 0 {
                stage_start = p.elapsed;
            } else if p.step == p.total {
                *stage_times.entry(name).or_default() += p.elapsed - stage_start;
            }
            if p.stage == Stage::Denoising {
                bar.set_length(p.total as u64);
                bar.set_prefix("denoising");
                bar.set_position(p.step as u64);
            }
            ControlFlow::Continue(())
        })
        .map_err(|e| e.to_string())?;
    bar.finish();
    if let Some(stats) = cache_stats {
        println!(
            "cache {}: {} transformer calls computed, {} reused",
            request
                .cache
                .as_ref()
                .map_or(String::new(), ToString::to_string),
            stats.computed,
            stats.reused
        );
    }
    save_images(
        args,
        &images,
        &resolved,
        &tool_inputs,
        &quantization,
        cache_stats,
    )?;
    println!("timing: load {:.2}s", load_time.as_secs_f64());
    for (stage, t) in &stage_times {
        println!("timing: {stage} {:.2}s", t.as_secs_f64());
    }
    println!("timing: total {:.2}s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Writes the images (`out.png`, or `out_1.png`, `out_2.png`, … for several) with their
/// metadata.
fn save_images(
    args: &Args,
    images: &[image::RgbImage],
    resolved: &flux::Resolved,
    tool_inputs: &[(&'static str, String)],
    quantization: &Option<String>,
    cache_stats: Option<flux::CacheStats>,
) -> Result<(), String> {
    for (i, image) in images.iter().enumerate() {
        let path = if images.len() == 1 {
            args.out.clone()
        } else {
            let stem = args
                .out
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("out");
            let ext = args
                .out
                .extension()
                .and_then(|s| s.to_str())
                .unwrap_or("png");
            args.out.with_file_name(format!("{stem}_{}.{ext}", i + 1))
        };
        let mut meta = ImageMetadata::new(&args.prompt, resolved);
        meta.tool_inputs = tool_inputs.to_vec();
        meta.quantization = quantization.clone();
        if let Some(stats) = cache_stats {
            meta.record_cache_counts(stats);
        }
        save_png(image, &path, &meta).map_err(|e| e.to_string())?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// How the transformer's and T5's linear weights are held: the `--quantize` type, else the
/// quantized type each file stores (GGUF blocks, fp8: its most common one among the 2-d
/// tensors), `None` when everything is dense.
fn quantization_label(args: &Args, files: &ModelFiles) -> Option<String> {
    match args.quantize {
        Some(Quantization::To(q)) => return Some(q.to_string()),
        Some(Quantization::Dequantize) => return None,
        _ => {}
    }
    let stored = |path: &Path| -> Option<String> {
        let weights = flux::io::Weights::open(path).ok()?;
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for meta in weights.keys().filter_map(|k| weights.meta(k)) {
            if meta.shape.len() == 2
                && (meta.dtype.starts_with('Q') || meta.dtype.starts_with("F8"))
            {
                *counts.entry(meta.dtype).or_default() += 1;
            }
        }
        counts.into_iter().max_by_key(|&(_, n)| n).map(|(t, _)| t)
    };
    let parts: Vec<String> = [("transformer", &files.transformer), ("T5", &files.t5)]
        .into_iter()
        .filter_map(|(name, path)| stored(path).map(|t| format!("{name} {t}")))
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

fn open_image(path: &Path, what: &str) -> Result<DynamicImage, String> {
    image::open(path).map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// What the PNG metadata records of a tool's inputs: `(keyword, value)`.
type ToolInputs = Vec<(&'static str, String)>;

/// The request's prompt, size and tool inputs (img2img, Kontext, Fill, Control), and what to
/// record of them in the PNG. Without --width/--height a tool's output takes its input
/// image's size (for Kontext, the size the reference is resized to).
fn tool_request(args: &Args) -> Result<(GenerateRequest, ToolInputs), String> {
    let mut request = GenerateRequest::new(&args.prompt);
    let mut inputs = Vec::new();
    let mut size = None;
    if let Some(path) = &args.init_image {
        let strength = args.strength.unwrap_or(0.6);
        request = request.with_init_image(open_image(path, "init image")?, strength);
        inputs.push(("init_image", file_name(path)));
        inputs.push(("strength", strength.to_string()));
    }
    if let Some(path) = &args.edit {
        let image = open_image(path, "image to edit")?;
        size = flux::tools::kontext_reference_size(
            image.width() as usize,
            image.height() as usize,
            !args.keep_size,
        );
        request = request
            .with_reference_image(image)
            .with_auto_resize(!args.keep_size);
        inputs.push(("reference_image", file_name(path)));
    }
    if let Some(area) = args.max_area {
        request = request.with_max_area(area);
    }
    if let Some(path) = &args.image {
        let image = open_image(path, "image")?;
        let (image, mask) = match (&args.mask, args.outpaint) {
            (Some(mask), _) => {
                inputs.push(("image", file_name(path)));
                inputs.push(("mask", file_name(mask)));
                (image, open_image(mask, "mask")?)
            }
            (None, Some(pad)) => {
                inputs.push(("image", file_name(path)));
                inputs.push(("outpaint", pad.map(|p| p.to_string()).join(",")));
                flux::tools::outpaint_canvas(&image, pad).map_err(|e| e.to_string())?
            }
            (None, None) => {
                return Err("--image needs --mask (inpainting) or --outpaint (outpainting)".into());
            }
        };
        size = Some((
            image.width() as usize / 16 * 16,
            image.height() as usize / 16 * 16,
        ));
        let strength = args.strength.unwrap_or(1.0);
        request = request.with_init_image(image, strength).with_mask(mask);
        if strength != 1.0 {
            inputs.push(("strength", strength.to_string()));
        }
    }
    if let Some(path) = &args.control_image {
        let image = open_image(path, "control image")?;
        let image = match args.control {
            ControlArg::Image => image,
            ControlArg::Canny => canny(&image)?,
        };
        size = Some((
            image.width() as usize / 16 * 16,
            image.height() as usize / 16 * 16,
        ));
        request = request.with_control_image(image);
        inputs.push(("control_image", file_name(path)));
        if args.control == ControlArg::Canny {
            inputs.push(("control", "canny".into()));
        }
    }
    for (path, strength) in &args.redux_images {
        request = request.with_redux_image(open_image(path, "Redux image")?, *strength);
    }
    if !args.redux_images.is_empty() {
        let list: Vec<String> = args
            .redux_images
            .iter()
            .map(|(p, s)| format!("{}:{s}", file_name(p)))
            .collect();
        inputs.push(("redux_images", list.join(", ")));
    }
    let (width, height) = size.unwrap_or((1024, 1024));
    let request = request.with_size(args.width.unwrap_or(width), args.height.unwrap_or(height));
    Ok((request, inputs))
}

#[cfg(feature = "canny")]
fn canny(image: &DynamicImage) -> Result<DynamicImage, String> {
    // diffusers' examples: controlnet_aux's CannyDetector, thresholds 50 and 200.
    Ok(flux::tools::canny_edges(image, 50.0, 200.0))
}

#[cfg(not(feature = "canny"))]
fn canny(_: &DynamicImage) -> Result<DynamicImage, String> {
    Err(
        "--control canny needs the `canny` cargo feature: cargo run --release --features canny \
         --example generate -- ... (or pass an edge map with --control image)"
            .into(),
    )
}

/// `--outpaint LEFT,TOP,RIGHT,BOTTOM`.
fn parse_outpaint(s: &str) -> Result<[u32; 4], String> {
    let sides: Vec<u32> = s
        .split(',')
        .map(|v| v.trim().parse::<u32>())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("`{s}`: {e}; expected LEFT,TOP,RIGHT,BOTTOM pixels"))?;
    <[u32; 4]>::try_from(sides).map_err(|v| {
        format!(
            "`{s}` has {} values; expected LEFT,TOP,RIGHT,BOTTOM",
            v.len()
        )
    })
}

/// `--lora FILE[:STRENGTH]` and `--redux-image FILE[:STRENGTH]` (the last `:` starts a
/// strength only if a number follows, so paths with colons still work).
fn parse_weighted_file(s: &str) -> Result<(PathBuf, f32), String> {
    match s.rsplit_once(':') {
        Some((path, strength)) if !path.is_empty() => match strength.parse::<f32>() {
            Ok(v) if v.is_finite() => Ok((PathBuf::from(path), v)),
            Ok(_) => Err(format!("LoRA strength `{strength}` is not finite")),
            Err(_) => Ok((PathBuf::from(s), 1.0)),
        },
        _ => Ok((PathBuf::from(s), 1.0)),
    }
}

/// `--quantize`: a [`QuantType`] name, or `none` for dense weights.
fn parse_quantization(s: &str) -> Result<Quantization, String> {
    if s.eq_ignore_ascii_case("none") {
        return Ok(Quantization::Dequantize);
    }
    s.parse::<QuantType>()
        .map(Quantization::To)
        .map_err(|e| format!("{e}, or none"))
}

/// The engine the flags ask for: device, dtype and memory mode (planned where not given),
/// quantization, LoRAs, Redux, variant, batch size.
fn engine_builder(args: &Args, files: ModelFiles) -> Result<EngineBuilder, String> {
    let mut engine = EngineBuilder::new(files)
        .device(args.device)
        .offload_blocks(args.offload_blocks)
        .quantization(args.quantize.unwrap_or_default())
        .lora_mode(match args.lora_mode {
            LoraModeArg::Merged => LoraMode::Merged,
            LoraModeArg::Runtime => LoraMode::Runtime,
        })
        .lora_lenient(args.lora_lenient);
    match args.dtype {
        DtypeArg::F32 => engine = engine.dtype(DType::F32),
        DtypeArg::Bf16 => engine = engine.dtype(DType::BF16),
        DtypeArg::F16 => engine = engine.dtype(DType::F16),
        DtypeArg::Auto => {}
    }
    match (args.memory, args.low_memory) {
        (_, true) | (MemoryArg::Sequential, _) => engine = engine.memory(MemoryMode::Sequential),
        (MemoryArg::Resident, _) => engine = engine.memory(MemoryMode::Resident),
        (MemoryArg::Auto, false) => {}
    }
    if let Some(gb) = args.available_memory {
        engine = engine.available_memory((gb * 1e9) as u64);
    }
    if let Some(rows) = args.batch_size {
        engine = engine.max_batch(rows);
    }
    let redux = match (&args.redux, &args.redux_siglip, &args.redux_embedder) {
        (Some(dir), _, _) => Some(ReduxFiles::from_dir(dir).map_err(|e| e.to_string())?),
        (None, Some(siglip), Some(embedder)) => Some(ReduxFiles {
            image_encoder: siglip.clone(),
            image_embedder: embedder.clone(),
            preprocessor: None,
        }),
        _ => None,
    };
    if redux.is_none() && !args.redux_images.is_empty() {
        return Err("--redux-image needs the Redux models: --redux FLUX.1-Redux-dev".into());
    }
    if let Some(files) = redux {
        engine = engine.redux(files);
    }
    match args.variant {
        VariantArg::Auto => {}
        VariantArg::Text => engine = engine.variant(Variant::TextToImage),
        VariantArg::Kontext => engine = engine.variant(Variant::Kontext),
        VariantArg::Fill => engine = engine.variant(Variant::Fill),
        VariantArg::Control => engine = engine.variant(Variant::Control),
    }
    for (path, strength) in &args.loras {
        engine = engine.lora(path, *strength);
    }
    Ok(engine)
}
