//! Quick timings for ratios against PyTorch: one workload at a named size, `--reps` timed runs
//! after `--warmup` untimed ones, and `median_ms <number>` as the last line.
//!
//! ```sh
//! cargo run --release --example bench -- transformer --size small --backend flex
//! python scripts/reference/bench_torch.py --size small --compare --backend flex   # the ratio
//! ```
//!
//! The CPU backends use rayon's global pool: `RAYON_NUM_THREADS` sets its size.
//! `dev` (FLUX.1-dev at 1024x1024) is for GPUs: on a CPU, `--construct-only` just builds it.

#[path = "../benches/sampler_step.rs"]
mod sampler_step;
#[path = "../benches/sizes.rs"]
mod sizes;
#[path = "../benches/step.rs"]
mod step;
#[path = "../benches/text_step.rs"]
mod text_step;
#[path = "../benches/vae_step.rs"]
mod vae_step;

use std::error::Error;
use std::process::ExitCode;
use std::time::Instant;

use burn::tensor::{Distribution, FloatDType, Tensor};
use clap::{Parser, Subcommand, ValueEnum};
use flux::FluxBackend;
use flux::nn::Init;

use crate::sizes::Size;
use crate::step::{Step, random_lora};

/// Times one FLUX workload.
#[derive(Debug, Parser)]
#[command(about)]
struct Args {
    #[command(subcommand)]
    workload: Workload,
    /// Named size (transformer: tiny, small, medium, dev; t5: tiny, small, xxl; clip: tiny,
    /// small; vae: tiny, patch, small, dev).
    #[arg(long, global = true, default_value = "small")]
    size: String,
    /// The burn backend.
    #[arg(long, global = true, value_enum, default_value_t = BackendKind::Flex)]
    backend: BackendKind,
    /// Timed runs.
    #[arg(long, global = true, default_value_t = 5)]
    reps: usize,
    /// Untimed runs first (the first one also initialises the lazy random weights).
    #[arg(long, global = true, default_value_t = 1)]
    warmup: usize,
    /// Transformer: float dtype of the weights and activations (f32, bf16, f16).
    #[arg(long, global = true, default_value = "f32")]
    dtype: String,
    /// Transformer: quantize the linear weights in memory (q8_0, q5_1, q5_0, q4_1, q4_k, q4_0,
    /// fp8), as a quantized checkpoint loads.
    #[arg(long, global = true)]
    quantize: Option<flux_core::QuantType>,
    /// Transformer or T5: load this checkpoint (any file `flux_core::load` / `load_t5` takes,
    /// kept quantized as stored, or quantized with `--quantize`) instead of random weights;
    /// `--size` then sets only the token counts. Prints the peak resident memory after the runs.
    #[arg(long, global = true)]
    checkpoint: Option<std::path::PathBuf>,
    /// Transformer: stand-in weights made without a whole-size random draw per weight
    /// (rank-1 products of random vectors; same shapes and step cost).
    #[arg(long, global = true)]
    fill: bool,
    /// Transformer: a random LoRA of this rank on every linear layer (a BFL-named file
    /// loaded through the real path), applied as `--lora-mode` says.
    #[arg(long, global = true)]
    lora_rank: Option<usize>,
    /// Transformer: images per call (the step time is printed per call; divide by it).
    #[arg(long, global = true, default_value_t = 1)]
    batch: usize,
    /// `merged` (into the weights) or `runtime` (beside them, every step).
    #[arg(long, global = true, default_value = "runtime")]
    lora_mode: String,
    /// Leave glibc's allocator as it starts (by default the bench calls
    /// `flux::retain_freed_memory`, as the CLI and the server do).
    #[arg(long, global = true)]
    system_malloc: bool,
}

#[derive(Debug, Subcommand)]
enum Workload {
    /// One denoising step of the transformer (RoPE tables precomputed, as the sampler does).
    Transformer {
        /// Build the model and inputs, run nothing (for `dev` on a CPU).
        #[arg(long)]
        construct_only: bool,
        /// Block-level offload: blocks in host memory, uploaded one at a time every step.
        #[arg(long)]
        offload_blocks: bool,
        /// Time a step that a step cache reuses instead of a full one: `first-block`
        /// (embeddings, first block, final layer: First-Block Cache) or `embed` (embeddings and
        /// final layer: MagCache, TeaCache).
        #[arg(long)]
        reused: Option<String>,
        /// Time whole Euler runs of this many steps instead of one step (with `--cache`).
        #[arg(long)]
        sample_steps: Option<usize>,
        /// A step cache for `--sample-steps` runs (`first-block:T`, `teacache:T`,
        /// `magcache:T`), as the pipeline runs it.
        #[arg(long)]
        cache: Option<flux::Cache>,
    },
    /// The T5 encoder (last hidden state), random weights.
    T5,
    /// The CLIP-L text encoder (hidden states and pooled vector), random weights.
    Clip,
    /// The VAE decoder (latents to image), random weights.
    Vae,
    /// The sampler loop without the model (a precomputed velocity): schedule, Euler updates,
    /// callbacks. Sizes: dev (28 steps, 1024x1024), schnell (4 steps), small (28, 512x512).
    Sampler,
    /// The torch-compatible initial noise of a square image; `--size` is its side in pixels.
    Noise,
    /// FLUX's attention, `softmax(q kᵀ / √d) v` through the backend's kernel (on the GPU
    /// backends the one `FLUX_GPU_ATTENTION` names), in `--dtype`; `--size` is `BxHxSxD` or
    /// `dev` (1x24x4608x128: 1024x1024) or `kontext` (1x24x8704x128: 1024x1024 with a
    /// 1024x1024 reference). Prints the max abs error against the f32 product formula on the
    /// same inputs and fails above `--max-err`.
    Attention {
        /// The largest max abs error accepted against f32 (inputs q ~ N(0, 9), k, v ~ N(0, 1):
        /// logits of std 3, a peaked softmax). bf16 inputs round at 2^-9 relative.
        #[arg(long, default_value_t = 3e-2)]
        max_err: f32,
    },
    /// One matrix product `[m, k] · [k, n]` in `--dtype`; `--size` is `MxKxN` (FLUX.1's at
    /// 1024x1024: 4608x3072x3072 attention out, 4608x3072x9216 qkv, 4608x3072x12288 MLP up,
    /// 4608x12288x3072 MLP down). Prints GFLOP/s.
    Matmul,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum BackendKind {
    /// burn-flex, burn's newer CPU backend.
    Flex,
    /// burn-ndarray.
    Ndarray,
    /// burn's CUDA backend (the `cuda` feature).
    #[cfg(feature = "cuda")]
    Cuda,
    /// burn's wgpu backend (the `wgpu` feature): Vulkan, Metal or DX12.
    #[cfg(feature = "wgpu")]
    Wgpu,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !args.system_malloc {
        // As the CLI and the server run.
        flux::retain_freed_memory();
    }
    let result = match args.backend {
        BackendKind::Flex => run::<burn::backend::Flex>(&args, &Default::default()),
        BackendKind::Ndarray => run::<burn::backend::NdArray<f32>>(&args, &Default::default()),
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => run::<burn::backend::Cuda>(&args, &Default::default()),
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => run::<burn::backend::Wgpu>(&args, &Default::default()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run<B: FluxBackend>(args: &Args, device: &B::Device) -> Result<(), Box<dyn Error>> {
    let unknown = || format!("unknown size {:?} for this workload", args.size);
    match args.workload {
        Workload::T5 => {
            let (config, n) = text_step::t5_size(&args.size).ok_or_else(unknown)?;
            let model = match &args.checkpoint {
                Some(path) => {
                    let start = Instant::now();
                    let options = flux_text::LoadConfig {
                        quantization: quantization(args),
                        ..Default::default()
                    };
                    let model = flux_text::load_t5_with::<B>(path, device, options)?;
                    report_load(path, start, model.param_bytes());
                    model
                }
                None => config.init::<B>(device),
            };
            let config = model.config();
            println!(
                "t5 {}: d_model {}, {} layers, {n} tokens",
                args.size, config.d_model, config.num_layers
            );
            let ids = text_step::token_ids::<B>(n, config.vocab_size, 1, device);
            time_runs(args, || Ok(model.try_forward(ids.clone())?.abs().mean()))?;
            if args.checkpoint.is_some() {
                println!("peak RSS {:.2} GB", peak_rss_gb());
            }
            return Ok(());
        }
        Workload::Clip => {
            let (config, n) = text_step::clip_size(&args.size).ok_or_else(unknown)?;
            println!(
                "clip {}: hidden {}, {} layers, {n} tokens",
                args.size, config.hidden_size, config.num_hidden_layers
            );
            let model = config.init::<B>(device);
            let ids = text_step::token_ids::<B>(n, config.vocab_size, config.eos_token_id, device);
            return time_runs(args, || Ok(model.forward(ids.clone()).pooled.abs().mean()))
                .map(drop);
        }
        Workload::Attention { max_err } => return attention::<B>(args, max_err, device),
        Workload::Matmul => {
            let dims: Vec<usize> = args
                .size
                .split('x')
                .filter_map(|d| d.parse().ok())
                .collect();
            let [m, k, n] = dims[..] else {
                return Err(format!("--size {:?}: MxKxN for matmul", args.size).into());
            };
            let dtype = float_dtype(&args.dtype)?;
            let a = Tensor::<B, 2>::random([m, k], Distribution::Default, device).cast(dtype);
            let b = Tensor::<B, 2>::random([k, n], Distribution::Default, device).cast(dtype);
            println!("matmul [{m}, {k}] x [{k}, {n}] {dtype:?}");
            let flop = 2.0 * (m * k * n) as f64;
            println!("gflop {:.1}", flop / 1e9);
            return time_runs(args, || {
                let y = a.clone().matmul(b.clone());
                Ok(y.narrow(0, 0, 1)
                    .narrow(1, 0, 1)
                    .reshape([1])
                    .cast(FloatDType::F32))
            })
            .map(|ms| println!("gflops {:.1}", flop / ms / 1e6));
        }
        Workload::Vae => {
            let (config, side) = vae_step::vae_size(&args.size).ok_or_else(unknown)?;
            println!("vae decode {}: {side}x{side} image", args.size);
            config.validate()?;
            let model = config.init::<B>(device);
            let latents = vae_step::latents::<B>(&config, side, device);
            return time_runs(args, || Ok(model.decode(latents.clone())?.abs().mean())).map(drop);
        }
        Workload::Sampler => {
            let (steps, side, shifted) =
                sampler_step::sampler_size(&args.size).ok_or_else(unknown)?;
            println!("sampler {}: {steps} steps, {side}x{side} image", args.size);
            let sampler = sampler_step::SamplerLoop::<B>::new(steps, side, shifted, device)?;
            return time_runs(args, || Ok(sampler.run()?)).map(drop);
        }
        Workload::Noise => {
            let side: usize = args.size.parse().map_err(|_| unknown())?;
            if side == 0 || !side.is_multiple_of(16) {
                return Err(
                    format!("--size {side}: the side must be a positive multiple of 16").into(),
                );
            }
            println!(
                "noise: [1, 16, {}, {}] from torch's CPU generator",
                side / 8,
                side / 8
            );
            return time_runs(args, || Ok(sampler_step::noise::<B>(side, device)?.mean()))
                .map(drop);
        }
        Workload::Transformer { .. } => {}
    }
    let size = sizes::by_name(&args.size).ok_or_else(|| {
        let names: Vec<_> = sizes::all().iter().map(|s| s.name).collect();
        format!("unknown size {:?}; one of {names:?}", args.size)
    })?;
    match args.workload {
        Workload::Transformer {
            construct_only,
            offload_blocks,
            ref reused,
            sample_steps,
            ref cache,
        } => {
            if let Some(steps) = sample_steps {
                return sample::<B>(args, &size, steps, cache.as_ref(), device);
            }
            let reused = match reused.as_deref() {
                None => None,
                Some("first-block") => Some(true),
                Some("embed") => Some(false),
                Some(other) => return Err(format!("--reused {other}: first-block or embed").into()),
            };
            transformer::<B>(args, &size, construct_only, offload_blocks, reused, device)
        }
        Workload::T5
        | Workload::Clip
        | Workload::Vae
        | Workload::Sampler
        | Workload::Noise
        | Workload::Attention { .. }
        | Workload::Matmul => {
            unreachable!("handled above")
        }
    }
}

/// The `attention` workload: times `B::dot_product_attention` at `--size` in `--dtype`, after
/// checking its output against the f32 formula on the same (rounded) inputs.
fn attention<B: FluxBackend>(
    args: &Args,
    max_err: f32,
    device: &B::Device,
) -> Result<(), Box<dyn Error>> {
    let dims: Vec<usize> = match args.size.as_str() {
        "dev" => vec![1, 24, 4608, 128],
        "kontext" => vec![1, 24, 8704, 128],
        size => size.split('x').filter_map(|d| d.parse().ok()).collect(),
    };
    let [b, heads, seq, d] = dims[..] else {
        return Err(format!(
            "--size {:?}: BxHxSxD, dev or kontext for attention",
            args.size
        )
        .into());
    };
    let dtype = float_dtype(&args.dtype)?;
    let normal = |std: f64| {
        Tensor::<B, 4>::random([b, heads, seq, d], Distribution::Normal(0.0, std), device)
            .cast(dtype)
    };
    let (q, k, v) = (normal(3.0), normal(1.0), normal(1.0));
    let options = burn::tensor::ops::AttentionModuleOptions::default();
    println!("attention [{b}, {heads}, {seq}, {d}] {dtype:?}");
    let got = B::dot_product_attention(q.clone(), k.clone(), v.clone(), None, options);
    let f32 = |t: &Tensor<B, 4>| t.clone().cast(FloatDType::F32);
    // The reference, a head at a time (its f32 scores: 85 MB a head at `dev`).
    let want = Tensor::cat(
        (0..heads)
            .map(|h| {
                let head = |t: &Tensor<B, 4>| f32(t).narrow(1, h, 1);
                let scores = head(&q).matmul(head(&k).swap_dims(2, 3)) / (d as f64).sqrt();
                burn::tensor::activation::softmax(scores, 3).matmul(head(&v))
            })
            .collect(),
        1,
    );
    let diff = (got.cast(FloatDType::F32) - want.clone()).abs();
    let err: f32 = burn::tensor::ElementConversion::elem(diff.clone().max().into_scalar());
    let mean: f32 = burn::tensor::ElementConversion::elem(diff.mean().into_scalar());
    let scale: f32 = burn::tensor::ElementConversion::elem(want.abs().mean().into_scalar());
    println!("max_abs_err {err:.3e} mean_abs_err {mean:.3e} (mean |out| {scale:.3e})");
    if err.is_nan() || err > max_err {
        return Err(format!("attention: max abs error {err:e} above {max_err:e}").into());
    }
    let flop = 4.0 * (b * heads * seq * seq * d) as f64;
    gpu_attention_refusals();
    time_runs(args, || {
        let out = B::dot_product_attention(q.clone(), k.clone(), v.clone(), None, options);
        Ok(out
            .narrow(2, 0, 1)
            .narrow(3, 0, 1)
            .reshape([b * heads])
            .cast(FloatDType::F32)
            .mean())
    })
    .map(|ms| println!("tflops {:.2}", flop / ms / 1e9))
}

/// On the GPU backends, on stderr: the attention kernel in use (`FLUX_GPU_ATTENTION`), and any call
/// whose flash kernel refused to launch (it ran the materialized form).
fn gpu_attention_refusals() {
    #[cfg(any(feature = "cuda", feature = "wgpu"))]
    {
        // On stderr: stdout's last line stays `median_ms`.
        eprintln!("gpu_attention {}", flux::nn::GpuAttention::from_env());
        for refusal in flux::nn::GpuAttention::refusals() {
            eprintln!("refused {refusal}");
        }
    }
}

/// `--quantize` as a load option: kept as stored without it.
fn quantization(args: &Args) -> flux_core::Quantization {
    args.quantize.map_or(
        flux_core::Quantization::AsStored,
        flux_core::Quantization::To,
    )
}

/// One line on a loaded checkpoint: time, parameter bytes (packed share), peak RSS so far.
fn report_load(path: &std::path::Path, start: Instant, bytes: flux::nn::ParamBytes) {
    println!(
        "loaded {} in {:.1} s: {:.2} GB ({:.2} GB packed in {} layers), peak RSS {:.2} GB",
        path.display(),
        start.elapsed().as_secs_f64(),
        bytes.total() as f64 / 1e9,
        bytes.packed as f64 / 1e9,
        bytes.packed_layers,
        peak_rss_gb()
    );
}

fn transformer<B: FluxBackend>(
    args: &Args,
    size: &Size,
    construct_only: bool,
    offload_blocks: bool,
    reused: Option<bool>,
    device: &B::Device,
) -> Result<(), Box<dyn Error>> {
    let c = match &args.checkpoint {
        Some(path) => &flux_core::read_config(path)?,
        None => &size.config,
    };
    println!(
        "transformer {} on {:?}: hidden {}, {} heads, {} double + {} single blocks, {} image + {} text tokens",
        args.checkpoint
            .as_ref()
            .map_or(size.name.to_string(), |p| p.display().to_string()),
        args.backend,
        c.hidden_size,
        c.num_heads,
        c.depth,
        c.depth_single_blocks,
        size.n_img(),
        size.n_txt
    );
    let dtype = float_dtype(&args.dtype)?;
    let start = Instant::now();
    if let Some(path) = &args.checkpoint {
        let options = flux_core::LoadConfig {
            dtype: Some(dtype.into()),
            quantization: quantization(args),
            ..Default::default()
        };
        let model = flux_core::load_with::<B>(path, device, options)?;
        report_load(path, start, model.param_bytes());
        let step = Step::<B>::with_batch(model, size, args.batch, device)?;
        times_of(args, &step, None)?;
        gpu_attention_refusals();
        println!("peak RSS {:.2} GB", peak_rss_gb());
        return Ok(());
    }
    size.config.validate()?;
    let lora_mode = match args.lora_mode.as_str() {
        "merged" => flux::LoraMode::Merged,
        "runtime" => flux::LoraMode::Runtime,
        other => return Err(format!("--lora-mode {other}: merged or runtime").into()),
    };
    let adapters = match args.lora_rank {
        Some(rank) => Some(random_lora::<B>(&size.config, rank, device)?),
        None => None,
    };
    // Random weights drawn lazily in f32 and cast to the dtype; with --quantize, each linear
    // weight drawn at once and quantized as it is built, as a quantized checkpoint loads.
    let init = match args.quantize {
        Some(ty) => Init::random_quantized(device, ty),
        None => Init::random(device),
    };
    let init = if dtype != FloatDType::F32 {
        init.with_dtype(dtype.into())
    } else {
        init
    };
    let init = match &adapters {
        Some(adapters) => init.with_adapters(adapters, lora_mode),
        None => init,
    };
    let model = size.config.init_with(&init);
    init.finish()?;
    let mut step = Step::<B>::with_batch(model, size, args.batch, device)?;
    println!("built in {:.1} ms", start.elapsed().as_secs_f64() * 1e3);
    if construct_only {
        return Ok(());
    }
    if args.fill {
        step = step.filled(dtype);
    }
    if dtype != FloatDType::F32 || args.quantize.is_some() || args.fill || adapters.is_some() {
        let start = Instant::now();
        // Draws the lazy weights (and casts them) before the timed runs.
        step.run()?;
        let bytes = step.model.param_bytes();
        println!(
            "weights {:?}{}: {:.2} GB ({:.2} GB packed in {} layers, {:.1} MB of run-time LoRA \
             factors{}), prepared in {:.1} s",
            dtype,
            args.quantize.map(|q| format!(" {q}")).unwrap_or_default(),
            bytes.total() as f64 / 1e9,
            bytes.packed as f64 / 1e9,
            bytes.packed_layers,
            bytes.adapters as f64 / 1e6,
            args.lora_rank
                .map(|r| format!(", rank-{r} LoRA on every linear layer {lora_mode:?}"))
                .unwrap_or_default(),
            start.elapsed().as_secs_f64()
        );
    }
    if offload_blocks {
        let start = Instant::now();
        step = step.offloaded();
        println!(
            "blocks offloaded to host memory: {:.1} MB in {:.1} ms",
            step.model.offloaded_bytes() as f64 / 1e6,
            start.elapsed().as_secs_f64() * 1e3
        );
    }
    times_of(args, &step, reused)?;
    gpu_attention_refusals();
    Ok(())
}

/// Whole runs of `steps` Euler steps at `size` (random f32 weights), with or without `cache`.
fn sample<B: FluxBackend>(
    args: &Args,
    size: &Size,
    steps: usize,
    cache: Option<&flux::Cache>,
    device: &B::Device,
) -> Result<(), Box<dyn Error>> {
    let step = Step::<B>::new(size, device)?;
    let mut times = Vec::new();
    for i in 0..args.warmup + args.reps {
        let start = Instant::now();
        let (out, stats) = step.sample(steps, cache)?;
        let ms = start.elapsed().as_secs_f64() * 1e3;
        let mean: f32 = burn::tensor::ElementConversion::elem(out.abs().mean().into_scalar());
        if !mean.is_finite() {
            return Err(format!("non-finite latents (mean |x| = {mean})").into());
        }
        if let Some(stats) = stats {
            println!(
                "run {i}: {ms:.0} ms, {} calls computed, {} reused",
                stats.computed, stats.reused
            );
        } else {
            println!("run {i}: {ms:.0} ms, {steps} calls computed");
        }
        if i >= args.warmup {
            times.push(ms);
        }
    }
    report(&times, &[]).map(drop)
}

/// `--dtype`'s float type.
fn float_dtype(name: &str) -> Result<FloatDType, Box<dyn Error>> {
    Ok(match name {
        "f32" => FloatDType::F32,
        "bf16" => FloatDType::BF16,
        "f16" => FloatDType::F16,
        other => return Err(format!("--dtype {other}: one of f32, bf16, f16").into()),
    })
}

/// Times `args.reps` steps after `args.warmup` (the first output checked for finiteness).
/// `reused`: time what a step cache's reused call costs instead (`Some(true)`: with the first
/// block).
fn times_of<B: FluxBackend>(
    args: &Args,
    step: &Step<B>,
    reused: Option<bool>,
) -> Result<f64, Box<dyn Error>> {
    let mut times = Vec::with_capacity(args.reps);
    let mut cpu = Vec::with_capacity(args.reps);
    for i in 0..args.warmup + args.reps {
        let (start, cpu_start) = (Instant::now(), cpu_ms());
        let out = match reused {
            None => step.run()?,
            Some(first_block) => step.run_reused(first_block)?,
        };
        let ms = start.elapsed().as_secs_f64() * 1e3;
        if i >= args.warmup
            && let (Some(a), Some(b)) = (cpu_start, cpu_ms())
        {
            cpu.push(b - a);
        }
        if i == 0 {
            let mean = out.abs().mean().into_scalar();
            let mean: f32 = burn::tensor::ElementConversion::elem(mean);
            if !mean.is_finite() {
                return Err(format!("non-finite output (mean |v| = {mean})").into());
            }
        }
        if i >= args.warmup {
            times.push(ms);
        }
    }
    report(&times, &cpu)
}

/// Times `args.reps` calls of `f` (after `args.warmup`), each returning a scalar summary of
/// its output that is read back (so the work is finished) and checked for finiteness.
fn time_runs<B: FluxBackend>(
    args: &Args,
    f: impl Fn() -> Result<Tensor<B, 1>, Box<dyn Error>>,
) -> Result<f64, Box<dyn Error>> {
    let (mut times, mut cpu) = (Vec::new(), Vec::new());
    for i in 0..args.warmup + args.reps {
        let (start, cpu_start) = (Instant::now(), cpu_ms());
        let summary: f32 = burn::tensor::ElementConversion::elem(f()?.into_scalar());
        let ms = start.elapsed().as_secs_f64() * 1e3;
        if !summary.is_finite() {
            return Err(format!("non-finite output (mean |v| = {summary})").into());
        }
        if i >= args.warmup {
            times.push(ms);
            if let (Some(a), Some(b)) = (cpu_start, cpu_ms()) {
                cpu.push(b - a);
            }
        }
    }
    report(&times, &cpu)
}

/// Prints the timings; the last line is `median_ms <wall-clock median>`.
fn report(times: &[f64], cpu: &[f64]) -> Result<f64, Box<dyn Error>> {
    if times.is_empty() {
        return Err("--reps must be at least 1".into());
    }
    let list: Vec<String> = times.iter().map(|t| format!("{t:.1}")).collect();
    println!("times_ms {}", list.join(" "));
    if !cpu.is_empty() {
        // CPU time of all threads: less sensitive than wall time to other load on the machine.
        println!("cpu_median_ms {:.0}", median(cpu));
    }
    println!("median_ms {:.2}", median(times));
    Ok(median(times))
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// Peak resident memory of this process so far, in GB (Linux `VmHWM`; 0 elsewhere).
fn peak_rss_gb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb * 1024.0 / 1e9)
}

/// User + system CPU time of this process so far, in ms (Linux `/proc/self/stat`, 100 Hz
/// ticks); `None` elsewhere.
fn cpu_ms() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i - 3)?.parse::<f64>().ok();
    Some((ticks(14)? + ticks(15)?) * 10.0)
}
