//! [`Packed`]: a quantized weight held on the device as integer codes and factors, and its
//! dequantization with plain tensor ops (so every backend runs it).

use burn::module::{Module, Param, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, FloatDType, Int, Shape, Tensor, TensorData};

use crate::kernels::backend::{host_threads, is_cpu};
use crate::quant::{HostPacked, PackedData};

/// A `[rows, cols]` weight (PyTorch's `[out, in]`) held quantized: `x = s·(u − Z) + o` per
/// value, or `x = codebook[u]·s` (fp8); see `flux_io::gguf` for the GGUF types this covers.
///
/// Which parts exist is read from the shapes, so that a model is built before its checkpoint
/// says how its weights are stored and the loader only fills parameters in. An absent part is a
/// one-value placeholder (never an empty tensor: CUDA refuses empty copies and launches):
/// - `codes`: `[rows, cols / 32, bits]` words of `bits`-bit codes `u` (`bits` ≥ 2);
///   `[1, 1, 1]`: no packed weight, the layer is dense;
/// - `factors`: `[rows, groups, k]` (f16 or f32): the scale `s` of each group of
///   `cols / groups` values, and with `k = 2` its offset `o`. Types without an offset have
///   signed codes: `Z = 2^(bits−1)`; the others `Z = 0`;
/// - `sub`: `[rows, subs / 4, k]` words of 8-bit K-quant sub-block factors (`+128`; at least
///   two words per row): scales multiplying `s`, and with `k = 2` mins multiplying `o`;
///   `[1, 1, 1]`: none;
/// - `codebook`: `[256]` values of fp8 codes; `[1]`: none.
#[derive(Module, Debug)]
pub struct Packed<B: Backend> {
    codes: Param<Tensor<B, 3, Int>>,
    factors: Param<Tensor<B, 3>>,
    sub: Param<Tensor<B, 3, Int>>,
    codebook: Param<Tensor<B, 1>>,
}

/// Whether the [`Packed`] field `field` of shape `dims` holds data rather than a placeholder
/// (`factors` holds data whenever `codes` does).
pub(crate) fn holds_data(field: &str, dims: &[usize]) -> bool {
    match field {
        "codes" => dims.get(2).is_some_and(|&bits| bits >= 2),
        "sub" => dims.get(1).is_some_and(|&words| words >= 2),
        "codebook" => dims.first() == Some(&256),
        _ => true,
    }
}

/// Follows a walk of a module tree (a `ModuleVisitor` or `ModuleMapper`) to tell real
/// parameters from the placeholders of [`Packed`] (a dense layer's, or a packed layer's absent
/// parts) and of [`super::LoraAdapter`] (a layer without run-time LoRA updates), which walks
/// that copy or count weights skip.
#[derive(Debug, Default)]
pub(crate) struct PackedTracker {
    in_packed: bool,
    layer_packed: bool,
    in_lora: bool,
    layer_lora: bool,
    field: String,
}

impl PackedTracker {
    pub(crate) fn enter_module(&mut self, name: &str, container_type: &str) {
        if container_type == "Struct:Linear" {
            match name {
                "packed" => {
                    self.in_packed = true;
                    self.layer_packed = false;
                }
                "lora" => {
                    self.in_lora = true;
                    self.layer_lora = false;
                }
                _ => {}
            }
        }
        self.field = name.to_string();
    }

    pub(crate) fn exit_module(&mut self, name: &str, container_type: &str) {
        if container_type == "Struct:Linear" {
            match name {
                "packed" => self.in_packed = false,
                "lora" => self.in_lora = false,
                _ => {}
            }
        }
    }

    /// What the parameter of shape `dims` just reached is.
    pub(crate) fn visit(&mut self, dims: &[usize]) -> Visited {
        if self.in_lora {
            if self.field == "down" {
                self.layer_lora = super::holds_adapter(dims);
            }
            return if self.layer_lora {
                Visited::Adapter
            } else {
                Visited::Placeholder
            };
        }
        if !self.in_packed {
            return Visited::Dense;
        }
        if self.field == "codes" {
            self.layer_packed = holds_data("codes", dims);
            if self.layer_packed {
                return Visited::PackedLayer;
            }
        }
        if self.layer_packed && holds_data(&self.field, dims) {
            Visited::Packed
        } else {
            Visited::Placeholder
        }
    }
}

/// What [`PackedTracker::visit`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Visited {
    /// A parameter outside any `Packed`.
    Dense,
    /// The codes of a packed layer (its first part).
    PackedLayer,
    /// Another part of a packed layer.
    Packed,
    /// A part of a layer's run-time LoRA updates.
    Adapter,
    /// A placeholder: no data.
    Placeholder,
}

pub(crate) fn placeholder_int<B: Backend, const D: usize>(
    device: &B::Device,
) -> Param<Tensor<B, D, Int>> {
    Param::uninitialized(
        ParamId::new(),
        |device, _| Tensor::from_data(TensorData::new(vec![0i32], [1; D]), device),
        device.clone(),
        false,
        Shape::new([1; D]),
    )
}

pub(crate) fn placeholder_float<B: Backend, const D: usize>(
    device: &B::Device,
) -> Param<Tensor<B, D>> {
    Param::uninitialized(
        ParamId::new(),
        |device, _| Tensor::from_data(TensorData::new(vec![0f32], [1; D]), device),
        device.clone(),
        false,
        Shape::new([1; D]),
    )
}

impl<B: Backend> Packed<B> {
    /// No packed weight (a dense layer): one-value placeholders, allocated only if something
    /// materialises them.
    pub(crate) fn absent(device: &B::Device) -> Self {
        Self {
            codes: placeholder_int(device),
            factors: placeholder_float(device),
            sub: placeholder_int(device),
            codebook: placeholder_float(device),
        }
    }

    /// A packed weight from its parts as a module walk finds them (see [`super::dequantize`]).
    pub(crate) fn from_parts(
        codes: Tensor<B, 3, Int>,
        factors: Tensor<B, 3>,
        sub: Tensor<B, 3, Int>,
        codebook: Tensor<B, 1>,
    ) -> Self {
        Self {
            codes: Param::initialized(ParamId::new(), codes),
            factors: Param::initialized(ParamId::new(), factors),
            sub: Param::initialized(ParamId::new(), sub),
            codebook: Param::initialized(ParamId::new(), codebook),
        }
    }

    /// Whether a packed weight is held.
    pub fn is_present(&self) -> bool {
        holds_data("codes", &self.codes.lazy_shape().dims::<3>())
    }

    /// `[rows, cols]` of the weight (PyTorch's `[out, in]`), if one is held.
    pub fn shape(&self) -> Option<[usize; 2]> {
        let [rows, chunks, _] = self.codes.lazy_shape().dims();
        self.is_present().then_some([rows, chunks * 32])
    }

    fn has_sub(&self) -> bool {
        holds_data("sub", &self.sub.lazy_shape().dims::<3>())
    }

    fn has_codebook(&self) -> bool {
        holds_data("codebook", &self.codebook.lazy_shape().dims::<1>())
    }

    /// Bytes held on the device (codes and factors).
    pub fn num_bytes(&self) -> usize {
        if !self.is_present() {
            return 0;
        }
        let factors = self.factors.val();
        let mut bytes = 4 * self.codes.lazy_shape().num_elements()
            + factors.shape().num_elements() * factors.dtype().size();
        if self.has_sub() {
            bytes += 4 * self.sub.lazy_shape().num_elements();
        }
        if self.has_codebook() {
            bytes += 4 * 256;
        }
        bytes
    }

    /// The parameters of a packed weight on `device` (what the loader puts in place of the
    /// placeholders).
    pub(crate) fn upload(data: PackedData, device: &B::Device) -> PackedParts<B> {
        let chunks = data.cols / 32;
        let codes = TensorData::new(data.codes, [data.rows, chunks, data.bits]);
        // Scales are f16 in the GGUF types; backends without f16 (burn-ndarray) hold f32.
        let dtype = if B::supports_dtype(device, data.scale.dtype) {
            data.scale.dtype
        } else {
            burn::tensor::DType::F32
        };
        let groups = data.scale.shape[1];
        let factors = match data.offset {
            // Scale and offset side by side: [rows, groups, 2].
            Some(offset) => {
                let width = data.scale.dtype.size();
                let (s, o) = (data.scale.as_bytes(), offset.as_bytes());
                let bytes: Vec<u8> = s
                    .chunks_exact(width)
                    .zip(o.chunks_exact(width))
                    .flat_map(|(a, b)| a.iter().chain(b).copied())
                    .collect();
                TensorData::from_bytes_vec(bytes, vec![data.rows, groups, 2], data.scale.dtype)
            }
            None => {
                let (bytes, dt) = (data.scale.as_bytes().to_vec(), data.scale.dtype);
                TensorData::from_bytes_vec(bytes, vec![data.rows, groups, 1], dt)
            }
        };
        let sub = data.sub.map(|(words, k)| {
            let n = words.len() / (data.rows * k);
            Tensor::from_data(TensorData::new(words, [data.rows, n, k]), device)
        });
        PackedParts {
            codes: Tensor::from_data(codes, device),
            factors: Tensor::from_data(factors, (device, dtype)),
            sub,
            codebook: data
                .codebook
                .map(|c| Tensor::from_data(TensorData::new(c, [256]), device)),
        }
    }

    /// The weight, `[rows, cols]`, in f32 (exactly gguf-py's values on backends that round
    /// every op, as the CPU backends do). On the CPU backends it is computed on the host
    /// threads; elsewhere with tensor ops on the device.
    ///
    /// # Panics
    /// If no packed weight is held ([`Packed::is_present`]).
    pub fn dequantize(&self) -> Tensor<B, 2> {
        assert!(self.is_present(), "dequantize: no packed weight");
        if is_cpu::<B>() {
            self.dequantize_host(false)
        } else {
            self.dequantize_ops()
        }
    }

    /// The weight transposed, `[cols, rows]` (burn's `[in, out]`), in f32: what
    /// [`super::Linear`] multiplies by. On the CPU backends it is written transposed by the
    /// host threads, so the matmul gets the same contiguous layout as a dense layer.
    pub(crate) fn dequantize_transposed(&self) -> Tensor<B, 2> {
        if is_cpu::<B>() {
            self.dequantize_host(true)
        } else {
            self.dequantize_ops().transpose()
        }
    }

    /// The packed parts read back as host vectors, for the host paths.
    fn host_parts(&self) -> HostParts {
        let ints = |t: Tensor<B, 3, Int>| -> Vec<i32> {
            t.into_data()
                .convert::<i32>()
                .into_vec()
                .expect("i32 after convert")
        };
        let floats = |data: TensorData| -> Vec<f32> {
            data.convert::<f32>().into_vec().expect("f32 after convert")
        };
        let codes = self.codes.val();
        let [rows, chunks, bits] = codes.dims();
        let factors = self.factors.val();
        let [_, groups, k] = factors.dims();
        HostParts {
            rows,
            cols: chunks * 32,
            bits,
            codes: ints(codes),
            factors: floats(factors.into_data()),
            groups,
            k,
            sub: self.has_sub().then(|| {
                let sub = self.sub.val();
                let ks = sub.dims()[2];
                (ints(sub), ks)
            }),
            codebook: self
                .has_codebook()
                .then(|| floats(self.codebook.val().into_data())),
        }
    }

    /// [`Packed::dequantize`] on the host threads (`transposed`: `[cols, rows]`).
    fn dequantize_host(&self, transposed: bool) -> Tensor<B, 2> {
        let device = self.codes.val().device();
        let parts = self.host_parts();
        let host = parts.view();
        let threads = host_threads::<B>();
        let (values, shape) = if transposed {
            (
                host.dequantize_transposed(threads),
                [parts.cols, parts.rows],
            )
        } else {
            (host.dequantize(threads), [parts.rows, parts.cols])
        };
        Tensor::from_data(
            TensorData::new(values, shape),
            (&device, burn::tensor::DType::F32),
        )
    }

    /// `x Wᵀ` computed from the packed form on the host threads, without a whole f32 copy of
    /// `W`, on the CPU backends: at most [`FEW_ROWS`] input rows (the modulation layers' one
    /// vector per image, any dtype) by dotting each decoded weight row with them; more f32
    /// rows by dequantizing tiles of weight rows into per-thread buffers that `gemm` multiplies
    /// while they are in cache. `None` elsewhere (GPU backends; half-precision inputs with many
    /// rows), where the caller dequantizes and multiplies.
    ///
    /// # Shapes
    /// - x: `[..., cols]` -> `[..., rows]` (f32)
    pub(crate) fn matmul_host<const D: usize>(&self, x: &Tensor<B, D>) -> Option<Tensor<B, D>> {
        let dims = x.dims();
        let m: usize = dims[..D - 1].iter().product();
        let few = m <= FEW_ROWS;
        if !is_cpu::<B>() || !(few || (TILED && x.dtype() == burn::tensor::DType::F32)) {
            return None;
        }
        let parts = self.host_parts();
        let values: Vec<f32> = x
            .clone()
            .into_data()
            .convert::<f32>()
            .into_vec()
            .expect("f32 after convert");
        let threads = host_threads::<B>();
        let y = if few {
            parts.view().matmul_few(&values, m, threads)
        } else {
            tiled(&parts.view(), &values, m, threads)
        };
        let mut shape = dims;
        shape[D - 1] = parts.rows;
        Some(Tensor::from_data(
            TensorData::new(y, shape),
            (&x.device(), burn::tensor::DType::F32),
        ))
    }

    /// [`Packed::dequantize`] with tensor ops (shifts, masks, gathers: every backend has
    /// them).
    fn dequantize_ops(&self) -> Tensor<B, 2> {
        let codes = self.codes.val();
        let [rows, chunks, bits] = codes.dims();
        let cols = chunks * 32;
        let u = unpack(codes, bits);
        let f32 = FloatDType::F32;
        let factors = self.factors.val().cast(f32);
        let [_, groups, k] = factors.dims();
        let factor = |i: usize| {
            factors
                .clone()
                .slice([0..rows, 0..groups, i..i + 1])
                .reshape([rows, groups])
        };
        let scale = factor(0);
        if self.has_codebook() {
            let n = rows * cols;
            let values = self
                .codebook
                .val()
                .cast(f32)
                .select(0, u.reshape([n]))
                .reshape([rows, groups, cols / groups]);
            return (values * scale.unsqueeze_dim::<3>(2)).reshape([rows, cols]);
        }
        let with_offset = k == 2;
        let u = if with_offset {
            u
        } else {
            u.sub_scalar(1i64 << (bits - 1))
        };
        let (mut scale, mut offset) = (scale, with_offset.then(|| factor(1)));
        if self.has_sub() {
            let sub = self.sub.val();
            let [_, words, k] = sub.dims();
            let subs = |i: usize| {
                let w = sub
                    .clone()
                    .slice([0..rows, 0..words, i..i + 1])
                    .reshape([rows, words]);
                unpack_bytes(w).sub_scalar(128).float().cast(f32)
            };
            let n = words * 4;
            scale = repeat_each(scale, n / groups) * subs(0);
            if k == 2 {
                offset = offset.map(|o| repeat_each(o, n / groups) * subs(1));
            }
        }
        let groups = scale.dims()[1];
        let q = u.float().cast(f32).reshape([rows, groups, cols / groups]);
        let x = q * scale.unsqueeze_dim::<3>(2);
        let x = match offset {
            Some(o) => x + o.unsqueeze_dim::<3>(2),
            None => x,
        };
        x.reshape([rows, cols])
    }
}

/// Input rows up to which [`Packed::matmul_host`] dots decoded weight rows with the inputs
/// (above it, tiles and `gemm`).
const FEW_ROWS: usize = 8;

/// Whether the tiled host product is compiled in (it needs `gemm`, which comes with the CPU
/// backends' features).
const TILED: bool = cfg!(any(feature = "flex", feature = "ndarray"));

#[cfg(any(feature = "flex", feature = "ndarray"))]
fn tiled(host: &HostPacked<'_>, x: &[f32], m: usize, threads: usize) -> Vec<f32> {
    host.matmul(x, m, threads)
}

#[cfg(not(any(feature = "flex", feature = "ndarray")))]
fn tiled(_: &HostPacked<'_>, _: &[f32], _: usize, _: usize) -> Vec<f32> {
    unreachable!("the tiled product needs a CPU backend feature")
}

/// A packed weight's parts read back to the host.
struct HostParts {
    rows: usize,
    cols: usize,
    bits: usize,
    codes: Vec<i32>,
    factors: Vec<f32>,
    groups: usize,
    k: usize,
    sub: Option<(Vec<i32>, usize)>,
    codebook: Option<Vec<f32>>,
}

impl HostParts {
    fn view(&self) -> HostPacked<'_> {
        HostPacked {
            rows: self.rows,
            cols: self.cols,
            bits: self.bits,
            codes: &self.codes,
            factors: &self.factors,
            groups: self.groups,
            k: self.k,
            sub: self.sub.as_ref().map(|(w, ks)| (w.as_slice(), *ks)),
            codebook: self.codebook.as_deref(),
        }
    }
}

/// What [`Packed::upload`] made: each part on the device, `None` where the type has none.
pub(crate) struct PackedParts<B: Backend> {
    pub codes: Tensor<B, 3, Int>,
    pub factors: Tensor<B, 3>,
    pub sub: Option<Tensor<B, 3, Int>>,
    pub codebook: Option<Tensor<B, 1>>,
}

impl<B: Backend> PackedParts<B> {
    /// The float part for the `Packed` field `field` (`factors`, `codebook`), if the type has
    /// it.
    fn float<const D: usize>(&mut self, field: &str) -> Option<Tensor<B, D>> {
        let primitive = match field {
            "factors" => self.factors.clone().into_primitive(),
            "codebook" => self.codebook.take()?.into_primitive(),
            _ => return None,
        };
        Some(Tensor::from_primitive(primitive))
    }

    /// The integer part for the `Packed` field `field` (`codes`, `sub`), if the type has it.
    fn int<const D: usize>(&mut self, field: &str) -> Option<Tensor<B, D, Int>> {
        let primitive = match field {
            "codes" => self.codes.clone().into_primitive(),
            "sub" => self.sub.take()?.into_primitive(),
            _ => return None,
        };
        Some(Tensor::from_primitive(primitive))
    }
}

/// How a module walk that packs weights (the loader, [`super::quantize`]) hands a packed weight
/// to its `Linear`: the layer's `weight` becomes the dtype stand-in and the packed parts wait
/// here for the layer's `Packed` fields, which the walk visits next.
pub(crate) struct PackedSlot<B: Backend>(Option<PackedParts<B>>);

impl<B: Backend> PackedSlot<B> {
    pub(crate) fn new() -> Self {
        Self(None)
    }

    /// Uploads `data` to wait for the layer's `Packed` fields; returns the layer's new weight.
    pub(crate) fn fill<const D: usize>(
        &mut self,
        data: PackedData,
        dtype: Option<burn::tensor::DType>,
        device: &B::Device,
    ) -> Tensor<B, D> {
        self.0 = Some(Packed::upload(data, device));
        super::Linear::<B>::dtype_carrier(dtype, device)
    }

    /// The `Packed` float field `field`: its waiting part, else `param` unchanged.
    pub(crate) fn float<const D: usize>(
        &mut self,
        field: &str,
        param: Param<Tensor<B, D>>,
    ) -> Param<Tensor<B, D>> {
        match self.0.as_mut().and_then(|p| p.float::<D>(field)) {
            Some(t) => Param::initialized(param.id, t),
            None => param,
        }
    }

    /// The `Packed` integer field `field`: its waiting part, else `param` unchanged.
    pub(crate) fn int<const D: usize>(
        &mut self,
        field: &str,
        param: Param<Tensor<B, D, Int>>,
    ) -> Param<Tensor<B, D, Int>> {
        match self.0.as_mut().and_then(|p| p.int::<D>(field)) {
            Some(t) => Param::initialized(param.id, t),
            None => param,
        }
    }

    /// Call from the walk's `exit_module`: leaving a layer's `Packed` empties the slot.
    pub(crate) fn exit_module(&mut self, name: &str, container_type: &str) {
        if name == "packed" && container_type == "Struct:Linear" {
            self.0 = None;
        }
    }
}

/// `[rows, chunks, bits]` words to `[rows, chunks · 32]` codes (layout: `quant::planes`).
fn unpack<B: Backend>(words: Tensor<B, 3, Int>, bits: usize) -> Tensor<B, 2, Int> {
    let [rows, chunks, _] = words.dims();
    let device = words.device();
    let (mut at, mut shift) = (0, 0);
    let mut codes: Option<Tensor<B, 3, Int>> = None;
    for width in [8usize, 4, 2, 1].into_iter().filter(|w| bits & w != 0) {
        let per = 32 / width;
        let plane = words.clone().slice([0..rows, 0..chunks, at..at + width]);
        let lanes = Tensor::<B, 1, Int>::arange(0..per as i64, &device)
            .mul_scalar(width as i64)
            .reshape([1, 1, 1, per])
            .expand([rows, chunks, width, per]);
        let values = plane
            .unsqueeze_dim::<4>(3)
            .expand([rows, chunks, width, per])
            .bitwise_right_shift(lanes)
            .bitwise_and_scalar(((1i64 << width) - 1).elem())
            .reshape([rows, chunks, 32]);
        let values = if shift > 0 {
            values.bitwise_left_shift_scalar((shift as i64).elem())
        } else {
            values
        };
        codes = Some(match codes {
            Some(c) => c + values,
            None => values,
        });
        at += width;
        shift += width;
    }
    codes
        .expect("bits > 0 has at least one plane")
        .reshape([rows, chunks * 32])
}

/// `[rows, words]` words of four bytes each to `[rows, words · 4]` unsigned bytes.
fn unpack_bytes<B: Backend>(words: Tensor<B, 2, Int>) -> Tensor<B, 2, Int> {
    let [rows, n] = words.dims();
    let shifts = Tensor::<B, 1, Int>::arange_step(0..32, 8, &words.device())
        .reshape([1, 1, 4])
        .expand([rows, n, 4]);
    words
        .unsqueeze_dim::<3>(2)
        .expand([rows, n, 4])
        .bitwise_right_shift(shifts)
        .bitwise_and_scalar(0xffi64.elem())
        .reshape([rows, n * 4])
}

/// `[rows, n]` to `[rows, n · times]`, each value repeated `times` times in place.
fn repeat_each<B: Backend>(x: Tensor<B, 2>, times: usize) -> Tensor<B, 2> {
    let [rows, n] = x.dims();
    x.unsqueeze_dim::<3>(2)
        .expand([rows, n, times])
        .reshape([rows, n * times])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::{GgmlType, GgufFile};
    use burn::backend::Flex;

    fn packed_from(data: PackedData) -> Packed<Flex> {
        let device = Default::default();
        let parts = Packed::<Flex>::upload(data, &device);
        Packed::<Flex> {
            codes: Param::initialized(ParamId::new(), parts.codes),
            factors: Param::from_tensor(parts.factors),
            sub: parts.sub.map_or_else(
                || placeholder_int(&device),
                |t| Param::initialized(ParamId::new(), t),
            ),
            codebook: parts
                .codebook
                .map_or_else(|| placeholder_float(&device), Param::from_tensor),
        }
    }

    /// The tiled product over several tiles of output columns, the last one partial and not
    /// a whole band of rows, for a type with offsets and for fp8's codebook.
    #[test]
    fn tiled_products_cover_partial_tiles() {
        use crate::quant::QuantType;
        let (rows, cols) = (crate::kernels::gemm::TILE + 45, 96);
        let values: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 104_729 % 1009) as f32 - 504.0) / 300.0)
            .collect();
        for ty in [QuantType::Q4_1, QuantType::Fp8] {
            let data = PackedData::quantize(ty, &values, rows, cols, "w")
                .unwrap()
                .unwrap();
            let packed = packed_from(data);
            products_match_the_dequantized_weight(&packed, ty, rows, cols);
        }
    }

    /// The host path and the tensor-op path give the same bits for every block type.
    #[test]
    fn host_and_tensor_op_paths_agree() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/gguf/dequant.gguf"
        );
        let file = GgufFile::open(path).unwrap();
        for ty in GgmlType::ALL {
            let name = format!("{}.raw", ty.name());
            let &[rows, cols] = file.tensor(&name).unwrap().shape() else {
                panic!("2-d fixture")
            };
            let bytes = file.tensor_bytes(&name).unwrap();
            let Some(data) = PackedData::from_gguf(ty, bytes, rows, cols, &name).unwrap() else {
                continue;
            };
            let packed = packed_from(data);
            let host: Vec<f32> = packed.dequantize_host(false).into_data().to_vec().unwrap();
            let ops = packed.dequantize_ops();
            let transposed: Vec<f32> = ops.clone().transpose().into_data().to_vec().unwrap();
            let ops: Vec<f32> = ops.into_data().to_vec().unwrap();
            let same = host
                .iter()
                .zip(&ops)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{ty}: host and tensor-op dequantization differ");
            let host_t: Vec<f32> = packed.dequantize_host(true).into_data().to_vec().unwrap();
            assert!(
                host_t
                    .iter()
                    .zip(&transposed)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{ty}: the transposed host path differs"
            );
            products_match_the_dequantized_weight(&packed, ty, rows, cols);
        }
    }

    /// `x Wᵀ` from the packed form (dotted rows for a few inputs, tiles and gemm for more)
    /// equals `x` times the dequantized weight.
    fn products_match_the_dequantized_weight(
        packed: &Packed<Flex>,
        ty: impl std::fmt::Display,
        rows: usize,
        cols: usize,
    ) {
        let device = Default::default();
        let w = packed.dequantize_transposed();
        for m in [3, FEW_ROWS + 5] {
            let values: Vec<f32> = (0..m * cols)
                .map(|i| ((i * 7919 % 211) as f32 - 105.0) / 50.0)
                .collect();
            let x = Tensor::<Flex, 2>::from_data(TensorData::new(values, [m, cols]), &device);
            let want: Vec<f32> = x.clone().matmul(w.clone()).into_data().to_vec().unwrap();
            let got = packed
                .matmul_host(&x)
                .expect("a CPU backend takes the host path");
            assert_eq!(got.dims(), [m, rows]);
            let got: Vec<f32> = got.into_data().to_vec().unwrap();
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                    "{ty}, {m} rows, value {i}: {a} vs {b}"
                );
            }
        }
    }
}
