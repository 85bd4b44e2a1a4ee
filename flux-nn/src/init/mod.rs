//! [`Init`]: how a model is built, layer by layer, in the form its weights are stored.
//!
//! A model's constructors take an `&Init` instead of a device, and name each of their layers
//! as the checkpoint names it (`init.at("img_attn").linear("qkv", hidden, 3 * hidden, true)`).
//! The `Init` decides what each layer holds when it is created, as stable-diffusion.cpp's
//! `Linear::init_params` reads each weight's type from the file before allocating:
//!
//! - [`Init::random`]: lazily initialised random parameters (burn's defaults), for tests and
//!   benchmarks; [`Init::random_quantized`]: the same with every linear weight quantized;
//! - [`Init::load`]: parameters read from a checkpoint through a [`Loader`] — a dense weight
//!   in the layout its backend multiplies fastest, a GGUF block type or fp8 kept quantized
//!   ([`crate::Packed`]) or quantized as it loads, LoRA updates merged into it or held beside
//!   it ([`crate::LoraAdapter`]);
//! - [`Init::layout`]: nothing allocated; the layers are recorded ([`Init::layers`]), e.g. to
//!   build the names LoRA files may use for them.
//!
//! Nothing is filled in afterwards and nothing is looked up by type name: a layer is what its
//! constructor made. The names form each parameter's path (`double_blocks.3.img_attn.qkv.weight`),
//! which a checkpoint's key table maps to stored tensors.

//! which a checkpoint's key table maps to stored tensors.
//!
//! LoRA updates ([`Init::with_adapters`]) are built in too, whatever the source: merged into a
//! dense weight, or held beside it ([`crate::LoraAdapter`]; always on a quantized weight).

mod layout;
mod loader;
mod lora;

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fmt::Display;
use std::rc::Rc;

use burn::module::{Initializer, Param, ParamId};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};
use flux_io::Error;
use flux_lora::{Adapters, LayerUpdate, LoraMode};

pub use layout::{Layer, LayerKind};
pub use loader::{LoadConfig, LoadOptions, Loader};
pub use lora::LoraSlots;

use self::loader::LinearData;
use crate::bytes::ParamBytes;
use crate::linear::{Linear, Weight};
use crate::packed::Packed;
use crate::quant::{PackedData, QuantType};
use crate::{FluxBackend, float_dtype};

/// Builds a model with `build` from `weights` read through `map` onto `device`, as `config`
/// says (dtype, quantization, LoRA updates; every stored tensor must be used): one loading
/// session ([`Loader`]), whose errors name every missing tensor, else the first other problem.
/// What a model crate's `load_with` does once it knows its config and key table.
///
/// # Errors
/// As [`Loader::finish`], then [`Init::finish`].
pub fn load_module<B: FluxBackend, C, M>(
    weights: &flux_io::Weights,
    map: &dyn flux_io::KeyMap,
    device: &B::Device,
    config: &LoadConfig<C>,
    build: impl FnOnce(&Init<'_, B>) -> M,
) -> flux_io::Result<M> {
    let loader = Loader::new(weights, map, config.strict());
    let mut init = Init::load(&loader, device);
    if let Some(adapters) = &config.adapters {
        init = init.with_adapters(adapters, config.lora_mode);
    }
    let model = build(&init);
    loader.finish()?;
    init.finish()?;
    Ok(model)
}

/// Builds a model's layers in their stored form (see the module docs). Cheap to clone: each
/// [`Init::at`] is the same source one name deeper.
#[derive(Clone)]
pub struct Init<'a, B: Backend> {
    device: B::Device,
    path: String,
    /// The float dtype of this part of the model (`None`: the source's default).
    dtype: Option<DType>,
    source: Source<'a>,
    adapters: Option<(&'a Adapters, LoraMode)>,
    shared: Rc<Shared>,
}

#[derive(Clone, Copy)]
enum Source<'a> {
    Random { quantize: Option<QuantType> },
    Load(&'a Loader<'a>),
    Layout,
}

/// What every `Init` of one build shares: what was built, and what went wrong with the LoRA
/// updates.
#[derive(Default)]
struct Shared {
    held: RefCell<ParamBytes>,
    layers: RefCell<Vec<Layer>>,
    lora: RefCell<LoraSlots>,
    /// Adapter paths a layer or parameter took.
    adapted: RefCell<BTreeSet<String>>,
    /// The first LoRA update that did not fit its layer.
    error: RefCell<Option<Error>>,
}

impl<B: FluxBackend> Init<'static, B> {
    /// Random parameters on `device`, lazily initialised as burn's layers draw them (Kaiming
    /// uniform for linear layers): building allocates nothing until a parameter is used.
    pub fn random(device: &B::Device) -> Self {
        Self::new(device, Source::Random { quantize: None })
    }

    /// [`Init::random`] with every linear weight that a checkpoint would store quantized
    /// (rows of whole blocks, more than 1024 values) drawn at once and quantized to `ty`, as a
    /// quantized checkpoint loads.
    pub fn random_quantized(device: &B::Device, ty: QuantType) -> Self {
        Self::new(device, Source::Random { quantize: Some(ty) })
    }

    /// No parameters at all: the layers a model is built of are only recorded
    /// ([`Init::layers`]).
    pub fn layout(device: &B::Device) -> Self {
        Self::new(device, Source::Layout)
    }
}

impl<'a, B: FluxBackend> Init<'a, B> {
    /// Parameters read from `loader`'s checkpoint onto `device`; call [`Loader::finish`]
    /// after building to learn whether everything was found.
    pub fn load(loader: &'a Loader<'a>, device: &B::Device) -> Self {
        let mut init = Self::new(device, Source::Load(loader));
        init.dtype = loader.options().dtype;
        init
    }

    fn new(device: &B::Device, source: Source<'a>) -> Self {
        Self {
            device: device.clone(),
            path: String::new(),
            dtype: None,
            source,
            adapters: None,
            shared: Rc::default(),
        }
    }

    /// The same source building its layers with LoRA updates (resolved against the model's
    /// targets), applied as `mode` says; call [`Init::finish`] after building.
    #[must_use]
    pub fn with_adapters(self, adapters: &'a Adapters, mode: LoraMode) -> Self {
        Self {
            adapters: Some((adapters, mode)),
            ..self
        }
    }

    /// Checks, after building, that the LoRA updates fit.
    ///
    /// # Errors
    /// [`Error::Lora`] for the first update that did not fit its layer (a full-weight
    /// difference on a quantized layer, a bias difference on a layer without a bias), else for
    /// updates naming layers the model does not have.
    pub fn finish(&self) -> flux_io::Result<()> {
        if let Some(e) = self.shared.error.borrow_mut().take() {
            return Err(e);
        }
        let Some((adapters, _)) = self.adapters else {
            return Ok(());
        };
        let adapted = self.shared.adapted.borrow();
        let unused: Vec<&str> = adapters
            .layer_paths()
            .chain(adapters.param_paths())
            .filter(|p| !adapted.contains(*p))
            .collect();
        if unused.is_empty() {
            return Ok(());
        }
        Err(Error::Lora {
            file: String::new(),
            reason: format!(
                "updates resolved for {} layer(s) this model does not have: {}",
                unused.len(),
                unused.join(", ")
            ),
        })
    }

    /// The same source for the part of the model called `name` (a field, or a block's index).
    #[must_use]
    pub fn at(&self, name: impl Display) -> Self {
        Self {
            path: self.path_of(&name.to_string()),
            ..self.clone()
        }
    }

    /// The same source building this part of the model in `dtype` (an f32 island in a
    /// half-precision model).
    #[must_use]
    pub fn with_dtype(&self, dtype: DType) -> Self {
        Self {
            dtype: Some(dtype),
            ..self.clone()
        }
    }

    /// The device the parameters go to.
    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// The path of this part of the model (`double_blocks.3`; empty at the root).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Whether the build has failed somewhere so far (a checkpoint's tensor, a LoRA update):
    /// the model will not be returned, so work on its parts can stop.
    pub fn failed(&self) -> bool {
        self.shared.error.borrow().is_some()
            || matches!(self.source, Source::Load(loader) if !loader.ok())
    }

    /// What the parameters built so far hold.
    pub fn held(&self) -> ParamBytes {
        *self.shared.held.borrow()
    }

    /// The layers recorded by an [`Init::layout`] build.
    pub fn layers(&self) -> Vec<Layer> {
        self.shared.layers.borrow().clone()
    }

    /// Where the run-time LoRA strengths of this build live (see [`LoraSlots::rescale`]).
    pub fn lora_slots(&self) -> LoraSlots {
        self.shared.lora.borrow().clone()
    }

    fn path_of(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.path)
        }
    }

    /// A tensor from host data in this part's dtype (the device's default float dtype when
    /// none is set).
    fn upload<const D: usize>(&self, data: TensorData) -> Tensor<B, D> {
        match self.dtype {
            Some(dtype) => Tensor::from_data(data, (&self.device, dtype)),
            None => Tensor::from_data(data, &self.device),
        }
    }

    fn count_dense(&self, elements: usize, dtype: Option<DType>) {
        self.shared.held.borrow_mut().dense += elements * dtype.map_or(4, |d| d.size());
    }

    fn record(&self, layer: Layer) {
        self.shared.layers.borrow_mut().push(layer);
    }

    /// Records the first problem with the LoRA updates.
    fn fail(&self, error: Error) {
        self.shared.error.borrow_mut().get_or_insert(error);
    }

    /// The LoRA updates for the layer or parameter at this `Init`'s path (marked taken).
    fn update_of(&self) -> Option<(&'a LayerUpdate, (&'a Adapters, LoraMode))> {
        let adapters = self.adapters?;
        let update = adapters.0.layer(&self.path)?;
        self.shared.adapted.borrow_mut().insert(self.path.clone());
        Some((update, adapters))
    }

    /// A parameter of `shape` called `name`: read from the checkpoint, or drawn from
    /// `initializer` (lazily) for a random build.
    pub fn param<const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        initializer: Initializer,
    ) -> Param<Tensor<B, D>> {
        let lazy = initializer.init_with(shape, None, None, &self.device);
        self.param_from(name, lazy)
    }

    /// `random` (a lazily initialised parameter, e.g. a burn layer's own) as this source has
    /// it: read from the checkpoint, recorded, or kept (in this part's dtype); then changed by
    /// the LoRA updates that name it (a norm scale's full difference or replacement).
    fn param_from<const D: usize>(
        &self,
        name: &str,
        random: Param<Tensor<B, D>>,
    ) -> Param<Tensor<B, D>> {
        let path = self.path_of(name);
        let shape = random.lazy_shape().dims::<D>();
        let param = match self.source {
            Source::Layout => {
                self.record(Layer {
                    path,
                    kind: LayerKind::Param {
                        shape: shape.to_vec(),
                    },
                });
                return random;
            }
            Source::Random { .. } => {
                self.count_dense(shape.iter().product(), self.dtype);
                match self.dtype {
                    Some(dtype) => random.init_mapper(move |t| t.cast(float_dtype(dtype))),
                    None => random,
                }
            }
            Source::Load(loader) => {
                let Some(data) = loader.tensor(&path, &shape) else {
                    return random;
                };
                let tensor: Tensor<B, D> = self.upload(data);
                self.count_dense(tensor.shape().num_elements(), Some(tensor.dtype()));
                Param::initialized(ParamId::new(), tensor)
            }
        };
        match self.adapters {
            Some((adapters, _)) if lora::changes_param(adapters, &path) => {
                self.adapt_param(adapters, path, param)
            }
            _ => param,
        }
    }

    /// `param` with `adapters`' changes for `path` (on the host, in f32).
    fn adapt_param<const D: usize>(
        &self,
        adapters: &Adapters,
        path: String,
        param: Param<Tensor<B, D>>,
    ) -> Param<Tensor<B, D>> {
        self.shared.adapted.borrow_mut().insert(path.clone());
        let value = param.val();
        let dtype = value.dtype();
        let data = match lora::param_update(adapters, &path, value.into_data()) {
            Ok(data) => data,
            Err(e) => {
                self.fail(e);
                return param;
            }
        };
        let tensor: Tensor<B, D> = Tensor::from_data(data, &self.device);
        let param = Param::initialized(ParamId::new(), tensor.cast(float_dtype(dtype)));
        if !adapters.param_diffs(&path).is_empty() {
            self.shared.lora.borrow_mut().params.push((param.id, path));
        }
        param
    }

    /// A linear layer `d_input -> d_output` called `name`, with or without a bias, in the
    /// form its checkpoint stores it (see the module docs), with its LoRA updates.
    pub fn linear(&self, name: &str, d_input: usize, d_output: usize, bias: bool) -> Linear<B> {
        let at = self.at(name);
        let kaiming = Initializer::KaimingUniform {
            gain: 1.0 / 3.0f64.sqrt(),
            fan_out_only: false,
        };
        let fans = (Some(d_input), Some(d_output));
        let random_weight = || kaiming.init_with([d_input, d_output], fans.0, fans.1, &self.device);
        let random_bias = || kaiming.init_with([d_output], fans.0, fans.1, &self.device);
        let (weight, bias) = match self.source {
            Source::Layout => {
                self.record(Layer {
                    path: at.path.clone(),
                    kind: LayerKind::Linear {
                        d_input,
                        d_output,
                        bias,
                    },
                });
                let weight = Weight::Dense(random_weight());
                return Linear::from_parts(weight, bias.then(random_bias), None);
            }
            Source::Random { quantize } => {
                let bias = bias.then(|| at.param_from("bias", random_bias()));
                let packed = quantize.and_then(|ty| at.quantized_random(random_weight(), ty));
                let weight = match packed {
                    Some(packed) => Weight::Packed(packed),
                    None => Weight::Dense(at.param_from("weight", random_weight())),
                };
                (weight, bias)
            }
            Source::Load(loader) => {
                let bias = bias.then(|| at.param_from("bias", random_bias()));
                match at.load_weight(loader, [d_input, d_output]) {
                    Some(weight) => (weight, bias),
                    None => (Weight::Dense(random_weight()), bias),
                }
            }
        };
        let Some((update, adapters)) = at.update_of() else {
            return Linear::from_parts(weight, bias, None);
        };
        let dtype = self
            .dtype
            .unwrap_or_else(|| default_float_dtype::<B>(&self.device));
        match lora::apply(
            adapters,
            &at.path,
            update,
            weight,
            bias,
            dtype,
            &self.device,
        ) {
            Ok((weight, bias, adapter)) => {
                let mut slots = self.shared.lora.borrow_mut();
                if let Some(adapter) = &adapter {
                    self.shared.held.borrow_mut().adapters += adapter.num_bytes();
                    slots.scales.push((adapter.scale_id(), at.path.clone()));
                }
                if let Some(bias) = &bias
                    && update.has_bias_diff()
                {
                    slots.biases.push((bias.id, at.path.clone()));
                }
                Linear::from_parts(weight, bias, adapter)
            }
            Err(e) => {
                self.fail(e);
                Linear::from_parts(Weight::Dense(random_weight()), None, None)
            }
        }
    }

    /// A random weight `[d_input, d_output]` quantized to `ty`, if it is quantizable.
    fn quantized_random(&self, weight: Param<Tensor<B, 2>>, ty: QuantType) -> Option<Packed<B>> {
        let weight = weight.val();
        let [cols, rows] = weight.dims();
        let dtype = self.dtype.unwrap_or(weight.dtype());
        let values: Vec<f32> = weight
            .transpose()
            .into_data()
            .convert::<f32>()
            .into_vec()
            .expect("f32 after convert");
        let data = PackedData::quantize(ty, &values, rows, cols, &self.path).ok()??;
        Some(self.packed(data, dtype))
    }

    fn packed(&self, data: PackedData, dtype: DType) -> Packed<B> {
        let packed = Packed::new(data, dtype, &self.device);
        let mut held = self.shared.held.borrow_mut();
        held.packed += packed.num_bytes();
        held.packed_layers += 1;
        packed
    }

    /// The weight of the linear layer at this `Init`'s path from a checkpoint (`None`: the
    /// loader recorded why not). A stored weight narrower than `d_input` is zero-padded when
    /// a LoRA update widens the layer (a control LoRA's `img_in`).
    fn load_weight(
        &self,
        loader: &Loader<'_>,
        [d_input, d_output]: [usize; 2],
    ) -> Option<Weight<B>> {
        let widen = self
            .adapters
            .and_then(|(a, _)| a.layer(&self.path))
            .is_some_and(|u| u.input() == d_input);
        let path = self.path_of("weight");
        let in_out = B::linear_weights_in_out();
        let stored = loader.linear(&path, [d_output, d_input], in_out, widen)?;
        let dtype = self
            .dtype
            .unwrap_or_else(|| default_float_dtype::<B>(&self.device));
        Some(match stored {
            LinearData::Packed(data) => Weight::Packed(self.packed(*data, dtype)),
            LinearData::OutIn(data) => Weight::Dense(self.dense_param(data, true)),
            LinearData::InOut(data) => Weight::Dense(self.dense_param(data, false)),
        })
    }

    /// A dense weight on the device, `[in, out]` (a transposed view of `[out, in]` data when
    /// `transposed`).
    fn dense_param(&self, data: TensorData, transposed: bool) -> Param<Tensor<B, 2>> {
        let elements = data.num_elements();
        let tensor: Tensor<B, 2> = self.upload(data);
        self.count_dense(elements, Some(tensor.dtype()));
        let tensor = if transposed {
            tensor.transpose()
        } else {
            tensor
        };
        Param::initialized(ParamId::new(), tensor)
    }

    /// A 2-D convolution called `name` (burn's layer), its `weight` and `bias` from this
    /// source.
    pub fn conv2d(&self, name: &str, config: &Conv2dConfig) -> Conv2d<B> {
        let at = self.at(name);
        let mut conv = config.init(&self.device);
        conv.weight = at.param_from("weight", conv.weight);
        conv.bias = conv.bias.map(|b| at.param_from("bias", b));
        conv
    }

    /// An embedding table called `name` (burn's layer), its `weight` from this source.
    pub fn embedding(&self, name: &str, n_embedding: usize, d_model: usize) -> Embedding<B> {
        let mut embedding = EmbeddingConfig::new(n_embedding, d_model).init(&self.device);
        embedding.weight = self.at(name).param_from("weight", embedding.weight);
        embedding
    }

    /// A LayerNorm called `name` (burn's layer), its `gamma` (`weight`) and `beta` (`bias`)
    /// from this source, under transformers' names.
    pub fn layer_norm(&self, name: &str, config: &LayerNormConfig) -> LayerNorm<B> {
        let at = self.at(name);
        let mut norm = config.init(&self.device);
        norm.gamma = at.param_from("weight", norm.gamma);
        norm.beta = norm.beta.map(|b| at.param_from("bias", b));
        norm
    }
}

/// The float dtype `device` gives host data by default.
fn default_float_dtype<B: Backend>(device: &B::Device) -> DType {
    Tensor::<B, 1>::from_data(TensorData::new(vec![0f32], [1]), device).dtype()
}
