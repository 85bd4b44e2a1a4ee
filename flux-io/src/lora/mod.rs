//! LoRA and LyCORIS adapters, in every format FLUX users download, applied merged or at run
//! time, on dense and quantized weights.
//!
//! 1. [`LoraFile::open`] reads a file and groups its tensors by module, whatever the format
//!    ([`LoraFormat`]: diffusers/PEFT, kohya, BFL/ComfyUI with `.diff`, XLabs, LoKr, LoHa).
//! 2. [`resolve`] matches each module name to a layer of the models through their
//!    [`Targets`] (built by each model crate from its own key tables: BFL, diffusers and
//!    XLabs names, and kohya's `_`-joined forms), checks every shape, and turns every kind of
//!    update into exact low-rank factors (`α/r · B A`; LoKr `(u1 ⊗ u2)(d1 ⊗ d2)`; LoHa as a
//!    row-wise Khatri–Rao product). A name on one projection of a fused layer (diffusers'
//!    `to_q` on BFL's `qkv`) lands on its rows. Names that match nothing are an error (or,
//!    leniently, reported): a LoRA is never silently ignored.
//! 3. [`apply`] merges the updates into the weights ([`LoraMode::Merged`]) or attaches them
//!    to each [`crate::nn::Linear`] ([`LoraMode::Runtime`]; [`rescale`] changes strengths
//!    later). Merged and run-time updates are the same factors, so both modes agree.

mod apply;
mod delta;
mod file;
mod resolve;
mod targets;

pub use apply::{Applied, LoraMode, apply, rescale};
pub use file::{LoraFile, LoraFormat};
pub use resolve::{Adapters, Component, LoraReport, Resolved, resolve};
pub use targets::{Target, Targets, linear_layers, other_params};
