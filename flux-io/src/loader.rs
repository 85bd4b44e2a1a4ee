//! Filling a burn module from a checkpoint through a key table.
//!
//! The module tree is walked with a [`ModuleMapper`]; each parameter's path (field names joined
//! by `.`, e.g. `double_blocks.3.img_attn.qkv.weight`; enum variant names are not part of it)
//! is looked up in a [`KeyMap`], which says
//! which stored tensor(s) make it. Parameters are replaced without ever running their random
//! initialisation, one tensor at a time, so loading never holds two copies of the weights.

use std::collections::BTreeSet;

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Tensor, TensorData};

use crate::kernels::backend::is_cpu;
use crate::nn::PackedSlot;
use crate::quant::{Fp8, PackedData, Quantization};
use crate::transpose::{transpose_2d, transpose_bytes};
use crate::weights::Raw;
use crate::{Error, KeyMap, Result, Source, Weights};

/// Options of a model crate's `load_with(path, &device, LoadConfig)`: the same two choices for
/// every model (the transformer adds its own, block offload).
#[derive(Debug, Clone)]
pub struct LoadConfig<C> {
    /// Use this config instead of the checkpoint's `config.json` or the one inferred from the
    /// tensor shapes (the shapes are still checked against it).
    pub config: Option<C>,
    /// Float dtype of the parameters (`F16`, `BF16` where the backend has them); `None`: the
    /// device's default float dtype. Each model keeps its numerically sensitive parts in f32.
    pub dtype: Option<DType>,
    /// How linear weights are held: quantized ones as stored (default), all dense, or dense
    /// ones quantized at load.
    pub quantization: Quantization,
}

impl<C> LoadConfig<C> {
    /// The [`LoadOptions`] a model crate loads with: this dtype and quantization, and every
    /// stored tensor accounted for (unexpected ones are an error).
    pub fn strict(&self) -> LoadOptions {
        LoadOptions {
            dtype: self.dtype,
            quantization: self.quantization,
            deny_unexpected: true,
        }
    }
}

impl<C> Default for LoadConfig<C> {
    fn default() -> Self {
        Self {
            config: None,
            dtype: None,
            quantization: Quantization::AsStored,
        }
    }
}

/// Options for [`load_module`].
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    /// The float dtype of the loaded parameters; `None`: the device's default float dtype.
    pub dtype: Option<DType>,
    /// How `Linear` weights are held ([`Quantization`]).
    pub quantization: Quantization,
    /// Fail on stored tensors that no parameter uses (and the key map does not ignore).
    pub deny_unexpected: bool,
}

/// Loads every float parameter of `module` from `weights` through `map`.
///
/// `Linear` weights are stored `[out, in]` (PyTorch) and burn keeps `[in, out]`: they are
/// transposed on the way in, and shape errors are reported in the checkpoint's convention.
/// Shapes that differ only by trailing 1s (a 1x1 convolution `[out, in, 1, 1]` loaded into a
/// linear layer, or back) are reshaped.
/// fp8 weights with a companion `<name>.scale_weight` tensor (ComfyUI's scaled fp8) are
/// multiplied by that scale.
///
/// `Linear` weights stored in a GGUF block type or fp8 stay quantized ([`crate::nn::Packed`])
/// unless [`Quantization::Dequantize`] is asked for; with [`Quantization::To`], dense ones are
/// quantized here, one tensor at a time.
///
/// # Errors
/// [`Error::MissingKeys`] naming every absent tensor, [`Error::ShapeMismatch`],
/// [`Error::UnexpectedKeys`] (when asked), [`Error::UnsupportedDtype`], [`Error::NonFinite`].
pub fn load_module<B: Backend, M: Module<B>>(
    module: M,
    weights: &Weights,
    map: &dyn KeyMap,
    device: &B::Device,
    options: LoadOptions,
) -> Result<M> {
    let mut loader = Loader::new(weights, map, device, options);
    let module = loader.load(module, &[]);
    loader.finish()?;
    Ok(module)
}

/// A loading session over one checkpoint: fills modules (or parts of one, under a path
/// prefix) and, at the end, reports missing and unexpected tensors over everything loaded.
/// [`load_module`] is one session with one module; block-level offload loads a transformer
/// block by block through one session.
pub struct Loader<'a, B: Backend> {
    weights: &'a Weights,
    map: &'a dyn KeyMap,
    device: &'a B::Device,
    options: LoadOptions,
    path: Vec<String>,
    containers: Vec<String>,
    used: BTreeSet<String>,
    missing: Vec<String>,
    /// The first error other than a missing key (missing keys are all collected).
    error: Option<Error>,
    /// A `Linear` weight just loaded packed, waiting for the layer's `Packed` fields.
    pending: PackedSlot<B>,
}

impl<'a, B: Backend> Loader<'a, B> {
    /// A session reading `weights` through `map` onto `device`.
    pub fn new(
        weights: &'a Weights,
        map: &'a dyn KeyMap,
        device: &'a B::Device,
        options: LoadOptions,
    ) -> Self {
        Self {
            weights,
            map,
            device,
            options,
            path: Vec::new(),
            containers: Vec::new(),
            used: BTreeSet::new(),
            missing: Vec::new(),
            error: None,
            pending: PackedSlot::new(),
        }
    }

    /// Fills `module`'s float parameters; `prefix` is its path inside the whole model (e.g.
    /// `["double_blocks", "3"]`), empty for the whole model. Parameters whose tensors are
    /// missing or bad are left as they were: check [`Loader::ok`] or [`Loader::finish`]
    /// before using the module.
    pub fn load<M: Module<B>>(&mut self, module: M, prefix: &[&str]) -> M {
        self.path = prefix.iter().map(|s| s.to_string()).collect();
        self.containers = vec![String::new(); prefix.len()];
        let module = module.map(self);
        self.path.clear();
        self.containers.clear();
        module
    }

    /// Whether everything loaded so far was found and valid.
    pub fn ok(&self) -> bool {
        self.missing.is_empty() && self.error.is_none()
    }

    /// Ends the session.
    ///
    /// # Errors
    /// [`Error::MissingKeys`] naming every absent tensor, else the first other error, else
    /// (when asked) [`Error::UnexpectedKeys`] for stored tensors nothing used.
    pub fn finish(self) -> Result<()> {
        if !self.missing.is_empty() {
            return Err(Error::MissingKeys(self.missing));
        }
        if let Some(e) = self.error {
            return Err(e);
        }
        if self.options.deny_unexpected {
            let unexpected: Vec<String> = self
                .weights
                .keys()
                .filter(|k| !self.used.contains(*k) && !self.map.ignored(k))
                .map(str::to_string)
                .collect();
            if !unexpected.is_empty() {
                return Err(Error::UnexpectedKeys(unexpected));
            }
        }
        Ok(())
    }
}

impl<B: Backend> Loader<'_, B> {
    /// Reads one stored tensor (fp8 scale applied), checking it is finite.
    fn read(&mut self, key: &str) -> Result<TensorData> {
        let mut data = self.weights.data(key)?;
        self.weights.release(key);
        self.used.insert(key.to_string());
        if let Some(s) = self.fp8_scale(key)? {
            let shape = data.shape.to_vec();
            let values = to_f32(data, key)?;
            data = TensorData::new(
                values.into_iter().map(|v| v * s).collect::<Vec<f32>>(),
                shape,
            );
        }
        Ok(data)
    }

    /// Builds the tensor for a parameter whose checkpoint-convention shape is `shape`.
    fn fetch(&mut self, path: &str, shape: &[usize]) -> Result<TensorData> {
        let source = self.map.source(path);
        let absent: Vec<String> = source
            .keys()
            .into_iter()
            .filter(|k| !self.weights.contains(k))
            .map(str::to_string)
            .collect();
        if !absent.is_empty() {
            self.missing.extend(absent);
            return Err(Error::MissingKeys(Vec::new()));
        }
        let (mut data, key) = match &source {
            Source::Key(k) => (self.read(k)?, k.clone()),
            Source::SwapHalves(k) => {
                let data = self.read(k)?;
                (swap_halves(data, k)?, k.clone())
            }
            Source::Concat(keys) => {
                let parts = keys
                    .iter()
                    .map(|k| self.read(k))
                    .collect::<Result<Vec<_>>>()?;
                (concat_rows(parts, keys)?, keys.join(" + "))
            }
        };
        if data.shape.as_slice() != shape && same_up_to_trailing_ones(&data.shape, shape) {
            // A 1x1 convolution stored `[out, in, 1, 1]` is the linear map `[out, in]` (and back).
            data = TensorData::new(to_f32(data, &key)?, shape.to_vec());
        }
        if data.shape.as_slice() != shape {
            return Err(Error::ShapeMismatch {
                key,
                expected: shape.to_vec(),
                found: data.shape.to_vec(),
            });
        }
        check_finite(&data, &key)?;
        Ok(data)
    }
}

/// A `Linear` weight as loaded: packed, dense `[out, in]` (the checkpoint's order), or dense
/// `[in, out]` (burn's order, written on the host for the CPU backends).
enum LinearWeight {
    Packed(Box<PackedData>),
    Dense(TensorData),
    DenseInOut(TensorData),
}

impl<B: Backend> Loader<'_, B> {
    /// A `Linear` weight `[rows, cols]` (checkpoint convention): packed when it is stored
    /// quantized or quantization at load is asked for, else dense.
    fn fetch_linear(&mut self, path: &str, rows: usize, cols: usize) -> Result<LinearWeight> {
        let quantization = self.options.quantization;
        if quantization != Quantization::Dequantize
            && let Source::Key(key) = self.map.source(path)
            && let Some(packed) = self.stored_packed(&key, rows, cols)?
        {
            return Ok(LinearWeight::Packed(Box::new(packed)));
        }
        let Quantization::To(ty) = quantization else {
            return self.fetch_dense_linear(path, rows, cols);
        };
        let data = self.fetch(path, &[rows, cols])?;
        let values = to_f32(data, path)?;
        Ok(match PackedData::quantize(ty, &values, rows, cols, path)? {
            Some(packed) => LinearWeight::Packed(Box::new(packed)),
            // Left dense (too small, or rows not whole blocks): the f32 values, exactly the
            // stored ones.
            None => dense_linear::<B>(TensorData::new(values, [rows, cols])),
        })
    }

    /// A dense `Linear` weight `[rows, cols]` (checkpoint convention) in its backend's order
    /// ([`dense_linear`]); on the CPU backends straight from the file's bytes when it stores
    /// the weight as a plain float tensor (one buffer per weight, as without the transpose).
    fn fetch_dense_linear(&mut self, path: &str, rows: usize, cols: usize) -> Result<LinearWeight> {
        if is_cpu::<B>()
            && let Source::Key(key) = self.map.source(path)
            && let Some(data) = self.stored_transposed(&key, rows, cols)?
        {
            return Ok(LinearWeight::DenseInOut(data));
        }
        self.fetch(path, &[rows, cols]).map(dense_linear::<B>)
    }

    /// `key` transposed to `[cols, rows]` from the stored bytes, if it is an unscaled
    /// safetensors F32, F16 or BF16 tensor of shape `[rows, cols]` (marked used, its pages
    /// released); checked finite as [`Self::fetch`] checks.
    fn stored_transposed(
        &mut self,
        key: &str,
        rows: usize,
        cols: usize,
    ) -> Result<Option<TensorData>> {
        let Some(Raw::Safetensors {
            dtype,
            bytes,
            shape,
        }) = self.weights.raw(key)
        else {
            return Ok(None);
        };
        let dtype = match dtype {
            safetensors::Dtype::F32 => DType::F32,
            safetensors::Dtype::F16 => DType::F16,
            safetensors::Dtype::BF16 => DType::BF16,
            _ => return Ok(None),
        };
        let scaled = self.scale_weight_key(key).is_some();
        if scaled || shape != [rows, cols] || bytes.len() != rows * cols * dtype.size() {
            return Ok(None);
        }
        let Some(data) = transpose_bytes(bytes, dtype, rows, cols) else {
            return Ok(None);
        };
        self.weights.release(key);
        self.used.insert(key.to_string());
        check_finite(&data, key)?;
        Ok(Some(data))
    }

    /// `key` packed as stored, if it is a GGUF block tensor or fp8 of shape `[rows, cols]`.
    fn stored_packed(&mut self, key: &str, rows: usize, cols: usize) -> Result<Option<PackedData>> {
        let packed = match self.weights.raw(key) {
            Some(Raw::Gguf { ty, bytes, shape }) if shape == [rows, cols] => {
                PackedData::from_gguf(ty, bytes, rows, cols, key)?
            }
            Some(Raw::Safetensors {
                dtype,
                bytes,
                shape,
            }) if shape == [rows, cols] => {
                let kind = match dtype {
                    safetensors::Dtype::F8_E4M3 => Fp8::E4M3,
                    safetensors::Dtype::F8_E5M2 => Fp8::E5M2,
                    _ => return Ok(None),
                };
                let scale = self.fp8_scale(key)?;
                PackedData::from_fp8(kind, bytes, rows, cols, scale.unwrap_or(1.0), key)?
            }
            _ => None,
        };
        if packed.is_some() {
            self.weights.release(key);
            self.used.insert(key.to_string());
        }
        Ok(packed)
    }

    /// `<name>.scale_weight` for the weight `key` = `<name>.weight`, if the checkpoint has it.
    fn scale_weight_key(&self, key: &str) -> Option<String> {
        key.strip_suffix(".weight")
            .map(|s| format!("{s}.scale_weight"))
            .filter(|k| self.weights.contains(k))
    }

    /// ComfyUI's `<name>.scale_weight` for the fp8 weight `key`, if stored (marked used).
    fn fp8_scale(&mut self, key: &str) -> Result<Option<f32>> {
        let Some(scale_key) = self.scale_weight_key(key) else {
            return Ok(None);
        };
        let scale = to_f32(self.weights.data(&scale_key)?, &scale_key)?;
        let &[s] = scale.as_slice() else {
            return Err(Error::ShapeMismatch {
                key: scale_key,
                expected: vec![1],
                found: vec![scale.len()],
            });
        };
        self.used.insert(scale_key);
        Ok(Some(s))
    }

    fn in_packed(&self) -> bool {
        self.containers.last().is_some_and(|c| c == "Struct:Packed")
    }
}

impl<B: Backend> ModuleMapper<B> for Loader<'_, B> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        // An enum's variant (e.g. resident or offloaded blocks) is how a model holds its
        // weights, not where a checkpoint stores them: it adds no path segment.
        if !container_type.starts_with("Enum:") {
            self.path.push(name.to_string());
            self.containers.push(container_type.to_string());
        }
    }

    fn exit_module(&mut self, name: &str, container_type: &str) {
        self.pending.exit_module(name, container_type);
        if !container_type.starts_with("Enum:") {
            self.path.pop();
            self.containers.pop();
        }
    }

    fn map_int<const D: usize>(
        &mut self,
        param: Param<Tensor<B, D, Int>>,
    ) -> Param<Tensor<B, D, Int>> {
        if !self.in_packed() {
            return param;
        }
        let field = self.path.last().map(String::as_str).unwrap_or_default();
        self.pending.int(field, param)
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        if self
            .containers
            .last()
            .is_some_and(|c| c == "Struct:LoraAdapter")
        {
            // Run-time LoRA updates are attached after loading (`crate::lora`), never read
            // from the base checkpoint.
            return param;
        }
        if self.in_packed() {
            let field = self.path.last().map(String::as_str).unwrap_or_default();
            return self.pending.float(field, param);
        }
        let path = self.path.join(".");
        let linear_weight = D == 2
            && self.path.last().is_some_and(|n| n == "weight")
            && self.containers.last().is_some_and(|c| c == "Struct:Linear");
        let mut shape = param.lazy_shape().dims::<D>().to_vec();
        if linear_weight {
            shape.reverse();
        }
        let fetched = if linear_weight {
            self.fetch_linear(&path, shape[0], shape[1])
        } else {
            self.fetch(&path, &shape).map(LinearWeight::Dense)
        };
        let (data, in_out) = match fetched {
            Ok(LinearWeight::Dense(data)) => (data, false),
            Ok(LinearWeight::DenseInOut(data)) => (data, true),
            Ok(LinearWeight::Packed(packed)) => {
                let weight = self.pending.fill(*packed, self.options.dtype, self.device);
                return Param::initialized(param.id, weight);
            }
            Err(Error::MissingKeys(_)) => return param,
            Err(e) => {
                self.error.get_or_insert(e);
                return param;
            }
        };
        let mut tensor: Tensor<B, D> = match self.options.dtype {
            Some(dtype) => Tensor::from_data(data, (self.device, dtype)),
            None => Tensor::from_data(data, self.device),
        };
        if linear_weight && !in_out {
            // The checkpoint's `[out, in]` as burn's `[in, out]` view (see `dense_linear`).
            tensor = tensor.transpose();
        }
        Param::initialized(param.id, tensor)
    }
}

/// A dense `Linear` weight `[out, in]` (checkpoint convention) in the order its backend
/// multiplies fastest: burn's `[in, out]` written on the host for the CPU backends (a
/// transposed view would reach `gemm` column-major: see `transpose`), the checkpoint's order
/// for the GPU backends (held under a transposed view; their matmuls take either layout).
fn dense_linear<B: Backend>(data: TensorData) -> LinearWeight {
    if is_cpu::<B>() {
        LinearWeight::DenseInOut(transpose_2d(data))
    } else {
        LinearWeight::Dense(data)
    }
}

/// [`Error::NonFinite`] if `data` holds NaN or infinite values. The float types are read
/// as bit patterns (all exponent bits set = not finite): widening each value to f32 took
/// about 1.3 s of a 2.7 s `medium` load, the bit test about 0.4 s.
fn check_finite(data: &TensorData, key: &str) -> Result<()> {
    fn any_all_ones<const N: usize>(bytes: &[u8], mask: u32) -> bool {
        bytes.chunks_exact(N).any(|b| {
            let mut word = [0u8; 4];
            word[..N].copy_from_slice(b);
            u32::from_le_bytes(word) & mask == mask
        })
    }
    let bytes = data.as_bytes();
    let non_finite = match data.dtype {
        DType::F32 => any_all_ones::<4>(bytes, 0x7f80_0000),
        DType::BF16 => any_all_ones::<2>(bytes, 0x7f80),
        DType::F16 => any_all_ones::<2>(bytes, 0x7c00),
        _ => !data.iter::<f32>().all(f32::is_finite),
    };
    if non_finite {
        Err(Error::NonFinite(key.to_string()))
    } else {
        Ok(())
    }
}

fn to_f32(data: TensorData, key: &str) -> Result<Vec<f32>> {
    data.convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| Error::BadTensor {
            key: key.to_string(),
            reason: format!("{e:?}"),
        })
}

/// Whether two shapes differ only by trailing dimensions of size 1.
fn same_up_to_trailing_ones(a: &[usize], b: &[usize]) -> bool {
    fn trim(s: &[usize]) -> &[usize] {
        let end = s.iter().rposition(|&d| d != 1).map_or(0, |i| i + 1);
        &s[..end]
    }
    trim(a) == trim(b)
}

/// Swaps the two halves of a tensor along dimension 0.
fn swap_halves(data: TensorData, key: &str) -> Result<TensorData> {
    let shape = data.shape.to_vec();
    if shape.first().is_none_or(|rows| rows % 2 != 0) {
        return Err(Error::BadTensor {
            key: key.to_string(),
            reason: format!("shape {shape:?} cannot be split into two halves along dim 0"),
        });
    }
    let values = to_f32(data, key)?;
    let half = values.len() / 2;
    let swapped: Vec<f32> = values[half..]
        .iter()
        .chain(&values[..half])
        .copied()
        .collect();
    Ok(TensorData::new(swapped, shape))
}

/// Concatenates tensors along dimension 0 (all other dimensions must agree).
fn concat_rows(parts: Vec<TensorData>, keys: &[String]) -> Result<TensorData> {
    let tail = parts[0].shape[1..].to_vec();
    let mut rows = 0;
    let mut values = Vec::new();
    for (part, key) in parts.into_iter().zip(keys) {
        if part.shape[1..] != tail[..] {
            let mut expected = vec![part.shape[0]];
            expected.extend(&tail);
            return Err(Error::ShapeMismatch {
                key: key.clone(),
                expected,
                found: part.shape.to_vec(),
            });
        }
        rows += part.shape[0];
        values.extend(to_f32(part, key)?);
    }
    let mut shape = vec![rows];
    shape.extend(tail);
    Ok(TensorData::new(values, shape))
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::{bf16, f16};

    #[test]
    fn non_finite_values_are_found_in_every_float_type() {
        let finite = [0.0f32, -0.0, 1.5, -3.0e4, 6.0e4, 1.0e-8];
        let bad = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY];
        let check = |values: &[f32]| {
            let f32s = TensorData::new(values.to_vec(), [values.len()]);
            let bf16s: Vec<bf16> = values.iter().map(|&v| bf16::from_f32(v)).collect();
            let f16s: Vec<f16> = values.iter().map(|&v| f16::from_f32(v)).collect();
            let f64s: Vec<f64> = values.iter().map(|&v| f64::from(v)).collect();
            [
                TensorData::new(bf16s, [values.len()]),
                TensorData::new(f16s, [values.len()]),
                TensorData::new(f64s, [values.len()]),
                f32s,
            ]
            .map(|data| check_finite(&data, "w").is_ok())
        };
        assert_eq!(check(&finite), [true; 4]);
        for b in bad {
            let mut values = finite.to_vec();
            values.insert(3, b);
            assert_eq!(check(&values), [false; 4], "{b}");
        }
        // The largest finite values are finite (all exponent bits but one set).
        let largest = TensorData::new(vec![f32::MAX, f32::MIN], [2]);
        assert!(check_finite(&largest, "w").is_ok());
        assert!(check_finite(&TensorData::new(vec![bf16::MAX, bf16::MIN], [2]), "w").is_ok());
        assert!(check_finite(&TensorData::new(vec![f16::MAX, f16::MIN], [2]), "w").is_ok());
    }
}
