//! criterion: one transformer step (RoPE tables precomputed) at the CPU sizes, on both CPU
//! backends, resident and with block-level offload. `cargo bench -p flux-diffusion --bench transformer
//! -- small` runs one size.
//!
//! `medium` and `dev` are left out here (seconds to minutes per step on a CPU): time them with
//! `examples/bench.rs`.

#[path = "sizes.rs"]
#[allow(dead_code)]
mod sizes;
#[path = "step.rs"]
mod step;

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use flux::FluxBackend;

use crate::step::Step;

fn bench_backend<B: FluxBackend>(c: &mut Criterion, backend: &str) {
    let device = B::Device::default();
    let mut group = c.benchmark_group(format!("transformer/{backend}"));
    group.sample_size(10).warm_up_time(Duration::from_secs(1));
    for name in ["tiny", "small"] {
        let size = sizes::by_name(name).expect("a named size");
        let step = Step::<B>::new(&size, &device).expect("the named sizes are valid");
        step.run().expect("warm-up step"); // initialises the lazy weights
        group.bench_function(name, |b| b.iter(|| step.run().expect("step")));
        // Block-level offload: the same step uploading every block from host memory.
        let step = step.offloaded();
        group.bench_function(format!("{name}/offloaded"), |b| {
            b.iter(|| step.run().expect("step"))
        });
    }
    group.finish();
}

fn transformer(c: &mut Criterion) {
    bench_backend::<burn::backend::Flex>(c, "flex");
    bench_backend::<burn::backend::NdArray<f32>>(c, "ndarray");
}

criterion_group!(benches, transformer);
criterion_main!(benches);
