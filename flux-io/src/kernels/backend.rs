//! Which backends the host kernels serve, decided by the backend's *type* (not its name).
//!
//! burn 0.21 gives no trait through which a backend could announce "my tensors live in host
//! memory"; comparing `TypeId`s against the CPU backends' types is the typed test it allows.
//! Naming those types needs their cargo features, so each check exists only where its
//! backend is compiled in (`flex`, `ndarray` features of this crate, set by the facade).

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};

/// Whether `B` is burn-flex with f32 floats, whose tensors hand their buffer to the host and
/// back without a copy.
#[cfg_attr(not(feature = "flex"), allow(clippy::extra_unused_type_parameters))]
fn is_flex<B: Backend>() -> bool {
    #[cfg(feature = "flex")]
    if std::any::TypeId::of::<B>() == std::any::TypeId::of::<burn::backend::Flex>() {
        return true;
    }
    false
}

/// Whether `B` is burn-ndarray (f32 floats).
#[cfg_attr(not(feature = "ndarray"), allow(clippy::extra_unused_type_parameters))]
fn is_ndarray<B: Backend>() -> bool {
    #[cfg(feature = "ndarray")]
    if std::any::TypeId::of::<B>() == std::any::TypeId::of::<burn::backend::NdArray>() {
        return true;
    }
    false
}

/// Whether `B` is one of the CPU backends (burn-flex, burn-ndarray), whose tensors live in
/// host memory.
pub(crate) fn is_cpu<B: Backend>() -> bool {
    is_flex::<B>() || is_ndarray::<B>()
}

/// Whether `x` goes through the fused host kernels ([`super::host`]): f32 tensors on
/// burn-flex. burn-ndarray's data round trip copies, which measured slower than its own ops.
pub(crate) fn runs_host_kernels<B: Backend, const D: usize>(x: &Tensor<B, D>) -> bool {
    x.dtype() == DType::F32 && is_flex::<B>()
}

/// Threads to split host-side work over: the size of the CPU backends' rayon pool
/// (`RAYON_NUM_THREADS` when set, else the available parallelism) on burn-flex and
/// burn-ndarray, 1 elsewhere (GPU backends queue work asynchronously: no split).
pub(crate) fn host_threads<B: Backend>() -> usize {
    if !is_cpu::<B>() {
        return 1;
    }
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_are_told_apart_by_type() {
        type Flex = burn::backend::Flex;
        type NdArray = burn::backend::NdArray;
        let x = Tensor::<Flex, 1>::zeros([2], &Default::default());
        assert_eq!(runs_host_kernels(&x), cfg!(feature = "flex"));
        let y = Tensor::<NdArray, 1>::zeros([2], &Default::default());
        assert!(!runs_host_kernels(&y));
        assert!(!runs_host_kernels(&x.cast(burn::tensor::FloatDType::F16)));
        if cfg!(feature = "flex") {
            assert!(host_threads::<Flex>() >= 1);
        }
    }
}
