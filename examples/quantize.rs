//! Quantizes a FLUX transformer once into a GGUF file, as city96's converter writes them
//! (architecture `flux`, BFL key names): for ComfyUI-GGUF, stable-diffusion.cpp, and
//! `generate --transformer FILE.gguf`, which keeps it quantized in memory.
//!
//! ```sh
//! cargo run --release --example quantize -- flux1-dev.safetensors flux1-dev-Q8_0.gguf --type q8_0
//! ```
//!
//! 1-d tensors and tensors of at most 1024 values are stored F32, those whose rows are not
//! whole blocks F16 (32 values; 256 for q4_k), the rest in the chosen type with gguf-py's
//! arithmetic (q4_k with ggml's). Memory: one tensor at a time.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use flux::QuantType;

/// Writes a FLUX transformer checkpoint (BFL or ComfyUI `.safetensors`, fp8 included, or a
/// `.gguf`) as a quantized GGUF.
#[derive(Debug, Parser)]
#[command(about)]
struct Args {
    /// The transformer checkpoint.
    src: PathBuf,
    /// The GGUF file to write.
    dst: PathBuf,
    /// q8_0 (8.5 bits per weight), q5_1, q5_0, q4_1, q4_k or q4_0 (4.5 bits).
    #[arg(long = "type", default_value = "q8_0")]
    ty: QuantType,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let start = Instant::now();
    match flux::core::write_gguf(&args.src, &args.dst, args.ty) {
        Ok(summary) => {
            let types: Vec<String> = summary
                .tensors
                .iter()
                .map(|(t, n)| format!("{n} {t}"))
                .collect();
            println!(
                "wrote {}: {} ({:.2} GB of tensor data) in {:.1} s",
                args.dst.display(),
                types.join(", "),
                summary.data_bytes as f64 / 1e9,
                start.elapsed().as_secs_f64()
            );
            if summary.skipped > 0 {
                println!(
                    "left out {} tensors of other models or fp8 scales",
                    summary.skipped
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
