//! Tiled running of the encoder or decoder: overlapping tiles, blended with linear ramps.
//!
//! Tiles are laid out on the latent grid; each tile's output is weighted by a separable ramp
//! that rises across the overlap with the previous tile and falls across the overlap with the
//! next (1 elsewhere, and at the image borders), and the sum is divided by the summed weights.
//! The mid-block attention then sees one tile, not the whole latent, so a tiled result differs
//! from the untiled one (by an amount the tests bound); convolutions near tile edges differ too.

use burn::tensor::backend::Backend;
use burn::tensor::{DType, FloatDType, Tensor, TensorData};

/// Tile size and overlap, in latent pixels (one latent pixel is 8 image pixels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileConfig {
    /// Side of a square tile.
    pub tile: usize,
    /// Overlap of neighbouring tiles (at least this much; tiles are spread evenly).
    pub overlap: usize,
}

/// When [`crate::AutoEncoder`] tiles its work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tiling {
    /// Always run the whole image at once.
    Never,
    /// Always tile.
    Always(TileConfig),
    /// Tile when the latent has more than `above` positions (`h/8 * w/8`).
    Auto {
        /// The tiles to use.
        tiles: TileConfig,
        /// Threshold on the latent area.
        above: usize,
    },
}

impl Default for Tiling {
    /// Tiles of 64 latents (512 px) overlapping by 16 (128 px), above 1024x1024 pixels
    /// (128x128 latents): FLUX's usual sizes run untiled, exactly like the reference.
    fn default() -> Self {
        Tiling::Auto {
            tiles: TileConfig {
                tile: 64,
                overlap: 16,
            },
            above: 128 * 128,
        }
    }
}

impl Tiling {
    /// The tiles to use for a latent of `h x w`, or `None` to run untiled.
    pub fn tiles_for(&self, h: usize, w: usize) -> Option<TileConfig> {
        match *self {
            Tiling::Never => None,
            Tiling::Always(t) => Some(t),
            Tiling::Auto { tiles, above } => (h * w > above).then_some(tiles),
        }
    }
}

/// Tile spans `[start, end)` covering `len` with tiles of `tile` overlapping by `>= overlap`.
pub(crate) fn spans(len: usize, tile: usize, overlap: usize) -> Vec<(usize, usize)> {
    if len <= tile {
        return vec![(0, len)];
    }
    let stride = tile - overlap;
    let n = (len - overlap).div_ceil(stride);
    (0..n)
        .map(|i| {
            let s = i * (len - tile) / (n - 1);
            (s, s + tile)
        })
        .collect()
}

/// The 1-D blend weight of each span at output scale `scale`, and their sum per position.
fn ramps(spans: &[(usize, usize)], scale: usize) -> (Vec<Vec<f32>>, Vec<f32>) {
    let len = spans.last().map_or(0, |s| s.1) * scale;
    let mut total = vec![0.0f32; len];
    let weights = spans
        .iter()
        .enumerate()
        .map(|(i, &(s, e))| {
            let (a, b) = (s * scale, e * scale);
            let prev_end = (i > 0).then(|| spans[i - 1].1 * scale);
            let next_start = spans.get(i + 1).map(|n| n.0 * scale);
            (a..b)
                .map(|p| {
                    let mut w = 1.0f32;
                    if let Some(pe) = prev_end.filter(|&pe| p < pe) {
                        w *= (p - a) as f32 + 0.5;
                        w /= (pe - a) as f32;
                    }
                    if let Some(ns) = next_start.filter(|&ns| p >= ns) {
                        w *= (b - p) as f32 - 0.5;
                        w /= (b - ns) as f32;
                    }
                    total[p] += w;
                    w
                })
                .collect()
        })
        .collect();
    (weights, total)
}

/// Runs `f` on overlapping tiles of `x` and blends the outputs.
///
/// `grid` is the latent size `[h, w]`; the input is `in_scale` and the output `out_scale` times
/// the latent grid (decode: 1 and 8; encode: 8 and 1).
///
/// # Shapes
/// `x`: `[b, c, grid_h * in_scale, grid_w * in_scale]` ->
/// `[b, c', grid_h * out_scale, grid_w * out_scale]`.
pub(crate) fn run_tiled<B: Backend>(
    x: Tensor<B, 4>,
    grid: [usize; 2],
    (in_scale, out_scale): (usize, usize),
    tiles: TileConfig,
    f: impl Fn(Tensor<B, 4>) -> Tensor<B, 4>,
) -> Tensor<B, 4> {
    let device = x.device();
    let [b, _, _, _] = x.dims();
    let rows = spans(grid[0], tiles.tile, tiles.overlap);
    let cols = spans(grid[1], tiles.tile, tiles.overlap);
    let (wy, ty) = ramps(&rows, out_scale);
    let (wx, tx) = ramps(&cols, out_scale);
    let mut acc: Option<Tensor<B, 4>> = None;
    for (&(r0, r1), wy) in rows.iter().zip(&wy) {
        for (&(c0, c1), wx) in cols.iter().zip(&wx) {
            let tile = x.clone().slice([
                0..b,
                0..x.dims()[1],
                r0 * in_scale..r1 * in_scale,
                c0 * in_scale..c1 * in_scale,
            ]);
            // Blended in f32 whatever the network's dtype.
            let out = f(tile).cast(FloatDType::F32);
            let [_, c, h, w] = out.dims();
            let weight = outer::<B>(wy, wx, &device).reshape([1, 1, h, w]);
            let acc = acc.get_or_insert_with(|| {
                let shape = [b, c, grid[0] * out_scale, grid[1] * out_scale];
                Tensor::zeros(shape, (&device, DType::F32))
            });
            let region = [
                0..b,
                0..c,
                r0 * out_scale..r1 * out_scale,
                c0 * out_scale..c1 * out_scale,
            ];
            let sum = acc.clone().slice(region.clone()) + out * weight;
            *acc = acc.clone().slice_assign(region, sum);
        }
    }
    let total = outer::<B>(&ty, &tx, &device).reshape([1, 1, ty.len(), tx.len()]);
    acc.expect("at least one tile") / total
}

fn outer<B: Backend>(y: &[f32], x: &[f32], device: &B::Device) -> Tensor<B, 2> {
    let f32 = (device, DType::F32);
    let ty = Tensor::<B, 1>::from_data(TensorData::new(y.to_vec(), [y.len()]), f32)
        .reshape([y.len(), 1]);
    let tx = Tensor::<B, 1>::from_data(TensorData::new(x.to_vec(), [x.len()]), f32)
        .reshape([1, x.len()]);
    ty * tx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_cover_with_overlap() {
        for (len, tile, overlap) in [(10, 4, 1), (100, 64, 16), (65, 64, 16), (37, 8, 3)] {
            let s = spans(len, tile, overlap);
            assert_eq!(s.first().unwrap().0, 0);
            assert_eq!(s.last().unwrap().1, len);
            for pair in s.windows(2) {
                assert!(pair[0].1 >= pair[1].0 + overlap, "{s:?}");
            }
        }
        assert_eq!(spans(8, 16, 4), vec![(0, 8)]);
    }

    #[test]
    fn ramps_sum_to_one_when_overlaps_are_disjoint() {
        let s = spans(40, 16, 4);
        let (_, total) = ramps(&s, 8);
        assert!(total.iter().all(|t| (t - 1.0).abs() < 1e-5), "{total:?}");
    }
}
