//! A module's weights in host memory, uploaded to the device when needed: what block-level
//! offload keeps the transformer's blocks in, for devices smaller than the model.
//!
//! The host copy is in the model's dtype and layout (what the device would hold), with
//! reference-counted bytes: each upload is one host-to-device copy and no host copy.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{AllocationProperty, Bytes, Tensor, TensorData};

/// One module's float parameters in host memory, in the order burn visits them.
#[derive(Debug, Clone)]
pub struct HostParams {
    tensors: Vec<TensorData>,
}

impl HostParams {
    /// Reads every float parameter of `module` back to the host; the device copies are freed
    /// when `module` is dropped, at the end of this call.
    pub fn from_module<B: Backend, M: Module<B>>(module: M) -> Self {
        struct Collect(Vec<TensorData>);
        impl<B: Backend> ModuleVisitor<B> for Collect {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
                self.0.push(shared(param.val().into_data()));
            }
        }
        let mut collect = Collect(Vec::new());
        module.visit(&mut collect);
        Self { tensors: collect.0 }
    }

    /// Bytes held.
    pub fn num_bytes(&self) -> usize {
        self.tensors.iter().map(|t| t.bytes.len()).sum()
    }

    /// `skeleton` with its float parameters replaced by these values on `device`, in their
    /// stored dtype. The skeleton is a module of the same structure whose parameters are
    /// still lazily uninitialised (building it allocates nothing).
    ///
    /// # Panics
    /// If the skeleton's parameters do not match in number or shape: skeletons are built by
    /// the code that built the offloaded module, so this is a bug, not an input error.
    pub fn upload<B: Backend, M: Module<B>>(&self, skeleton: M, device: &B::Device) -> M {
        struct Upload<'a, B: Backend> {
            host: std::slice::Iter<'a, TensorData>,
            device: &'a B::Device,
        }
        impl<B: Backend> ModuleMapper<B> for Upload<'_, B> {
            fn map_float<const D: usize>(
                &mut self,
                param: Param<Tensor<B, D>>,
            ) -> Param<Tensor<B, D>> {
                let data = self.host.next().expect("skeleton has more parameters");
                let shape = param.lazy_shape();
                assert_eq!(data.shape, shape, "offloaded parameter shape");
                let tensor = Tensor::from_data(data.clone(), (self.device, data.dtype));
                Param::initialized(param.id, tensor)
            }
        }
        let mut upload = Upload::<B> {
            host: self.tensors.iter(),
            device,
        };
        let module = skeleton.map(&mut upload);
        assert!(
            upload.host.next().is_none(),
            "skeleton has fewer parameters"
        );
        module
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
