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
pub(crate) const TILE: usize = 256;

/// `y = x Wᵀ` with `x`: `[m, k]` and `W`: `[n, k]`, both row-major; returns `y`: `[m, n]`.
/// `fill(first, tile)` writes weight rows `first..first + tile.len() / k` into `tile` as the
/// columns of a row-major `[k, width]` matrix (`tile[p · width + j] = W[first + j, p]`: the
/// layout burn's dense layers hold, which `gemm` multiplies without repacking it); it is
/// called once per tile of at most [`TILE`] rows, on the rayon pool (the CPU backends' own)
/// unless `threads` is 1.
///
/// # Panics
/// If `x.len() != m · k`.
pub(crate) fn matmul_tiles(
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
        // SAFETY: `dst` addresses elements (i, first + j), i < m, j < width, of the `m x n`
        // output: in bounds by the assert; `x` (m x k, row stride k) and `tile` (k x width,
        // row stride width) are in bounds by the assert. The columns are this tile's alone (see the `Sync` impl).
        #[allow(unsafe_code)]
        unsafe {
            gemm::gemm(
                m,
                width,
                k,
                self.ptr.add(first),
                1,
                n as isize,
                false,
                x.as_ptr(),
                1,
                k as isize,
                tile.as_ptr(),
                1,
                width as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
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
