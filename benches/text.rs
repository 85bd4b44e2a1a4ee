//! criterion: the T5 encoder (narrowed, `small`: 4 layers of width 512 over 256 tokens) and
//! the CLIP-L text encoder as released (77 tokens), random weights, flex and ndarray.
//! `cargo bench -p flux-diffusion --bench text -- clip`.

#[path = "text_step.rs"]
mod text_step;

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use flux::FluxBackend;

fn bench_backend<B: FluxBackend>(c: &mut Criterion, backend: &str) {
    let device = B::Device::default();
    let mut group = c.benchmark_group(format!("text/{backend}"));
    group.sample_size(10).warm_up_time(Duration::from_secs(1));

    let (config, n) = text_step::t5_size("small").expect("a named size");
    let t5 = config.init::<B>(&device);
    let ids = text_step::token_ids::<B>(n, config.vocab_size, 1, &device);
    group.bench_function("t5_small", |b| {
        b.iter(|| t5.forward(ids.clone()).abs().mean().into_scalar())
    });

    let (config, n) = text_step::clip_size("small").expect("a named size");
    let clip = config.init::<B>(&device);
    let ids = text_step::token_ids::<B>(n, config.vocab_size, config.eos_token_id, &device);
    group.bench_function("clip_l", |b| {
        b.iter(|| clip.forward(ids.clone()).pooled.abs().mean().into_scalar())
    });
    group.finish();
}

fn text(c: &mut Criterion) {
    bench_backend::<burn::backend::Flex>(c, "flex");
    bench_backend::<burn::backend::NdArray<f32>>(c, "ndarray");
}

criterion_group!(benches, text);
criterion_main!(benches);
