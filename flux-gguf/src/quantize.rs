//! Encoding of f32 values: the float types and the legacy block quants, each
//! bit-identical to gguf-py's `gguf.quants.quantize` (0.19) for finite input.
//!
//! Two known limits, both outside what real weights contain: non-finite
//! input to the block quants is encoded deterministically but not
//! necessarily as numpy does (numpy's NaN-to-uint8 cast is undefined), and
//! when a Q4_1/Q5_1 block's minimum is zero and the block holds both +0.0
//! and −0.0, the sign of the stored zero `m` follows numpy's SIMD reduction
//! order, which depends on the CPU; this module (in practice) keeps the first.
//!
//! gguf-py has no quantizer for the K-quants. Q4_K, the one FLUX users
//! quantize to most, is encoded as ggml's own reference quantizer does it
//! (`super::quantize_k`, byte-identical to ggml's C code); the other K-quants
//! are refused.
//!
//! The arithmetic mirrors gguf-py's numpy code operation by operation in f32:
//! the block scale is found as `max / -8` (Q4_0), `(max − min) / 15` (Q4_1),
//! ..., its reciprocal is taken in f32 (0 when the scale is 0), values are
//! scaled by that reciprocal and rounded, and only then is the scale rounded
//! to f16 for storage.

use crate::error::GgufError;
use crate::half_bits::{f32_to_bf16_bits, f32_to_f16_bits};
use crate::types::GgmlType;

/// Encodes `values` as type `ty`.
///
/// `values.len()` must be a multiple of the block size. Supported: F32, F16,
/// BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 (as gguf-py 0.19 encodes them) and Q4_K
/// (as ggml's `quantize_row_q4_K_ref`); the other K-quants return
/// [`GgufError::QuantizeUnsupported`].
pub fn quantize(ty: GgmlType, values: &[f32]) -> Result<Vec<u8>, GgufError> {
    let Some(n_bytes) = ty.bytes_for(values.len()) else {
        return Err(GgufError::Data {
            ty: ty.name(),
            problem: format!(
                "{} values is not a whole number of {}-value blocks",
                values.len(),
                ty.block_size()
            ),
        });
    };
    let mut out = Vec::with_capacity(n_bytes);
    match ty {
        GgmlType::F32 => values
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        GgmlType::F16 => values
            .iter()
            .for_each(|&v| out.extend_from_slice(&f32_to_f16_bits(v).to_le_bytes())),
        GgmlType::BF16 => values
            .iter()
            .for_each(|&v| out.extend_from_slice(&f32_to_bf16_bits(v).to_le_bytes())),
        GgmlType::Q4_0 => blocks(values, &mut out, q4_0_block),
        GgmlType::Q4_1 => blocks(values, &mut out, q4_1_block),
        GgmlType::Q5_0 => blocks(values, &mut out, q5_0_block),
        GgmlType::Q5_1 => blocks(values, &mut out, q5_1_block),
        GgmlType::Q8_0 => blocks(values, &mut out, q8_0_block),
        GgmlType::Q4_K => {
            for chunk in values.chunks_exact(crate::QK_K) {
                if let Ok(block) = <&[f32; crate::QK_K]>::try_from(chunk) {
                    crate::quantize_k::q4_k_block(block, &mut out);
                }
            }
        }
        GgmlType::Q2_K | GgmlType::Q3_K | GgmlType::Q5_K | GgmlType::Q6_K => {
            return Err(GgufError::QuantizeUnsupported { ty: ty.name() });
        }
    }
    debug_assert_eq!(out.len(), n_bytes);
    Ok(out)
}

fn blocks(values: &[f32], out: &mut Vec<u8>, f: fn(&[f32; 32], &mut Vec<u8>)) {
    for chunk in values.chunks_exact(32) {
        if let Ok(block) = <&[f32; 32]>::try_from(chunk) {
            f(block, out);
        }
    }
}

/// The value of largest magnitude (the first one on ties, as numpy's
/// `argmax` picks it), keeping its sign.
fn signed_absmax(x: &[f32; 32]) -> f32 {
    let mut best = 0;
    for i in 1..32 {
        let (a, b) = (x[i].abs(), x[best].abs());
        if (a.is_nan() && !b.is_nan()) || a > b {
            best = i;
        }
    }
    x[best]
}

fn min_max(x: &[f32; 32]) -> (f32, f32) {
    let (mut lo, mut hi) = (x[0], x[0]);
    for &v in &x[1..] {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    (lo, hi)
}

fn inverse(d: f32) -> f32 {
    if d == 0.0 { 0.0 } else { 1.0 / d }
}

/// Truncates toward zero and clamps into `0..=max` like numpy's
/// `trunc(...).astype(uint8).clip(0, max)` does for in-range values.
fn trunc_u8(v: f32, max: u8) -> u8 {
    (v.trunc() as u8).min(max)
}

fn push_f16(out: &mut Vec<u8>, v: f32) {
    out.extend_from_slice(&f32_to_f16_bits(v).to_le_bytes());
}

/// Packs 32 values below 16 as ggml nibbles: value j low, value j+16 high.
fn push_nibbles(out: &mut Vec<u8>, q: &[u8; 32]) {
    for j in 0..16 {
        out.push((q[j] & 0x0f) | (q[j + 16] << 4));
    }
}

/// Pushes the fifth bits of 32 five-bit values as a little-endian u32.
fn push_high_bits(out: &mut Vec<u8>, q: &[u8; 32]) {
    let qh = (0..32).fold(0u32, |acc, j| acc | (u32::from(q[j] >> 4) << j));
    out.extend_from_slice(&qh.to_le_bytes());
}

fn q4_0_block(x: &[f32; 32], out: &mut Vec<u8>) {
    let d = signed_absmax(x) / -8.0;
    let id = inverse(d);
    let q = x.map(|v| trunc_u8(v * id + 8.5, 15));
    push_f16(out, d);
    push_nibbles(out, &q);
}

fn q4_1_block(x: &[f32; 32], out: &mut Vec<u8>) {
    let (min, max) = min_max(x);
    let d = (max - min) / 15.0;
    let id = inverse(d);
    let q = x.map(|v| trunc_u8((v - min) * id + 0.5, 15));
    push_f16(out, d);
    push_f16(out, min);
    push_nibbles(out, &q);
}

fn q5_0_block(x: &[f32; 32], out: &mut Vec<u8>) {
    let d = signed_absmax(x) / -16.0;
    let id = inverse(d);
    let q = x.map(|v| trunc_u8(v * id + 16.5, 31));
    push_f16(out, d);
    push_high_bits(out, &q);
    push_nibbles(out, &q);
}

fn q5_1_block(x: &[f32; 32], out: &mut Vec<u8>) {
    let (min, max) = min_max(x);
    let d = (max - min) / 31.0;
    let id = inverse(d);
    let q = x.map(|v| trunc_u8((v - min) * id + 0.5, 31));
    push_f16(out, d);
    push_f16(out, min);
    push_high_bits(out, &q);
    push_nibbles(out, &q);
}

fn q8_0_block(x: &[f32; 32], out: &mut Vec<u8>) {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = inverse(d);
    push_f16(out, d);
    // gguf-py rounds half away from zero, which is what f32::round does.
    out.extend(x.iter().map(|&v| (v * id).round() as i8 as u8));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dequant::dequantize;

    #[test]
    fn other_k_quants_are_refused() {
        let err = quantize(GgmlType::Q6_K, &[0.0; 256]).unwrap_err();
        assert!(matches!(err, GgufError::QuantizeUnsupported { ty: "Q6_K" }));
    }

    #[test]
    fn partial_blocks_are_refused() {
        assert!(quantize(GgmlType::Q8_0, &[0.0; 33]).is_err());
    }

    #[test]
    fn round_trip_error_is_small() {
        let x: Vec<f32> = (0..256)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        for (ty, tol) in [
            (GgmlType::Q8_0, 0.03),
            (GgmlType::Q5_0, 0.5), // one full step at the clipped end
            (GgmlType::Q5_1, 0.25),
            (GgmlType::Q4_0, 1.0),
            (GgmlType::Q4_1, 0.5),
            (GgmlType::Q4_K, 0.5),
            (GgmlType::F16, 0.01),
            (GgmlType::BF16, 0.05),
        ] {
            let back = dequantize(ty, &quantize(ty, &x).unwrap(), x.len()).unwrap();
            let worst = flux_testkit::max_abs_diff(&x, &back);
            assert!(worst <= tol, "{ty}: worst error {worst}");
        }
    }

    #[test]
    fn bf16_rounds_to_nearest_even_and_quiets_nan() {
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x3f80_8000)), 0x3f80);
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x3f81_8000)), 0x3f82);
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x7f80_0001)), 0x7fc0);
        assert_eq!(f32_to_f16_bits(f32::from_bits(0x7f80_0001)), 0x7c01);
    }
}
