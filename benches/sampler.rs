//! criterion: the sampler without the model (schedule, 28 or 4 Euler updates, callbacks) at
//! 1024x1024, and the torch-compatible noise draw, on both CPU backends.
//! `cargo bench -p flux-diffusion --bench sampler`.

#[path = "sampler_step.rs"]
mod sampler_step;

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use flux::FluxBackend;

use crate::sampler_step::SamplerLoop;

fn bench_backend<B: FluxBackend>(c: &mut Criterion, backend: &str) {
    let device = B::Device::default();
    let mut group = c.benchmark_group(format!("sampler/{backend}"));
    group.sample_size(20).warm_up_time(Duration::from_secs(1));
    for name in ["dev", "schnell"] {
        let (steps, side, shifted) = sampler_step::sampler_size(name).expect("a named size");
        let sampler = SamplerLoop::<B>::new(steps, side, shifted, &device).expect("valid size");
        group.bench_function(format!("loop_{name}"), |b| {
            b.iter(|| sampler.run().expect("loop").into_scalar())
        });
    }
    group.bench_function("noise_1024", |b| {
        b.iter(|| {
            sampler_step::noise::<B>(1024, &device)
                .expect("noise")
                .mean()
                .into_scalar()
        })
    });
    group.finish();
}

fn sampler(c: &mut Criterion) {
    bench_backend::<burn::backend::Flex>(c, "flex");
    bench_backend::<burn::backend::NdArray<f32>>(c, "ndarray");
}

criterion_group!(benches, sampler);
criterion_main!(benches);
