//! burn's CubeCL backends (`Wgpu`, `Cuda`, `Rocm`, Vulkan/Metal through wgpu): burn's own
//! kernels for now. The GPU kernels (flash attention, fused norms) plug in here.

use burn::tensor::backend::DeviceOps;
use burn_cubecl::cubecl::server::ComputeServer;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};

use super::FluxBackend;

impl<R, F, I, BT> FluxBackend for CubeBackend<R, F, I, BT>
where
    R: CubeRuntime,
    R::Server: ComputeServer,
    R::Device: DeviceOps,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
}
