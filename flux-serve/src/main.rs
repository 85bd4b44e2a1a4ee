//! `flux-serve`: the FLUX.1 images API and web page on this machine.
//!
//! ```sh
//! cargo run --release -p flux-serve -- --model-dir FLUX.1-schnell --port 8080
//! curl -s localhost:8080/v1/images/generations -H 'content-type: application/json' \
//!      -d '{"prompt": "a cat in a tiny hat", "size": "1024x768"}'
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use burn::tensor::DType;
use clap::{Parser, ValueEnum};
use flux::{Device, EngineBuilder, LoraMode, MemoryMode, ModelFiles, ReduxFiles};
use flux_serve::{Engine, ServeConfig};

/// A self-hosted FLUX.1 images API (OpenAI's routes) and web page.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// A FLUX.1 folder in the Hugging Face layout.
    #[arg(long)]
    model_dir: PathBuf,
    /// The transformer from this file instead of the folder's (`.safetensors` or `.gguf`).
    #[arg(long)]
    transformer: Option<PathBuf>,
    /// Address to bind (127.0.0.1: this machine only; 0.0.0.0 exposes it, set --api-key).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port.
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Jobs that may wait for the device; more answer 429 with Retry-After.
    #[arg(long, default_value_t = 8)]
    queue: usize,
    /// Required on every request when set (`Authorization: Bearer KEY`).
    #[arg(long, env = "FLUX_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Largest `n` per request.
    #[arg(long, default_value_t = 4)]
    max_n: usize,
    /// Longest a synchronous request waits, in seconds (then its job is cancelled).
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Largest upload to /v1/images/edits, in MB.
    #[arg(long, default_value_t = 20)]
    upload_limit_mb: usize,
    /// Where generated PNGs go.
    #[arg(long, default_value = "flux-serve-images")]
    out_dir: PathBuf,
    /// Where to run: cpu, wgpu or cuda (the GPU backends need their cargo feature).
    #[arg(long, default_value = "cpu")]
    device: Device,
    /// Float type of weights and activations; `auto` picks from the device and the memory
    /// available (printed).
    #[arg(long, value_enum, default_value_t = DtypeArg::Auto)]
    dtype: DtypeArg,
    /// `resident`: all models loaded once; `sequential`: each model only for its stage (peak
    /// memory: the largest model); `auto` picks from the memory available.
    #[arg(long, value_enum, default_value_t = MemoryArg::Auto)]
    memory: MemoryArg,
    /// Same as `--memory sequential`.
    #[arg(long, conflicts_with = "memory")]
    low_memory: bool,
    /// Memory the automatic choice may plan for, in GB (default: what the OS reports available
    /// for the CPU; a GPU's memory cannot be read, so pass it). Also `FLUX_AVAILABLE_MEMORY`.
    #[arg(long, env = "FLUX_AVAILABLE_MEMORY")]
    available_memory: Option<f64>,
    /// Keep the transformer's blocks in host memory, uploaded one at a time (GPUs smaller than
    /// the model).
    #[arg(long)]
    offload_blocks: bool,
    /// T5 sequence length (default: the model's).
    #[arg(long)]
    t5_max_len: Option<usize>,
    /// A LoRA, `FILE` or `FILE:STRENGTH` (repeatable); kept beside the weights, so requests
    /// may set `lora_scales`.
    #[arg(long = "lora")]
    loras: Vec<String>,
    /// A FLUX.1-Redux-dev folder.
    #[arg(long)]
    redux: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
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
    let args = Args::parse();
    let engine = build(&args);
    let engine = match engine {
        Ok(engine) => engine,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = ServeConfig {
        queue: args.queue,
        api_key: args.api_key.clone(),
        max_n: args.max_n,
        timeout: Duration::from_secs(args.timeout),
        upload_limit: args.upload_limit_mb * 1024 * 1024,
        out_dir: args.out_dir.clone(),
        ..ServeConfig::default()
    };
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let result = runtime.block_on(async {
        let router = flux_serve::router(engine, config).map_err(|e| e.to_string())?;
        let address = format!("{}:{}", args.host, args.port);
        let listener = tokio::net::TcpListener::bind(&address)
            .await
            .map_err(|e| format!("cannot listen on {address}: {e}"))?;
        println!("serving on http://{address}/ (the web page), OpenAI images API under /v1");
        flux_serve::serve(listener, router)
            .await
            .map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The engine the flags ask for: the same plumbing as the `generate` CLI (device, dtype and
/// memory mode planned where not given), LoRAs kept beside the weights so that requests may
/// set their strengths.
fn build(args: &Args) -> Result<Arc<dyn Engine>, String> {
    let files = ModelFiles::from_dir_with(&args.model_dir, args.transformer.clone(), None)
        .map_err(|e| e.to_string())?;
    let mut engine = EngineBuilder::new(files)
        .device(args.device)
        .offload_blocks(args.offload_blocks)
        .lora_mode(LoraMode::Runtime);
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
    if let Some(len) = args.t5_max_len {
        engine = engine.t5_max_len(len);
    }
    for spec in &args.loras {
        let (path, strength) = match spec.rsplit_once(':') {
            Some((path, s)) if s.parse::<f32>().is_ok() => (path, s.parse::<f32>().unwrap_or(1.0)),
            _ => (spec.as_str(), 1.0),
        };
        engine = engine.lora(path, strength);
    }
    if let Some(dir) = &args.redux {
        engine = engine.redux(ReduxFiles::from_dir(dir).map_err(|e| e.to_string())?);
    }
    let plan = engine.plan().map_err(|e| e.to_string())?;
    if plan.automatic {
        println!("auto: {plan}");
    }
    println!(
        "loading {} on {} ...",
        args.model_dir.display(),
        args.device
    );
    let engine = engine.build().map_err(|e| e.to_string())?;
    Ok(Arc::from(engine))
}
