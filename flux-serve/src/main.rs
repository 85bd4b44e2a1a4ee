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
use burn::tensor::backend::Backend;
use clap::{Parser, ValueEnum};
use flux::{LoraMode, MemoryMode, ModelFiles, Pipeline, ReduxFiles};
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
    /// Where to run.
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    device: DeviceArg,
    /// Float type of weights and activations (default: the device's).
    #[arg(long, value_enum)]
    dtype: Option<DtypeArg>,
    /// Load each model only for its stage (peak memory: the largest model).
    #[arg(long)]
    low_memory: bool,
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
enum DeviceArg {
    Cpu,
    Wgpu,
    Cuda,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DtypeArg {
    F32,
    Bf16,
    F16,
}

fn main() -> ExitCode {
    // Freed activations stay in the process for the next step (no page faults per step).
    flux::retain_freed_memory();
    let args = Args::parse();
    let engine = match args.device {
        DeviceArg::Cpu => build::<burn::backend::Flex>(&args),
        #[cfg(feature = "wgpu")]
        DeviceArg::Wgpu => build::<burn::backend::Wgpu>(&args),
        #[cfg(feature = "cuda")]
        DeviceArg::Cuda => build::<burn::backend::Cuda>(&args),
        #[allow(unreachable_patterns)]
        other => Err(format!(
            "--device {other:?} needs the `{0}` feature: cargo run --release -p flux-serve --features {0}",
            format!("{other:?}").to_lowercase()
        )),
    };
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

fn build<B: Backend>(args: &Args) -> Result<Arc<dyn Engine>, String>
where
    Pipeline<B>: Send + Sync,
{
    let files = ModelFiles::from_dir_with(&args.model_dir, args.transformer.clone(), None)
        .map_err(|e| e.to_string())?;
    let mut builder = Pipeline::<B>::builder()
        .files(files)
        .lora_mode(LoraMode::Runtime)
        .memory(if args.low_memory {
            MemoryMode::Sequential
        } else {
            MemoryMode::Resident
        });
    if let Some(dtype) = args.dtype {
        builder = builder.dtype(match dtype {
            DtypeArg::F32 => DType::F32,
            DtypeArg::Bf16 => DType::BF16,
            DtypeArg::F16 => DType::F16,
        });
    }
    if let Some(len) = args.t5_max_len {
        builder = builder.t5_max_len(len);
    }
    for spec in &args.loras {
        let (path, strength) = match spec.rsplit_once(':') {
            Some((path, s)) if s.parse::<f32>().is_ok() => (path, s.parse::<f32>().unwrap_or(1.0)),
            _ => (spec.as_str(), 1.0),
        };
        builder = builder.lora(path, strength);
    }
    if let Some(dir) = &args.redux {
        builder = builder.redux(ReduxFiles::from_dir(dir).map_err(|e| e.to_string())?);
    }
    println!("loading {} ...", args.model_dir.display());
    let pipeline = builder.build().map_err(|e| e.to_string())?;
    Ok(Arc::new(pipeline))
}
