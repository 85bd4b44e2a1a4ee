//! criterion: the FLUX VAE decoder as released, 8x8 latents to a 64x64 image (`patch`; the
//! 256x256 `small` takes ~16 s per decode on 2 CPU cores: time it with `examples/bench.rs`),
//! random weights, flex and ndarray. `cargo bench -p flux-diffusion --bench vae`.

#[path = "vae_step.rs"]
mod vae_step;

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use flux::FluxBackend;

fn bench_backend<B: FluxBackend>(c: &mut Criterion, backend: &str) {
    let device = B::Device::default();
    let mut group = c.benchmark_group(format!("vae/{backend}"));
    group.sample_size(10).warm_up_time(Duration::from_secs(1));
    let (config, side) = vae_step::vae_size("patch").expect("a named size");
    let vae = config.init::<B>(&device);
    let latents = vae_step::latents::<B>(&config, side, &device);
    group.bench_function("decode_64", |b| {
        b.iter(|| {
            vae.decode(latents.clone())
                .expect("decode")
                .abs()
                .mean()
                .into_scalar()
        })
    });
    group.finish();
}

fn vae(c: &mut Criterion) {
    bench_backend::<burn::backend::Flex>(c, "flex");
    bench_backend::<burn::backend::NdArray<f32>>(c, "ndarray");
}

criterion_group!(benches, vae);
criterion_main!(benches);
