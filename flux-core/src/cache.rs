//! A step cache on [`Flux`] across the branches of one run: the conditional rows and, with
//! true CFG, the unconditional ones, each with its own state (diffusers'
//! `cache_context("cond")` and `("uncond")`), each deciding over all of its rows (diffusers'
//! means span the batch).

use std::ops::Range;

use burn::tensor::Tensor;
use flux_nn::FluxBackend;
use flux_sampler::{Cache, CacheStats, Signal, StepCache};

use crate::model::{Flux, Hidden, rows as take};

/// One [`StepCache`] per branch of `rows` consecutive batch rows: the blocks of a step run, or
/// are replaced by their cached residual, branch by branch.
#[derive(Debug)]
pub struct BranchCaches<B: FluxBackend> {
    caches: Vec<StepCache<B>>,
    rows: usize,
}

impl<B: FluxBackend> BranchCaches<B> {
    /// `branches` fresh states (1, or 2 with true CFG) of `rows` rows, for `steps` calls.
    ///
    /// # Panics
    /// When `branches` is 0.
    pub fn new(cache: &Cache, branches: usize, rows: usize, steps: usize) -> Self {
        assert!(branches > 0, "a step cache needs at least one branch");
        Self {
            caches: (0..branches)
                .map(|_| StepCache::new(cache, steps))
                .collect(),
            rows,
        }
    }

    /// The velocity for every row of `h` ([`Flux::embed`]'s streams): each branch's blocks
    /// run (`run(hidden, blocks)`, [`Flux::blocks`] in whatever chunks of rows the caller
    /// likes) or its cached residual is added, as its state decides, then [`Flux::finish`].
    ///
    /// # Shapes
    /// - h: `[branches · rows, …]` streams -> `[branches · rows, n_img, out_channels]`
    ///
    /// # Errors
    /// `run`'s errors, and [`crate::Error::BadInput`] from TeaCache's signal on a model
    /// without double-stream blocks.
    ///
    /// # Panics
    /// When `h` does not hold `branches · rows` rows.
    pub fn forward<E: From<crate::Error>>(
        &mut self,
        flux: &Flux<B>,
        h: Hidden<B>,
        mut run: impl FnMut(Hidden<B>, Range<usize>) -> Result<Hidden<B>, E>,
    ) -> Result<Tensor<B, 3>, E> {
        let all = flux.num_blocks();
        let rows = self.rows;
        let first_block = self.caches[0].signal() == Signal::FirstBlockResidual;
        // First-Block Cache always runs the first block; the others start from the embedding.
        let (base, from) = if first_block {
            (run(h.clone(), 0..1)?, 1)
        } else {
            (h.clone(), 0)
        };
        let mut compute = Vec::with_capacity(self.caches.len());
        for (k, cache) in self.caches.iter_mut().enumerate() {
            let signal = match cache.signal() {
                Signal::None => None,
                Signal::FirstBlockResidual => Some(
                    take(base.img.clone(), k * rows, rows) - take(h.img.clone(), k * rows, rows),
                ),
                Signal::ModulatedInput => {
                    Some(flux.first_block_modulated(&h.narrow(k * rows, rows))?)
                }
            };
            compute.push(cache.decide(signal));
        }
        // One call for the rows from the first computing branch to the last: with FLUX's one or
        // two branches exactly the computing ones (with more, rows between them run too and
        // are dropped).
        let first = compute.iter().position(|&c| c);
        let last = compute.iter().rposition(|&c| c);
        let computed = match (first, last) {
            (Some(a), Some(z)) => {
                let span = (z + 1 - a) * rows;
                Some(run(base.narrow(a * rows, span), from..all)?.img)
            }
            _ => None,
        };
        let first = first.unwrap_or(0);
        let mut parts = Vec::with_capacity(self.caches.len());
        for (k, cache) in self.caches.iter_mut().enumerate() {
            let base_k = take(base.img.clone(), k * rows, rows);
            let out = if compute[k] {
                let computed = computed.as_ref().expect("a computing branch ran");
                let out = take(computed.clone(), (k - first) * rows, rows);
                cache.store(&out, &base_k);
                out
            } else {
                cache.reuse(base_k)
            };
            parts.push(out);
        }
        let img = if parts.len() == 1 {
            parts.remove(0)
        } else {
            Tensor::cat(parts, 0)
        };
        Ok(flux.finish(Hidden { img, ..h }))
    }

    /// Calls computed and reused, over the branches.
    pub fn stats(&self) -> CacheStats {
        self.caches
            .iter()
            .fold(CacheStats::default(), |s, c| s + c.stats())
    }

    /// MagCache calibration: the conditional branch's measured ratios.
    pub fn calibration(&self) -> Option<Vec<f32>> {
        self.caches[0].calibration().map(<[f32]>::to_vec)
    }
}
