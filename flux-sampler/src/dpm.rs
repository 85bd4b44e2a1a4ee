//! DPM-Solver++ 2M for flow matching, as diffusers' `DPMSolverMultistepScheduler` runs it with
//! FLUX (`use_flow_sigmas=True`, `prediction_type="flow_prediction"`, `solver_order=2`,
//! `lower_order_final=True`, `final_sigmas_type="zero"`).
//!
//! With flow sigmas `α_t = 1 − σ_t` and `λ_t = ln α_t − ln σ_t`. The model's velocity `v` becomes
//! a data prediction `x₀ = x − σ_s·v`; the first step and the last (whose `σ_t` is 0) are
//! first order, `x_t = (σ_t/σ_s)·x − α_t·(e^−h − 1)·x₀` with `h = λ_t − λ_s`; every other step is
//! second order with the previous `x₀`: `r = h₀/h`, `D₁ = (x₀ − x₀')/r`,
//! `x_t = (σ_t/σ_s)·x − α_t(e^−h − 1)·x₀ − ½·α_t(e^−h − 1)·D₁`. The scalars are 0-d `f32`
//! tensors in diffusers; here they are `f32` with `ln`/`exp` rounded from `f64`.

use burn::tensor::{Tensor, backend::Backend};

/// The solver's memory between steps: the previous data prediction.
#[derive(Debug)]
pub(crate) struct DpmSolver2M<B: Backend, const D: usize> {
    previous: Option<Tensor<B, D>>,
}

impl<B: Backend, const D: usize> DpmSolver2M<B, D> {
    pub(crate) fn new() -> Self {
        Self { previous: None }
    }

    /// Step `index` of `sigmas` (which end with 0): from `x` at `sigmas[index]` to
    /// `sigmas[index + 1]` with the velocity `v`.
    pub(crate) fn step(
        &mut self,
        x: Tensor<B, D>,
        v: Tensor<B, D>,
        sigmas: &[f32],
        index: usize,
    ) -> Tensor<B, D> {
        let last = index + 2 == sigmas.len();
        let (sigma_s, sigma_t) = (sigmas[index], sigmas[index + 1]);
        let x0 = x.clone() - v.mul_scalar(sigma_s);
        let lambda = |s: f32| ln(1.0 - s) - ln(s);
        let alpha_t = 1.0 - sigma_t;
        let h = lambda(sigma_t) - lambda(sigma_s);
        let scale = sigma_t / sigma_s;
        let b = alpha_t * (exp(-h) - 1.0);
        let previous = self.previous.replace(x0.clone());
        match previous {
            Some(m1) if !last => {
                let sigma_s1 = sigmas[index - 1];
                let h0 = lambda(sigma_s) - lambda(sigma_s1);
                let r0 = h0 / h;
                let d1 = (x0.clone() - m1).mul_scalar(1.0 / r0);
                x.mul_scalar(scale) - x0.mul_scalar(b) - d1.mul_scalar(0.5 * b)
            }
            _ => x.mul_scalar(scale) - x0.mul_scalar(b),
        }
    }
}

/// `f32` natural logarithm, correctly rounded from `f64` (`ln 0 = −∞`).
fn ln(x: f32) -> f32 {
    f64::from(x).ln() as f32
}

/// `f32` exponential, correctly rounded from `f64`.
fn exp(x: f32) -> f32 {
    f64::from(x).exp() as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    type B = NdArray<f32>;

    fn t(v: &[f32]) -> Tensor<B, 1> {
        Tensor::from_floats(v, &Default::default())
    }

    #[test]
    fn the_last_step_lands_on_the_data_prediction() {
        let mut s = DpmSolver2M::<B, 1>::new();
        let sigmas = [0.9f32, 0.5, 0.0];
        let x = t(&[1.0, -2.0]);
        let v = t(&[0.5, 0.25]);
        let x1 = s.step(x, v.clone(), &sigmas, 0);
        // First order: x₀ = x − 0.9·v, x_t = (σ_t/σ_s)·x − α_t(e^−h − 1)·x₀.
        let x0 = [1.0 - 0.9 * 0.5f32, -2.0 - 0.9 * 0.25];
        let h = (ln(0.5) - ln(0.5)) - (ln(0.1) - ln(0.9));
        let b = 0.5 * (exp(-h) - 1.0);
        let want = [
            (0.5f32 / 0.9) * 1.0 - b * x0[0],
            (0.5f32 / 0.9) * -2.0 - b * x0[1],
        ];
        let got = x1.clone().into_data().to_vec::<f32>().unwrap();
        assert!((got[0] - want[0]).abs() < 1e-6 && (got[1] - want[1]).abs() < 1e-6);
        let x2 = s.step(x1.clone(), v.clone(), &sigmas, 1);
        let data = (x1 - v.mul_scalar(0.5))
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        assert_eq!(x2.into_data().to_vec::<f32>().unwrap(), data);
    }
}
