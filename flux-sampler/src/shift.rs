//! The resolution-dependent timestep shift of FLUX.1 \[dev\].

/// The linear map from the number of packed image tokens to the shift `mu`, and its defaults.
///
/// `mu(n)` goes through `(base_seq_len, base_shift)` and `(max_seq_len, max_shift)`; the shifted
/// time is `e^mu / (e^mu + (1/t - 1))` ([`time_shift`]). Both references use the defaults of
/// [`Shift::default`]: BFL's `get_lin_function(x1=256, y1=0.5, x2=4096, y2=1.15)` in
/// `src/flux/sampling.py`, diffusers' `calculate_shift(image_seq_len, 256, 4096, 0.5, 1.15)` with
/// the values of FLUX.1-dev's `scheduler/scheduler_config.json`.
///
/// `image_seq_len` is the number of *packed* image tokens, `(h/16)·(w/16)` (4096 at 1024²),
/// not a dimension of the unpacked latent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shift {
    /// `mu` at `base_seq_len` tokens (0.5).
    pub base_shift: f64,
    /// `mu` at `max_seq_len` tokens (1.15).
    pub max_shift: f64,
    /// Token count of the first anchor (256, a 256² image).
    pub base_seq_len: usize,
    /// Token count of the second anchor (4096, a 1024² image).
    pub max_seq_len: usize,
}

impl Default for Shift {
    fn default() -> Self {
        Self {
            base_shift: 0.5,
            max_shift: 1.15,
            base_seq_len: 256,
            max_seq_len: 4096,
        }
    }
}

impl Shift {
    /// `mu` for `image_seq_len` packed tokens, evaluated as both references do in double
    /// precision: `m = (max_shift - base_shift) / (max_seq_len - base_seq_len)`,
    /// `b = base_shift - m·base_seq_len`, `mu = image_seq_len·m + b` (so the result is bit-equal
    /// to theirs). Not clamped: below 256 tokens `mu` < 0.5, above 4096 it is > 1.15.
    pub fn mu(&self, image_seq_len: usize) -> f64 {
        let m = (self.max_shift - self.base_shift)
            / (self.max_seq_len as f64 - self.base_seq_len as f64);
        let b = self.base_shift - m * self.base_seq_len as f64;
        image_seq_len as f64 * m + b
    }
}

/// `e^mu / (e^mu + (1/t - 1))` in `f32` arithmetic with `e^mu` computed in `f64` and rounded
/// (what both references do on `f32` tensors); `t = 0` maps to exactly 0 and `t = 1` to 1.
pub fn time_shift(mu: f64, t: f32) -> f32 {
    if t <= 0.0 {
        return 0.0;
    }
    let e = mu.exp() as f32;
    e / (e + (1.0 / t - 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mu_hits_both_anchors() {
        let s = Shift::default();
        assert!((s.mu(256) - 0.5).abs() < 1e-12);
        assert!((s.mu(4096) - 1.15).abs() < 1e-12);
        // The pitfall of one port: passing a latent side (16) instead of the token count.
        assert!(s.mu(16) < 0.47);
    }

    #[test]
    fn time_shift_ends() {
        assert_eq!(time_shift(1.15, 0.0), 0.0);
        assert_eq!(time_shift(1.15, 1.0), 1.0);
        assert_eq!(time_shift(0.0, 0.25), 0.25);
        let mid = time_shift(1.15, 0.5);
        assert!((mid as f64 - 1.15f64.exp() / (1.15f64.exp() + 1.0)).abs() < 1e-7);
    }
}
