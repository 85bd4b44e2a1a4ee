//! Decoding of the K-quants (256-value super-blocks): Q2_K, Q3_K, Q4_K,
//! Q5_K and Q6_K.
//!
//! Layouts follow ggml's `block_q*_K` structs; arithmetic follows gguf-py's
//! `gguf.quants` term by term: per-sub-block factors `d·scale` (and
//! `dmin·min`) are formed first, then `factor·q − offset`, all in f32.
//! Within a super-block, value index `v` splits into a 128-value half `h`,
//! a 32-value group and a lane `l`; the loops below run over those parts.

use super::dequant::f16_at;

/// Q2_K, 84 bytes: `scales[16]` (low nibble scale, high nibble min, per 16
/// values), `qs[64]` (2-bit), f16 `d`, f16 `dmin`.
pub(super) fn q2_k_block(b: &[u8; 84], o: &mut [f32; 256]) {
    let (scales, qs) = (&b[0..16], &b[16..80]);
    let (d, dmin) = (f16_at(b, 80), f16_at(b, 82));
    let mut dl = [0.0f32; 16];
    let mut ml = [0.0f32; 16];
    for j in 0..16 {
        dl[j] = d * f32::from(scales[j] & 0x0f);
        ml[j] = dmin * f32::from(scales[j] >> 4);
    }
    for h in 0..2 {
        for s in 0..4 {
            let base = h * 128 + s * 32;
            for l in 0..32 {
                let q = f32::from((qs[h * 32 + l] >> (2 * s)) & 3);
                let j = (base + l) / 16;
                o[base + l] = dl[j] * q - ml[j];
            }
        }
    }
}

/// Q3_K, 110 bytes: `hmask[32]` (third bits), `qs[64]` (low 2 bits),
/// `scales[12]` (16 packed 6-bit scales, stored +32), f16 `d`.
pub(super) fn q3_k_block(b: &[u8; 110], o: &mut [f32; 256]) {
    let (hmask, qs, sc) = (&b[0..32], &b[32..96], &b[96..108]);
    let d = f16_at(b, 108);
    let mut dl = [0.0f32; 16];
    for (k, dl) in dl.iter_mut().enumerate() {
        let low = if k < 8 { sc[k] & 0x0f } else { sc[k - 8] >> 4 };
        let high = (sc[8 + k % 4] >> (2 * (k / 4))) & 3;
        let scale = ((low | (high << 4)) as i8).wrapping_sub(32);
        *dl = d * f32::from(scale);
    }
    for h in 0..2 {
        for s in 0..4 {
            let group = h * 4 + s; // which bit of hmask, 0..8
            let base = group * 32;
            for l in 0..32 {
                let low = ((qs[h * 32 + l] >> (2 * s)) & 3) as i8;
                // A set hmask bit means no offset; a clear one subtracts 4.
                let minus = if (hmask[l] >> group) & 1 == 1 { 0 } else { 4 };
                o[base + l] = dl[(base + l) / 16] * f32::from(low - minus);
            }
        }
    }
}

/// The eight 6-bit (scale, min) pairs packed in the 12 `scales` bytes of
/// Q4_K and Q5_K.
#[inline(always)]
pub(super) fn scale_min_k4(s: &[u8]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut mn = [0u8; 8];
    for j in 0..4 {
        sc[j] = s[j] & 0x3f;
        mn[j] = s[j + 4] & 0x3f;
        sc[j + 4] = (s[j + 8] & 0x0f) | ((s[j] >> 2) & 0x30);
        mn[j + 4] = (s[j + 8] >> 4) | ((s[j + 4] >> 2) & 0x30);
    }
    (sc, mn)
}

/// Per-32-value factors `d·scale` and `dmin·min` for Q4_K and Q5_K.
#[inline(always)]
fn factors_k4(b: &[u8]) -> ([f32; 8], [f32; 8]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let (sc, mn) = scale_min_k4(&b[4..16]);
    let mut ds = [0.0f32; 8];
    let mut dm = [0.0f32; 8];
    for j in 0..8 {
        ds[j] = d * f32::from(sc[j]);
        dm[j] = dmin * f32::from(mn[j]);
    }
    (ds, dm)
}

/// Q4_K, 144 bytes: f16 `d`, f16 `dmin`, `scales[12]`, `qs[128]` (4-bit;
/// byte `c·32 + l` holds value `c·64 + l` low and `c·64 + 32 + l` high).
pub(super) fn q4_k_block(b: &[u8; 144], o: &mut [f32; 256]) {
    let (ds, dm) = factors_k4(b);
    for (c, (qs, o)) in b[16..144]
        .chunks_exact(32)
        .zip(o.chunks_exact_mut(64))
        .enumerate()
    {
        let (lo, hi) = o.split_at_mut(32);
        let (j, k) = (2 * c, 2 * c + 1);
        for l in 0..32 {
            lo[l] = ds[j] * f32::from(qs[l] & 0x0f) - dm[j];
            hi[l] = ds[k] * f32::from(qs[l] >> 4) - dm[k];
        }
    }
}

/// Q5_K, 176 bytes: as Q4_K plus `qh[32]` before `qs[128]`; bit `j` of
/// `qh[l]` is the fifth bit of value `j·32 + l`.
pub(super) fn q5_k_block(b: &[u8; 176], o: &mut [f32; 256]) {
    let (ds, dm) = factors_k4(b);
    let (qh, qs) = (&b[16..48], &b[48..176]);
    for c in 0..4 {
        for i in 0..2 {
            let j = c * 2 + i;
            for l in 0..32 {
                let low = (qs[c * 32 + l] >> (4 * i)) & 0x0f;
                let high = ((qh[l] >> j) & 1) << 4;
                o[j * 32 + l] = ds[j] * f32::from(low | high) - dm[j];
            }
        }
    }
}

/// Q6_K, 210 bytes: `ql[128]` (low 4 bits), `qh[64]` (high 2 bits),
/// `scales[16]` (i8, per 16 values), f16 `d`; values are stored +32.
pub(super) fn q6_k_block(b: &[u8; 210], o: &mut [f32; 256]) {
    let (ql, qh, scales) = (&b[0..128], &b[128..192], &b[192..208]);
    let d = f16_at(b, 208);
    let mut dl = [0.0f32; 16];
    for (k, dl) in dl.iter_mut().enumerate() {
        *dl = d * f32::from(scales[k] as i8);
    }
    for h in 0..2 {
        for r in 0..4 {
            let base = h * 128 + r * 32;
            let lo_byte = h * 64 + (r % 2) * 32;
            let lo_shift = 4 * (r / 2);
            for l in 0..32 {
                let low = (ql[lo_byte + l] >> lo_shift) & 0x0f;
                let high = (qh[h * 32 + l] >> (2 * r)) & 3;
                let q = ((low | (high << 4)) as i8) - 32;
                o[base + l] = dl[(base + l) / 16] * f32::from(q);
            }
        }
    }
}
