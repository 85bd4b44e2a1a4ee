//! Splitting GGUF blocks into integer codes and their factors, without going through f32: what
//! keeps a quantized weight quantized in memory (a packed layer, e.g. `flux_nn::Linear`).
//!
//! Every supported block type decodes as `x = s·(u − Z) + o`, where `u` is a `bits`-wide
//! unsigned code, `Z` is `2^(bits−1)` for the types without an offset (`Q8_0`, `Q4_0`, `Q5_0`,
//! `Q3_K`, `Q6_K`) and 0 for the others, and, per sub-block of the K-quants, `s = d·sc` and
//! `o = −dmin·mn` with integer `sc`, `mn`. Computing those terms in that order in f32 gives
//! exactly gguf-py's values (its `dequantize` forms the same products in the same order).

use crate::GgmlType;
use crate::half_bits::f16_to_f32;

/// One block, split. Codes are in value order; sub-block factors are stored `+128` (so that
/// the signed `Q3_K`/`Q6_K` scales and the unsigned others share one unsigned 8-bit field).
pub struct SplitBlock {
    /// The codes `u` (the first [`GgmlType::block_size`] entries are used).
    pub codes: [u8; 256],
    /// f16 bits of the block's scale `d`.
    pub d: u16,
    /// f16 bits of the block's offset: `m` (Q4_1, Q5_1) or `−dmin` (Q2_K, Q4_K, Q5_K).
    pub offset: Option<u16>,
    /// Sub-block scales `sc + 128` (K-quants: the first [`sub_blocks`] entries).
    pub sub_scales: [u8; 16],
    /// Sub-block mins `mn + 128` (Q2_K, Q4_K, Q5_K).
    pub sub_mins: [u8; 16],
}

impl Default for SplitBlock {
    fn default() -> Self {
        Self {
            codes: [0; 256],
            d: 0,
            offset: None,
            sub_scales: [0; 16],
            sub_mins: [0; 16],
        }
    }
}

/// Decodes one block of `ty` (`b.len() == ty.type_size()`, `out.len() == ty.block_size()`,
/// checked by the caller) to f32: gguf-py's products in gguf-py's order (`d·sc` and
/// `dmin·mn` first, then `factor·q − offset`), so the values are bit-identical to
/// `gguf.quants.dequantize`.
/// `s` is scratch space, reused across blocks.
pub(crate) fn dequantize_block(ty: GgmlType, b: &[u8], out: &mut [f32], s: &mut SplitBlock) {
    split_block(ty, b, s);
    let bits = code_bits(ty).expect("a block type");
    let d = f16_to_f32(s.d);
    let offset = s.offset.map(f16_to_f32);
    let zero = if offset.is_some() {
        0
    } else {
        1i32 << (bits - 1)
    };
    let n_sub = sub_blocks(ty);
    // Per group of values: its scale and offset (a K-quant's sub-block, or the whole block).
    let groups = n_sub.max(1);
    let size = out.len() / groups;
    for (g, (out, codes)) in out
        .chunks_exact_mut(size)
        .zip(s.codes.chunks_exact(size))
        .enumerate()
    {
        let factor = |v: u8| f32::from(v) - 128.0;
        let (scale, off) = if n_sub > 0 {
            let mn = offset.map(|o| o * factor(s.sub_mins[g]));
            (d * factor(s.sub_scales[g]), mn)
        } else {
            (d, offset)
        };
        match off {
            Some(o) => {
                for (x, &u) in out.iter_mut().zip(codes) {
                    *x = (i32::from(u) - zero) as f32 * scale + o;
                }
            }
            None => {
                for (x, &u) in out.iter_mut().zip(codes) {
                    *x = (i32::from(u) - zero) as f32 * scale;
                }
            }
        }
    }
}

/// The 32 five-bit values of a Q5_0/Q5_1 block: low nibbles from `qs` (element j in the low
/// nibble of byte j, element j+16 in its high nibble), fifth bits from the little-endian u32
/// `qh` (bit j for element j).
fn five_bit_values(qh: [u8; 4], qs: &[u8]) -> [u8; 32] {
    let qh = u32::from_le_bytes(qh);
    let mut q = [0u8; 32];
    for j in 0..16 {
        q[j] = (qs[j] & 0x0f) | ((((qh >> j) & 1) as u8) << 4);
        q[j + 16] = (qs[j] >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
    }
    q
}

/// The eight 6-bit (scale, min) pairs packed in the 12 `scales` bytes of Q4_K and Q5_K.
fn scale_min_k4(s: &[u8]) -> ([u8; 8], [u8; 8]) {
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

/// The code width of a block type, or `None` for the float types.
pub fn code_bits(ty: GgmlType) -> Option<usize> {
    Some(match ty {
        GgmlType::Q8_0 => 8,
        GgmlType::Q6_K => 6,
        GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q5_K => 5,
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q4_K => 4,
        GgmlType::Q3_K => 3,
        GgmlType::Q2_K => 2,
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => return None,
    })
}

/// Sub-blocks per block (0 for the legacy types).
pub fn sub_blocks(ty: GgmlType) -> usize {
    match ty {
        GgmlType::Q2_K | GgmlType::Q3_K | GgmlType::Q6_K => 16,
        GgmlType::Q4_K | GgmlType::Q5_K => 8,
        _ => 0,
    }
}

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([b[i], b[i + 1]])
}

/// Flips the sign of an f16 (exact).
fn neg(h: u16) -> u16 {
    h ^ 0x8000
}

fn biased(v: i32) -> u8 {
    (v + 128) as u8
}

/// Splits one block of `ty` (`block.len() == ty.type_size()`, checked by the caller) into `s`
/// (reused across blocks: every field the type has is overwritten).
///
/// # Panics
/// For the float types, which have no blocks to split.
pub fn split_block(ty: GgmlType, b: &[u8], s: &mut SplitBlock) {
    s.offset = None;
    let u = &mut s.codes;
    match ty {
        GgmlType::Q8_0 => {
            s.d = u16_at(b, 0);
            for j in 0..32 {
                u[j] = b[2 + j] ^ 0x80;
            }
        }
        GgmlType::Q4_0 | GgmlType::Q4_1 => {
            s.d = u16_at(b, 0);
            let qs = if ty == GgmlType::Q4_1 {
                s.offset = Some(u16_at(b, 2));
                &b[4..20]
            } else {
                &b[2..18]
            };
            for j in 0..16 {
                u[j] = qs[j] & 0x0f;
                u[j + 16] = qs[j] >> 4;
            }
        }
        GgmlType::Q5_0 | GgmlType::Q5_1 => {
            s.d = u16_at(b, 0);
            let rest = if ty == GgmlType::Q5_1 {
                s.offset = Some(u16_at(b, 2));
                &b[4..24]
            } else {
                &b[2..22]
            };
            let q = five_bit_values([rest[0], rest[1], rest[2], rest[3]], &rest[4..20]);
            u[..32].copy_from_slice(&q);
        }
        GgmlType::Q2_K => {
            let (scales, qs) = (&b[0..16], &b[16..80]);
            s.d = u16_at(b, 80);
            s.offset = Some(neg(u16_at(b, 82)));
            for (j, &v) in scales.iter().enumerate() {
                s.sub_scales[j] = biased(i32::from(v & 0x0f));
                s.sub_mins[j] = biased(i32::from(v >> 4));
            }
            for h in 0..2 {
                for sh in 0..4 {
                    for l in 0..32 {
                        u[h * 128 + sh * 32 + l] = (qs[h * 32 + l] >> (2 * sh)) & 3;
                    }
                }
            }
        }
        GgmlType::Q3_K => {
            let (hmask, qs, sc) = (&b[0..32], &b[32..96], &b[96..108]);
            s.d = u16_at(b, 108);
            for (k, x) in s.sub_scales.iter_mut().enumerate() {
                let low = if k < 8 { sc[k] & 0x0f } else { sc[k - 8] >> 4 };
                let high = (sc[8 + k % 4] >> (2 * (k / 4))) & 3;
                *x = biased(i32::from(low | (high << 4)) - 32);
            }
            for h in 0..2 {
                for sh in 0..4 {
                    let group = h * 4 + sh;
                    for l in 0..32 {
                        let low = (qs[h * 32 + l] >> (2 * sh)) & 3;
                        let high = (hmask[l] >> group) & 1;
                        // A set high bit means "no −4": u − 4 is the signed value either way.
                        u[group * 32 + l] = low | (high << 2);
                    }
                }
            }
        }
        GgmlType::Q4_K | GgmlType::Q5_K => {
            s.d = u16_at(b, 0);
            s.offset = Some(neg(u16_at(b, 2)));
            let (sc, mn) = scale_min_k4(&b[4..16]);
            for j in 0..8 {
                s.sub_scales[j] = biased(i32::from(sc[j]));
                s.sub_mins[j] = biased(i32::from(mn[j]));
            }
            if ty == GgmlType::Q4_K {
                for (c, qs) in b[16..144].chunks_exact(32).enumerate() {
                    for l in 0..32 {
                        u[c * 64 + l] = qs[l] & 0x0f;
                        u[c * 64 + 32 + l] = qs[l] >> 4;
                    }
                }
            } else {
                let (qh, qs) = (&b[16..48], &b[48..176]);
                for c in 0..4 {
                    for i in 0..2 {
                        let j = c * 2 + i;
                        for l in 0..32 {
                            let low = (qs[c * 32 + l] >> (4 * i)) & 0x0f;
                            u[j * 32 + l] = low | (((qh[l] >> j) & 1) << 4);
                        }
                    }
                }
            }
        }
        GgmlType::Q6_K => {
            let (ql, qh, scales) = (&b[0..128], &b[128..192], &b[192..208]);
            s.d = u16_at(b, 208);
            for (x, &v) in s.sub_scales.iter_mut().zip(scales) {
                *x = biased(i32::from(v as i8));
            }
            for h in 0..2 {
                for r in 0..4 {
                    let lo_byte = h * 64 + (r % 2) * 32;
                    for l in 0..32 {
                        let low = (ql[lo_byte + l] >> (4 * (r / 2))) & 0x0f;
                        let high = (qh[h * 32 + l] >> (2 * r)) & 3;
                        u[h * 128 + r * 32 + l] = low | (high << 4);
                    }
                }
            }
        }
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => {
            panic!("split_block: {ty} has no blocks")
        }
    }
}
