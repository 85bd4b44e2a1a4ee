//! Sinusoidal timestep embedding and the MLP that lifts embeddings to the model width.

use burn::module::Module;
use burn::tensor::activation::silu;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};
use flux_nn::ops::in_f32;
use flux_nn::{FluxBackend, Init, Linear};

use crate::f32_tensor::f32_tensor;

/// Sinusoidal embedding of `t` (in [0, 1]; scaled by 1000 like the reference), `[cos | sin]`
/// order, max period 10000. Computed in f32 with the reference's order of operations (the
/// arguments reach ~1000 rad, so rounding the frequencies differently would show), returned in
/// `t`'s dtype.
///
/// # Shapes
/// - t: `[b]` -> `[b, dim]`
pub fn timestep_embedding<B: Backend>(t: Tensor<B, 1>, dim: usize) -> Tensor<B, 2> {
    const TIME_FACTOR: f64 = 1000.0;
    const MAX_PERIOD: f64 = 10_000.0;
    let device = t.device();
    let half = dim / 2;
    let log_period = -(MAX_PERIOD.ln() as f32);
    let freqs: Vec<f32> = (0..half)
        .map(|i| (log_period * i as f32 / half as f32).exp())
        .collect();
    let freqs = f32_tensor::<B, 1>(freqs, [half], &device);
    in_f32(t, |t| {
        let args = (t * TIME_FACTOR).unsqueeze_dim::<2>(1) * freqs.unsqueeze_dim(0);
        let mut emb = Tensor::cat(vec![args.clone().cos(), args.sin()], 1);
        if dim % 2 == 1 {
            let [b, _] = emb.dims();
            emb = Tensor::cat(vec![emb, Tensor::zeros([b, 1], (&device, DType::F32))], 1);
        }
        emb
    })
}

/// Two linear layers with a SiLU between (BFL `MLPEmbedder`).
#[derive(Module, Debug)]
pub struct MlpEmbedder<B: Backend> {
    /// `in_dim -> hidden`.
    in_layer: Linear<B>,
    /// `hidden -> hidden`.
    out_layer: Linear<B>,
}

impl<B: FluxBackend> MlpEmbedder<B> {
    /// An embedder from `in_dim` to `hidden`.
    pub fn new(in_dim: usize, hidden: usize, init: &Init<B>) -> Self {
        Self {
            in_layer: init.linear("in_layer", in_dim, hidden, true),
            out_layer: init.linear("out_layer", hidden, hidden, true),
        }
    }

    /// # Shapes
    /// - x: `[b, in_dim]` -> `[b, hidden]`
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.out_layer.forward(silu(self.in_layer.forward(x)))
    }
}
