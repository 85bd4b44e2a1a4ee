//! burn's CubeCL backends (`Wgpu`, `Cuda`, `Rocm`, Vulkan/Metal through wgpu): attention by
//! the process's [`GpuAttention`] choice, and the fused operations as CubeCL kernels
//! (`kernels`): FLUX's joint attention (the q/k/v split with RMSNorm and RoPE in one pass per
//! part), LayerNorm + modulation, RMSNorm, tanh-GELU and quick GELU, the materialized
//! attention's row softmax. The rest is burn's kernels (matmuls, elementwise arithmetic).

mod attention;
mod fused;
mod kernels;

pub use attention::{ATTENTION_ENV, GpuAttention};

use burn::tensor::Tensor;
use burn::tensor::backend::DeviceOps;
use burn::tensor::ops::AttentionModuleOptions;
use burn_cubecl::cubecl::server::ComputeServer;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};

use super::FluxBackend;
use crate::ops::{QkvStream, Rope};

/// A `CubeBackend` named by one bound: its float tensors are `CubeTensor`s of its runtime
/// (the bounds every kernel launch here needs, written once).
pub(crate) trait Cube:
    FluxBackend<FloatTensorPrimitive = CubeTensor<Self::Runtime>>
{
    /// The CubeCL runtime (CUDA, wgpu, ...).
    type Runtime: CubeRuntime;
}

impl<R, F, I, BT> Cube for CubeBackend<R, F, I, BT>
where
    R: CubeRuntime,
    R::Server: ComputeServer,
    R::Device: DeviceOps,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    type Runtime = R;
}

impl<R, F, I, BT> FluxBackend for CubeBackend<R, F, I, BT>
where
    R: CubeRuntime,
    R::Server: ComputeServer,
    R::Device: DeviceOps,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    fn dot_product_attention(
        q: Tensor<Self, 4>,
        k: Tensor<Self, 4>,
        v: Tensor<Self, 4>,
        bias: Option<Tensor<Self, 4>>,
        options: AttentionModuleOptions,
    ) -> Tensor<Self, 4> {
        GpuAttention::from_env().attention(q, k, v, bias, options)
    }

    fn joint_attention(
        streams: Vec<QkvStream<Self>>,
        heads: usize,
        rope: &Rope<Self>,
    ) -> Tensor<Self, 3> {
        fused::joint_attention(streams, heads, rope, |q, k, v| {
            Self::dot_product_attention(q, k, v, None, Default::default())
        })
    }

    fn layer_norm_modulate(
        x: Tensor<Self, 3>,
        scale: Tensor<Self, 3>,
        shift: Tensor<Self, 3>,
        eps: f64,
    ) -> Tensor<Self, 3> {
        fused::layer_norm_modulate(x, scale, shift, eps)
    }

    fn rms_norm<const D: usize>(
        x: Tensor<Self, D>,
        scale: Tensor<Self, 1>,
        eps: f64,
    ) -> Tensor<Self, D> {
        fused::rms_norm(x, scale, eps)
    }

    fn gelu_tanh<const D: usize>(x: Tensor<Self, D>) -> Tensor<Self, D> {
        fused::gelu_tanh(x)
    }

    fn quick_gelu<const D: usize>(x: Tensor<Self, D>) -> Tensor<Self, D> {
        fused::quick_gelu(x)
    }
}
