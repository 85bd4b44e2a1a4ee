//! [`PackedData`]: a quantized `[rows, cols]` weight on the host, in the layout
//! [`crate::Linear`] holds on the device, built from GGUF blocks, fp8 bytes, or f32 values.

use burn::tensor::TensorData;
use flux_gguf::split::{SplitBlock, code_bits, split_block, sub_blocks};
use flux_gguf::{GgmlType, quantize};
use flux_io::{Error, Result};
use flux_kernels::planes::{push_bytes, push_chunk};

use super::QuantType;

/// fp8 encodings a checkpoint can store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fp8 {
    E4M3,
    E5M2,
}

impl Fp8 {
    fn table(self) -> Vec<f32> {
        (0..=255u8)
            .map(|b| match self {
                Fp8::E4M3 => float8::F8E4M3::from_bits(b).to_f32(),
                Fp8::E5M2 => float8::F8E5M2::from_bits(b).to_f32(),
            })
            .collect()
    }
}

/// A quantized `[rows, cols]` weight: `x = s·(u − Z) + o` per value (see
/// [`flux_gguf::split`]), or `x = codebook[u]·s` for fp8.
#[derive(Debug)]
pub(crate) struct PackedData {
    pub rows: usize,
    pub cols: usize,
    /// Code width.
    pub bits: usize,
    /// `[rows, cols / 32, bits]` words ([`flux_kernels::planes`]).
    pub codes: Vec<i32>,
    /// `[rows, groups]` scales, f16 or f32.
    pub scale: TensorData,
    /// `[rows, groups]` offsets, like `scale`, for the types that have them.
    pub offset: Option<TensorData>,
    /// K-quant sub-block factors, `+128`, four per word: `[rows, subs / 4, k]` words, `k` = 1
    /// (scales) or 2 (scales, mins); with `k`.
    pub sub: Option<(Vec<i32>, usize)>,
    /// fp8: the 256 values of the codes.
    pub codebook: Option<Vec<f32>>,
}

fn bad(key: &str, reason: String) -> Error {
    Error::BadTensor {
        key: key.to_string(),
        reason,
    }
}

fn f16_finite(h: u16) -> bool {
    h & 0x7c00 != 0x7c00
}

impl PackedData {
    /// Splits a GGUF tensor of block type `ty` stored `[rows, cols]` (blocks along `cols`).
    /// `None` for the float types and for shapes the layout cannot hold (`cols` not a multiple
    /// of 32): the caller loads those dense.
    ///
    /// # Errors
    /// [`Error::BadTensor`] when the byte count does not match, [`Error::NonFinite`] when a
    /// block's scale or offset is NaN or infinite.
    pub fn from_gguf(
        ty: GgmlType,
        bytes: &[u8],
        rows: usize,
        cols: usize,
        key: &str,
    ) -> Result<Option<Self>> {
        let Some(bits) = code_bits(ty) else {
            return Ok(None);
        };
        let (block, size) = (ty.block_size(), ty.type_size());
        if !cols.is_multiple_of(block) || !cols.is_multiple_of(32) {
            return Ok(None);
        }
        let blocks_per_row = cols / block;
        if Some(bytes.len()) != rows.checked_mul(blocks_per_row * size) {
            return Err(bad(
                key,
                format!(
                    "{} bytes of {ty} cannot hold a [{rows}, {cols}] tensor",
                    bytes.len()
                ),
            ));
        }
        let n_sub = sub_blocks(ty);
        let with_offset = matches!(
            ty,
            GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q2_K | GgmlType::Q4_K | GgmlType::Q5_K
        );
        let with_mins = n_sub > 0 && with_offset;
        let mut codes = Vec::with_capacity(rows * cols / 32 * bits);
        let mut scales = Vec::with_capacity(rows * blocks_per_row);
        let mut offsets = Vec::with_capacity(if with_offset { scales.capacity() } else { 0 });
        let mut sub_words = Vec::new();
        let (mut row_sc, mut row_mn) = (Vec::new(), Vec::new());
        let mut s = SplitBlock::default();
        for (i, b) in bytes.chunks_exact(size).enumerate() {
            split_block(ty, b, &mut s);
            if !f16_finite(s.d) || s.offset.is_some_and(|o| !f16_finite(o)) {
                return Err(Error::NonFinite(key.to_string()));
            }
            scales.push(half::f16::from_bits(s.d));
            if let Some(o) = s.offset {
                offsets.push(half::f16::from_bits(o));
            }
            for chunk in s.codes[..block].chunks_exact(32) {
                push_chunk(&mut codes, chunk, bits);
            }
            if n_sub > 0 {
                row_sc.extend_from_slice(&s.sub_scales[..n_sub]);
                row_mn.extend_from_slice(&s.sub_mins[..n_sub]);
                if (i + 1) % blocks_per_row == 0 {
                    // One row's factors, scales and mins interleaved word by word.
                    let (mut sw, mut mw) = (Vec::new(), Vec::new());
                    push_bytes(&mut sw, &row_sc);
                    push_bytes(&mut mw, &row_mn);
                    for (k, &w) in sw.iter().enumerate() {
                        sub_words.push(w);
                        if with_mins {
                            sub_words.push(mw[k]);
                        }
                    }
                    row_sc.clear();
                    row_mn.clear();
                }
            }
        }
        let shape = [rows, blocks_per_row];
        Ok(Some(Self {
            rows,
            cols,
            bits,
            codes,
            scale: TensorData::new(scales, shape),
            offset: with_offset.then(|| TensorData::new(offsets, shape)),
            sub: (n_sub > 0).then_some((sub_words, if with_mins { 2 } else { 1 })),
            codebook: None,
        }))
    }

    /// An fp8 tensor stored `[rows, cols]`, times `scale` (ComfyUI's `scale_weight`, else 1).
    /// `None` when `cols` is not a multiple of 32.
    ///
    /// # Errors
    /// [`Error::NonFinite`] for a NaN code or a non-finite scale.
    pub fn from_fp8(
        kind: Fp8,
        bytes: &[u8],
        rows: usize,
        cols: usize,
        scale: f32,
        key: &str,
    ) -> Result<Option<Self>> {
        if !cols.is_multiple_of(32) {
            return Ok(None);
        }
        if Some(bytes.len()) != rows.checked_mul(cols) {
            return Err(bad(
                key,
                format!(
                    "{} bytes cannot hold a [{rows}, {cols}] tensor",
                    bytes.len()
                ),
            ));
        }
        let codebook = kind.table();
        if !scale.is_finite() || bytes.iter().any(|&b| !codebook[usize::from(b)].is_finite()) {
            return Err(Error::NonFinite(key.to_string()));
        }
        let mut codes = Vec::with_capacity(bytes.len() / 4);
        for chunk in bytes.chunks_exact(32) {
            push_chunk(&mut codes, chunk, 8);
        }
        Ok(Some(Self {
            rows,
            cols,
            bits: 8,
            codes,
            scale: TensorData::new(vec![scale; rows], [rows, 1]),
            offset: None,
            sub: None,
            codebook: Some(codebook),
        }))
    }

    /// Quantizes finite f32 values of a `[rows, cols]` weight: the GGUF types exactly as
    /// gguf-py's `quantize` does (Q4_K as ggml's reference quantizer), fp8 with one scale
    /// `absmax / 448` per tensor. `None` (left dense) when `cols` is not a multiple of the
    /// type's block (32; 256 for Q4_K) or the tensor has at most 1024 values (the threshold
    /// below which ComfyUI-GGUF's converter keeps tensors unquantized).
    ///
    /// # Errors
    /// Those of [`PackedData::from_gguf`] (none for finite input).
    pub fn quantize(
        ty: QuantType,
        values: &[f32],
        rows: usize,
        cols: usize,
        key: &str,
    ) -> Result<Option<Self>> {
        let block = ty.ggml_type().map_or(32, GgmlType::block_size);
        if !cols.is_multiple_of(block) || values.len() != rows * cols || values.len() <= 1024 {
            return Ok(None);
        }
        let fp8_scale = {
            let absmax = values.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            if absmax > 0.0 { absmax / 448.0 } else { 1.0 }
        };
        // Rows are independent: large tensors are quantized on every core.
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let per = rows.div_ceil(threads.min(rows)).max(1);
        if threads == 1 || values.len() < 1 << 20 {
            return Self::quantize_rows(ty, values, cols, fp8_scale, key);
        }
        let parts = std::thread::scope(|s| {
            let handles: Vec<_> = values
                .chunks(per * cols)
                .map(|chunk| s.spawn(move || Self::quantize_rows(ty, chunk, cols, fp8_scale, key)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a quantizing thread panicked"))
                .collect::<Result<Vec<_>>>()
        })?;
        let parts: Vec<Self> = parts.into_iter().flatten().collect();
        Ok(Some(Self::concat_rows(parts)))
    }

    fn quantize_rows(
        ty: QuantType,
        values: &[f32],
        cols: usize,
        fp8_scale: f32,
        key: &str,
    ) -> Result<Option<Self>> {
        let rows = values.len() / cols;
        match ty.ggml_type() {
            Some(ggml) => {
                let bytes = quantize(ggml, values).map_err(|e| bad(key, e.to_string()))?;
                Self::from_gguf(ggml, &bytes, rows, cols, key)
            }
            None => {
                let bytes: Vec<u8> = values
                    .iter()
                    .map(|&v| float8::F8E4M3::from_f32(v / fp8_scale).to_bits())
                    .collect();
                Self::from_fp8(Fp8::E4M3, &bytes, rows, cols, fp8_scale, key)
            }
        }
    }

    /// Stacks row blocks of one weight (same type, same `cols`).
    fn concat_rows(parts: Vec<Self>) -> Self {
        let rows = parts.iter().map(|p| p.rows).sum();
        let (cols, bits) = (parts[0].cols, parts[0].bits);
        let codebook = parts[0].codebook.clone();
        let k = parts[0].sub.as_ref().map(|(_, k)| *k);
        let stack = |datas: Vec<TensorData>| {
            let dtype = datas[0].dtype;
            let width = datas[0].shape[1];
            let bytes: Vec<u8> = datas
                .iter()
                .flat_map(|d| d.as_bytes().iter().copied())
                .collect();
            TensorData::from_bytes_vec(bytes, vec![rows, width], dtype)
        };
        let mut codes = Vec::new();
        let (mut scales, mut offsets, mut subs) = (Vec::new(), Vec::new(), Vec::new());
        for p in parts {
            codes.extend(p.codes);
            scales.push(p.scale);
            offsets.extend(p.offset);
            if let Some((w, _)) = p.sub {
                subs.extend(w);
            }
        }
        Self {
            rows,
            cols,
            bits,
            codes,
            scale: stack(scales),
            offset: (!offsets.is_empty()).then(|| stack(offsets)),
            sub: k.map(|k| (subs, k)),
            codebook,
        }
    }
}
