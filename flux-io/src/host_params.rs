//! A module's weights in host memory, uploaded to the device when needed: what block-level
//! offload keeps the transformer's blocks in, for devices smaller than the model.
//!
//! The host copy is in the model's dtype and layout (what the device would hold; a packed
//! quantized weight stays packed), with reference-counted bytes: each upload is one
//! host-to-device copy and no host copy.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{AllocationProperty, Bytes, Int, Tensor, TensorData};

use crate::nn::{PackedTracker, Visited};

/// One module's float and integer parameters in host memory, in the order burn visits them.
/// The placeholders of dense layers' quantized form are not copied (`None`; left as the
/// skeleton has them).
#[derive(Debug, Clone)]
pub struct HostParams {
    floats: Vec<Option<TensorData>>,
    ints: Vec<Option<TensorData>>,
}

impl HostParams {
    /// Reads every parameter of `module` back to the host; the device copies are freed when
    /// `module` is dropped, at the end of this call.
    pub fn from_module<B: Backend, M: Module<B>>(module: M) -> Self {
        struct Collect(HostParams, PackedTracker);
        impl Collect {
            fn holds_data(&mut self, dims: &[usize]) -> bool {
                self.1.visit(dims) != Visited::Placeholder
            }
        }
        impl<B: Backend> ModuleVisitor<B> for Collect {
            fn enter_module(&mut self, name: &str, container_type: &str) {
                self.1.enter_module(name, container_type);
            }
            fn exit_module(&mut self, name: &str, container_type: &str) {
                self.1.exit_module(name, container_type);
            }
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
                let data = self
                    .holds_data(&param.lazy_shape().dims::<D>())
                    .then(|| shared(param.val().into_data()));
                self.0.floats.push(data);
            }
            fn visit_int<const D: usize>(&mut self, param: &Param<Tensor<B, D, Int>>) {
                let data = self
                    .holds_data(&param.lazy_shape().dims::<D>())
                    .then(|| shared(param.val().into_data()));
                self.0.ints.push(data);
            }
        }
        let mut collect = Collect(
            Self {
                floats: Vec::new(),
                ints: Vec::new(),
            },
            PackedTracker::default(),
        );
        module.visit(&mut collect);
        collect.0
    }

    /// Bytes held.
    pub fn num_bytes(&self) -> usize {
        self.floats
            .iter()
            .chain(&self.ints)
            .flatten()
            .map(|t| t.bytes.len())
            .sum()
    }

    /// `skeleton` with its parameters replaced by these values on `device`, in their stored
    /// dtype and shape. The skeleton is a module of the same structure whose parameters are
    /// still lazily uninitialised (building it allocates nothing); a packed layer's parameters
    /// differ in shape from the skeleton's dense ones, so only their number is checked.
    ///
    /// # Panics
    /// If the skeleton's parameters do not match in number or rank: skeletons are built by the
    /// code that built the offloaded module, so this is a bug, not an input error.
    pub fn upload<B: Backend, M: Module<B>>(&self, skeleton: M, device: &B::Device) -> M {
        struct Upload<'a, B: Backend> {
            floats: std::slice::Iter<'a, Option<TensorData>>,
            ints: std::slice::Iter<'a, Option<TensorData>>,
            device: &'a B::Device,
        }
        impl<B: Backend> ModuleMapper<B> for Upload<'_, B> {
            fn map_float<const D: usize>(
                &mut self,
                param: Param<Tensor<B, D>>,
            ) -> Param<Tensor<B, D>> {
                let next = self.floats.next().expect("skeleton has more parameters");
                let Some(data) = next else { return param };
                assert_eq!(data.shape.len(), D, "offloaded parameter rank");
                let tensor = Tensor::from_data(data.clone(), (self.device, data.dtype));
                Param::initialized(param.id, tensor)
            }
            fn map_int<const D: usize>(
                &mut self,
                param: Param<Tensor<B, D, Int>>,
            ) -> Param<Tensor<B, D, Int>> {
                let next = self.ints.next().expect("skeleton has more parameters");
                let Some(data) = next else { return param };
                assert_eq!(data.shape.len(), D, "offloaded parameter rank");
                Param::initialized(param.id, Tensor::from_data(data.clone(), self.device))
            }
        }
        let mut upload = Upload::<B> {
            floats: self.floats.iter(),
            ints: self.ints.iter(),
            device,
        };
        let module = skeleton.map(&mut upload);
        assert!(
            upload.floats.next().is_none() && upload.ints.next().is_none(),
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
