//! FLUX's joint attention on the host threads, from the blocks' fused qkv projections to the
//! heads merged back into token rows, in two parallel passes:
//!
//! 1. per (batch, head): q, k and v gathered from every stream's projection rows into one
//!    head-major `[seq, head_dim]` block each, q and k RMS-normed with their stream's scales
//!    and rotated (RoPE);
//! 2. per (batch, block of query rows): for each head, `q kᵀ` into a scratch block that stays
//!    in cache, its softmax, `p v` written straight into the heads' columns of the output rows.
//!
//! This replaces about a dozen single-threaded burn-flex copies per block (the split into
//! heads, the q/k norms, the concatenation of the streams, RoPE, the key transpose, the
//! chunks' and the heads' concatenations) with two passes that keep both cores busy.

use rayon::prelude::*;

use crate::activation::gelu_tanh_in_place;
use crate::gemm::{View, product_into};
use crate::norm::rms_norm_rows;
use crate::rope::rotate_pairs_rows;
use crate::softmax::softmax_rows_unnormalised;

/// Scores held per query block (1 MB of f32, about a core's L2): the block has `SCORES / seq`
/// rows (at least [`MIN_ROWS`], at most [`MAX_ROWS`]). Each block repacks k and v for its
/// products, so taller blocks pay less for that; 256 KB measured 1-5 % slower at `small` and
/// `medium`, and more than 128 rows leaves too few blocks to share at `small`.
const SCORES: usize = 1 << 18;
const MIN_ROWS: usize = 16;
const MAX_ROWS: usize = 128;

/// One stream (text or image) of the joint sequence.
pub struct Stream<'a> {
    /// `[b, seq, width]` row-major: q, k, v in columns `0..3 · heads · head_dim`, in the
    /// reference's `(K H D)` order; columns after them only matter with a GELU tail.
    pub values: &'a [f32],
    /// Tokens of the stream.
    pub seq: usize,
    /// Columns of its projection.
    pub width: usize,
    /// The q RMSNorm scale, `[head_dim]`.
    pub q_scale: &'a [f32],
    /// The k RMSNorm scale, `[head_dim]`.
    pub k_scale: &'a [f32],
}

/// The shape of the attention and its position table.
pub struct Layout<'a> {
    /// Batch size.
    pub batch: usize,
    /// Attention heads.
    pub heads: usize,
    /// Width of a head.
    pub head_dim: usize,
    /// RoPE angles' cosines per pair, `[1 or batch, Σ seq, head_dim / 2]`.
    pub cos: &'a [f32],
    /// RoPE angles' sines per pair, like `cos`.
    pub sin: &'a [f32],
    /// Append each row's columns after q, k, v through tanh-GELU (the single block's MLP
    /// input, beside its attention).
    pub gelu_tail: bool,
}

/// Joint attention of `streams` (concatenated in order along the sequence):
/// `softmax(q kᵀ / √head_dim) v` per head with q, k normed and rotated, returned as
/// `[batch, Σ seq, heads · head_dim (+ tail)]` row-major, heads merged in order.
///
/// # Panics
/// If a stream's values, scales or the tables do not have the sizes above, or the streams'
/// tails differ in width.
pub fn joint_attention(streams: &[Stream], layout: &Layout, threads: usize) -> Vec<f32> {
    let Layout {
        batch: b,
        heads,
        head_dim: d,
        ..
    } = *layout;
    let hidden = heads * d;
    let seq: usize = streams.iter().map(|s| s.seq).sum();
    let tail = match (layout.gelu_tail, streams.first()) {
        (true, Some(first)) => first.width - 3 * hidden,
        _ => 0,
    };
    for s in streams {
        assert!(s.width >= 3 * hidden && s.values.len() == b * s.seq * s.width);
        assert!(s.q_scale.len() == d && s.k_scale.len() == d);
        assert!(
            !layout.gelu_tail || s.width - 3 * hidden == tail,
            "tails differ"
        );
    }
    let table = seq * d / 2;
    let tables = layout.cos.len() / table.max(1);
    assert!(d % 2 == 0 && (tables == 1 || tables == b));
    assert!(layout.cos.len() == tables * table && layout.sin.len() == layout.cos.len());

    let qkv = gather(streams, layout, seq, threads);
    let width = hidden + tail;
    let mut out = vec![0f32; b * seq * width];
    let rows = (SCORES / seq.max(1)).clamp(MIN_ROWS, MAX_ROWS);
    let scale = 1.0 / (d as f32).sqrt();
    let block = |scores: &mut Vec<f32>, (bi, first, chunk): (usize, usize, &mut [f32])| {
        let n = chunk.len() / width;
        scores.resize(n * seq, 0.0);
        for h in 0..heads {
            let [q, k, v] = &qkv[bi * heads + h];
            let q = View::row_major(&q[first * d..(first + n) * d], n, d);
            let k = View::row_major(k, seq, d).t();
            product_into(scores, seq, q, k);
            let inv = softmax_rows_unnormalised(scores, seq, scale);
            let out = &mut chunk[h * d..];
            product_into(
                out,
                width,
                View::row_major(scores, n, seq),
                View::row_major(v, seq, d),
            );
            for (row, inv) in out.chunks_mut(width).zip(inv) {
                row[..d].iter_mut().for_each(|x| *x *= inv);
            }
        }
        if tail > 0 {
            for (r, row) in chunk.chunks_exact_mut(width).enumerate() {
                let src = source_row(streams, bi, first + r);
                row[hidden..].copy_from_slice(&src[3 * hidden..]);
                gelu_tanh_in_place(&mut row[hidden..]);
            }
        }
    };
    let tasks = query_blocks(&mut out, seq, width, rows);
    if threads <= 1 {
        let mut scores = Vec::new();
        tasks.into_iter().for_each(|task| block(&mut scores, task));
    } else {
        tasks
            .into_par_iter()
            .with_max_len(1)
            .for_each_init(Vec::new, block);
    }
    out
}

/// `out`, `[batch, seq, width]`, cut into blocks of at most `rows` rows within each batch:
/// (batch, the block's first row in its batch, the block).
fn query_blocks(
    out: &mut [f32],
    seq: usize,
    width: usize,
    rows: usize,
) -> Vec<(usize, usize, &mut [f32])> {
    let mut tasks = Vec::new();
    if seq * width == 0 {
        return tasks;
    }
    for (bi, batch) in out.chunks_mut(seq * width).enumerate() {
        for (j, block) in batch.chunks_mut(rows * width).enumerate() {
            tasks.push((bi, j * rows, block));
        }
    }
    tasks
}

/// Row `row` of batch `bi` of the joint sequence, in its stream's values.
fn source_row<'a>(streams: &[Stream<'a>], bi: usize, mut row: usize) -> &'a [f32] {
    for s in streams {
        if row < s.seq {
            let start = (bi * s.seq + row) * s.width;
            return &s.values[start..start + s.width];
        }
        row -= s.seq;
    }
    unreachable!("row beyond the joint sequence")
}

/// q, k, v of each (batch, head), `[seq, head_dim]` row-major each, q and k normed and
/// rotated.
fn gather(streams: &[Stream], layout: &Layout, seq: usize, threads: usize) -> Vec<[Vec<f32>; 3]> {
    let (heads, d) = (layout.heads, layout.head_dim);
    let hidden = heads * d;
    let table = seq * d / 2;
    let one = |i: usize| {
        let (bi, h) = (i / heads, i % heads);
        let mut qkv = [0, 1, 2].map(|_| Vec::with_capacity(seq * d));
        for s in streams {
            let rows = &s.values[bi * s.seq * s.width..(bi + 1) * s.seq * s.width];
            for row in rows.chunks_exact(s.width) {
                for (part, dst) in qkv.iter_mut().enumerate() {
                    let start = part * hidden + h * d;
                    dst.extend_from_slice(&row[start..start + d]);
                }
            }
        }
        let [q, k, _] = &mut qkv;
        let mut offset = 0;
        for s in streams {
            let span = offset * d..(offset + s.seq) * d;
            rms_norm_rows(&mut q[span.clone()], 1e-6, s.q_scale);
            rms_norm_rows(&mut k[span], 1e-6, s.k_scale);
            offset += s.seq;
        }
        let t = if layout.cos.len() == table { 0 } else { bi };
        let (cos, sin) = (
            &layout.cos[t * table..(t + 1) * table],
            &layout.sin[t * table..(t + 1) * table],
        );
        rotate_pairs_rows(q, cos, sin);
        rotate_pairs_rows(k, cos, sin);
        qkv
    };
    let n = layout.batch * heads;
    if threads <= 1 {
        (0..n).map(one).collect()
    } else {
        (0..n).into_par_iter().with_max_len(1).map(one).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 7919 + seed * 104_729) % 2003) as f32 / 2003.0 - 0.5) * 3.0)
            .collect()
    }

    /// A stream's projection rows, length and q/k scales.
    type Owned = (Vec<f32>, usize, Vec<f32>, Vec<f32>);

    /// The definition in f64, one head at a time.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        streams: &[Owned],
        b: usize,
        heads: usize,
        d: usize,
        width: usize,
        cos: &[f32],
        sin: &[f32],
        gelu_tail: bool,
    ) -> Vec<f64> {
        let hidden = heads * d;
        let seq: usize = streams.iter().map(|s| s.1).sum();
        let tail = if gelu_tail { width - 3 * hidden } else { 0 };
        let out_w = hidden + tail;
        let mut out = vec![0f64; b * seq * out_w];
        let tables = cos.len() / (seq * d / 2);
        for bi in 0..b {
            let t = if tables == 1 { 0 } else { bi };
            // rows of the joint sequence: (values row, q scale, k scale)
            let mut rows = Vec::new();
            for (vals, s_seq, qs, ks) in streams {
                for r in 0..*s_seq {
                    let start = (bi * s_seq + r) * width;
                    rows.push((&vals[start..start + width], qs, ks));
                }
            }
            let prep = |x: &[f32], scale: &[f32], pos: usize| -> Vec<f64> {
                let ms = x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / d as f64;
                let n: Vec<f64> = x
                    .iter()
                    .zip(scale)
                    .map(|(&v, &s)| v as f64 / (ms + 1e-6).sqrt() * s as f64)
                    .collect();
                let mut r = n.clone();
                for i in 0..d / 2 {
                    let (c, s) = (
                        cos[t * seq * d / 2 + pos * d / 2 + i] as f64,
                        sin[t * seq * d / 2 + pos * d / 2 + i] as f64,
                    );
                    r[2 * i] = n[2 * i] * c - n[2 * i + 1] * s;
                    r[2 * i + 1] = n[2 * i + 1] * c + n[2 * i] * s;
                }
                r
            };
            for h in 0..heads {
                let q: Vec<Vec<f64>> = rows
                    .iter()
                    .enumerate()
                    .map(|(p, (r, qs, _))| prep(&r[h * d..(h + 1) * d], qs, p))
                    .collect();
                let k: Vec<Vec<f64>> = rows
                    .iter()
                    .enumerate()
                    .map(|(p, (r, _, ks))| prep(&r[hidden + h * d..hidden + (h + 1) * d], ks, p))
                    .collect();
                for (i, qi) in q.iter().enumerate() {
                    let s: Vec<f64> = k
                        .iter()
                        .map(|kj| {
                            qi.iter().zip(kj).map(|(a, b)| a * b).sum::<f64>() / (d as f64).sqrt()
                        })
                        .collect();
                    let max = s.iter().cloned().fold(f64::MIN, f64::max);
                    let z: f64 = s.iter().map(|x| (x - max).exp()).sum();
                    for c in 0..d {
                        let o: f64 = s
                            .iter()
                            .zip(&rows)
                            .map(|(x, (r, _, _))| {
                                (x - max).exp() / z * r[2 * hidden + h * d + c] as f64
                            })
                            .sum();
                        out[(bi * seq + i) * out_w + h * d + c] = o;
                    }
                }
            }
            for (i, (r, _, _)) in rows.iter().enumerate() {
                for c in 0..tail {
                    let x = r[3 * hidden + c] as f64;
                    let u = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
                    out[(bi * seq + i) * out_w + hidden + c] = 0.5 * x * (1.0 + u.tanh());
                }
            }
        }
        out
    }

    fn check(
        b: usize,
        heads: usize,
        d: usize,
        seqs: &[usize],
        width: usize,
        gelu: bool,
        tables: usize,
    ) {
        let seq: usize = seqs.iter().sum();
        let owned: Vec<_> = seqs
            .iter()
            .enumerate()
            .map(|(i, &s)| {
                let scale = |seed| values(d, seed).iter().map(|x| 1.0 + x / 4.0).collect();
                (values(b * s * width, i), s, scale(10 + i), scale(20 + i))
            })
            .collect();
        let angles = values(tables * seq * d / 2, 99);
        let cos: Vec<f32> = angles.iter().map(|a| (a * 5.0).cos()).collect();
        let sin: Vec<f32> = angles.iter().map(|a| (a * 5.0).sin()).collect();
        let want = reference(&owned, b, heads, d, width, &cos, &sin, gelu);
        let streams: Vec<Stream> = owned
            .iter()
            .map(|(v, s, qs, ks)| Stream {
                values: v,
                seq: *s,
                width,
                q_scale: qs,
                k_scale: ks,
            })
            .collect();
        let layout = Layout {
            batch: b,
            heads,
            head_dim: d,
            cos: &cos,
            sin: &sin,
            gelu_tail: gelu,
        };
        for threads in [1, 2, 3] {
            let got = joint_attention(&streams, &layout, threads);
            assert_eq!(got.len(), want.len());
            let worst = got
                .iter()
                .zip(&want)
                .map(|(g, w)| (*g as f64 - w).abs())
                .fold(0.0, f64::max);
            assert!(worst < 2e-5, "threads {threads}: max abs error {worst:e}");
        }
    }

    #[test]
    fn two_streams_match_the_definition() {
        // Sequences that are not multiples of the query blocks, two batches with their own
        // position tables, projection rows wider than q, k, v (ignored without a tail).
        check(2, 3, 8, &[5, 150], 3 * 24 + 7, false, 2);
    }

    #[test]
    fn one_stream_with_its_gelu_tail() {
        check(1, 2, 6, &[37], 3 * 12 + 10, true, 1);
        // One table shared by a batch of two.
        check(2, 2, 4, &[3, 20], 3 * 8, false, 1);
    }
}
