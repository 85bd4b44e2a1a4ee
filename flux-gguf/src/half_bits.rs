//! IEEE half and bfloat16 bit conversions exactly as gguf-py (numpy) and ggml do them: the one
//! leaf every block layout's decoder and encoder shares.

/// Converts IEEE half-precision bits to f32 exactly, keeping NaN payloads
/// (as numpy's scalar conversion does). Branch-free so loops vectorise.
#[inline(always)]
pub(crate) fn f16_to_f32(h: u16) -> f32 {
    let h = u32::from(h);
    let sign = (h & 0x8000) << 16;
    let em = h & 0x7fff;
    // Normal and subnormal halves: reinterpret the shifted bits and rescale
    // by 2^112; the product is exact.
    let finite = (f32::from_bits(em << 13) * f32::from_bits(0x7780_0000)).to_bits();
    let special = 0x7f80_0000 | ((em & 0x03ff) << 13);
    f32::from_bits(sign | if em >= 0x7c00 { special } else { finite })
}

/// f32 → IEEE half bits, rounding to nearest even; NaNs keep the top payload
/// bits and stay NaN, as numpy's `astype(np.float16)` does.
pub fn f32_to_f16_bits(v: f32) -> u16 {
    if v.is_nan() {
        let bits = v.to_bits();
        let sign = ((bits >> 16) & 0x8000) as u16;
        let payload = ((bits & 0x007f_ffff) >> 13) as u16;
        return sign | 0x7c00 | payload.max(1);
    }
    half::f16::from_f32(v).to_bits()
}

/// f32 → bfloat16 bits exactly as gguf-py (and ggml's
/// `ggml_compute_fp32_to_bf16`) do it: NaNs are made quiet, everything else
/// is rounded to nearest even (overflowing to infinity).
pub fn f32_to_bf16_bits(v: f32) -> u16 {
    let mut n = v.to_bits();
    if n & 0x7fff_ffff > 0x7f80_0000 {
        n = (n & 0xffff_0000) | (64 << 16);
    }
    ((u64::from(n) + u64::from(0x7fff + ((n >> 16) & 1))) >> 16) as u16
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
}
