//! [`SingleStreamBlock`]: the joint sequence through attention and MLP side by side.

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use flux_nn::{FluxBackend, Init, Linear};

use crate::modulation::Modulation;
use crate::norm::QkNorm;
use crate::rope::RopeTable;

/// BFL `SingleStreamBlock` (the parallel block of ViT-22B).
#[derive(Module, Debug)]
pub struct SingleStreamBlock<B: Backend> {
    /// `hidden -> 3 * hidden + mlp_hidden`: q, k, v and the MLP input at once.
    linear1: Linear<B>,
    /// `hidden + mlp_hidden -> hidden`: attention output and MLP activation at once.
    linear2: Linear<B>,
    /// Per-head q/k norms.
    norm: QkNorm<B>,
    /// One (shift, scale, gate) triple.
    modulation: Modulation<B>,
    #[module(skip)]
    num_heads: usize,
}

impl<B: FluxBackend> SingleStreamBlock<B> {
    /// A block of width `hidden`.
    pub fn new(hidden: usize, heads: usize, mlp_hidden: usize, init: &Init<B>) -> Self {
        Self {
            linear1: init.linear("linear1", hidden, 3 * hidden + mlp_hidden, true),
            linear2: init.linear("linear2", hidden + mlp_hidden, hidden, true),
            norm: QkNorm::new(hidden / heads, &init.at("norm")),
            modulation: Modulation::new(hidden, false, &init.at("modulation")),
            num_heads: heads,
        }
    }

    /// # Shapes
    /// - x: `[b, seq, hidden]` (text tokens then image tokens), vec: `[b, hidden]`
    /// - pe: `[b, seq, head_dim / 2]`
    /// - returns `[b, seq, hidden]`
    pub fn forward(&self, x: Tensor<B, 3>, vec: Tensor<B, 2>, pe: &RopeTable<B>) -> Tensor<B, 3> {
        let (modulation, _) = self.modulation.forward(vec);
        let x_mod = modulation.norm_modulate(x.clone());
        let fused = self.norm.stream(self.linear1.forward(x_mod));
        // linear2 takes the attention and the MLP's activation side by side.
        let attn_mlp = B::attention_and_gelu(fused, self.num_heads, pe);
        x + self.linear2.forward(attn_mlp) * modulation.gate
    }
}
