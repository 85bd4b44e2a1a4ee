//! Times one FLUX transformer step in candle (CPU, f32), for comparison with
//! `examples/bench.rs transformer` at the same named sizes. Same output: a header line,
//! `times_ms ...`, `cpu_median_ms <n>`, and `median_ms <n.nn>` as the last line.
//!
//! ```sh
//! # in this folder; the weights from `bench_torch.py --size small --save-bfl ...`
//! CARGO_TARGET_DIR=../../../target/candle cargo build --release
//! RAYON_NUM_THREADS=2 ../../../target/candle/release/candle_bench \
//!     --checkpoint ../../../target/small.safetensors --size small --reps 5 --warmup 1
//! ```
//!
//! Weights: a BFL-layout f32 safetensors file (`double_blocks.N.*`, `single_blocks.N.*`,
//! `img_in`, ...) loaded through `VarBuilder::from_mmaped_safetensors`.
//!
//! Threads: candle's matmul (the `gemm` crate) and its softmax use rayon's global pool,
//! sized by `RAYON_NUM_THREADS`; its element-wise ops use candle's own "barrier pool" of
//! `CANDLE_NUM_THREADS` (else `RAYON_NUM_THREADS`) - 1 workers plus the calling thread.

use std::error::Error;
use std::process::ExitCode;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::flux::model::{Config, Flux};
use candle_transformers::models::flux::WithForward;

/// The candle-core version this binary was built against (read from the committed lock file).
fn candle_version() -> &'static str {
    const LOCK: &str = include_str!("../Cargo.lock");
    LOCK.split("[[package]]")
        .find(|p| p.contains("name = \"candle-core\""))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = \"")))
        .map_or("unknown", |v| v.trim_end_matches('"'))
}

/// One benchmark size (mirrors `benches/sizes.rs`).
struct Size {
    name: &'static str,
    hidden: usize,
    heads: usize,
    depth: (usize, usize),
    grid: usize,
    n_txt: usize,
}

const SIZES: [Size; 2] = [
    Size {
        name: "small",
        hidden: 512,
        heads: 8,
        depth: (2, 4),
        grid: 32,
        n_txt: 256,
    },
    Size {
        name: "medium",
        hidden: 3072,
        heads: 24,
        depth: (1, 2),
        grid: 32,
        n_txt: 512,
    },
];

struct Args {
    checkpoint: String,
    size: &'static Size,
    reps: usize,
    warmup: usize,
}

fn parse_args() -> Result<Args, Box<dyn Error>> {
    const USAGE: &str =
        "usage: candle_bench --checkpoint PATH --size small|medium [--reps 5] [--warmup 1]";
    let (mut checkpoint, mut size, mut reps, mut warmup) = (None, None, 5, 1);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--checkpoint" => checkpoint = Some(value()?),
            "--size" => {
                let name = value()?;
                size = Some(
                    SIZES
                        .iter()
                        .find(|s| s.name == name)
                        .ok_or_else(|| format!("--size {name}: one of small, medium"))?,
                );
            }
            "--reps" => reps = value()?.parse()?,
            "--warmup" => warmup = value()?.parse()?,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}\n{USAGE}").into()),
        }
    }
    if reps == 0 {
        return Err("--reps must be at least 1".into());
    }
    Ok(Args {
        checkpoint: checkpoint.ok_or(USAGE)?,
        size: size.ok_or(USAGE)?,
        reps,
        warmup,
    })
}

/// candle's FLUX config for `size`: FLUX.1-dev with the narrow width/depth and the released
/// RoPE split (hd/8, 7hd/16, 7hd/16), as `benches/sizes.rs` builds it.
fn config(size: &Size) -> Config {
    let head_dim = size.hidden / size.heads;
    Config {
        hidden_size: size.hidden,
        num_heads: size.heads,
        depth: size.depth.0,
        depth_single_blocks: size.depth.1,
        axes_dim: vec![head_dim / 8, head_dim * 7 / 16, head_dim * 7 / 16],
        ..Config::dev()
    }
}

/// The inputs of one step (batch 1), as `benches/step.rs` makes them.
struct Inputs {
    img: Tensor,
    img_ids: Tensor,
    txt: Tensor,
    txt_ids: Tensor,
    timesteps: Tensor,
    y: Tensor,
    guidance: Tensor,
}

fn inputs(size: &Size, cfg: &Config, dev: &Device) -> candle_core::Result<Inputs> {
    let (grid, n_txt) = (size.grid, size.n_txt);
    let n_img = grid * grid;
    // (0, row, col) per image token, row-major.
    let ids: Vec<f32> = (0..n_img)
        .flat_map(|i| [0.0, (i / grid) as f32, (i % grid) as f32])
        .collect();
    Ok(Inputs {
        img: Tensor::randn(0f32, 1f32, (1, n_img, cfg.in_channels), dev)?,
        img_ids: Tensor::from_vec(ids, (1, n_img, 3), dev)?,
        txt: Tensor::randn(0f32, 1f32, (1, n_txt, cfg.context_in_dim), dev)?,
        txt_ids: Tensor::zeros((1, n_txt, 3), DType::F32, dev)?,
        timesteps: Tensor::new(&[0.7f32], dev)?,
        y: Tensor::randn(0f32, 1f32, (1, cfg.vec_in_dim), dev)?,
        guidance: Tensor::new(&[3.5f32], dev)?,
    })
}

fn run() -> Result<(), Box<dyn Error>> {
    let args = parse_args()?;
    let size = args.size;
    let dev = Device::Cpu;
    let cfg = config(size);
    println!(
        "candle {} size {}: {} image + {} text tokens, hidden {}, {} heads, {}+{} blocks, \
         axes {:?}, f32 cpu, rayon threads {}, candle threads {} (barrier pool {} + caller), avx {}",
        candle_version(),
        size.name,
        size.grid * size.grid,
        size.n_txt,
        cfg.hidden_size,
        cfg.num_heads,
        cfg.depth,
        cfg.depth_single_blocks,
        cfg.axes_dim,
        rayon::current_num_threads(),
        candle_core::utils::get_num_threads(),
        candle_core::utils::barrier_pool().n_workers(),
        candle_core::utils::with_avx(),
    );

    let start = Instant::now();
    // SAFETY: the checkpoint is not modified while mapped.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&args.checkpoint], DType::F32, &dev)? };
    let model = Flux::new(&cfg, vb)?;
    eprintln!(
        "loaded {} in {:.0} ms",
        args.checkpoint,
        start.elapsed().as_secs_f64() * 1e3
    );
    let x = inputs(size, &cfg, &dev)?;

    let (mut times, mut cpu) = (Vec::with_capacity(args.reps), Vec::with_capacity(args.reps));
    for i in 0..args.warmup + args.reps {
        let (start, cpu_start) = (Instant::now(), cpu_ms());
        let out = model.forward(
            &x.img,
            &x.img_ids,
            &x.txt,
            &x.txt_ids,
            &x.timesteps,
            &x.y,
            Some(&x.guidance),
        )?;
        let ms = start.elapsed().as_secs_f64() * 1e3;
        if i >= args.warmup {
            times.push(ms);
            if let (Some(a), Some(b)) = (cpu_start, cpu_ms()) {
                cpu.push(b - a);
            }
        }
        if i == 0 {
            let abs = out.abs()?;
            let mean = abs.mean_all()?.to_scalar::<f32>()?;
            let max = abs.max_all()?.to_scalar::<f32>()?;
            let want = [1, size.grid * size.grid, cfg.in_channels];
            if out.dims() != want {
                return Err(format!("output shape {:?}, expected {want:?}", out.dims()).into());
            }
            if !mean.is_finite() || !max.is_finite() || max == 0.0 {
                return Err(format!("bad output: mean |v| = {mean}, max |v| = {max}").into());
            }
            eprintln!(
                "output {:?} mean |v| {mean:.4} max |v| {max:.4}",
                out.dims()
            );
        }
    }
    report(&times, &cpu);
    Ok(())
}

/// Prints the timings; the last line is `median_ms <wall-clock median>`.
fn report(times: &[f64], cpu: &[f64]) {
    let list: Vec<String> = times.iter().map(|t| format!("{t:.1}")).collect();
    println!("times_ms {}", list.join(" "));
    if !cpu.is_empty() {
        println!("cpu_median_ms {:.0}", median(cpu));
    }
    println!("median_ms {:.2}", median(times));
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

/// User + system CPU time of this process so far, in ms (Linux `/proc/self/stat`, 100 Hz
/// ticks, as `examples/bench.rs` reads it); `None` elsewhere.
fn cpu_ms() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i - 3)?.parse::<f64>().ok();
    Some((ticks(14)? + ticks(15)?) * 10.0)
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
