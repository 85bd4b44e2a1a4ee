//! Q4_K encoding, byte-identical to ggml's reference quantizer (`quantize_row_q4_K_ref`, as
//! vendored by llama-cpp-python 0.3.16; the fixture script compiles it from that sdist).
//!
//! gguf-py cannot quantize the K-quants, so ggml's C code is the reference here. Its
//! algorithm: each 256-value super-block has eight 32-value sub-blocks; each sub-block gets a
//! weighted least-squares fit `x ≈ scale · l − min` over 4-bit codes `l`, searched over 21
//! candidate step sizes (weights `sqrt(mean(x²)) + |x|`, favouring large values). The eight
//! scales and mins are then stored as 6-bit multiples of two f16 super-block factors, and the
//! codes re-derived from those stored factors. Every operation is in f32 in ggml's order (no
//! fused multiply-adds), so the bytes match on every CPU.

use crate::half_bits::f32_to_f16_bits;

/// Values per super-block.
const SUPER: usize = 256;
/// Largest 4-bit code.
const NMAX: i32 = 15;

/// Encodes one 256-value super-block into its 144 bytes: `d`, `dmin` (f16), the 12 bytes of
/// 6-bit sub-block scales and mins, then 128 bytes of nibbles.
pub(super) fn q4_k_block(x: &[f32; SUPER], out: &mut Vec<u8>) {
    let mut codes = [0u8; SUPER];
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    for j in 0..8 {
        let sub: &[f32; 32] = x[32 * j..32 * (j + 1)].try_into().expect("32 values");
        let mean_square = sub.iter().fold(0f32, |s, &v| s + v * v) / 32.0;
        let rms = mean_square.sqrt();
        let weights = sub.map(|v| rms + v.abs());
        let fit = fit_scale_min(sub, &weights);
        codes[32 * j..32 * (j + 1)].copy_from_slice(&fit.codes);
        scales[j] = fit.scale;
        mins[j] = fit.min;
    }
    let max_scale = scales.iter().fold(0f32, |m, &s| if s > m { s } else { m });
    let max_min = mins.iter().fold(0f32, |m, &s| if s > m { s } else { m });
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    // C's `uint8_t ls = nearest_int(...)` keeps the low byte before the clamp to 63.
    let six_bits = |v: f32| (nearest_int(v) as u8).min(63);
    let ls: [u8; 8] = std::array::from_fn(|j| six_bits(inv_scale * scales[j]));
    let lm: [u8; 8] = std::array::from_fn(|j| six_bits(inv_min * mins[j]));
    let packed = pack_scale_mins(&ls, &lm);
    let d = f32_to_f16_bits(max_scale / 63.0);
    let dmin = f32_to_f16_bits(max_min / 63.0);
    let (d32, dmin32) = (
        half::f16::from_bits(d).to_f32(),
        half::f16::from_bits(dmin).to_f32(),
    );
    // Codes again against the factors as stored; a sub-block whose stored scale is 0 keeps
    // the codes of its fit.
    for j in 0..8 {
        let scale = d32 * f32::from(ls[j]);
        if scale == 0.0 {
            continue;
        }
        let min = dmin32 * f32::from(lm[j]);
        for i in 32 * j..32 * (j + 1) {
            codes[i] = nearest_int((x[i] + min) / scale).clamp(0, NMAX) as u8;
        }
    }
    out.extend_from_slice(&d.to_le_bytes());
    out.extend_from_slice(&dmin.to_le_bytes());
    out.extend_from_slice(&packed);
    // Each 64 values: the first 32 in the low nibbles, the next 32 in the high ones.
    for half_block in codes.chunks_exact(64) {
        out.extend((0..32).map(|l| half_block[l] | (half_block[l + 32] << 4)));
    }
}

/// The eight 6-bit scales and mins in K-quant order: sub-blocks 0–3 in the low six bits of
/// bytes 0–3 (scales) and 4–7 (mins); sub-blocks 4–7 in the nibbles of bytes 8–11, their top
/// two bits in the spare high bits of bytes 0–7.
fn pack_scale_mins(ls: &[u8; 8], lm: &[u8; 8]) -> [u8; 12] {
    let mut q = [0u8; 12];
    q[..4].copy_from_slice(&ls[..4]);
    q[4..8].copy_from_slice(&lm[..4]);
    for j in 4..8 {
        q[j + 4] = (ls[j] & 0x0f) | ((lm[j] & 0x0f) << 4);
        q[j - 4] |= (ls[j] >> 4) << 6;
        q[j] |= (lm[j] >> 4) << 6;
    }
    q
}

/// Round to nearest, ties to even, as ggml does it: adding 1.5 · 2²³ leaves the integer in
/// the mantissa's low bits (valid for |v| < 2²², where the codes and scales are).
fn nearest_int(v: f32) -> i32 {
    let bits = (v + 12_582_912.0).to_bits() as i32;
    (bits & 0x007f_ffff) - 0x0040_0000
}

/// A sub-block's fit: `x ≈ scale · code − min`.
struct Fit {
    scale: f32,
    /// Non-negative (the fitted offset is never above 0).
    min: f32,
    codes: [u8; 32],
}

/// The weighted least-squares fit of 4-bit codes ggml's `make_qkx2_quants` makes with
/// `rmin = −1, rdelta = 0.1, nstep = 20` and squared error: codes for the range
/// `[min(x, 0), max(x)]`, then for each of 21 step sizes `(15 − 1 + 0.1 · i) / range` the
/// codes they round to and the scale and offset solving the weighted normal equations,
/// keeping the candidate with the lowest weighted squared error (whose offset then starts
/// the range of the next candidates, as in ggml).
fn fit_scale_min(x: &[f32; 32], w: &[f32; 32]) -> Fit {
    let mut lo = x[0];
    let mut hi = x[0];
    let mut sum_w = w[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..32 {
        if x[i] < lo {
            lo = x[i];
        }
        if x[i] > hi {
            hi = x[i];
        }
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if lo > 0.0 {
        lo = 0.0;
    }
    if hi == lo {
        return Fit {
            scale: 0.0,
            min: -lo,
            codes: [0; 32],
        };
    }
    // As in ggml, the offset of the best candidate so far is also the origin of the next
    // candidates' range: `min` moves when a candidate wins.
    let mut min = lo;
    let code = |inv: f32, v: f32, min: f32| nearest_int(inv * (v - min)).clamp(0, NMAX);
    let inv = NMAX as f32 / (hi - min);
    let mut scale = 1.0 / inv;
    let mut codes = x.map(|v| code(inv, v, min) as u8);
    let mut best = 0f32;
    for i in 0..32 {
        let diff = scale * f32::from(codes[i]) + min - x[i];
        best += w[i] * (diff * diff);
    }
    for step in 0..=20 {
        let inv = (-1.0 + 0.1 * step as f32 + NMAX as f32) / (hi - min);
        let candidate = x.map(|v| code(inv, v, min) as u8);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
        for i in 0..32 {
            let l = f32::from(candidate[i]);
            sum_l += w[i] * l;
            sum_l2 += w[i] * l * l;
            sum_xl += w[i] * l * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut error = 0f32;
            for i in 0..32 {
                let diff = this_scale * f32::from(candidate[i]) + this_min - x[i];
                error += w[i] * (diff * diff);
            }
            if error < best {
                codes = candidate;
                best = error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    Fit {
        scale,
        min: -min,
        codes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_half_to_even() {
        assert_eq!(nearest_int(2.5), 2);
        assert_eq!(nearest_int(3.5), 4);
        assert_eq!(nearest_int(-2.5), -2);
        assert_eq!(nearest_int(-0.4), 0);
        assert_eq!(nearest_int(14.6), 15);
    }

    #[test]
    fn scale_mins_pack_into_six_bits_each() {
        let ls = [1, 2, 3, 63, 17, 33, 48, 63];
        let lm = [0, 5, 62, 7, 63, 16, 1, 40];
        let q = pack_scale_mins(&ls, &lm);
        // The reading side, as the K-quant dequantizers unpack it.
        for j in 0..8 {
            let (sc, m) = if j < 4 {
                (q[j] & 63, q[j + 4] & 63)
            } else {
                (
                    (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4),
                    (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
                )
            };
            assert_eq!((sc, m), (ls[j], lm[j]), "sub-block {j}");
        }
    }
}
