//! The fused operations in their portable form: burn tensor ops that run on every backend.
//! They are [`crate::FluxBackend`]'s default methods; models call the trait's methods
//! (`B::joint_attention(..)`), never these directly, so that a backend's kernel replaces them.
//!
//! Public here are the types the operations take ([`QkvStream`], [`Rope`]) and two
//! compositions every model uses: [`in_f32`] (an f32 island in a half-precision model) and
//! [`attention_f32`].

mod activation;
mod attention;
mod joint_attention;
mod norm;
mod precision;
mod rope;

pub(crate) use activation::{gelu_tanh, quick_gelu};
#[cfg(feature = "cubecl")]
pub(crate) use attention::MATERIALIZED_SCORE_BYTES;
pub(crate) use attention::attention;
pub use attention::attention_f32;
#[cfg(any(test, feature = "cubecl"))]
pub(crate) use attention::attention_materialized_within;
#[cfg(test)]
pub(crate) use attention::softmax_rows;
#[cfg(feature = "cubecl")]
pub(crate) use joint_attention::QK_NORM_EPS;
pub use joint_attention::QkvStream;
pub(crate) use joint_attention::{attention_and_gelu, joint_attention};
pub(crate) use norm::{layer_norm_modulate, rms_norm};
pub use precision::in_f32;
pub use rope::Rope;
pub(crate) use rope::rotate_pairs;
