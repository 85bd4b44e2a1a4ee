//! LoRA and LyCORIS adapters in every format FLUX users download, resolved against a model's
//! layers.
//!
//! 1. [`LoraFile::open`] reads a file and groups its tensors by module, whatever the format
//!    ([`LoraFormat`]: diffusers/PEFT, kohya, BFL/ComfyUI with `.diff`, XLabs, LoKr, LoHa).
//! 2. [`resolve`] sends each module name to one of the pipeline's models (a [`Route`] the
//!    caller decides from the name's prefix) and matches it to a layer through that model's
//!    [`Targets`] (built by each model crate from its own key tables: BFL, diffusers and
//!    XLabs names, and kohya's `_`-joined forms), checks every shape, and turns every kind of
//!    update into exact low-rank factors (`α/r · B A`; LoKr `(u1 ⊗ u2)(d1 ⊗ d2)`; LoHa as a
//!    row-wise Khatri–Rao product). A name on one projection of a fused layer (diffusers'
//!    `to_q` on BFL's `qkv`) lands on its rows. Names that match nothing are an error (or,
//!    leniently, reported): a LoRA is never silently ignored.
//! 3. The model is then built with its [`Adapters`] (`flux_nn::Init`), merged into the
//!    weights or held beside them ([`LoraMode`]). Merged and run-time updates are the same
//!    factors, so both modes agree.

mod delta;
mod file;
mod resolve;
mod targets;

pub use file::{LoraFile, LoraFormat};
pub use resolve::{Adapters, LayerUpdate, LoraReport, Resolved, Route, resolve};
pub use targets::{Target, Targets};

/// How LoRA updates are applied to a model's linear layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LoraMode {
    /// Added to the weights once, at load: `W + s · α/r · B A`, computed in f32 and cast to
    /// the model's dtype. No cost per step. Quantized layers cannot take a merged update
    /// without losing it to requantization: they get the run-time form instead.
    #[default]
    Merged,
    /// Held beside the weights and applied in every forward pass, `W x + s · B (A x)`: the
    /// strengths can change between requests and the base weights are never touched.
    /// Full-weight differences (`.diff`) are merged in either mode.
    Runtime,
}
