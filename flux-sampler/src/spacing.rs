//! How the steps between a schedule's end points are spaced: FLUX's shifted linear grid, or the
//! Karras, exponential and beta spacings of diffusers' `FlowMatchEulerDiscreteScheduler`
//! (`use_karras_sigmas`, `use_exponential_sigmas`, `use_beta_sigmas`).
//!
//! diffusers converts *after* FLUX's shift: of the `n` shifted sigmas it keeps only the first
//! (`sigma_max`) and the last (`sigma_min`, the shifted `1/n`), re-spaces the `n` values between
//! them in `f64`, and casts them to `f32` before the terminal 0 is appended.

use std::fmt;
use std::str::FromStr;

use statrs::distribution::{Beta, Continuous, ContinuousCDF};
use statrs::function::gamma::ln_gamma;

/// The spacing of a schedule's sigmas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Spacing {
    /// FLUX's own: the linear grid `1, …, 1/n` through the resolution-dependent shift.
    #[default]
    Flux,
    /// Karras et al. (EDM): `(max^(1/ρ) + r·(min^(1/ρ) − max^(1/ρ)))^ρ` for `r` in
    /// `linspace(0, 1, n)`, `ρ = 7`.
    Karras,
    /// Evenly spaced in `log σ`: `exp(linspace(ln max, ln min, n))`.
    Exponential,
    /// `min + F⁻¹(1 − r)·(max − min)` with `F` the CDF of Beta(0.6, 0.6) ("Beta Sampling is All
    /// You Need"; ComfyUI's `beta` scheduler).
    Beta,
}

impl Spacing {
    /// Every spacing with its name, for listings.
    pub const ALL: [Spacing; 4] = [
        Spacing::Flux,
        Spacing::Karras,
        Spacing::Exponential,
        Spacing::Beta,
    ];

    /// The name the CLI and the server take (`flux`, `karras`, `exponential`, `beta`).
    pub fn name(self) -> &'static str {
        match self {
            Spacing::Flux => "flux",
            Spacing::Karras => "karras",
            Spacing::Exponential => "exponential",
            Spacing::Beta => "beta",
        }
    }

    /// The `n` step sigmas (the terminal 0 not included) re-spaced between `step_sigmas`' first
    /// and last value, as diffusers' `_convert_to_*` compute them (in `f64`, cast to `f32`).
    /// [`Spacing::Flux`] returns them unchanged.
    pub(crate) fn respace(self, step_sigmas: &[f32]) -> Vec<f32> {
        let n = step_sigmas.len();
        if self == Spacing::Flux || n == 0 {
            return step_sigmas.to_vec();
        }
        let max = f64::from(step_sigmas[0]);
        let min = f64::from(step_sigmas[n - 1]);
        let ramp = numpy_linspace(0.0, 1.0, n);
        let values: Vec<f64> = match self {
            Spacing::Flux => unreachable!("returned above"),
            Spacing::Karras => {
                const RHO: f64 = 7.0;
                let (min_inv, max_inv) = (min.powf(1.0 / RHO), max.powf(1.0 / RHO));
                ramp.iter()
                    .map(|r| (max_inv + r * (min_inv - max_inv)).powf(RHO))
                    .collect()
            }
            Spacing::Exponential => numpy_linspace(max.ln(), min.ln(), n)
                .into_iter()
                .map(f64::exp)
                .collect(),
            Spacing::Beta => ramp
                .iter()
                .map(|r| min + beta_ppf(1.0 - r) * (max - min))
                .collect(),
        };
        values.into_iter().map(|v| v as f32).collect()
    }
}

impl fmt::Display for Spacing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Spacing {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Spacing::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                format!("unknown sigma spacing {s:?}; expected flux, karras, exponential or beta")
            })
    }
}

/// The shape parameters of the beta spacing (diffusers' defaults, ComfyUI's `beta` scheduler).
const BETA_ALPHA: f64 = 0.6;

/// `scipy.stats.beta.ppf(q, 0.6, 0.6)`: the inverse CDF of Beta(0.6, 0.6), 0 and 1 at the ends.
pub(crate) fn beta_ppf(q: f64) -> f64 {
    if q <= 0.0 {
        return 0.0;
    }
    if q >= 1.0 {
        return 1.0;
    }
    let beta = Beta::new(BETA_ALPHA, BETA_ALPHA).expect("valid shape parameters");
    // statrs' inverse is good to about 1e-16 absolute, coarse where the quantile is tiny; a
    // bracketed Newton iteration on its CDF (relatively accurate) reaches scipy's relative
    // precision. Near 0 the CDF is `x^a / (a·B(a, a))` to first order: the starting point there.
    let mut x = if q < 1e-6 {
        let b = (2.0 * ln_gamma(BETA_ALPHA) - ln_gamma(2.0 * BETA_ALPHA)).exp();
        (q * BETA_ALPHA * b).powf(1.0 / BETA_ALPHA)
    } else {
        beta.inverse_cdf(q)
    };
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    for _ in 0..60 {
        let f = beta.cdf(x) - q;
        if f > 0.0 {
            hi = hi.min(x);
        } else {
            lo = lo.max(x);
        }
        let mut next = x - f / beta.pdf(x);
        if !(next > lo && next < hi) {
            next = 0.5 * (lo + hi);
        }
        if (next - x).abs() <= 1e-16 * x {
            return next;
        }
        x = next;
    }
    x
}

/// `np.linspace(start, stop, n)` with numpy's arithmetic: `i·step + start`, the last value set
/// to `stop` (a single value is `start`).
pub(crate) fn numpy_linspace(start: f64, stop: f64, n: usize) -> Vec<f64> {
    match n {
        0 => Vec::new(),
        1 => vec![start],
        _ => {
            let step = (stop - start) / (n - 1) as f64;
            let mut v: Vec<f64> = (0..n).map(|i| i as f64 * step + start).collect();
            v[n - 1] = stop;
            v
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_errors() {
        for s in Spacing::ALL {
            assert_eq!(s.name().parse::<Spacing>(), Ok(s));
        }
        let err = "karas".parse::<Spacing>().unwrap_err();
        assert!(err.contains("\"karas\"") && err.contains("karras"), "{err}");
    }

    #[test]
    fn respacing_keeps_the_end_points() {
        let s = [1.0f32, 0.8, 0.5, 0.3, 0.2];
        for k in [Spacing::Karras, Spacing::Exponential, Spacing::Beta] {
            let r = k.respace(&s);
            assert_eq!(r.len(), 5, "{k}");
            assert_eq!(r[0], 1.0, "{k}");
            assert!((r[4] - 0.2).abs() < 1e-7, "{k}: {r:?}");
            assert!(r.windows(2).all(|w| w[1] < w[0]), "{k}: {r:?}");
        }
        assert_eq!(Spacing::Flux.respace(&s), s.to_vec());
    }

    /// Against `scipy.stats.beta.ppf(q, 0.6, 0.6)` (schedules.json, gen_sampling.py).
    #[test]
    fn beta_ppf_matches_scipy() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/schedules.json");
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let mut worst = 0.0f64;
        for pair in json["beta_ppf"].as_array().unwrap() {
            let (q, want) = (pair[0].as_f64().unwrap(), pair[1].as_f64().unwrap());
            let got = beta_ppf(q);
            let err = (got - want).abs() / want.max(1e-300);
            worst = worst.max(err);
            assert!(err < 1e-9, "ppf({q}) = {got}, scipy {want}");
        }
        eprintln!("beta ppf: worst relative error {worst:.1e} against scipy");
    }

    #[test]
    fn beta_ppf_is_symmetric() {
        assert_eq!(beta_ppf(0.0), 0.0);
        assert_eq!(beta_ppf(1.0), 1.0);
        assert!((beta_ppf(0.5) - 0.5).abs() < 1e-12);
        assert!((beta_ppf(0.2) + beta_ppf(0.8) - 1.0).abs() < 1e-12);
    }
}
