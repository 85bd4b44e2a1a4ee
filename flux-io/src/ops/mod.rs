//! The numeric operations the models share, each one seam where a backend's fast path plugs
//! in (chosen by the backend's type, see `kernels::backend`): attention, activations, norms, RoPE,
//! f32 islands. Every model crate calls these instead of burn's ops of the same name.

mod activation;
mod attention;
mod joint_attention;
mod norm;
mod precision;
mod rope;

pub use activation::{gelu_tanh, quick_gelu};
pub use attention::{SCORE_BUDGET, attention, attention_f32};
pub use joint_attention::{QkvStream, joint_attention_on_host};
pub use norm::{layer_norm_modulate, rms_norm};
pub use precision::in_f32;
pub use rope::rotate_pairs_on_host;

/// Whether `B` is one of the CPU backends (burn-flex, burn-ndarray). On them a batch runs
/// faster one image per transformer call than all at once (docs/performance.md), so the
/// pipeline chunks batches there by default.
pub fn is_cpu_backend<B: burn::tensor::backend::Backend>() -> bool {
    crate::kernels::backend::is_cpu::<B>()
}
