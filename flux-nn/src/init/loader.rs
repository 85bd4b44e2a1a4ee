//! Reading a checkpoint's tensors for the layers being built: [`Loader`], one loading session
//! over one checkpoint, non-generic over the backend (it hands out host data; [`super::Init`]
//! puts it on the device).

use std::cell::RefCell;
use std::collections::BTreeSet;

use burn::tensor::{Bytes, DType, TensorData};
use flux_io::{Error, KeyMap, Raw, Result, Source, Weights};
use flux_kernels::transpose::transposed;
use flux_lora::{Adapters, LoraMode};

use crate::quant::{Fp8, PackedData, Quantization};

/// Options of a model crate's `load_with(path, &device, LoadConfig)`: the same choices for
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
    /// LoRA updates to build the model with (resolved against the model's targets).
    pub adapters: Option<Adapters>,
    /// How the LoRA updates are applied: merged into the weights, or held beside them.
    pub lora_mode: LoraMode,
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
            adapters: None,
            lora_mode: LoraMode::default(),
        }
    }
}

/// Options of a [`Loader`].
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    /// The float dtype of the loaded parameters; `None`: the device's default float dtype.
    pub dtype: Option<DType>,
    /// How linear weights are held ([`Quantization`]).
    pub quantization: Quantization,
    /// Fail on stored tensors that no parameter uses (and the key map does not ignore).
    pub deny_unexpected: bool,
}

/// A linear weight as read for a layer: quantized, or dense in the layout asked for.
pub(crate) enum LinearData {
    /// Quantized: stays quantized on the device.
    Packed(Box<PackedData>),
    /// Dense, `[out, in]` (the checkpoint's order).
    OutIn(TensorData),
    /// Dense, `[in, out]` (burn's order, written on the host).
    InOut(TensorData),
}

/// One loading session over one checkpoint: the layers of a model (or of several parts of
/// one, block by block) are built from it through [`super::Init::load`], and at the end
/// [`Loader::finish`] reports what went wrong over everything built: every missing tensor by
/// name, else the first other error, else unexpected tensors.
pub struct Loader<'a> {
    weights: &'a Weights,
    map: &'a dyn KeyMap,
    options: LoadOptions,
    state: RefCell<State>,
}

#[derive(Default)]
struct State {
    used: BTreeSet<String>,
    missing: Vec<String>,
    /// The first error other than a missing key (missing keys are all collected).
    error: Option<Error>,
}

impl<'a> Loader<'a> {
    /// A session reading `weights` through `map`.
    pub fn new(weights: &'a Weights, map: &'a dyn KeyMap, options: LoadOptions) -> Self {
        Self {
            weights,
            map,
            options,
            state: RefCell::default(),
        }
    }

    /// Whether everything read so far was found and valid.
    pub fn ok(&self) -> bool {
        let state = self.state.borrow();
        state.missing.is_empty() && state.error.is_none()
    }

    /// Ends the session (what it reports is reported once).
    ///
    /// # Errors
    /// [`Error::MissingKeys`] naming every absent tensor, else the first other error, else
    /// (when asked) [`Error::UnexpectedKeys`] for stored tensors nothing used.
    pub fn finish(&self) -> Result<()> {
        let state = self.state.take();
        if !state.missing.is_empty() {
            return Err(Error::MissingKeys(state.missing));
        }
        if let Some(e) = state.error {
            return Err(e);
        }
        if self.options.deny_unexpected {
            let unexpected: Vec<String> = self
                .weights
                .keys()
                .filter(|k| !state.used.contains(*k) && !self.map.ignored(k))
                .map(str::to_string)
                .collect();
            if !unexpected.is_empty() {
                return Err(Error::UnexpectedKeys(unexpected));
            }
        }
        Ok(())
    }

    /// The options the session reads with.
    pub(crate) fn options(&self) -> LoadOptions {
        self.options
    }

    /// Records an error (the first one is reported).
    pub(crate) fn fail(&self, error: Error) {
        let mut state = self.state.borrow_mut();
        match error {
            Error::MissingKeys(keys) => state.missing.extend(keys),
            e => {
                state.error.get_or_insert(e);
            }
        }
    }

    /// The tensor for the parameter at `path` whose checkpoint-convention shape is `shape`,
    /// or `None` (the problem recorded).
    pub(crate) fn tensor(&self, path: &str, shape: &[usize]) -> Option<TensorData> {
        self.fetch(path, shape).map_err(|e| self.fail(e)).ok()
    }

    /// The weight of the linear layer whose weight parameter is at `path`, `[rows, cols]` in
    /// the checkpoint's convention (`[out, in]`); `in_out`: dense weights are wanted `[in,
    /// out]`. A stored weight narrower than `cols` is zero-padded when `widen` allows it (a
    /// control LoRA's wider `img_in`). `None` when it failed (the problem recorded).
    pub(crate) fn linear(
        &self,
        path: &str,
        [rows, cols]: [usize; 2],
        in_out: bool,
        widen: bool,
    ) -> Option<LinearData> {
        let stored_cols = if widen {
            match self.stored_shape(path) {
                Some([r, c]) if r == rows && c < cols => c,
                _ => cols,
            }
        } else {
            cols
        };
        let read = if stored_cols < cols {
            // Widened: dense, with zeros for the new inputs.
            self.fetch(path, &[rows, stored_cols])
                .and_then(|data| pad_columns(data, cols, path))
                .map(|data| dense(data, in_out))
        } else {
            self.fetch_linear(path, rows, cols, in_out)
        };
        read.map_err(|e| self.fail(e)).ok()
    }

    /// The stored `[rows, cols]` of a plain-key 2-D parameter, if the checkpoint has it.
    fn stored_shape(&self, path: &str) -> Option<[usize; 2]> {
        let Source::Key(key) = self.map.source(path) else {
            return None;
        };
        match self.weights.shape(&key).ok()?.as_slice() {
            &[rows, cols] => Some([rows, cols]),
            _ => None,
        }
    }
}

impl Loader<'_> {
    /// Reads one stored tensor (fp8 scale applied), marking it used.
    fn read(&self, key: &str) -> Result<TensorData> {
        let mut data = self.weights.data(key)?;
        self.weights.release(key);
        self.state.borrow_mut().used.insert(key.to_string());
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

    /// The tensor for a parameter whose checkpoint-convention shape is `shape`, checked finite.
    fn fetch(&self, path: &str, shape: &[usize]) -> Result<TensorData> {
        let source = self.map.source(path);
        let absent: Vec<String> = source
            .keys()
            .into_iter()
            .filter(|k| !self.weights.contains(k))
            .map(str::to_string)
            .collect();
        if !absent.is_empty() {
            return Err(Error::MissingKeys(absent));
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

    /// A linear weight `[rows, cols]` (checkpoint convention): packed when it is stored
    /// quantized or quantization at load is asked for, else dense.
    fn fetch_linear(
        &self,
        path: &str,
        rows: usize,
        cols: usize,
        in_out: bool,
    ) -> Result<LinearData> {
        let quantization = self.options.quantization;
        if quantization != Quantization::Dequantize
            && let Source::Key(key) = self.map.source(path)
            && let Some(packed) = self.stored_packed(&key, rows, cols)?
        {
            return Ok(LinearData::Packed(Box::new(packed)));
        }
        let Quantization::To(ty) = quantization else {
            return self.fetch_dense_linear(path, rows, cols, in_out);
        };
        let data = self.fetch(path, &[rows, cols])?;
        let values = to_f32(data, path)?;
        Ok(match PackedData::quantize(ty, &values, rows, cols, path)? {
            Some(packed) => LinearData::Packed(Box::new(packed)),
            // Left dense (too small, or rows not whole blocks): the f32 values, exactly the
            // stored ones.
            None => dense(TensorData::new(values, [rows, cols]), in_out),
        })
    }

    /// A dense linear weight `[rows, cols]` (checkpoint convention) in the layout asked for;
    /// `[in, out]` straight from the file's bytes when it stores the weight as a plain float
    /// tensor (one buffer per weight, as without the transpose).
    fn fetch_dense_linear(
        &self,
        path: &str,
        rows: usize,
        cols: usize,
        in_out: bool,
    ) -> Result<LinearData> {
        if in_out
            && let Source::Key(key) = self.map.source(path)
            && let Some(data) = self.stored_transposed(&key, rows, cols)?
        {
            return Ok(LinearData::InOut(data));
        }
        self.fetch(path, &[rows, cols]).map(|d| dense(d, in_out))
    }

    /// `key` transposed to `[cols, rows]` from the stored bytes, if it is an unscaled
    /// safetensors F32, F16 or BF16 tensor of shape `[rows, cols]` (marked used, its pages
    /// released); checked finite as [`Self::fetch`] checks.
    fn stored_transposed(&self, key: &str, rows: usize, cols: usize) -> Result<Option<TensorData>> {
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
        let data = transpose_bytes(bytes, dtype, rows, cols);
        self.weights.release(key);
        self.state.borrow_mut().used.insert(key.to_string());
        check_finite(&data, key)?;
        Ok(Some(data))
    }

    /// `key` packed as stored, if it is a GGUF block tensor or fp8 of shape `[rows, cols]`.
    fn stored_packed(&self, key: &str, rows: usize, cols: usize) -> Result<Option<PackedData>> {
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
            self.state.borrow_mut().used.insert(key.to_string());
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
    fn fp8_scale(&self, key: &str) -> Result<Option<f32>> {
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
        self.state.borrow_mut().used.insert(scale_key);
        Ok(Some(s))
    }
}

/// A dense `[out, in]` weight in the layout asked for (`in_out`: transposed on the host).
fn dense(data: TensorData, in_out: bool) -> LinearData {
    if !in_out {
        return LinearData::OutIn(data);
    }
    let &[rows, cols] = data.shape.as_slice() else {
        return LinearData::OutIn(data);
    };
    LinearData::InOut(transpose_bytes(data.as_bytes(), data.dtype, rows, cols))
}

/// The row-major `[rows, cols]` matrix of `dtype` values in `bytes`, transposed to
/// `[cols, rows]` (the elements moved as plain words of their size).
fn transpose_bytes(bytes: &[u8], dtype: DType, rows: usize, cols: usize) -> TensorData {
    // Output held as whole elements, so the backend takes the buffer as it is (aligned).
    let out = match dtype.size() {
        1 => Bytes::from_elems(transposed::<u8>(bytes, rows, cols)),
        2 => Bytes::from_elems(transposed::<u16>(bytes, rows, cols)),
        4 => Bytes::from_elems(transposed::<u32>(bytes, rows, cols)),
        _ => Bytes::from_elems(transposed::<u64>(bytes, rows, cols)),
    };
    TensorData::from_bytes(out, [cols, rows], dtype)
}

/// `[rows, c]` values widened to `[rows, cols]` with zeros in the new columns (f32).
fn pad_columns(data: TensorData, cols: usize, key: &str) -> Result<TensorData> {
    let &[rows, c] = data.shape.as_slice() else {
        unreachable!("fetched as 2-D")
    };
    let values = to_f32(data, key)?;
    let mut out = vec![0f32; rows * cols];
    for (dst, src) in out.chunks_exact_mut(cols).zip(values.chunks_exact(c)) {
        dst[..c].copy_from_slice(src);
    }
    Ok(TensorData::new(out, [rows, cols]))
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
