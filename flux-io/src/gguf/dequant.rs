//! Decoding of the float types and the legacy 32-value block quants, the
//! entry points for every type, and block unpackers for direct use of
//! Q4_0/Q8_0 data.
//!
//! Each formula is evaluated with the same f32 operations in the same order
//! as gguf-py's `gguf.quants` (no fused multiply-add), so results are
//! bit-identical to it.

use super::error::GgufError;
use super::kquants;
use super::types::GgmlType;

/// Decodes `n_values` values of type `ty` from `bytes` into a new vector.
///
/// `bytes` must hold exactly `n_values / block_size` blocks.
pub fn dequantize(ty: GgmlType, bytes: &[u8], n_values: usize) -> Result<Vec<f32>, GgufError> {
    check_len(ty, bytes, n_values)?;
    let mut out = vec![0.0f32; n_values];
    dequantize_into(ty, bytes, &mut out)?;
    Ok(out)
}

/// Decodes `out.len()` values of type `ty` from `bytes` into `out`.
///
/// `bytes` must hold exactly `out.len() / block_size` blocks.
pub fn dequantize_into(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<(), GgufError> {
    check_len(ty, bytes, out.len())?;
    let blocks = bytes.chunks_exact(ty.type_size());
    let outs = out.chunks_exact_mut(ty.block_size());
    #[inline(always)]
    fn floats<const N: usize>(bytes: &[u8], out: &mut [f32], f: impl Fn(&[u8]) -> f32) {
        // Fixed-width groups of 32 give LLVM a loop it can vectorise.
        let mut groups = out.chunks_exact_mut(32);
        let mut src = bytes.chunks_exact(32 * N);
        for (o, b) in (&mut groups).zip(&mut src) {
            for (j, o) in o.iter_mut().enumerate() {
                *o = f(&b[j * N..j * N + N]);
            }
        }
        for (o, b) in groups
            .into_remainder()
            .iter_mut()
            .zip(src.remainder().chunks_exact(N))
        {
            *o = f(b);
        }
    }
    match ty {
        GgmlType::F32 => floats::<4>(bytes, out, |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        GgmlType::F16 => floats::<2>(bytes, out, |b| f16_to_f32(u16::from_le_bytes([b[0], b[1]]))),
        GgmlType::BF16 => floats::<2>(bytes, out, |b| {
            f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16)
        }),
        GgmlType::Q4_0 => each(blocks, outs, q4_0_block),
        GgmlType::Q4_1 => each(blocks, outs, q4_1_block),
        GgmlType::Q5_0 => each(blocks, outs, q5_0_block),
        GgmlType::Q5_1 => each(blocks, outs, q5_1_block),
        GgmlType::Q8_0 => each(blocks, outs, q8_0_block),
        GgmlType::Q2_K => each(blocks, outs, kquants::q2_k_block),
        GgmlType::Q3_K => each(blocks, outs, kquants::q3_k_block),
        GgmlType::Q4_K => each(blocks, outs, kquants::q4_k_block),
        GgmlType::Q5_K => each(blocks, outs, kquants::q5_k_block),
        GgmlType::Q6_K => each(blocks, outs, kquants::q6_k_block),
    }
    Ok(())
}

fn check_len(ty: GgmlType, bytes: &[u8], n_values: usize) -> Result<(), GgufError> {
    let problem = match ty.bytes_for(n_values) {
        None => format!(
            "{n_values} values is not a whole number of {}-value blocks",
            ty.block_size()
        ),
        Some(n) if n != bytes.len() => format!(
            "{n_values} values take {n} bytes ({}-value blocks of {} bytes), got {}",
            ty.block_size(),
            ty.type_size(),
            bytes.len()
        ),
        Some(_) => return Ok(()),
    };
    Err(GgufError::Data {
        ty: ty.name(),
        problem,
    })
}

/// Runs a fixed-size block decoder over matching chunks. The chunk lengths
/// were checked by `check_len`, so the conversions to arrays cannot fail.
fn each<'a, const B: usize, const N: usize>(
    blocks: impl Iterator<Item = &'a [u8]>,
    outs: impl Iterator<Item = &'a mut [f32]>,
    f: fn(&[u8; B], &mut [f32; N]),
) {
    for (b, o) in blocks.zip(outs) {
        if let (Ok(b), Ok(o)) = (<&[u8; B]>::try_from(b), <&mut [f32; N]>::try_from(o)) {
            f(b, o);
        }
    }
}

/// Converts IEEE half-precision bits to f32 exactly, keeping NaN payloads
/// (as numpy's scalar conversion does). Branch-free so loops vectorise.
#[inline(always)]
pub(super) fn f16_to_f32(h: u16) -> f32 {
    let h = u32::from(h);
    let sign = (h & 0x8000) << 16;
    let em = h & 0x7fff;
    // Normal and subnormal halves: reinterpret the shifted bits and rescale
    // by 2^112; the product is exact.
    let finite = (f32::from_bits(em << 13) * f32::from_bits(0x7780_0000)).to_bits();
    let special = 0x7f80_0000 | ((em & 0x03ff) << 13);
    f32::from_bits(sign | if em >= 0x7c00 { special } else { finite })
}

/// Reads the little-endian f16 at `b[i..i + 2]` as f32.
#[inline(always)]
pub(super) fn f16_at(b: &[u8], i: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[i], b[i + 1]]))
}

fn q4_0_block(b: &[u8; 18], o: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    for j in 0..16 {
        o[j] = d * (i32::from(b[2 + j] & 0x0f) - 8) as f32;
        o[j + 16] = d * (i32::from(b[2 + j] >> 4) - 8) as f32;
    }
}

fn q4_1_block(b: &[u8; 20], o: &mut [f32; 32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    for j in 0..16 {
        o[j] = d * f32::from(b[4 + j] & 0x0f) + m;
        o[j + 16] = d * f32::from(b[4 + j] >> 4) + m;
    }
}

/// The 32 five-bit values of a Q5_0/Q5_1 block: low nibbles from `qs`
/// (element j in the low nibble of byte j, element j+16 in its high nibble),
/// fifth bits from the little-endian u32 `qh` (bit j for element j).
#[inline(always)]
pub(super) fn five_bit_values(qh: [u8; 4], qs: &[u8]) -> [u8; 32] {
    let qh = u32::from_le_bytes(qh);
    let mut q = [0u8; 32];
    for j in 0..16 {
        q[j] = (qs[j] & 0x0f) | ((((qh >> j) & 1) as u8) << 4);
        q[j + 16] = (qs[j] >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
    }
    q
}

fn q5_0_block(b: &[u8; 22], o: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    let q = five_bit_values([b[2], b[3], b[4], b[5]], &b[6..22]);
    for j in 0..32 {
        o[j] = d * (i32::from(q[j]) - 16) as f32;
    }
}

fn q5_1_block(b: &[u8; 24], o: &mut [f32; 32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let q = five_bit_values([b[4], b[5], b[6], b[7]], &b[8..24]);
    for j in 0..32 {
        o[j] = d * f32::from(q[j]) + m;
    }
}

fn q8_0_block(b: &[u8; 34], o: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    for j in 0..32 {
        o[j] = f32::from(b[2 + j] as i8) * d;
    }
}

/// Splits one Q4_0 block into its scale and its 32 signed 4-bit values
/// (`q − 8`, in element order), so that value `j` is `scale · values[j]`.
///
/// Useful for building other symmetric 4-bit formats without going through f32.
pub fn q4_0_unpack_block(block: &[u8; 18]) -> (f32, [i8; 32]) {
    let mut v = [0i8; 32];
    for j in 0..16 {
        v[j] = (block[2 + j] & 0x0f) as i8 - 8;
        v[j + 16] = (block[2 + j] >> 4) as i8 - 8;
    }
    (f16_at(block, 0), v)
}

/// Splits one Q8_0 block into its scale and its 32 signed 8-bit values, so
/// that value `j` is `scale · values[j]`.
pub fn q8_0_unpack_block(block: &[u8; 34]) -> (f32, [i8; 32]) {
    let mut v = [0i8; 32];
    for (dst, &src) in v.iter_mut().zip(&block[2..]) {
        *dst = src as i8;
    }
    (f16_at(block, 0), v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_conversion_matches_half_for_every_non_nan_value() {
        for bits in 0..=u16::MAX {
            let ours = f16_to_f32(bits);
            let theirs = half::f16::from_bits(bits).to_f32();
            if theirs.is_nan() {
                assert!(ours.is_nan());
                assert_eq!(ours.to_bits() >> 31, u32::from(bits >> 15));
            } else {
                assert_eq!(ours.to_bits(), theirs.to_bits(), "bits {bits:#06x}");
            }
        }
    }

    #[test]
    fn unpack_agrees_with_dequantize() {
        let mut b4 = [0u8; 18];
        let mut b8 = [0u8; 34];
        for (i, x) in b4.iter_mut().chain(b8.iter_mut()).enumerate() {
            *x = (i as u8).wrapping_mul(37).wrapping_add(11);
        }
        b4[..2].copy_from_slice(&half::f16::from_f32(0.125).to_bits().to_le_bytes());
        b8[..2].copy_from_slice(&half::f16::from_f32(-0.5).to_bits().to_le_bytes());
        for (ty, bytes, (d, v)) in [
            (GgmlType::Q4_0, &b4[..], q4_0_unpack_block(&b4)),
            (GgmlType::Q8_0, &b8[..], q8_0_unpack_block(&b8)),
        ] {
            let want = dequantize(ty, bytes, 32).unwrap();
            let got: Vec<f32> = v.iter().map(|&q| d * f32::from(q)).collect();
            assert_eq!(got, want, "{ty}");
        }
    }

    #[test]
    fn wrong_sizes_are_errors() {
        assert!(dequantize(GgmlType::Q8_0, &[0; 34], 33).is_err());
        assert!(dequantize(GgmlType::Q8_0, &[0; 35], 32).is_err());
        let msg = dequantize(GgmlType::Q4_K, &[0; 10], 256)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("Q4_K") && msg.contains("144"), "{msg}");
        assert_eq!(
            dequantize(GgmlType::Q6_K, &[], 0).unwrap(),
            Vec::<f32>::new()
        );
    }
}
