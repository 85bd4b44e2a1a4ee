//! [`StepCache`]: one denoising branch's cache state across the steps of a run.

use burn::tensor::{DType, ElementConversion, Tensor, backend::Backend};

use super::policy::{
    FLUX_MAG_RATIOS, MagAccumulator, TEA_FLUX_COEFFICIENTS, nearest_interp, poly1d, retention_steps,
};
use super::{Cache, MagRatios};

/// What [`StepCache::decide`] needs from the model at a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Nothing (MagCache decides from the step index).
    None,
    /// The first block's image-stream residual `block₀(h) − h` (First-Block Cache); the
    /// residual to store and reuse is then taken from the first block's output on.
    FirstBlockResidual,
    /// The first block's modulated image input `(1 + scale)·LayerNorm(h) + shift` (TeaCache).
    ModulatedInput,
}

/// How many transformer calls of a run computed the blocks and how many reused the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// Calls that ran every block.
    pub computed: usize,
    /// Calls that added the cached residual instead.
    pub reused: usize,
}

impl std::ops::Add for CacheStats {
    type Output = CacheStats;

    /// Both branches' counts together.
    fn add(self, other: CacheStats) -> CacheStats {
        CacheStats {
            computed: self.computed + other.computed,
            reused: self.reused + other.reused,
        }
    }
}

/// The cache state of one branch (the conditional one, or true CFG's unconditional one) over a
/// run of `num_steps` transformer calls.
///
/// Per call: [`StepCache::signal`] says what to compute, [`StepCache::decide`] answers whether
/// the blocks run; then [`StepCache::store`] their residual, or [`StepCache::reuse`] the stored
/// one. The tensors are the image stream, `[b, n, hidden]` (the branch's rows).
#[derive(Debug)]
pub struct StepCache<B: Backend> {
    policy: Policy<B>,
    num_steps: usize,
    /// Calls decided so far.
    step: usize,
    /// The blocks' residual of the last computed call.
    residual: Option<Tensor<B, 3>>,
    stats: CacheStats,
}

#[derive(Debug)]
enum Policy<B: Backend> {
    FirstBlock {
        threshold: f64,
        /// The first block's residual at the last computed call.
        head: Option<Tensor<B, 3>>,
        /// This call's, kept by `decide` until `store`.
        pending: Option<Tensor<B, 3>>,
    },
    Mag {
        threshold: f32,
        max_skip_steps: usize,
        retention: usize,
        /// `None`: calibrating.
        ratios: Option<Vec<f32>>,
        acc: MagAccumulator,
        calibration: Vec<f32>,
    },
    Tea {
        threshold: f64,
        acc: f64,
        previous: Option<Tensor<B, 3>>,
    },
}

impl<B: Backend> StepCache<B> {
    /// A fresh state for `cache` over a run of `num_steps` calls (MagCache interpolates its
    /// ratios to it; TeaCache always computes the last one).
    pub fn new(cache: &Cache, num_steps: usize) -> Self {
        let policy = match cache {
            Cache::FirstBlock { threshold } => Policy::FirstBlock {
                threshold: *threshold,
                head: None,
                pending: None,
            },
            Cache::Mag(m) => Policy::Mag {
                threshold: m.threshold,
                max_skip_steps: m.max_skip_steps,
                retention: retention_steps(m.retention_ratio, num_steps),
                ratios: match &m.ratios {
                    MagRatios::Flux => Some(nearest_interp(&FLUX_MAG_RATIOS, num_steps)),
                    MagRatios::Custom(r) => Some(nearest_interp(r, num_steps)),
                    MagRatios::Calibrate => None,
                },
                acc: MagAccumulator::new(),
                calibration: Vec::new(),
            },
            Cache::Tea { threshold } => Policy::Tea {
                threshold: *threshold,
                acc: 0.0,
                previous: None,
            },
        };
        Self {
            policy,
            num_steps,
            step: 0,
            residual: None,
            stats: CacheStats::default(),
        }
    }

    /// What [`StepCache::decide`] needs this call.
    pub fn signal(&self) -> Signal {
        match self.policy {
            Policy::FirstBlock { .. } => Signal::FirstBlockResidual,
            Policy::Mag { .. } => Signal::None,
            Policy::Tea { .. } => Signal::ModulatedInput,
        }
    }

    /// Whether the blocks run this call (`true`) or the stored residual is reused, given the
    /// [`Signal`] asked for (`None` for [`Signal::None`]).
    ///
    /// # Panics
    /// When the signal asked for is missing.
    pub fn decide(&mut self, signal: Option<Tensor<B, 3>>) -> bool {
        let step = self.step;
        self.step += 1;
        let have_residual = self.residual.is_some();
        let compute = match &mut self.policy {
            Policy::FirstBlock {
                threshold,
                head,
                pending,
            } => {
                let current = signal.expect("First-Block Cache needs the first block's residual");
                let compute = match head {
                    None => true,
                    Some(previous) => {
                        let change = mean_abs(current.clone() - previous.clone());
                        let scale = mean_abs(previous.clone());
                        f64::from(change / scale) > *threshold
                    }
                };
                *pending = Some(current);
                compute || !have_residual
            }
            Policy::Mag {
                threshold,
                max_skip_steps,
                retention,
                ratios,
                acc,
                ..
            } => match ratios {
                None => true,
                Some(_) if step < *retention => true,
                Some(r) => {
                    let scale = r.get(step).copied().unwrap_or(1.0);
                    !acc.skip(scale, *threshold, *max_skip_steps, have_residual)
                }
            },
            Policy::Tea {
                threshold,
                acc,
                previous,
            } => {
                let current = signal.expect("TeaCache needs the first block's modulated input");
                let compute = if step == 0 || step + 1 == self.num_steps {
                    *acc = 0.0;
                    true
                } else {
                    let prev = previous.clone().expect("set at every call");
                    let rel = mean_abs(current.clone() - prev.clone()) / mean_abs(prev);
                    *acc += poly1d(&TEA_FLUX_COEFFICIENTS, f64::from(rel));
                    if *acc < *threshold && have_residual {
                        false
                    } else {
                        *acc = 0.0;
                        true
                    }
                };
                *previous = Some(current);
                compute
            }
        };
        if compute {
            self.stats.computed += 1;
        } else {
            self.stats.reused += 1;
        }
        compute
    }

    /// After a computed call: keeps `output − base` (the image stream after the last block
    /// minus `base`, the stream the skipped blocks would have started from).
    pub fn store(&mut self, output: &Tensor<B, 3>, base: &Tensor<B, 3>) {
        let residual = output.clone() - base.clone();
        match &mut self.policy {
            Policy::FirstBlock { head, pending, .. } => *head = pending.take(),
            Policy::Mag {
                ratios: None,
                calibration,
                ..
            } => {
                let ratio = match &self.residual {
                    None => 1.0,
                    Some(previous) => magnitude_ratio(&residual, previous),
                };
                calibration.push(ratio);
            }
            _ => {}
        }
        self.residual = Some(residual);
    }

    /// After a skipped call: `base` plus the stored residual.
    ///
    /// # Panics
    /// When nothing is stored ([`StepCache::decide`] never skips then).
    pub fn reuse(&mut self, base: Tensor<B, 3>) -> Tensor<B, 3> {
        if let Policy::FirstBlock { pending, .. } = &mut self.policy {
            *pending = None;
        }
        let residual = self
            .residual
            .clone()
            .expect("a skipped call has a residual");
        residual + base
    }

    /// Calls computed and reused so far.
    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    /// The magnitude ratios MagCache's calibration measured (one per computed call, the first
    /// 1.0): pass them as [`MagRatios::Custom`]. `None` unless calibrating.
    pub fn calibration(&self) -> Option<&[f32]> {
        match &self.policy {
            Policy::Mag {
                ratios: None,
                calibration,
                ..
            } => Some(calibration),
            _ => None,
        }
    }
}

/// `x.abs().mean()` as an `f32` (computed in `f32` whatever the model's dtype).
fn mean_abs<B: Backend>(x: Tensor<B, 3>) -> f32 {
    x.cast(DType::F32).abs().mean().into_scalar().elem()
}

/// `mean(‖current‖ / (‖previous‖ + 1e-8))` over the tokens (norms over the last axis, in
/// `f32`): MagCache's calibration measure.
fn magnitude_ratio<B: Backend>(current: &Tensor<B, 3>, previous: &Tensor<B, 3>) -> f32 {
    let norm = |x: &Tensor<B, 3>| x.clone().cast(DType::F32).powi_scalar(2).sum_dim(2).sqrt();
    let ratio = norm(current) / (norm(previous) + 1e-8);
    ratio.mean().into_scalar().elem()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::MagCache;
    use burn::backend::NdArray;

    type B = NdArray<f32>;

    fn t(v: f32) -> Tensor<B, 3> {
        Tensor::full([1, 2, 2], v, &Default::default())
    }

    #[test]
    fn first_block_compares_with_the_last_computed_step() {
        let mut c = StepCache::<B>::new(&Cache::FirstBlock { threshold: 0.1 }, 5);
        assert_eq!(c.signal(), Signal::FirstBlockResidual);
        assert!(c.decide(Some(t(1.0))));
        c.store(&t(3.0), &t(1.0));
        // 5 % away from the computed 1.0: reuse, and the reference stays 1.0.
        assert!(!c.decide(Some(t(1.05))));
        assert_eq!(
            c.reuse(t(0.5)).into_data().to_vec::<f32>().unwrap(),
            [2.5; 4]
        );
        assert!(!c.decide(Some(t(1.09))));
        let _ = c.reuse(t(0.5));
        assert!(
            c.decide(Some(t(1.2))),
            "20 % from the last computed residual"
        );
        c.store(&t(4.0), &t(1.0));
        assert_eq!(
            c.stats(),
            CacheStats {
                computed: 2,
                reused: 2
            }
        );
    }

    #[test]
    fn teacache_always_runs_the_first_and_last_call() {
        let mut c = StepCache::<B>::new(&Cache::Tea { threshold: 1e4 }, 3);
        for (i, want) in [true, false, true].into_iter().enumerate() {
            let compute = c.decide(Some(t(1.0 + i as f32)));
            assert_eq!(compute, want, "call {i}");
            if compute {
                c.store(&t(2.0), &t(1.0));
            } else {
                let _ = c.reuse(t(1.0));
            }
        }
    }

    /// MagCache's decisions depend only on the ratios: FLUX.1-dev's 28 steps at diffusers'
    /// defaults compute 14 calls (the pattern diffusers' hook gives, replayed in Python).
    #[test]
    fn magcache_at_flux_defaults_computes_half_of_28_steps() {
        let mut c = StepCache::<B>::new(&Cache::Mag(MagCache::flux(0.06)), 28);
        let pattern: String = (0..28)
            .map(|_| {
                let compute = c.decide(None);
                if compute {
                    c.store(&t(1.0), &t(0.0));
                } else {
                    let _ = c.reuse(t(0.0));
                }
                if compute { 'C' } else { '.' }
            })
            .collect();
        assert_eq!(pattern, "CCCCCC.C.C...C...C...C..C.CC");
    }

    #[test]
    fn magcache_calibration_measures_ratios_and_never_skips() {
        let mut m = MagCache::flux(1.0);
        m.ratios = MagRatios::Calibrate;
        let mut c = StepCache::<B>::new(&Cache::Mag(m), 3);
        for out in [2.0, 3.0, 1.5] {
            assert!(c.decide(None));
            c.store(&t(out), &t(1.0));
        }
        let r = c.calibration().unwrap();
        assert_eq!(r[0], 1.0);
        assert!(
            (r[1] - 2.0).abs() < 1e-6 && (r[2] - 0.25).abs() < 1e-6,
            "{r:?}"
        );
    }
}
