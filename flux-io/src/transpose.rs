//! A 2-D tensor's values transposed on the host, whatever their dtype: how the loader turns a
//! checkpoint's `[out, in]` linear weight into the `[in, out]` layout burn's `Linear` holds.
//!
//! Done once at load on the CPU backends instead of holding a transposed *view*: they pass a
//! view's strides to `gemm`, whose products with a column-major right-hand side ran the
//! `medium` step 1.38x slower than with the same weights stored row-major. Read straight
//! from the memory map, the transposed load is faster than the plain copy it replaced
//! (docs/performance.md).

use burn::tensor::{Bytes, DType, TensorData};
use bytemuck::Pod;

/// Side of the blocks transposed at a time.
const TILE: usize = 32;

/// `[rows, cols]` -> `[cols, rows]`, same dtype. Values of a tensor that is not 2-D come
/// back unchanged.
pub(crate) fn transpose_2d(data: TensorData) -> TensorData {
    let &[rows, cols] = data.shape.as_slice() else {
        return data;
    };
    transpose_bytes(data.as_bytes(), data.dtype, rows, cols).unwrap_or(data)
}

/// The row-major `[rows, cols]` matrix of `dtype` values in `bytes`, transposed to
/// `[cols, rows]`; `None` for element sizes other than 1, 2, 4 and 8 bytes.
///
/// # Panics
/// If `bytes` does not hold `rows · cols` values.
pub(crate) fn transpose_bytes(
    bytes: &[u8],
    dtype: DType,
    rows: usize,
    cols: usize,
) -> Option<TensorData> {
    assert_eq!(
        bytes.len(),
        rows * cols * dtype.size(),
        "not a [{rows}, {cols}] matrix"
    );
    // Output held as whole elements, so the backend takes the buffer as it is (aligned).
    let out = match dtype.size() {
        1 => Bytes::from_elems(transposed::<u8>(bytes, rows, cols)),
        2 => Bytes::from_elems(transposed::<u16>(bytes, rows, cols)),
        4 => Bytes::from_elems(transposed::<u32>(bytes, rows, cols)),
        8 => Bytes::from_elems(transposed::<u64>(bytes, rows, cols)),
        _ => return None,
    };
    Some(TensorData::from_bytes(out, [cols, rows], dtype))
}

/// The elements of a row-major `[rows, cols]` matrix given as bytes, transposed; the
/// output's rows are written in bands of [`TILE`] on the host threads.
fn transposed<T: Pod + Send + Sync>(bytes: &[u8], rows: usize, cols: usize) -> Vec<T> {
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
    #[cfg(any(feature = "flex", feature = "ndarray"))]
    {
        use rayon::prelude::*;
        out.par_chunks_mut(TILE * rows).enumerate().for_each(band);
    }
    #[cfg(not(any(feature = "flex", feature = "ndarray")))]
    out.chunks_mut(TILE * rows).enumerate().for_each(band);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::bf16;

    #[test]
    fn every_dtype_transposes_exactly() {
        // Sizes that are not multiples of the tile, one wider than tall and one taller.
        for (rows, cols) in [(3, 70), (45, 33), (1, 1), (64, 32)] {
            let values: Vec<f32> = (0..rows * cols).map(|v| v as f32 * 0.5 - 7.0).collect();
            let want: Vec<f32> = (0..cols)
                .flat_map(|j| (0..rows).map(move |i| (i, j)))
                .map(|(i, j)| values[i * cols + j])
                .collect();
            let t = transpose_2d(TensorData::new(values.clone(), [rows, cols]));
            assert_eq!(t.shape.as_slice(), [cols, rows]);
            assert!(
                t.to_vec::<f32>().unwrap() == want,
                "f32 {rows}x{cols} differs"
            );

            let halves: Vec<bf16> = values.iter().map(|&v| bf16::from_f32(v)).collect();
            let t = transpose_2d(TensorData::new(halves, [rows, cols]));
            assert_eq!(t.dtype, DType::BF16);
            let got: Vec<f32> = t
                .to_vec::<bf16>()
                .unwrap()
                .iter()
                .map(|v| v.to_f32())
                .collect();
            let rounded: Vec<f32> = want.iter().map(|&v| bf16::from_f32(v).to_f32()).collect();
            assert!(got == rounded, "bf16 {rows}x{cols} differs");
        }
        let empty = transpose_2d(TensorData::new(Vec::<f32>::new(), [0, 5]));
        assert_eq!(empty.shape.as_slice(), [5, 0]);
    }
}
