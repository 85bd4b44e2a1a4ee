//! The published numbers and the scalar arithmetic of the three decisions.

/// MagCache's magnitude ratios of FLUX.1 (diffusers' `FLUX_MAG_RATIOS`, from MagCache's
/// authors): one per step of a 28-step run, the first 1.
pub const FLUX_MAG_RATIOS: [f32; 28] = [
    1.0, 1.21094, 1.11719, 1.07812, 1.0625, 1.03906, 1.03125, 1.03906, 1.02344, 1.03125, 1.02344,
    0.98047, 1.01562, 1.00781, 1.0, 1.00781, 1.0, 1.00781, 1.0, 1.0, 0.99609, 0.99609, 0.98047,
    0.98828, 0.96484, 0.95703, 0.93359, 0.89062,
];

/// TeaCache4FLUX's rescaling polynomial, highest power first (`np.poly1d`).
pub(crate) const TEA_FLUX_COEFFICIENTS: [f64; 5] = [
    4.98651651e+02,
    -2.83781631e+02,
    5.58554382e+01,
    -3.82021401e+00,
    2.64230861e-01,
];

/// `np.poly1d(coefficients)(x)`: Horner's rule in `f64`.
pub(crate) fn poly1d(coefficients: &[f64], x: f64) -> f64 {
    coefficients.iter().fold(0.0, |y, c| y * x + c)
}

/// diffusers' `nearest_interp`: `ratios` resampled to `n` values by the nearest index
/// `round(i · (len − 1)/(n − 1))` (computed in `f32`, halves to even); one value is the last.
pub(crate) fn nearest_interp(ratios: &[f32], n: usize) -> Vec<f32> {
    if n == ratios.len() {
        return ratios.to_vec();
    }
    if n == 1 {
        return vec![ratios[ratios.len() - 1]];
    }
    let scale = ((ratios.len() - 1) as f64 / (n - 1) as f64) as f32;
    (0..n)
        .map(|i| {
            let j = (i as f32 * scale).round_ties_even() as usize;
            ratios[j.min(ratios.len() - 1)]
        })
        .collect()
}

/// MagCache's counters, in the `f32` arithmetic of diffusers' 0-d tensors.
#[derive(Debug, Clone)]
pub(crate) struct MagAccumulator {
    ratio: f32,
    err: f32,
    steps: usize,
}

impl MagAccumulator {
    pub(crate) fn new() -> Self {
        Self {
            ratio: 1.0,
            err: 0.0,
            steps: 0,
        }
    }

    /// One step past the retention steps with magnitude ratio `scale`: whether it may be
    /// skipped (`have_residual` says a residual is stored). A step that runs resets the counters.
    pub(crate) fn skip(
        &mut self,
        scale: f32,
        threshold: f32,
        max_skip_steps: usize,
        have_residual: bool,
    ) -> bool {
        self.ratio *= scale;
        self.steps += 1;
        self.err += (1.0 - self.ratio).abs();
        let skip = have_residual && self.err <= threshold && self.steps <= max_skip_steps;
        if !skip {
            *self = Self::new();
        }
        skip
    }
}

/// `int(retention_ratio · n + 0.5)`: the steps MagCache always runs.
pub(crate) fn retention_steps(retention_ratio: f64, n: usize) -> usize {
    (retention_ratio * n as f64 + 0.5) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolation_follows_diffusers() {
        assert_eq!(
            nearest_interp(&FLUX_MAG_RATIOS, 28),
            FLUX_MAG_RATIOS.to_vec()
        );
        assert_eq!(nearest_interp(&FLUX_MAG_RATIOS, 1), vec![0.89062]);
        let ten = nearest_interp(&FLUX_MAG_RATIOS, 10);
        // round(i · 3) for i < 10: every third ratio.
        let want: Vec<f32> = (0..10).map(|i| FLUX_MAG_RATIOS[3 * i]).collect();
        assert_eq!(ten, want);
        // 27/(4 − 1) = 9: indices 0, 9, 18, 27.
        assert_eq!(
            nearest_interp(&FLUX_MAG_RATIOS, 4),
            vec![1.0, 1.03125, 1.0, 0.89062]
        );
    }

    #[test]
    fn accumulator_skips_at_most_k_steps_then_resets() {
        let mut a = MagAccumulator::new();
        assert!(a.skip(1.0, 0.06, 3, true));
        assert!(a.skip(1.0, 0.06, 3, true));
        assert!(a.skip(1.0, 0.06, 3, true));
        assert!(!a.skip(1.0, 0.06, 3, true), "the fourth step in a row runs");
        assert!(!a.skip(1.0, 0.06, 3, false), "no residual: runs");
        assert!(!a.skip(1.2, 0.06, 3, true), "error 0.2 above the threshold");
        assert_eq!(retention_steps(0.2, 28), 6);
        assert_eq!(retention_steps(0.2, 10), 2);
        assert!((poly1d(&TEA_FLUX_COEFFICIENTS, 0.0) - 0.264230861).abs() < 1e-15);
    }
}
