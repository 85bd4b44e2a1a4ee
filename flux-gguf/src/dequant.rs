//! Decoding of every supported type: the float types here, the block types
//! through [`super::split`] (one description of each block layout, shared
//! with the packed weights that stay quantized in memory).
//!
//! Each formula is evaluated with the same f32 operations in the same order
//! as gguf-py's `gguf.quants` (no fused multiply-add), so results are
//! bit-identical to it.

use crate::error::GgufError;
use crate::half_bits::f16_to_f32;
use crate::split::{SplitBlock, dequantize_block};
use crate::types::GgmlType;

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
        _ => {
            let mut scratch = SplitBlock::default();
            for (b, o) in blocks.zip(outs) {
                dequantize_block(ty, b, o, &mut scratch);
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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
