//! Loading holds one copy of the weights: peak anonymous memory while loading a synthetic
//! checkpoint stays within 1.1x the model's size (memory-mapped file, tensor by tensor, lazy
//! parameters never initialised randomly). Its own test binary, so no other test's allocations
//! share the process.

use std::io::{BufWriter, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use burn::backend::NdArray;
use burn::module::Module;
use flux_core::FluxConfig;

/// Anonymous resident memory of this process, in bytes (Linux `RssAnon`).
fn rss_anon() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Writes a BFL-layout checkpoint for `config` with the tensors' values streamed to disk (no
/// copy of the weights is ever held in memory), filled with small deterministic values.
fn write_checkpoint(config: &FluxConfig, path: &std::path::Path) -> u64 {
    // Shapes in BFL's convention, from a model built lazily (nothing allocated).
    let model = config.init::<NdArray<f32>>(&Default::default());
    let mut shapes: Vec<(String, Vec<usize>)> = Vec::new();
    struct Collect<'a>(&'a mut Vec<(String, Vec<usize>)>, Vec<String>, Vec<String>);
    impl<B: burn::tensor::backend::Backend> burn::module::ModuleVisitor<B> for Collect<'_> {
        // Enum variants (resident or offloaded blocks) are not part of checkpoint keys.
        fn enter_module(&mut self, name: &str, container: &str) {
            if !container.starts_with("Enum:") {
                self.1.push(name.into());
                self.2.push(container.into());
            }
        }
        fn exit_module(&mut self, _: &str, container: &str) {
            if !container.starts_with("Enum:") {
                self.1.pop();
                self.2.pop();
            }
        }
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<burn::Tensor<B, D>>) {
            let mut shape = param.lazy_shape().dims::<D>().to_vec();
            if self.1.iter().any(|n| n == "packed" || n == "lora") {
                // The placeholders of a dense layer's quantized form and of its absent
                // run-time LoRA updates: nothing stored.
                return;
            }
            if self.2.last().is_some_and(|c| c == "Struct:Linear")
                && self.1.last().is_some_and(|n| n == "weight")
            {
                shape.reverse();
            }
            let key = self
                .1
                .join(".")
                .replace("_mlp.in_layer.", "_mlp.0.")
                .replace("_mlp.out_layer.", "_mlp.2.")
                .replace(
                    "final_layer.ada_ln_modulation.",
                    "final_layer.adaLN_modulation.1.",
                );
            self.0.push((key, shape));
        }
    }
    model.visit(&mut Collect(&mut shapes, Vec::new(), Vec::new()));
    shapes.sort();
    let mut header = serde_json::Map::new();
    let mut offset = 0u64;
    for (key, shape) in &shapes {
        let bytes = shape.iter().product::<usize>() as u64 * 4;
        header.insert(key.clone(), serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + bytes]}));
        offset += bytes;
    }
    let mut header = serde_json::to_vec(&header).unwrap();
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let mut out = BufWriter::new(std::fs::File::create(path).unwrap());
    out.write_all(&(header.len() as u64).to_le_bytes()).unwrap();
    out.write_all(&header).unwrap();
    let mut state = 1u32;
    for (_, shape) in &shapes {
        for _ in 0..shape.iter().product::<usize>() {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let v = ((state >> 9) as f32 / (1u32 << 23) as f32 - 0.5) * 0.02;
            out.write_all(&v.to_le_bytes()).unwrap();
        }
    }
    out.flush().unwrap();
    offset
}

#[test]
fn loading_holds_one_copy_of_the_weights() {
    // ~115 MB of f32 weights: large against the allocator's noise, small for CI.
    let config = FluxConfig {
        hidden_size: 512,
        num_heads: 8,
        depth: 2,
        depth_single_blocks: 4,
        context_in_dim: 1024,
        vec_in_dim: 256,
        axes_dim: [8, 28, 28],
        ..FluxConfig::dev()
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("synthetic.safetensors");
    let model_bytes = write_checkpoint(&config, &path);

    if !std::path::Path::new("/proc/self/status").exists() {
        eprintln!("skipped: resident memory is read from /proc/self/status (Linux only)");
        return;
    }
    let before = rss_anon();
    let peak = Arc::new(AtomicU64::new(before));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss_anon(), Ordering::Relaxed);
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        })
    };
    let model = flux_core::load::<NdArray<f32>>(&path, &Default::default()).unwrap();
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let peak = peak.load(Ordering::Relaxed).max(rss_anon());
    let grown = peak.saturating_sub(before);
    let ratio = grown as f64 / model_bytes as f64;
    eprintln!(
        "model {:.1} MB, peak anonymous memory while loading +{:.1} MB ({ratio:.3}x)",
        model_bytes as f64 / 1e6,
        grown as f64 / 1e6
    );
    assert_eq!(model.config(), &config);
    assert!(ratio < 1.1, "loading used {ratio:.3}x the model size");
    assert!(
        ratio > 0.9,
        "the weights must be resident after loading ({ratio:.3}x)"
    );
}
