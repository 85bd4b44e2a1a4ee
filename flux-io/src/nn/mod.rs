//! The layers every model in the workspace shares.
//!
//! Every projection of the transformer, T5 and CLIP goes through [`Linear::forward`], so what
//! changes how a weight is held or applied — a quantized weight dequantized just before its
//! matmul, a low-rank adapter added beside it — changes these types and their loader, never
//! the blocks' `forward` code.

mod bytes;
mod linear;
mod lora;
mod packed;
mod quantize;

pub use bytes::ParamBytes;
pub use linear::Linear;
pub(crate) use linear::float_dtype as float_dtype_of;
pub use lora::LoraAdapter;
pub(crate) use lora::holds_adapter;
pub use packed::Packed;
pub(crate) use packed::{PackedSlot, PackedTracker, Visited, holds_data};
pub use quantize::{dequantize, quantize};
