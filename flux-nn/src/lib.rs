//! The layers of the FLUX workspace's models, the seam through which backends' kernels reach
//! them, and building models in the form their checkpoints store.
//!
//! - **The kernel seam** ([`FluxBackend`]): one method per fused operation (attention, FLUX's
//!   joint attention with its q/k norms and RoPE, LayerNorm + modulation, RMSNorm, GELU, the
//!   quantized product), each with a portable default in burn tensor ops ([`ops`]) and
//!   overridden per backend by its fast kernel (burn-flex: the host kernels of
//!   `flux-kernels`). Model code calls `B::joint_attention(..)` and never asks where it runs.
//! - **Layers**: [`Linear`] is the linear layer every model uses, holding its weight dense or
//!   quantized ([`Packed`]: GGUF block types and fp8 codes and factors, multiplied by the
//!   backend's quantized product) and its run-time LoRA updates ([`LoraAdapter`]).
//! - **Building** ([`Init`]): a model's constructors name each layer as its checkpoint does and
//!   the `Init` creates it in its stored form — random, read through a [`Loader`] (dense in the
//!   backend's fastest layout, quantized as stored or at load, LoRA updates merged or beside
//!   the weight), or only recorded. Every missing, unexpected, misshapen or non-finite tensor
//!   is named ([`flux_io::Error`]).
//! - **Memory**: [`offload`] keeps a module's weights in host memory, uploaded when used;
//!   [`ParamBytes`] is what a model holds; [`check_device`] tells whether a GPU backend can
//!   start.
//!
//! One convention across the crates built on it: `load(path, &device)` and
//! `load_with(path, &device, LoadConfig)`, errors wrapping [`flux_io::Error`] as `Load`.

mod adapter;
mod backend;
mod bytes;
mod device;
mod init;
mod linear;
mod offload;
pub mod ops;
mod packed;
pub mod quant;

pub use adapter::LoraAdapter;
pub use backend::FluxBackend;
#[cfg(feature = "cubecl")]
pub use backend::cubecl::{ATTENTION_ENV, GpuAttention};
pub use bytes::ParamBytes;
pub use device::check_device;
pub use init::{Init, Layer, LayerKind, LoadConfig, LoadOptions, Loader, LoraSlots, load_module};
pub use linear::{Linear, Weight};
pub use offload::offload;
pub use packed::Packed;

use burn::tensor::{DType, FloatDType};

/// The float dtype of a tensor's `dtype` (f32 for anything that is not a float).
pub(crate) fn float_dtype(dtype: DType) -> FloatDType {
    match dtype {
        DType::F64 => FloatDType::F64,
        DType::F16 => FloatDType::F16,
        DType::BF16 => FloatDType::BF16,
        _ => FloatDType::F32,
    }
}
