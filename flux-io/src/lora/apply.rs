//! Putting [`Adapters`] into a model: merged into the weights, or attached beside them.

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, FloatDType, Tensor, TensorData};

use super::resolve::{Adapters, LayerUpdate};
use crate::nn::{float_dtype_of as float_dtype, holds_adapter};
use crate::walk::WalkPath;
use crate::{Error, Result};

/// How LoRA updates are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LoraMode {
    /// Added to the weights once, at load: `W + s · α/r · B A`, computed in f32 and cast to
    /// the model's dtype. No cost per step. Quantized layers cannot take a merged update
    /// without losing it to requantization: they get the run-time form instead.
    #[default]
    Merged,
    /// Held beside the weights and applied in every forward pass, `W x + s · B (A x)`: the
    /// strengths can change between requests ([`rescale`]) and the base weights are never
    /// touched. Full-weight differences (`.diff`) are merged in either mode.
    Runtime,
}

/// How many layers [`apply`] updated, and how.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// Layers whose weights now include the update.
    pub merged: usize,
    /// Layers holding run-time updates.
    pub runtime: usize,
}

impl std::ops::AddAssign for Applied {
    fn add_assign(&mut self, other: Self) {
        self.merged += other.merged;
        self.runtime += other.runtime;
    }
}

/// Applies `adapters` to `module`, whose path in the whole model is `prefix` (empty for the
/// whole model; `["double_blocks", "3"]` for one block). Layers the adapters do not name are
/// untouched.
///
/// # Errors
/// [`Error::Lora`] when a layer's weight does not have the shape the LoRA was resolved
/// against, a full-weight difference meets a quantized layer, or a bias difference meets a
/// layer without a bias.
pub fn apply<B: Backend, M: Module<B>>(
    module: M,
    adapters: &Adapters,
    prefix: &[&str],
    mode: LoraMode,
) -> Result<(M, Applied)> {
    let mut mapper = Mapper::new(adapters, prefix, Task::Apply(mode));
    let module = module.map(&mut mapper);
    match mapper.error {
        Some(e) => Err(e),
        None => Ok((module, mapper.applied)),
    }
}

/// Rewrites the strengths of `module`'s run-time updates to `adapters`' (see
/// [`Adapters::with_scales`]); merged updates cannot change and are left as they are.
/// Returns the number of layers rescaled.
pub fn rescale<B: Backend, M: Module<B>>(
    module: M,
    adapters: &Adapters,
    prefix: &[&str],
) -> (M, usize) {
    let mut mapper = Mapper::new(adapters, prefix, Task::Rescale);
    let module = module.map(&mut mapper);
    (module, mapper.applied.runtime)
}

#[derive(Clone, Copy)]
enum Task {
    Apply(LoraMode),
    Rescale,
}

/// The layer being visited.
struct Current<'a> {
    path: String,
    update: &'a LayerUpdate,
    dtype: DType,
    /// Run-time factors waiting for the layer's `lora` fields: `down`, `up`, `scale`.
    runtime: Option<[Option<TensorData>; 3]>,
    bias_pending: bool,
}

struct Mapper<'a> {
    adapters: &'a Adapters,
    task: Task,
    at: WalkPath,
    current: Option<Current<'a>>,
    applied: Applied,
    error: Option<Error>,
}

impl<'a> Mapper<'a> {
    fn new(adapters: &'a Adapters, prefix: &[&str], task: Task) -> Self {
        Self {
            adapters,
            task,
            at: WalkPath::at(prefix),
            current: None,
            applied: Applied::default(),
            error: None,
        }
    }

    fn fail(&mut self, reason: String) {
        self.error.get_or_insert(Error::Lora {
            file: String::new(),
            reason,
        });
    }
}

/// `param` with `change` applied to its values on the host in f32, then put back in its
/// dtype and on its device (small parameters: biases, norm scales).
fn on_host<B: Backend, const D: usize>(
    param: Param<Tensor<B, D>>,
    change: impl FnOnce(&mut [f32]),
) -> Param<Tensor<B, D>> {
    let (id, value, _) = param.consume();
    let (device, dtype, shape) = (value.device(), value.dtype(), value.shape());
    let mut values: Vec<f32> = value
        .into_data()
        .convert::<f32>()
        .into_vec()
        .expect("f32 after convert");
    change(&mut values);
    let tensor: Tensor<B, D> = Tensor::from_data(TensorData::new(values, shape), &device);
    Param::initialized(id, tensor.cast(float_dtype(dtype)))
}

impl<B: Backend> ModuleMapper<B> for Mapper<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.at.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, container_type: &str) {
        self.at.exit(container_type);
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let in_layer =
            ["Struct:Linear", "Struct:Packed", "Struct:LoraAdapter"].contains(&self.at.container());
        let outside_params = !self.adapters.params.is_empty() || !self.adapters.sets.is_empty();
        if !in_layer && outside_params {
            return self.param_diff(param);
        }
        match (self.at.container(), self.at.field()) {
            ("Struct:Linear", "weight") if D == 2 => self.linear_weight(param),
            ("Struct:Linear", "bias") if D == 1 => self.linear_bias(param),
            ("Struct:LoraAdapter", _) => self.adapter_field(param),
            _ => param,
        }
    }
}

impl Mapper<'_> {
    /// The strengths merged differences are added at: the adapters' when applying; the
    /// change from the strengths they were applied at when rescaling.
    fn scales_to_add(&self) -> Vec<f32> {
        let a = self.adapters;
        match self.task {
            Task::Rescale => a
                .scales
                .iter()
                .zip(&a.base_scales)
                .map(|(s, b)| s - b)
                .collect(),
            Task::Apply(_) => a.scales.clone(),
        }
    }

    /// A parameter outside the linear layers: its full differences added, if any.
    fn param_diff<B: Backend, const D: usize>(
        &mut self,
        param: Param<Tensor<B, D>>,
    ) -> Param<Tensor<B, D>> {
        let path = self.at.up(0);
        let set = self.adapters.sets.get(&path);
        let diffs = self.adapters.params.get(&path);
        let rescale = matches!(self.task, Task::Rescale);
        if (set.is_none() && diffs.is_none()) || (rescale && diffs.is_none()) {
            return param;
        }
        if !rescale {
            self.applied.merged += usize::from(set.is_some()) + usize::from(diffs.is_some());
        }
        let scales = self.scales_to_add();
        on_host(param, |values| {
            if let (Some(set), false) = (set, rescale) {
                values.copy_from_slice(set);
            }
            for (lora, diff) in diffs.into_iter().flatten() {
                for (v, d) in values.iter_mut().zip(diff) {
                    *v += scales[*lora] * d;
                }
            }
        })
    }

    fn linear_weight<B: Backend, const D: usize>(
        &mut self,
        param: Param<Tensor<B, D>>,
    ) -> Param<Tensor<B, D>> {
        self.current = None;
        let path = self.at.up(1);
        let Some(update) = self.adapters.layers.get(&path) else {
            return param;
        };
        let (input, output) = (update.input, update.output);
        let dims = param.lazy_shape().dims::<D>();
        let dense = dims[..] == [input, output];
        if !dense && dims[..] != [1, 1] {
            self.fail(format!(
                "layer `{path}` holds a {dims:?} weight, the LoRA was resolved for [{input}, {output}]"
            ));
            return param;
        }
        let (id, weight, _) = param.consume();
        let dtype = weight.dtype();
        let scales = &self.adapters.scales;
        let mut current = Current {
            path: path.clone(),
            update,
            dtype,
            runtime: None,
            bias_pending: update.has_bias_diff(),
        };
        let low_rank = update.rank() > 0;
        let runtime_parts = match self.task {
            Task::Rescale => {
                self.current = Some(current);
                return Param::initialized(id, weight);
            }
            Task::Apply(LoraMode::Runtime) => low_rank,
            // A quantized layer takes its low-rank update at run time.
            Task::Apply(LoraMode::Merged) => low_rank && !dense,
        };
        let mut weight = weight;
        if dense {
            let device = weight.device();
            let w: Tensor<B, 2> = Tensor::from_primitive(weight.into_primitive());
            let mut w = w.cast(FloatDType::F32);
            if low_rank && !runtime_parts {
                let (down, up, scale) = update.stacked(scales);
                let rank = scale.len();
                let up: Vec<f32> = up
                    .chunks(output)
                    .zip(&scale)
                    .flat_map(|(row, s)| row.iter().map(move |u| u * s))
                    .collect();
                let down = Tensor::<B, 2>::from_data(TensorData::new(down, [input, rank]), &device);
                let up = Tensor::<B, 2>::from_data(TensorData::new(up, [rank, output]), &device);
                w = w + down.matmul(up);
            }
            if let Some(diff) = update.weight_diff(scales) {
                w = w + Tensor::from_data(TensorData::new(diff, [input, output]), &device);
            }
            weight = Tensor::from_primitive(w.cast(float_dtype(dtype)).into_primitive());
        } else if update.has_weight_diff() {
            self.fail(format!(
                "a LoRA holds a full-weight difference (`.diff`) for `{path}`, which is \
                 quantized: load the model dense to apply it"
            ));
        }
        if runtime_parts {
            let (down, up, scale) = update.stacked(scales);
            let rank = scale.len();
            current.runtime = Some([
                Some(TensorData::new(down, [input, rank])),
                Some(TensorData::new(up, [rank, output])),
                Some(TensorData::new(scale, [rank])),
            ]);
            self.applied.runtime += 1;
        } else {
            self.applied.merged += 1;
        }
        self.current = Some(current);
        Param::initialized(id, weight)
    }

    fn linear_bias<B: Backend, const D: usize>(
        &mut self,
        param: Param<Tensor<B, D>>,
    ) -> Param<Tensor<B, D>> {
        let Some(current) = self.current.as_mut().filter(|c| c.bias_pending) else {
            return param;
        };
        current.bias_pending = false;
        let update = current.update;
        let scales = self.scales_to_add();
        on_host(param, |values| update.add_to_bias(values, &scales))
    }

    fn adapter_field<B: Backend, const D: usize>(
        &mut self,
        param: Param<Tensor<B, D>>,
    ) -> Param<Tensor<B, D>> {
        let path = self.at.up(2);
        let field = self.at.field().to_string();
        let Some(current) = self.current.as_mut().filter(|c| c.path == path) else {
            return param;
        };
        if current.bias_pending {
            current.bias_pending = false;
            let path = current.path.clone();
            self.fail(format!(
                "a LoRA holds a bias difference (`.diff_b`) for `{path}`, which has no bias"
            ));
            return param;
        }
        let index = match field.as_str() {
            "down" => 0,
            "up" => 1,
            "scale" => 2,
            _ => return param,
        };
        if let Task::Rescale = self.task {
            if index == 0 && holds_adapter(&param.lazy_shape().dims::<D>()) {
                let scale = current.update.stacked_scales(&self.adapters.scales);
                let rank = scale.len();
                current.runtime = Some([None, None, Some(TensorData::new(scale, [rank]))]);
                self.applied.runtime += 1;
            }
            if index < 2 {
                return param;
            }
        }
        let dtype = current.dtype;
        let Some(data) = current.runtime.as_mut().and_then(|r| r[index].take()) else {
            return param;
        };
        let device = param.lazy_device();
        let tensor: Tensor<B, D> = Tensor::from_data(data, &device);
        let tensor = tensor.cast(float_dtype(dtype));
        Param::initialized(param.id, tensor)
    }
}
