//! How many host threads flux-core itself may use to split work on the CPU backends.
//!
//! burn's CPU backends run each matmul on their rayon pool, but some kernels (attention in
//! particular) process one head after another on one thread. Splitting the heads into groups
//! run on scoped threads keeps every core busy. GPU backends queue work asynchronously, so
//! for them (and any backend not known to run on the host) the answer is 1: no split.

use burn::tensor::backend::Backend;

/// Threads to split host-side work over: the size of the backends' rayon pool
/// (`RAYON_NUM_THREADS` when set, else the available parallelism) on the `flex` and `ndarray`
/// backends, 1 elsewhere.
pub(crate) fn host_threads<B: Backend>(device: &B::Device) -> usize {
    if !is_host::<B>(device) {
        return 1;
    }
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1)
}

/// Whether `B` computes on the host (burn's `flex` and `ndarray` backends), so that flux-core's
/// host kernels may take its tensors' data and give it back without a device transfer.
pub(crate) fn is_host<B: Backend>(device: &B::Device) -> bool {
    matches!(B::name(device).as_str(), "flex" | "ndarray")
}
