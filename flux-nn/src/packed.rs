//! [`Packed`]: a quantized weight held on the device as integer codes and factors, and its
//! dequantization with plain tensor ops (so every backend runs it).

use burn::module::{Module, Param, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, ElementConversion, FloatDType, Int, Tensor, TensorData};
use flux_kernels::packed::HostPacked;

use crate::FluxBackend;
use crate::quant::PackedData;

/// A `[rows, cols]` weight (PyTorch's `[out, in]`) held quantized: `x = s·(u − Z) + o` per
/// value, or `x = codebook[u]·s` (fp8); see `flux_gguf` for the GGUF types this covers.
///
/// - `codes`: `[rows, cols / 32, bits]` words of `bits`-bit codes `u`, split into planes of
///   8, 4, 2 and 1 bits (`flux_kernels::planes`);
/// - `factors`: `[rows, groups, k]` (f16 or f32): the scale `s` of each group of
///   `cols / groups` values, and with `k = 2` its offset `o`. Types without an offset have
///   signed codes: `Z = 2^(bits−1)`; the others `Z = 0`;
/// - `sub`: `[rows, subs / 4, k]` words of 8-bit K-quant sub-block factors (`+128`): scales
///   multiplying `s`, and with `k = 2` mins multiplying `o`;
/// - `codebook`: `[256]` values of fp8 codes.
///
/// `dtype` is the float type the layer computes in (the model's, or f32 for an f32 island).
#[derive(Module, Debug)]
pub struct Packed<B: Backend> {
    codes: Param<Tensor<B, 3, Int>>,
    factors: Param<Tensor<B, 3>>,
    sub: Option<Param<Tensor<B, 3, Int>>>,
    codebook: Option<Param<Tensor<B, 1>>>,
    #[module(skip)]
    dtype: DType,
}

impl<B: Backend> Packed<B> {
    /// The weight `data` on `device`, computing in `dtype`.
    pub(crate) fn new(data: PackedData, dtype: DType, device: &B::Device) -> Self {
        let chunks = data.cols / 32;
        let codes = TensorData::new(data.codes, [data.rows, chunks, data.bits]);
        // Scales are f16 in the GGUF types; backends without f16 (burn-ndarray) hold f32.
        let factor_dtype = if B::supports_dtype(device, data.scale.dtype) {
            data.scale.dtype
        } else {
            DType::F32
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
        let param = |t| Param::initialized(ParamId::new(), t);
        let sub = data.sub.map(|(words, k)| {
            let n = words.len() / (data.rows * k);
            param(Tensor::from_data(
                TensorData::new(words, [data.rows, n, k]),
                device,
            ))
        });
        Self {
            codes: Param::initialized(ParamId::new(), Tensor::from_data(codes, device)),
            factors: Param::initialized(
                ParamId::new(),
                Tensor::from_data(factors, (device, factor_dtype)),
            ),
            sub,
            codebook: data.codebook.map(|c| {
                let values = Tensor::from_data(TensorData::new(c, [256]), device);
                Param::initialized(ParamId::new(), values)
            }),
            dtype,
        }
    }

    /// `[rows, cols]` of the weight (PyTorch's `[out, in]`).
    pub fn shape(&self) -> [usize; 2] {
        let [rows, chunks, _] = self.codes.lazy_shape().dims();
        [rows, chunks * 32]
    }

    /// The device the weight lives on.
    #[cfg_attr(not(any(feature = "flex", feature = "ndarray")), allow(dead_code))]
    pub(crate) fn device(&self) -> B::Device {
        self.codes.lazy_device()
    }

    /// The float type the layer computes in.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The same weight computing in `dtype`.
    pub(crate) fn with_dtype(self, dtype: DType) -> Self {
        Self { dtype, ..self }
    }

    /// Bytes held on the device (codes and factors).
    pub fn num_bytes(&self) -> usize {
        let factors = self.factors.val();
        let mut bytes = 4 * self.codes.lazy_shape().num_elements()
            + factors.shape().num_elements() * factors.dtype().size();
        if let Some(sub) = &self.sub {
            bytes += 4 * sub.lazy_shape().num_elements();
        }
        if self.codebook.is_some() {
            bytes += 4 * 256;
        }
        bytes
    }

    /// The packed parts read back as host vectors, for the host kernels.
    #[cfg_attr(not(any(feature = "flex", feature = "ndarray")), allow(dead_code))]
    pub(crate) fn host_parts(&self) -> HostParts {
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
            sub: self.sub.as_ref().map(|sub| {
                let sub = sub.val();
                let ks = sub.dims()[2];
                (ints(sub), ks)
            }),
            codebook: self.codebook.as_ref().map(|c| floats(c.val().into_data())),
        }
    }

    /// The weight, `[rows, cols]` in f32, with tensor ops (shifts, masks, gathers: every
    /// backend has them): [`FluxBackend::dequantize_packed`]'s portable form.
    pub(crate) fn dequantize_with_ops(&self) -> Tensor<B, 2> {
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
        if let Some(codebook) = &self.codebook {
            let n = rows * cols;
            let values = codebook.val().cast(f32).select(0, u.reshape([n])).reshape([
                rows,
                groups,
                cols / groups,
            ]);
            return (values * scale.unsqueeze_dim::<3>(2)).reshape([rows, cols]);
        }
        let with_offset = k == 2;
        let u = if with_offset {
            u
        } else {
            u.sub_scalar(1i64 << (bits - 1))
        };
        let (mut scale, mut offset) = (scale, with_offset.then(|| factor(1)));
        if let Some(sub) = &self.sub {
            let sub = sub.val();
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

impl<B: FluxBackend> Packed<B> {
    /// The weight, `[rows, cols]`, in f32: exactly gguf-py's values on backends that round
    /// every op (the CPU backends do). Computed by the backend ([`FluxBackend::dequantize_packed`]).
    pub fn dequantize(&self) -> Tensor<B, 2> {
        B::dequantize_packed(self)
    }
}

/// A packed weight's parts read back to the host.
#[cfg_attr(not(any(feature = "flex", feature = "ndarray")), allow(dead_code))]
pub(crate) struct HostParts {
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

#[cfg_attr(not(any(feature = "flex", feature = "ndarray")), allow(dead_code))]
impl HostParts {
    /// The parts as the host kernels' view.
    pub(crate) fn view(&self) -> HostPacked<'_> {
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

/// `[rows, chunks, bits]` words to `[rows, chunks · 32]` codes (layout: `flux_kernels::planes`).
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
