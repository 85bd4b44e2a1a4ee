//! Step caches: skip a transformer's blocks at steps where their output would change little,
//! adding the residual `blocks(h) − h` of the last computed step instead.
//!
//! Three published policies decide when, each reproduced as its reference makes the decision:
//!
//! - [`Cache::FirstBlock`] — diffusers' `FirstBlockCacheConfig(threshold)`: the first block
//!   always runs; when its image-stream residual changed by less than `threshold` (mean absolute
//!   change over the mean magnitude of the residual of the last *computed* step), the other
//!   blocks are skipped and their cached residual is added to the first block's output.
//! - [`Cache::Mag`] — diffusers' `MagCacheConfig`: decides from the step index alone, with the
//!   model's magnitude ratios (FLUX's are built in: [`FLUX_MAG_RATIOS`]), accumulating
//!   `|1 − Π ratios|` until it passes `threshold` or `max_skip_steps` steps were skipped; the
//!   first `retention_ratio` of the steps always run. A calibration mode measures the ratios of
//!   another model.
//! - [`Cache::Tea`] — TeaCache4FLUX: the relative L1 change of the first block's modulated
//!   input, rescaled by its published FLUX polynomial, accumulates until `threshold`; the first
//!   and last calls always run.
//!
//! A [`StepCache`] holds the state of one denoising branch (true CFG runs two, as diffusers'
//! `cache_context("cond")`/`("uncond")` do); the model side asks it for the [`Signal`] it
//! needs, calls [`StepCache::decide`], then [`StepCache::store`] or [`StepCache::reuse`].

mod policy;
mod state;

use std::fmt;
use std::str::FromStr;

pub use policy::FLUX_MAG_RATIOS;
pub use state::{CacheStats, Signal, StepCache};

/// Which step cache to run, and its parameters.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Cache {
    /// First-Block Cache (diffusers' `FirstBlockCacheConfig`).
    FirstBlock {
        /// Relative change of the first block's residual under which the other blocks are
        /// skipped (diffusers' default 0.05; 0.12 about halves FLUX.1-dev's calls).
        threshold: f64,
    },
    /// MagCache (diffusers' `MagCacheConfig`).
    Mag(MagCache),
    /// TeaCache (TeaCache4FLUX).
    Tea {
        /// Accumulated rescaled change under which the blocks are skipped (its authors: 0.25
        /// for 1.5×, 0.4 for 1.8×, 0.6 for 2.0×, 0.8 for 2.25× on FLUX.1-dev).
        threshold: f64,
    },
}

/// MagCache's parameters (diffusers' `MagCacheConfig`; its `num_inference_steps` is the number
/// of transformer calls the run makes: for img2img, the steps that run).
#[derive(Debug, Clone, PartialEq)]
pub struct MagCache {
    /// Accumulated error under which a step is skipped (default 0.06).
    pub threshold: f32,
    /// Most consecutive skipped steps (`K`, default 3).
    pub max_skip_steps: usize,
    /// Share of the first steps that always run (default 0.2).
    pub retention_ratio: f64,
    /// The model's magnitude ratios, or calibration.
    pub ratios: MagRatios,
}

impl MagCache {
    /// diffusers' defaults with FLUX's ratios and `threshold`.
    pub fn flux(threshold: f32) -> Self {
        Self {
            threshold,
            max_skip_steps: 3,
            retention_ratio: 0.2,
            ratios: MagRatios::Flux,
        }
    }
}

/// Where MagCache's per-step magnitude ratios come from.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum MagRatios {
    /// [`FLUX_MAG_RATIOS`] (FLUX.1 dev/schnell), interpolated to the step count.
    Flux,
    /// Ratios measured for another model (by [`MagRatios::Calibrate`]), interpolated likewise.
    Custom(Vec<f32>),
    /// Skip nothing; measure the ratios of this run (`calibrate=True`):
    /// [`StepCache::calibration`] (the facade's `Pipeline::calibrate_mag_cache` returns them).
    Calibrate,
}

impl Cache {
    /// The defaults for a bare name: first-block 0.05 and magcache 0.06 (diffusers'),
    /// teacache 0.4 (its authors' 1.8× setting).
    pub fn named(name: &str) -> Option<Self> {
        match name {
            "first-block" | "fbc" => Some(Cache::FirstBlock { threshold: 0.05 }),
            "magcache" | "mag" => Some(Cache::Mag(MagCache::flux(0.06))),
            "teacache" | "tea" => Some(Cache::Tea { threshold: 0.4 }),
            _ => None,
        }
    }

    /// The cache's name (`first-block`, `magcache`, `teacache`).
    pub fn name(&self) -> &'static str {
        match self {
            Cache::FirstBlock { .. } => "first-block",
            Cache::Mag(_) => "magcache",
            Cache::Tea { .. } => "teacache",
        }
    }

    /// Checks the parameters.
    ///
    /// # Errors
    /// A message naming the bad value: negative or non-finite thresholds, a retention ratio
    /// outside [0, 1], empty or non-finite custom ratios.
    pub fn validate(&self) -> Result<(), String> {
        let threshold = |t: f64| {
            if t.is_finite() && t >= 0.0 {
                Ok(())
            } else {
                Err(format!(
                    "{} threshold {t} must be finite and >= 0",
                    self.name()
                ))
            }
        };
        match self {
            Cache::FirstBlock { threshold: t } | Cache::Tea { threshold: t } => threshold(*t),
            Cache::Mag(m) => {
                threshold(f64::from(m.threshold))?;
                if !(0.0..=1.0).contains(&m.retention_ratio) {
                    return Err(format!(
                        "magcache retention ratio {} must be in [0, 1]",
                        m.retention_ratio
                    ));
                }
                match &m.ratios {
                    MagRatios::Custom(r) if r.is_empty() || r.iter().any(|v| !v.is_finite()) => {
                        Err("magcache ratios must be a non-empty list of finite numbers".into())
                    }
                    _ => Ok(()),
                }
            }
        }
    }
}

impl fmt::Display for Cache {
    /// `name:threshold` (`magcache:calibrate` when calibrating), as [`FromStr`] reads it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cache::FirstBlock { threshold } | Cache::Tea { threshold } => {
                write!(f, "{}:{threshold}", self.name())
            }
            Cache::Mag(m) if m.ratios == MagRatios::Calibrate => f.write_str("magcache:calibrate"),
            Cache::Mag(m) => write!(f, "magcache:{}", m.threshold),
        }
    }
}

impl FromStr for Cache {
    type Err = String;

    /// `first-block[:T]`, `magcache[:T]`, `magcache:calibrate`, `teacache[:T]`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, value) = match s.split_once(':') {
            Some((n, v)) => (n, Some(v)),
            None => (s, None),
        };
        let mut cache = Cache::named(name).ok_or_else(|| {
            format!(
                "unknown cache {name:?}; expected first-block[:T], teacache[:T], magcache[:T] \
                 or magcache:calibrate"
            )
        })?;
        match (&mut cache, value) {
            (_, None) => {}
            (Cache::Mag(m), Some("calibrate")) => m.ratios = MagRatios::Calibrate,
            (cache, Some(v)) => {
                let t: f64 = v.trim().parse().map_err(|_| {
                    format!("{name} threshold {v:?} is not a number (e.g. {name}:0.1)")
                })?;
                match cache {
                    Cache::FirstBlock { threshold } | Cache::Tea { threshold } => *threshold = t,
                    Cache::Mag(m) => m.threshold = t as f32,
                }
            }
        }
        cache.validate()?;
        Ok(cache)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_thresholds_and_calibration() {
        assert_eq!(
            "first-block:0.12".parse(),
            Ok(Cache::FirstBlock { threshold: 0.12 })
        );
        assert_eq!("teacache".parse(), Ok(Cache::Tea { threshold: 0.4 }));
        assert_eq!("magcache:0.1".parse(), Ok(Cache::Mag(MagCache::flux(0.1))));
        let Ok(Cache::Mag(m)) = "magcache:calibrate".parse::<Cache>() else {
            panic!()
        };
        assert_eq!(m.ratios, MagRatios::Calibrate);
        for s in [
            "first-block:0.12",
            "teacache:0.6",
            "magcache:0.06",
            "magcache:calibrate",
        ] {
            assert_eq!(s.parse::<Cache>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn bad_values_are_one_line_errors() {
        for (s, says) in [
            ("first-block:-0.1", "must be finite and >= 0"),
            ("teacache:nan", "must be finite"),
            ("magcache:inf", "must be finite"),
            ("teacache:fast", "not a number"),
            ("deepcache:0.1", "unknown cache \"deepcache\""),
        ] {
            let e = s.parse::<Cache>().unwrap_err();
            assert!(e.contains(says) && !e.contains('\n'), "{s}: {e}");
        }
    }
}
