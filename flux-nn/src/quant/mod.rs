//! Quantized linear weights: which format a weight is held in, and building that form on the
//! host from a GGUF block tensor, an fp8 tensor, or f32 values quantized at load.
//!
//! A quantized weight stays quantized in memory: [`crate::Linear`] keeps its integer codes
//! and factors on the device and dequantizes one layer at a time, just before its matmul.

mod choice;
mod packed_data;

pub use choice::{QuantType, Quantization};
pub(crate) use packed_data::{Fp8, PackedData};
