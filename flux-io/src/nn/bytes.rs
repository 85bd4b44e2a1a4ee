//! [`ParamBytes`]: what a module's parameters hold, dense and quantized.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

use super::{PackedTracker, Visited};

/// Bytes held by a module's parameters, split into dense tensors and packed (quantized)
/// weights; parameters not yet initialised count at the size of their lazy shape in f32.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParamBytes {
    /// Dense float parameters (weights, biases, norms, embeddings).
    pub dense: usize,
    /// Quantized linear weights: codes and factors.
    pub packed: usize,
    /// Linear layers holding a quantized weight.
    pub packed_layers: usize,
    /// Run-time LoRA updates ([`super::LoraAdapter`]).
    pub adapters: usize,
}

impl ParamBytes {
    /// Measures `module`.
    pub fn of<B: Backend, M: Module<B>>(module: &M) -> Self {
        let mut visitor = Visitor {
            bytes: Self::default(),
            tracker: PackedTracker::default(),
        };
        module.visit(&mut visitor);
        visitor.bytes
    }

    /// Everything held.
    pub fn total(&self) -> usize {
        self.dense + self.packed + self.adapters
    }
}

struct Visitor {
    bytes: ParamBytes,
    tracker: PackedTracker,
}

impl Visitor {
    fn add(&mut self, n: usize, dims: &[usize]) {
        match self.tracker.visit(dims) {
            Visited::Dense => self.bytes.dense += n,
            Visited::PackedLayer => {
                self.bytes.packed_layers += 1;
                self.bytes.packed += n;
            }
            Visited::Packed => self.bytes.packed += n,
            Visited::Adapter => self.bytes.adapters += n,
            Visited::Placeholder => {}
        }
    }
}

/// Bytes of a parameter of `shape`: in its dtype once initialised, else counted as 4-byte
/// values (lazy parameters are drawn in f32).
fn held(shape: burn::tensor::Shape, dtype: Option<burn::tensor::DType>) -> usize {
    shape.num_elements() * dtype.map_or(4, |d| d.size())
}

impl<B: Backend> ModuleVisitor<B> for Visitor {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.tracker.enter_module(name, container_type);
    }

    fn exit_module(&mut self, name: &str, container_type: &str) {
        self.tracker.exit_module(name, container_type);
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let dtype = param.is_initialized().then(|| param.val().dtype());
        self.add(
            held(param.lazy_shape(), dtype),
            &param.lazy_shape().dims::<D>(),
        );
    }

    fn visit_int<const D: usize>(&mut self, param: &Param<Tensor<B, D, Int>>) {
        let dtype = param.is_initialized().then(|| param.val().dtype());
        self.add(
            held(param.lazy_shape(), dtype),
            &param.lazy_shape().dims::<D>(),
        );
    }
}
