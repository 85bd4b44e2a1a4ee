//! A module's weights in host memory, uploaded when used: what block-level offload keeps the
//! transformer's blocks in, for devices smaller than the model.
//!
//! [`offload`] turns every parameter of a module into a lazily initialised one whose
//! initialisation uploads a host copy (in the model's dtype and layout; a quantized weight
//! stays quantized). burn clones a lazy parameter without initialising it, so a *clone* of the
//! offloaded module uploads each parameter when its forward pass first reads it and frees it
//! with the clone, while the module itself never holds device memory. Never read an offloaded
//! module's parameters directly: that uploads them for good.

use burn::module::{Module, ModuleMapper, Param, Parameter};
use burn::tensor::backend::Backend;
use burn::tensor::{AllocationProperty, BasicOps, Bool, Bytes, Int, Tensor, TensorData};

/// `module` with its parameters moved to host memory (see the module docs), and the bytes they
/// hold there. The device copies are freed as the module's old parameters are dropped.
pub fn offload<B: Backend, M: Module<B>>(module: M) -> (M, usize) {
    let mut mapper = Offload { bytes: 0 };
    let module = module.map(&mut mapper);
    (module, mapper.bytes)
}

struct Offload {
    bytes: usize,
}

impl Offload {
    /// `param` as a lazily initialised parameter over a host copy of its values (reference-
    /// counted bytes, so that each upload clones no host memory), uploaded in its stored
    /// dtype to the device it is read on.
    fn lazy<B, const D: usize, K>(
        &mut self,
        param: Param<Tensor<B, D, K>>,
    ) -> Param<Tensor<B, D, K>>
    where
        B: Backend,
        K: BasicOps<B>,
        Tensor<B, D, K>: Parameter<Device = B::Device>,
    {
        let device = param.lazy_device();
        let id = param.id;
        let data = shared(param.val().into_data());
        self.bytes += data.bytes.len();
        let shape = data.shape.clone();
        Param::uninitialized(
            id,
            move |device, _| Tensor::from_data(data.clone(), (device, data.dtype)),
            device,
            false,
            shape,
        )
    }
}

impl<B: Backend> ModuleMapper<B> for Offload {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        self.lazy(param)
    }

    fn map_int<const D: usize>(
        &mut self,
        param: Param<Tensor<B, D, Int>>,
    ) -> Param<Tensor<B, D, Int>> {
        self.lazy(param)
    }

    fn map_bool<const D: usize>(
        &mut self,
        param: Param<Tensor<B, D, Bool>>,
    ) -> Param<Tensor<B, D, Bool>> {
        self.lazy(param)
    }
}

/// The same values over reference-counted bytes, so that cloning (once per upload) is free.
fn shared(data: TensorData) -> TensorData {
    let (shape, dtype) = (data.shape.clone(), data.dtype);
    let bytes = bytes::Bytes::from(data.into_bytes().to_vec());
    TensorData::from_bytes(
        Bytes::from_shared(bytes, AllocationProperty::Native),
        shape,
        dtype,
    )
}
