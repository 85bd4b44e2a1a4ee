//! The bit layout of quantized codes in memory.
//!
//! Codes of `bits` bits are held per 32-value chunk in `bits` 32-bit words, split into planes
//! of 8, 4, 2 and 1 bits following the binary digits of `bits` (6 = 4 + 2, 5 = 4 + 1, 3 = 2 + 1).
//! The widest plane holds the lowest bits of each code. A plane of width `w` takes `w` words;
//! word `k`, lane `l` (bits `l·w .. (l+1)·w`) holds value `k·(32/w) + l`. So a chunk takes
//! exactly `bits` words (no padding) and unpacking is shifts and masks that every backend has.

/// The plane widths of `bits`-bit codes, widest (lowest bits) first.
pub fn plane_widths(bits: usize) -> impl Iterator<Item = usize> {
    [8, 4, 2, 1].into_iter().filter(move |w| bits & w != 0)
}

/// Appends the `bits` words of one 32-value chunk of codes (each `< 2^bits`).
pub fn push_chunk(words: &mut Vec<i32>, codes: &[u8], bits: usize) {
    debug_assert_eq!(codes.len(), 32);
    let mut shift = 0;
    for width in plane_widths(bits) {
        let per = 32 / width;
        let mask = (1u32 << width) - 1;
        for k in 0..width {
            let mut word = 0u32;
            for (lane, &code) in codes[k * per..(k + 1) * per].iter().enumerate() {
                word |= ((u32::from(code) >> shift) & mask) << (lane * width);
            }
            words.push(word as i32);
        }
        shift += width;
    }
}

/// Appends `values.len() / 4` words holding four 8-bit values each, lowest byte first.
pub fn push_bytes(words: &mut Vec<i32>, values: &[u8]) {
    for four in values.chunks_exact(4) {
        words.push(i32::from_le_bytes([four[0], four[1], four[2], four[3]]));
    }
}

/// The codes of one chunk back from its words (the host mirror of the device unpacking).
#[inline(always)]
pub fn unpack_chunk(words: &[i32], bits: usize) -> [u8; 32] {
    let mut codes = [0u8; 32];
    // The common widths straight (one plane each), the others plane by plane.
    if bits == 8 {
        for (k, w) in words[..8].iter().enumerate() {
            codes[4 * k..4 * k + 4].copy_from_slice(&w.to_le_bytes());
        }
        return codes;
    }
    if bits == 4 {
        for (k, &w) in words[..4].iter().enumerate() {
            let w = w as u32;
            for lane in 0..8 {
                codes[8 * k + lane] = ((w >> (4 * lane)) & 0x0f) as u8;
            }
        }
        return codes;
    }
    let (mut shift, mut at) = (0, 0);
    for width in plane_widths(bits) {
        let per = 32 / width;
        let mask = (1u32 << width) - 1;
        for k in 0..width {
            let word = words[at + k] as u32;
            for lane in 0..per {
                codes[k * per + lane] |= (((word >> (lane * width)) & mask) << shift) as u8;
            }
        }
        at += width;
        shift += width;
    }
    codes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_width_round_trips() {
        for bits in 1..=8 {
            let codes: [u8; 32] = std::array::from_fn(|i| ((i * 37 + 11) % (1 << bits)) as u8);
            let mut words = Vec::new();
            push_chunk(&mut words, &codes, bits);
            assert_eq!(words.len(), bits, "{bits} bits take {bits} words");
            assert_eq!(unpack_chunk(&words, bits), codes, "{bits} bits");
        }
    }
}
