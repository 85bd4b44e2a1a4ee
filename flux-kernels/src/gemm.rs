//! `y = x Wᵀ` for a weight that the caller produces one block of rows at a time (a quantized
//! weight dequantized tile by tile), on the host threads, through the `gemm` crate (the
//! matmul kernels under burn-flex and burn-ndarray, AVX-512 included).
//!
//! Written here rather than as burn matmuls over tiles because each thread must write its
//! tile's columns straight into the shared output: burn would return every tile as a new
//! tensor, to be concatenated (one more copy of the output), and would split each small
//! product over all threads instead of giving every thread its own tile.

/// Output columns per tile: each thread dequantizes `TILE` weight rows into its own buffer
/// (`TILE · cols` f32: 6 MB at FLUX.1's width 3072, 31 MB for the 15360-wide `linear2`) and
/// multiplies them with all of `x`. Smaller tiles repack `x` more often, larger ones leave
/// cache; 512 measured 1-4 % slower than 256 at `medium` (docs/performance.md).
pub const TILE: usize = 256;

/// `y = x Wᵀ` with `x`: `[m, k]` and `W`: `[n, k]`, both row-major; returns `y`: `[m, n]`.
/// `fill(first, tile)` writes weight rows `first..first + tile.len() / k` into `tile` as the
/// columns of a row-major `[k, width]` matrix (`tile[p · width + j] = W[first + j, p]`: the
/// layout burn's dense layers hold, which `gemm` multiplies without repacking it); it is
/// called once per tile of at most [`TILE`] rows, on the rayon pool (the CPU backends' own)
/// unless `threads` is 1.
///
/// # Panics
/// If `x.len() != m · k`.
pub fn matmul_tiles(
    x: &[f32],
    m: usize,
    k: usize,
    n: usize,
    threads: usize,
    fill: impl Fn(usize, &mut [f32]) + Sync,
) -> Vec<f32> {
    assert_eq!(x.len(), m * k, "x is not [m, k]");
    let mut y = vec![0f32; m * n];
    if m == 0 || n == 0 {
        return y;
    }
    let tiles = n.div_ceil(TILE);
    let out = SharedColumns::new(&mut y, m, n);
    let work = |tile: &mut Vec<f32>, t: usize| {
        let first = t * TILE;
        let width = TILE.min(n - first);
        tile.resize(width * k, 0.0);
        fill(first, tile);
        out.product(x, k, tile, first, width);
    };
    if threads <= 1 {
        let mut tile = Vec::new();
        (0..tiles).for_each(|t| work(&mut tile, t));
    } else {
        use rayon::prelude::*;
        (0..tiles)
            .into_par_iter()
            .with_max_len(1)
            .for_each_init(Vec::new, work);
    }
    y
}

/// A matrix inside a slice: element `(i, j)` at `i · row_stride + j · col_stride` (a
/// row-major matrix has `col_stride` 1; its transpose is the same slice with the strides
/// swapped).
#[derive(Clone, Copy)]
pub struct View<'a> {
    /// The slice the matrix lives in.
    pub data: &'a [f32],
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Distance between consecutive rows' elements.
    pub row_stride: usize,
    /// Distance between consecutive columns' elements.
    pub col_stride: usize,
}

impl<'a> View<'a> {
    /// A row-major `[rows, cols]` matrix.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self::strided(data, rows, cols, cols, 1)
    }

    /// Any layout; panics if an element of the view lies outside `data`.
    pub fn strided(
        data: &'a [f32],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Self {
        let fits = rows == 0
            || cols == 0
            || (rows - 1) * row_stride + (cols - 1) * col_stride < data.len();
        assert!(
            fits,
            "a {rows}x{cols} view (strides {row_stride}, {col_stride}) outside {} values",
            data.len()
        );
        Self {
            data,
            rows,
            cols,
            row_stride,
            col_stride,
        }
    }

    /// The same elements read as the transposed matrix.
    pub fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }
}

/// `dst = lhs · rhs` on the calling thread through `gemm`, `dst` holding `lhs.rows` rows of
/// `rhs.cols` values at `dst_row_stride` apart (the rest of each row is left alone).
///
/// # Panics
/// If the inner dimensions differ or a row of the product would end outside `dst`.
pub fn product_into(dst: &mut [f32], dst_row_stride: usize, lhs: View, rhs: View) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    assert_eq!(k, rhs.rows, "inner dimensions differ");
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        (m - 1) * dst_row_stride + n <= dst.len() && n <= dst_row_stride,
        "a {m}x{n} product does not fit {} values at row stride {dst_row_stride}",
        dst.len()
    );
    // SAFETY: every element gemm writes, (i, j) at i · dst_row_stride + j with i < m, j < n,
    // is inside `dst` (the assert above), and `dst` is borrowed mutably, so nothing else
    // reads or writes it; `lhs` and `rhs` are in bounds by `View::strided`.
    #[allow(unsafe_code)]
    unsafe {
        product_raw(dst.as_mut_ptr(), dst_row_stride, lhs, rhs);
    }
}

/// `lhs · rhs` written to the row-major matrix at `dst` (row stride `dst_row_stride`), on the
/// calling thread.
///
/// # Safety
/// Every element `(i, j)`, `i < lhs.rows`, `j < rhs.cols`, at `dst + i · dst_row_stride + j`
/// must be valid for writes and written by no other thread meanwhile.
#[allow(unsafe_code)]
unsafe fn product_raw(dst: *mut f32, dst_row_stride: usize, lhs: View, rhs: View) {
    // SAFETY: the views lie inside their slices (`View::strided`); `dst` by the caller.
    unsafe {
        gemm::gemm(
            lhs.rows,
            rhs.cols,
            lhs.cols,
            dst,
            1,
            dst_row_stride as isize,
            false,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// The output `[m, n]` (row-major) shared by threads that each write whole column ranges
/// they alone own.
struct SharedColumns {
    ptr: *mut f32,
    m: usize,
    n: usize,
}

// SAFETY: the pointer is only written through `product`, whose column ranges come from
// distinct tiles (each tile index is handed out once), so no two threads write the
// same element, and the output outlives the parallel loop, which returns when every tile is
// done.
#[allow(unsafe_code)]
unsafe impl Sync for SharedColumns {}

impl SharedColumns {
    fn new(y: &mut [f32], m: usize, n: usize) -> Self {
        assert_eq!(y.len(), m * n);
        Self {
            ptr: y.as_mut_ptr(),
            m,
            n,
        }
    }

    /// Columns `first..first + width` of the output = `x · tile`, with `x`: `[m, k]` and
    /// `tile`: `[k, width]`, on the calling thread. Each tile must be written by one call.
    fn product(&self, x: &[f32], k: usize, tile: &[f32], first: usize, width: usize) {
        let (m, n) = (self.m, self.n);
        assert!(first + width <= n && tile.len() == width * k && x.len() == m * k);
        let (x, tile) = (View::row_major(x, m, k), View::row_major(tile, k, width));
        // SAFETY: the product's elements (i, first + j), i < m, j < width, lie in the `m x n`
        // output (the assert) and are this tile's alone (see the `Sync` impl).
        #[allow(unsafe_code)]
        unsafe {
            product_raw(self.ptr.add(first), n, x, tile);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_give_the_plain_product() {
        // n spans several tiles and a partial one; k is not a multiple of the kernels' width.
        let (m, k, n) = (7, 45, 2 * TILE + 19);
        let x: Vec<f32> = (0..m * k)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 53 % 89) as f32 - 44.0) / 30.0)
            .collect();
        for threads in [1, 2, 3] {
            let y = matmul_tiles(&x, m, k, n, threads, |first, tile| {
                let width = tile.len() / k;
                for p in 0..k {
                    for j in 0..width {
                        tile[p * width + j] = w[(first + j) * k + p];
                    }
                }
            });
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = (0..k)
                        .map(|p| f64::from(x[i * k + p]) * f64::from(w[j * k + p]))
                        .sum();
                    let got = f64::from(y[i * n + j]);
                    assert!((got - want).abs() < 1e-4, "({i}, {j}): {got} vs {want}");
                }
            }
        }
        assert!(matmul_tiles(&[], 0, k, n, 2, |_, _| {}).is_empty());
    }
}
