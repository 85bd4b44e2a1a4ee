//! [`quantize`]: a built model's dense linear weights quantized in place, one layer at a time.

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

use super::PackedSlot;
use crate::quant::{PackedData, QuantType};

/// Quantizes every dense `Linear` weight of `module` to `ty` (those a checkpoint would store
/// quantized: rows of whole 32-value blocks, more than 1024 values), one layer at a time: the
/// weight is read back to the host, quantized exactly as [`crate::quant::Quantization::To`]
/// does at load, and its packed form uploaded in its place. Layers already packed are kept.
///
/// For a model built in memory (random weights for a benchmark, or weights merged with an
/// adapter); a checkpoint is quantized as it loads instead, without a dense copy.
pub fn quantize<B: Backend, M: Module<B>>(module: M, ty: QuantType) -> M {
    let mut mapper = Quantizer::<B> {
        ty,
        containers: Vec::new(),
        names: Vec::new(),
        pending: PackedSlot::new(),
    };
    module.map(&mut mapper)
}

struct Quantizer<B: Backend> {
    ty: QuantType,
    containers: Vec<String>,
    names: Vec<String>,
    pending: PackedSlot<B>,
}

impl<B: Backend> ModuleMapper<B> for Quantizer<B> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.names.push(name.to_string());
        self.containers.push(container_type.to_string());
    }

    fn exit_module(&mut self, name: &str, container_type: &str) {
        self.pending.exit_module(name, container_type);
        self.names.pop();
        self.containers.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let container = self.containers.last().map(String::as_str);
        let name = self.names.last().map(String::as_str);
        if container == Some("Struct:Packed") {
            return self.pending.float(name.unwrap_or_default(), param);
        }
        if D != 2 || container != Some("Struct:Linear") || name != Some("weight") {
            return param;
        }
        let (id, weight, _) = param.consume();
        let [cols, rows] = weight.dims()[..] else {
            unreachable!("D == 2")
        };
        if rows * cols <= 1 {
            // Already packed: the weight is the dtype carrier.
            return Param::initialized(id, weight);
        }
        let device = weight.device();
        let dtype = weight.dtype();
        let values: Vec<f32> = weight
            .clone()
            .transpose()
            .into_data()
            .convert::<f32>()
            .into_vec()
            .expect("f32 after convert");
        let path = self.names.join(".");
        match PackedData::quantize(self.ty, &values, rows, cols, &path) {
            Ok(Some(packed)) => {
                Param::initialized(id, self.pending.fill(packed, Some(dtype), &device))
            }
            // Not quantizable (shape) or not finite: left dense, as the loader would.
            Ok(None) | Err(_) => Param::initialized(id, weight),
        }
    }

    fn map_int<const D: usize>(
        &mut self,
        param: Param<Tensor<B, D, Int>>,
    ) -> Param<Tensor<B, D, Int>> {
        if self.containers.last().map(String::as_str) != Some("Struct:Packed") {
            return param;
        }
        let field = self.names.last().map(String::as_str).unwrap_or_default();
        self.pending.int(field, param)
    }
}
