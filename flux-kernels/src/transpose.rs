//! A 2-D tensor's values transposed on the host, whatever their dtype: how the loader turns a
//! checkpoint's `[out, in]` linear weight into the `[in, out]` layout burn's `Linear` holds.
//!
//! Done once at load on the CPU backends instead of holding a transposed *view*: they pass a
//! view's strides to `gemm`, whose products with a column-major right-hand side ran the
//! `medium` step 1.38x slower than with the same weights stored row-major. Read straight
//! from the memory map, the transposed load is faster than the plain copy it replaced
//! (docs/performance.md).

use bytemuck::Pod;
use rayon::prelude::*;

/// Side of the blocks transposed at a time.
const TILE: usize = 32;

/// The elements of a row-major `[rows, cols]` matrix given as bytes, transposed; the
/// output's rows are written in bands of 32 rows (`TILE`) on the host threads.
///
/// `T` is any plain type of the elements' size (`u16` for f16/bf16, `u32` for f32): the bytes
/// are moved, never converted. Unaligned input (a memory map's tensor at an odd offset) is
/// copied once first.
///
/// # Panics
/// If `bytes` does not hold `rows · cols` elements of `T`.
pub fn transposed<T: Pod + Send + Sync>(bytes: &[u8], rows: usize, cols: usize) -> Vec<T> {
    assert_eq!(
        bytes.len(),
        rows * cols * size_of::<T>(),
        "not a [{rows}, {cols}] matrix"
    );
    let copy;
    let src: &[T] = match bytemuck::try_cast_slice(bytes) {
        Ok(src) => src,
        Err(_) => {
            // Not aligned for `T`: one aligned copy first.
            copy = bytemuck::pod_collect_to_vec(bytes);
            &copy
        }
    };
    let mut out = vec![T::zeroed(); src.len()];
    if rows == 0 || cols == 0 {
        return out;
    }
    // Output rows `first..first + TILE` are input columns: one band per task, filled one
    // TILE x TILE block at a time through a buffer (contiguous reads and contiguous writes;
    // 2x faster than writing each element straight to its output row).
    let band = |(b, dst): (usize, &mut [T])| {
        let first = b * TILE;
        let width = dst.len() / rows;
        let mut tile = [[T::zeroed(); TILE]; TILE];
        for i0 in (0..rows).step_by(TILE) {
            let height = TILE.min(rows - i0);
            for (di, line) in tile.iter_mut().enumerate().take(height) {
                let start = (i0 + di) * cols + first;
                line[..width].copy_from_slice(&src[start..start + width]);
            }
            for j in 0..width {
                let out = &mut dst[j * rows + i0..j * rows + i0 + height];
                for (o, line) in out.iter_mut().zip(&tile) {
                    *o = line[j];
                }
            }
        }
    };
    out.par_chunks_mut(TILE * rows).enumerate().for_each(band);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::bf16;

    #[test]
    fn every_width_transposes_exactly() {
        // Sizes that are not multiples of the tile, one wider than tall and one taller.
        for (rows, cols) in [(3, 70), (45, 33), (1, 1), (64, 32)] {
            let values: Vec<f32> = (0..rows * cols).map(|v| v as f32 * 0.5 - 7.0).collect();
            let want: Vec<f32> = (0..cols)
                .flat_map(|j| (0..rows).map(move |i| (i, j)))
                .map(|(i, j)| values[i * cols + j])
                .collect();
            let got: Vec<u32> = transposed(bytemuck::cast_slice(&values), rows, cols);
            let got: Vec<f32> = got.into_iter().map(f32::from_bits).collect();
            assert!(got == want, "f32 {rows}x{cols} differs");

            let halves: Vec<u16> = values
                .iter()
                .map(|&v| bf16::from_f32(v).to_bits())
                .collect();
            let got: Vec<u16> = transposed(bytemuck::cast_slice(&halves), rows, cols);
            let rounded: Vec<u16> = want.iter().map(|&v| bf16::from_f32(v).to_bits()).collect();
            assert!(got == rounded, "bf16 {rows}x{cols} differs");
        }
        // Unaligned input.
        let bytes: Vec<u8> = (0..=24).collect();
        let got: Vec<u32> = transposed(&bytes[1..], 2, 3);
        let word = |i: u8| u32::from_le_bytes([i, i + 1, i + 2, i + 3]);
        assert_eq!(
            got,
            [word(1), word(13), word(5), word(17), word(9), word(21)]
        );
        assert!(transposed::<u32>(&[], 0, 5).is_empty());
    }
}
