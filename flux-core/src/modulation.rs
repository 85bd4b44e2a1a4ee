//! adaLN modulation: shift, scale and gate vectors computed from the conditioning vector.

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::activation::silu;
use burn::tensor::backend::Backend;
use flux_nn::{FluxBackend, Init, Linear};

/// The epsilon of the blocks' LayerNorms (no affine; BFL `nn.LayerNorm(eps=1e-6)`).
pub(crate) const NORM_EPS: f64 = 1e-6;

/// One (shift, scale, gate) triple, each `[b, 1, hidden]`.
#[derive(Debug, Clone)]
pub struct ModulationOut<B: Backend> {
    /// Added after scaling.
    pub(crate) shift: Tensor<B, 3>,
    /// Applied as `1 + scale`.
    pub(crate) scale: Tensor<B, 3>,
    /// Multiplies the residual branch.
    pub(crate) gate: Tensor<B, 3>,
}

impl<B: FluxBackend> ModulationOut<B> {
    /// `(1 + scale) * LayerNorm(x) + shift`: the block's norm (no affine, eps 1e-6) and its
    /// modulation, one fused op where the backend has one.
    ///
    /// # Shapes
    /// - x: `[b, seq, hidden]` -> `[b, seq, hidden]`
    pub fn norm_modulate(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        B::layer_norm_modulate(x, self.scale.clone(), self.shift.clone(), NORM_EPS)
    }
}

/// `lin(silu(vec))` chunked into one (double = false) or two (double = true) triples in the
/// order shift, scale, gate (BFL `Modulation`).
#[derive(Module, Debug)]
pub struct Modulation<B: Backend> {
    /// `hidden -> multiplier * hidden`, multiplier 6 (double) or 3 (single).
    lin: Linear<B>,
    /// Two triples (double-stream block) or one (single-stream block).
    #[module(skip)]
    double: bool,
}

impl<B: FluxBackend> Modulation<B> {
    /// Modulation for `hidden` channels; `double` gives two triples.
    pub fn new(hidden: usize, double: bool, init: &Init<B>) -> Self {
        let multiplier = if double { 6 } else { 3 };
        Self {
            lin: init.linear("lin", hidden, multiplier * hidden, true),
            double,
        }
    }

    /// # Shapes
    /// - vec: `[b, hidden]` -> triples of `[b, 1, hidden]`; the second is `Some` for double blocks
    pub fn forward(&self, vec: Tensor<B, 2>) -> (ModulationOut<B>, Option<ModulationOut<B>>) {
        let out = self.lin.forward(silu(vec)).unsqueeze_dim::<3>(1);
        let chunks = out.chunk(if self.double { 6 } else { 3 }, 2);
        let triple = |i: usize| ModulationOut {
            shift: chunks[i].clone(),
            scale: chunks[i + 1].clone(),
            gate: chunks[i + 2].clone(),
        };
        (triple(0), self.double.then(|| triple(3)))
    }
}
