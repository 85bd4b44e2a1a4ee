//! LoRA updates applied as a layer is built ([`apply`]), and their strengths changed later
//! ([`LoraSlots::rescale`]).

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, Param, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, FloatDType, Tensor, TensorData};
use flux_io::{Error, Result};
use flux_lora::{Adapters, LayerUpdate, LoraMode};

use crate::adapter::LoraAdapter;
use crate::float_dtype;
use crate::linear::Weight;

/// Whether `adapters` change the parameter at `path` (outside the linear layers).
pub(super) fn changes_param(adapters: &Adapters, path: &str) -> bool {
    adapters.param_set(path).is_some() || !adapters.param_diffs(path).is_empty()
}

/// A parameter outside the linear layers (a norm scale) with `adapters`' full differences
/// added and replacements applied, in f32.
pub(super) fn param_update(
    adapters: &Adapters,
    path: &str,
    data: TensorData,
) -> Result<TensorData> {
    let set = adapters.param_set(path);
    let diffs = adapters.param_diffs(path);
    let shape = data.shape.clone();
    let mut values = to_f32(data)?;
    if let Some(set) = set {
        values.copy_from_slice(set);
    }
    for (lora, diff) in diffs {
        let s = adapters.scales()[*lora];
        for (v, d) in values.iter_mut().zip(diff) {
            *v += s * d;
        }
    }
    Ok(TensorData::new(values, shape))
}

/// A linear layer's parts: its weight, its bias and its run-time LoRA updates.
type Layer<B> = (
    Weight<B>,
    Option<Param<Tensor<B, 1>>>,
    Option<LoraAdapter<B>>,
);

/// A loaded layer with its LoRA updates: low-rank ones merged into a dense weight
/// ([`LoraMode::Merged`]) or held beside it (run time, and always on a quantized weight);
/// full differences added to the weight and bias. Returns the weight, the bias and the
/// run-time adapter.
///
/// # Errors
/// [`Error::Lora`] for a full-weight difference on a quantized layer or a bias difference on
/// a layer without a bias.
#[allow(clippy::too_many_arguments)]
pub(super) fn apply<B: Backend>(
    (adapters, mode): (&Adapters, LoraMode),
    path: &str,
    update: &LayerUpdate,
    weight: Weight<B>,
    bias: Option<Param<Tensor<B, 1>>>,
    dtype: DType,
    device: &B::Device,
) -> Result<Layer<B>> {
    let scales = adapters.scales();
    let fail = |reason: String| Error::Lora {
        file: String::new(),
        reason,
    };
    let low_rank = update.rank() > 0;
    let runtime = low_rank && (mode == LoraMode::Runtime || matches!(weight, Weight::Packed(_)));
    let weight = match weight {
        Weight::Dense(param) => {
            let (input, output) = (update.input(), update.output());
            let w = param.val();
            let compute = float_dtype(w.dtype());
            let mut w = w.cast(FloatDType::F32);
            if low_rank && !runtime {
                let (down, up, scale) = update.stacked(scales);
                let rank = scale.len();
                let up: Vec<f32> = up
                    .chunks(output)
                    .zip(&scale)
                    .flat_map(|(row, s)| row.iter().map(move |u| u * s))
                    .collect();
                let down = Tensor::<B, 2>::from_data(TensorData::new(down, [input, rank]), device);
                let up = Tensor::<B, 2>::from_data(TensorData::new(up, [rank, output]), device);
                w = w + down.cast(FloatDType::F32).matmul(up.cast(FloatDType::F32));
            }
            if let Some(diff) = update.weight_diff(scales) {
                let diff =
                    Tensor::<B, 2>::from_data(TensorData::new(diff, [input, output]), device);
                w = w + diff.cast(FloatDType::F32);
            }
            Weight::Dense(Param::initialized(ParamId::new(), w.cast(compute)))
        }
        Weight::Packed(packed) => {
            if update.has_weight_diff() {
                return Err(fail(format!(
                    "a LoRA holds a full-weight difference (`.diff`) for `{path}`, which is \
                     quantized: load the model dense to apply it"
                )));
            }
            Weight::Packed(packed)
        }
    };
    let bias = match (bias, update.has_bias_diff()) {
        (None, true) => {
            return Err(fail(format!(
                "a LoRA holds a bias difference (`.diff_b`) for `{path}`, which has no bias"
            )));
        }
        (Some(bias), true) => Some(on_host(bias, |values| update.add_to_bias(values, scales))),
        (bias, false) => bias,
    };
    let adapter = runtime.then(|| {
        let [input, output] = [update.input(), update.output()];
        let (down, up, scale) = update.stacked(scales);
        LoraAdapter::new([down, up, scale], [input, output], dtype, device)
    });
    Ok((weight, bias, adapter))
}

/// `param` with `change` applied to its values on the host in f32, then put back in its dtype
/// and on its device, under a new id (small parameters: biases, norm scales).
fn on_host<B: Backend, const D: usize>(
    param: Param<Tensor<B, D>>,
    change: impl FnOnce(&mut [f32]),
) -> Param<Tensor<B, D>> {
    let value = param.val();
    let (device, dtype, shape) = (value.device(), value.dtype(), value.shape());
    let mut values: Vec<f32> = value
        .into_data()
        .convert::<f32>()
        .into_vec()
        .expect("f32 after convert");
    change(&mut values);
    let tensor: Tensor<B, D> = Tensor::from_data(TensorData::new(values, shape), &device);
    Param::initialized(ParamId::new(), tensor.cast(float_dtype(dtype)))
}

fn to_f32(data: TensorData) -> Result<Vec<f32>> {
    data.convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| Error::BadTensor {
            key: String::new(),
            reason: format!("{e:?}"),
        })
}

/// Where a model's LoRA strengths live once it is built: the parameters a change of strength
/// rewrites, by id, with their layer's path. Kept by the model ([`LoraSlots::rescale`]).
#[derive(Debug, Clone, Default)]
pub struct LoraSlots {
    /// Run-time adapters' `scale` vectors.
    pub(crate) scales: Vec<(ParamId, String)>,
    /// Biases holding merged bias differences.
    pub(crate) biases: Vec<(ParamId, String)>,
    /// Parameters outside linear layers holding merged full differences (norm scales).
    pub(crate) params: Vec<(ParamId, String)>,
}

impl LoraSlots {
    /// Whether the model holds anything a change of strength rewrites.
    pub fn is_empty(&self) -> bool {
        self.scales.is_empty() && self.biases.is_empty() && self.params.is_empty()
    }

    /// `module` (the model these slots were recorded from, as built) with its LoRA strengths
    /// changed to `adapters`' ([`Adapters::with_scales`] of the adapters it was built with):
    /// run-time scales rewritten, merged bias and norm differences moved by the change of
    /// strength. Merged low-rank updates cannot change (only the run-time mode makes strengths
    /// per request). Returns the module and the number of layers and parameters rewritten.
    pub fn rescale<B: Backend, M: Module<B>>(&self, module: M, adapters: &Adapters) -> (M, usize) {
        let mut mapper = Rescale {
            adapters,
            slots: self
                .scales
                .iter()
                .map(|(id, p)| (*id, (Slot::Scale, p.as_str())))
                .chain(
                    self.biases
                        .iter()
                        .map(|(id, p)| (*id, (Slot::Bias, p.as_str()))),
                )
                .chain(
                    self.params
                        .iter()
                        .map(|(id, p)| (*id, (Slot::Param, p.as_str()))),
                )
                .collect(),
            changed: 0,
        };
        let module = module.map(&mut mapper);
        (module, mapper.changed)
    }
}

#[derive(Clone, Copy)]
enum Slot {
    Scale,
    Bias,
    Param,
}

struct Rescale<'a> {
    adapters: &'a Adapters,
    slots: HashMap<ParamId, (Slot, &'a str)>,
    changed: usize,
}

impl<B: Backend> ModuleMapper<B> for Rescale<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let Some(&(slot, path)) = self.slots.get(&param.id) else {
            return param;
        };
        let a = self.adapters;
        // The change from the strengths the model was built at.
        let delta: Vec<f32> = a
            .scales()
            .iter()
            .zip(a.base_scales())
            .map(|(s, b)| s - b)
            .collect();
        let id = param.id;
        let changed = match slot {
            Slot::Scale => {
                let Some(update) = a.layer(path) else {
                    return param;
                };
                let scale = update.stacked_scales(a.scales());
                let device = param.lazy_device();
                let dtype = param.val().dtype();
                let rank = scale.len();
                let t: Tensor<B, D> =
                    Tensor::from_data(TensorData::new(scale, [rank]), (&device, dtype));
                Param::initialized(id, t)
            }
            Slot::Bias => {
                let Some(update) = a.layer(path) else {
                    return param;
                };
                on_host(param, |values| update.add_to_bias(values, &delta))
            }
            Slot::Param => on_host(param, |values| {
                for (lora, diff) in a.param_diffs(path) {
                    for (v, d) in values.iter_mut().zip(diff) {
                        *v += delta[*lora] * d;
                    }
                }
            }),
        };
        self.changed += 1;
        // Keep the id: the slots stay valid for the next change.
        Param::initialized(id, changed.val())
    }
}
