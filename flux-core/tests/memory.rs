//! Loading holds one copy of the weights: peak anonymous memory while loading a synthetic
//! checkpoint stays within 1.1x the model's size (memory-mapped file, tensor by tensor, lazy
//! parameters never initialised randomly). Its own test binary, so no other test's allocations
//! share the process.

use std::io::{BufWriter, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use burn::backend::NdArray;
use flux_core::FluxConfig;
use flux_nn::{Init, LayerKind};

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
    // Shapes in BFL's convention, from the layers a layout build records (nothing allocated).
    let layout = Init::<NdArray<f32>>::layout(&Default::default());
    config.init_with(&layout);
    let bfl = |path: &str| {
        path.replace("_mlp.in_layer.", "_mlp.0.")
            .replace("_mlp.out_layer.", "_mlp.2.")
            .replace(
                "final_layer.ada_ln_modulation.",
                "final_layer.adaLN_modulation.1.",
            )
    };
    let mut shapes: Vec<(String, Vec<usize>)> = Vec::new();
    for layer in layout.layers() {
        match layer.kind {
            LayerKind::Linear {
                d_input,
                d_output,
                bias,
            } => {
                shapes.push((
                    bfl(&format!("{}.weight", layer.path)),
                    vec![d_output, d_input],
                ));
                if bias {
                    shapes.push((bfl(&format!("{}.bias", layer.path)), vec![d_output]));
                }
            }
            LayerKind::Param { shape } => shapes.push((bfl(&layer.path), shape)),
        }
    }
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
