//! Dequantizing a packed weight on the host threads: the CPU backends' path (burn's generic
//! integer ops run it several times slower), with the device path's arithmetic, so the values
//! are the same bits.

use crate::planes::unpack_chunk;

/// A packed weight's parts as host slices (the layout of `flux_nn::Packed`).
pub struct HostPacked<'a> {
    /// Rows of the weight (output features).
    pub rows: usize,
    /// Columns of the weight (input features, a multiple of 32).
    pub cols: usize,
    /// Code width.
    pub bits: usize,
    /// `[rows, cols / 32, bits]`.
    pub codes: &'a [i32],
    /// `[rows, groups, k]`: scale, and offset when `k = 2`.
    pub factors: &'a [f32],
    /// Factor groups per row.
    pub groups: usize,
    /// Factors per group: 1 (scale) or 2 (scale, offset).
    pub k: usize,
    /// `[rows, words, k]` sub-block factor words, with `k`.
    pub sub: Option<(&'a [i32], usize)>,
    /// fp8: the 256 values of the codes.
    pub codebook: Option<&'a [f32]>,
}

impl HostPacked<'_> {
    /// The weight `[rows, cols]` in f32, rows split over `threads` threads.
    pub fn dequantize(&self, threads: usize) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        let per = self.rows.div_ceil(threads.max(1)).max(1);
        std::thread::scope(|s| {
            for (i, chunk) in out.chunks_mut(per * self.cols).enumerate() {
                s.spawn(move || {
                    for (j, row) in chunk.chunks_mut(self.cols).enumerate() {
                        self.row(i * per + j, row);
                    }
                });
            }
        });
        out
    }

    /// The weight transposed, `[cols, rows]` (burn's `[in, out]`, what a matmul takes),
    /// output rows split over `threads` threads: each thread decodes its 32-value chunks of
    /// every weight row.
    pub fn dequantize_transposed(&self, threads: usize) -> Vec<f32> {
        let (rows, chunks) = (self.rows, self.cols / 32);
        let mut out = vec![0f32; self.rows * self.cols];
        let per = chunks.div_ceil(threads.max(1)).max(1);
        std::thread::scope(|s| {
            for (i, part) in out.chunks_mut(per * 32 * rows).enumerate() {
                s.spawn(move || {
                    let first = i * per;
                    let n = part.len() / (32 * rows);
                    let mut values = vec![0f32; n * 32];
                    for r in 0..rows {
                        self.row_chunks(r, first..first + n, &mut values);
                        for (j, &v) in values.iter().enumerate() {
                            part[j * rows + r] = v;
                        }
                    }
                });
            }
        });
        out
    }

    /// `x W^T` for a few input rows (`x`: `[m, cols]` → `[m, rows]`) without materialising
    /// `W`: each weight row is decoded once into a buffer and dotted with every input row, on
    /// `threads` threads. For the modulation layers, applied to one vector per image, where
    /// dequantizing the whole weight would cost more than the product.
    pub fn matmul_few(&self, x: &[f32], m: usize, threads: usize) -> Vec<f32> {
        let (rows, cols) = (self.rows, self.cols);
        let per = rows.div_ceil(threads.max(1)).max(1);
        let parts: Vec<Vec<f32>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..rows)
                .step_by(per)
                .map(|first| {
                    s.spawn(move || {
                        let last = (first + per).min(rows);
                        let mut w = vec![0f32; cols];
                        let mut out = vec![0f32; m * (last - first)];
                        for r in first..last {
                            self.row(r, &mut w);
                            for i in 0..m {
                                let xi = &x[i * cols..(i + 1) * cols];
                                let dot: f32 = xi.iter().zip(&w).map(|(a, b)| a * b).sum();
                                out[i * (last - first) + r - first] = dot;
                            }
                        }
                        out
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a dequantizing thread panicked"))
                .collect()
        });
        let mut y = vec![0f32; m * rows];
        for (p, part) in parts.iter().enumerate() {
            let first = p * per;
            let n = part.len() / m;
            for i in 0..m {
                y[i * rows + first..i * rows + first + n]
                    .copy_from_slice(&part[i * n..(i + 1) * n]);
            }
        }
        y
    }

    /// `x Wᵀ` (`x`: `[m, cols]` → `[m, rows]`) without a whole f32 copy of `W`: weight rows are
    /// dequantized [`TILE`](crate::gemm::TILE) at a time into a buffer each thread
    /// reuses, and multiplied by `gemm` while they are still in cache, on `threads` threads.
    pub fn matmul(&self, x: &[f32], m: usize, threads: usize) -> Vec<f32> {
        let cols = self.cols;
        crate::gemm::matmul_tiles(x, m, cols, self.rows, threads, |first, tile| {
            // Compiled for each instruction set and chosen at run time (AVX-512 where the CPU
            // has it; this crate's own build targets the SSE2 baseline).
            crate::simd::dispatch::<FillTile, _>((self, first, tile));
        })
    }

    /// Rows `first..` into `tile` as the columns of a `[cols, width]` matrix: bands of 16 rows
    /// decoded a 32-value chunk at a time into a block on the stack, whose columns are then
    /// stored as 16 consecutive values (one cache line) per tile row.
    #[inline(always)]
    fn fill_tile(&self, first: usize, tile: &mut [f32]) {
        const BAND: usize = 16;
        let cols = self.cols;
        let width = tile.len() / cols;
        let mut block = [[0f32; 32]; BAND];
        for start in (0..width).step_by(BAND) {
            let n = BAND.min(width - start);
            let factors: Vec<RowFactors> = (0..n)
                .map(|j| self.row_factors(first + start + j))
                .collect();
            for c in 0..cols / 32 {
                for (j, f) in factors.iter().enumerate() {
                    self.chunk(first + start + j, c, f, &mut block[j]);
                }
                for i in 0..32 {
                    let out = &mut tile[(c * 32 + i) * width + start..][..n];
                    for (v, row) in out.iter_mut().zip(&block) {
                        *v = row[i];
                    }
                }
            }
        }
    }

    /// Row `r` into `out` (`cols` values).
    fn row(&self, r: usize, out: &mut [f32]) {
        self.row_chunks(r, 0..self.cols / 32, out);
    }

    /// Chunks `range` (32 values each) of row `r` into `out`.
    fn row_chunks(&self, r: usize, range: std::ops::Range<usize>, out: &mut [f32]) {
        let factors = self.row_factors(r);
        let first = range.start;
        for c in range {
            let out = (&mut out[(c - first) * 32..(c - first + 1) * 32])
                .try_into()
                .expect("32 values");
            self.chunk(r, c, &factors, out);
        }
    }

    /// Row `r`'s effective scale and offset per value group (the K-quants' sub-block factors
    /// multiplied in, as gguf-py does: `d · sc`, `dmin · mn`).
    fn row_factors(&self, r: usize) -> RowFactors {
        let factor = |g: usize, i: usize| self.factors[(r * self.groups + g) * self.k + i];
        let (scales, offsets): (Vec<f32>, Vec<f32>) = match self.sub {
            Some((words, ks)) => {
                let n_words = words.len() / (self.rows * ks);
                let byte = |i: usize, which: usize| {
                    let w = words[(r * n_words + i / 4) * ks + which] as u32;
                    ((w >> (8 * (i % 4))) & 0xff) as i32 - 128
                };
                let n = n_words * 4;
                let per = n / self.groups;
                (0..n)
                    .map(|j| {
                        let s = factor(j / per, 0) * byte(j, 0) as f32;
                        let o = if self.k == 2 {
                            factor(j / per, 1) * if ks == 2 { byte(j, 1) as f32 } else { 1.0 }
                        } else {
                            0.0
                        };
                        (s, o)
                    })
                    .unzip()
            }
            None => (0..self.groups)
                .map(|g| (factor(g, 0), if self.k == 2 { factor(g, 1) } else { 0.0 }))
                .unzip(),
        };
        let size = self.cols / scales.len();
        RowFactors {
            scales,
            offsets,
            size,
        }
    }

    /// Chunk `c` (32 values) of row `r` into `out`, with the row's [`Self::row_factors`].
    #[inline(always)]
    fn chunk(&self, r: usize, c: usize, factors: &RowFactors, out: &mut [f32; 32]) {
        let zero = if self.k == 2 || self.codebook.is_some() {
            0
        } else {
            1i32 << (self.bits - 1)
        };
        // Groups are whole chunks (32 values or more) or halves of one (the 16-value
        // sub-blocks of Q2_K, Q3_K, Q6_K): one factor lookup per span, no division per value.
        let size = factors.size;
        let span = size.min(32);
        let at = (r * (self.cols / 32) + c) * self.bits;
        let codes = unpack_chunk(&self.codes[at..at + self.bits], self.bits);
        for h in 0..32 / span {
            let g = (c * 32 + h * span) / size;
            let (s, o) = (factors.scales[g], factors.offsets[g]);
            let codes = &codes[h * span..(h + 1) * span];
            let out = &mut out[h * span..(h + 1) * span];
            match self.codebook {
                Some(table) => {
                    for (x, &u) in out.iter_mut().zip(codes) {
                        *x = table[usize::from(u)] * s;
                    }
                }
                None if self.k == 2 => {
                    for (x, &u) in out.iter_mut().zip(codes) {
                        *x = (i32::from(u) - zero) as f32 * s + o;
                    }
                }
                None => {
                    for (x, &u) in out.iter_mut().zip(codes) {
                        *x = (i32::from(u) - zero) as f32 * s;
                    }
                }
            }
        }
    }
}

/// One weight row's effective factors: `scales[g]`, `offsets[g]` for the `size` values of
/// group `g`.
struct RowFactors {
    scales: Vec<f32>,
    offsets: Vec<f32>,
    size: usize,
}

/// [`HostPacked::fill_tile`] as a [`Kernel`](crate::simd::Kernel).
struct FillTile;

type FillArgs<'a, 'b> = (&'a HostPacked<'b>, usize, &'a mut [f32]);

impl crate::simd::Kernel<FillArgs<'_, '_>> for FillTile {
    type Output = ();

    #[inline(always)]
    fn run((host, first, tile): FillArgs) {
        host.fill_tile(first, tile);
    }
}
