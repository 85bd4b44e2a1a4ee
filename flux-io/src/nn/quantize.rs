//! [`quantize`]: a built model's dense linear weights quantized in place, one layer at a time.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

use super::packed::{placeholder_float, placeholder_int};
use super::{Packed, PackedSlot};
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

/// Makes every packed `Linear` weight of `module` dense again: the weight dequantized (exactly
/// the values the packed layer multiplies by) in the dtype the layer computes in, and the packed
/// parts dropped. For merging updates into a quantized model at full precision, or comparing
/// a packed model with its dense equivalent.
pub fn dequantize<B: Backend, M: Module<B>>(module: M) -> M {
    let mut collect = CollectPacked::<B> {
        path: Vec::new(),
        containers: Vec::new(),
        parts: HashMap::new(),
    };
    module.visit(&mut collect);
    let layers: HashMap<String, Packed<B>> = collect
        .parts
        .into_iter()
        .filter_map(|(path, p)| {
            let packed = Packed::from_parts(p.codes?, p.factors?, p.sub?, p.codebook?);
            packed.is_present().then_some((path, packed))
        })
        .collect();
    let mut mapper = Dequantizer {
        path: Vec::new(),
        containers: Vec::new(),
        layers,
    };
    module.map(&mut mapper)
}

#[derive(Default)]
struct Parts<B: Backend> {
    codes: Option<Tensor<B, 3, Int>>,
    factors: Option<Tensor<B, 3>>,
    sub: Option<Tensor<B, 3, Int>>,
    codebook: Option<Tensor<B, 1>>,
}

/// Pass one: each layer's packed parts, by the layer's path.
struct CollectPacked<B: Backend> {
    path: Vec<String>,
    containers: Vec<String>,
    parts: HashMap<String, Parts<B>>,
}

impl<B: Backend> CollectPacked<B> {
    /// The layer path and field when inside a `Packed`.
    fn at(&mut self) -> Option<(&mut Parts<B>, String)> {
        if self.containers.last().map(String::as_str) != Some("Struct:Packed") {
            return None;
        }
        let n = self.path.len();
        let layer = self.path[..n.saturating_sub(2)].join(".");
        let field = self.path.last()?.clone();
        let parts = self.parts.entry(layer).or_insert_with(|| Parts {
            codes: None,
            factors: None,
            sub: None,
            codebook: None,
        });
        Some((parts, field))
    }
}

fn reshape<B: Backend, const D: usize, const E: usize, K: burn::tensor::BasicOps<B>>(
    t: Tensor<B, D, K>,
) -> Option<Tensor<B, E, K>> {
    (D == E).then(|| Tensor::from_primitive(t.into_primitive()))
}

impl<B: Backend> ModuleVisitor<B> for CollectPacked<B> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.push(name.to_string());
        self.containers.push(container_type.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
        self.containers.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some((parts, field)) = self.at() {
            match field.as_str() {
                "factors" => parts.factors = reshape(param.val()),
                "codebook" => parts.codebook = reshape(param.val()),
                _ => {}
            }
        }
    }

    fn visit_int<const D: usize>(&mut self, param: &Param<Tensor<B, D, Int>>) {
        if let Some((parts, field)) = self.at() {
            match field.as_str() {
                "codes" => parts.codes = reshape(param.val()),
                "sub" => parts.sub = reshape(param.val()),
                _ => {}
            }
        }
    }
}

/// Pass two: dense weights in, packed parts out.
struct Dequantizer<B: Backend> {
    path: Vec<String>,
    containers: Vec<String>,
    layers: HashMap<String, Packed<B>>,
}

impl<B: Backend> Dequantizer<B> {
    fn layer(&self, levels: usize) -> Option<&Packed<B>> {
        let n = self.path.len();
        self.layers
            .get(&self.path[..n.saturating_sub(levels)].join("."))
    }

    fn container(&self) -> Option<&str> {
        self.containers.last().map(String::as_str)
    }
}

impl<B: Backend> ModuleMapper<B> for Dequantizer<B> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.push(name.to_string());
        self.containers.push(container_type.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
        self.containers.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        match self.container() {
            Some("Struct:Linear") if self.path.last().is_some_and(|n| n == "weight") => {
                let Some(packed) = self.layer(1) else {
                    return param;
                };
                let dtype = super::linear::float_dtype(param.val().dtype());
                let weight = packed.dequantize_transposed().cast(dtype);
                Param::initialized(param.id, Tensor::from_primitive(weight.into_primitive()))
            }
            Some("Struct:Packed") if self.layer(2).is_some() => {
                let device = param.lazy_device();
                Param::initialized(ParamId::new(), placeholder_float::<B, D>(&device).val())
            }
            _ => param,
        }
    }

    fn map_int<const D: usize>(
        &mut self,
        param: Param<Tensor<B, D, Int>>,
    ) -> Param<Tensor<B, D, Int>> {
        if self.container() == Some("Struct:Packed") && self.layer(2).is_some() {
            let device = param.lazy_device();
            return Param::initialized(ParamId::new(), placeholder_int::<B, D>(&device).val());
        }
        param
    }
}
