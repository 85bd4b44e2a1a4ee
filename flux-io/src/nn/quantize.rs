//! [`quantize`]: a built model's dense linear weights quantized in place, one layer at a time.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

use super::packed::{placeholder_float, placeholder_int};
use super::{Packed, PackedSlot};
use crate::quant::{PackedData, QuantType};
use crate::walk::WalkPath;

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
    let mut collect = CollectPacked::<B>(WalkPath::default(), HashMap::new());
    module.visit(&mut collect);
    let layers: HashMap<String, Packed<B>> = collect
        .1
        .into_iter()
        .filter_map(|(path, p)| {
            let packed = Packed::from_parts(p.codes?, p.factors?, p.sub?, p.codebook?);
            packed.is_present().then_some((path, packed))
        })
        .collect();
    module.map(&mut Dequantizer(WalkPath::default(), layers))
}

/// A layer's packed parts as a walk meets them.
struct Parts<B: Backend> {
    codes: Option<Tensor<B, 3, Int>>,
    factors: Option<Tensor<B, 3>>,
    sub: Option<Tensor<B, 3, Int>>,
    codebook: Option<Tensor<B, 1>>,
}

/// Pass one: each packed layer's parts, by the layer's path.
struct CollectPacked<B: Backend>(WalkPath, HashMap<String, Parts<B>>);

impl<B: Backend> CollectPacked<B> {
    /// The parts of the layer whose `Packed` field is being visited.
    fn parts(&mut self) -> Option<&mut Parts<B>> {
        if self.0.container() != "Struct:Packed" {
            return None;
        }
        Some(self.1.entry(self.0.up(2)).or_insert(Parts {
            codes: None,
            factors: None,
            sub: None,
            codebook: None,
        }))
    }
}

/// The same tensor at rank `E` (`None` if `D != E`).
fn rank<B: Backend, const D: usize, const E: usize, K: burn::tensor::BasicOps<B>>(
    t: Tensor<B, D, K>,
) -> Option<Tensor<B, E, K>> {
    (D == E).then(|| Tensor::from_primitive(t.into_primitive()))
}

impl<B: Backend> ModuleVisitor<B> for CollectPacked<B> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.0.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, container_type: &str) {
        self.0.exit(container_type);
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let field = self.0.field().to_string();
        if let Some(parts) = self.parts() {
            match field.as_str() {
                "factors" => parts.factors = rank(param.val()),
                "codebook" => parts.codebook = rank(param.val()),
                _ => {}
            }
        }
    }

    fn visit_int<const D: usize>(&mut self, param: &Param<Tensor<B, D, Int>>) {
        let field = self.0.field().to_string();
        if let Some(parts) = self.parts() {
            match field.as_str() {
                "codes" => parts.codes = rank(param.val()),
                "sub" => parts.sub = rank(param.val()),
                _ => {}
            }
        }
    }
}

/// Pass two: dense weights in, packed parts replaced by placeholders.
struct Dequantizer<B: Backend>(WalkPath, HashMap<String, Packed<B>>);

impl<B: Backend> Dequantizer<B> {
    /// Whether the field being visited is a `Packed` part of a packed layer.
    fn in_packed_layer(&self) -> bool {
        self.0.container() == "Struct:Packed" && self.1.contains_key(&self.0.up(2))
    }
}

impl<B: Backend> ModuleMapper<B> for Dequantizer<B> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.0.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, container_type: &str) {
        self.0.exit(container_type);
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        if (self.0.container(), self.0.field()) == ("Struct:Linear", "weight") {
            let Some(packed) = self.1.get(&self.0.up(1)) else {
                return param;
            };
            let dtype = super::linear::float_dtype(param.val().dtype());
            let weight = packed.dequantize_transposed().cast(dtype);
            return Param::initialized(param.id, Tensor::from_primitive(weight.into_primitive()));
        }
        if self.in_packed_layer() {
            let device = param.lazy_device();
            return Param::initialized(ParamId::new(), placeholder_float::<B, D>(&device).val());
        }
        param
    }

    fn map_int<const D: usize>(
        &mut self,
        param: Param<Tensor<B, D, Int>>,
    ) -> Param<Tensor<B, D, Int>> {
        if self.in_packed_layer() {
            let device = param.lazy_device();
            return Param::initialized(ParamId::new(), placeholder_int::<B, D>(&device).val());
        }
        param
    }
}
