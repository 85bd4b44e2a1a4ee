//! [`SingleStreamBlock`]: the joint sequence through attention and MLP side by side.

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use flux_io::nn::Linear;

use crate::attention::{attention_on_host, attention_with_ops};
use crate::modulation::Modulation;
use crate::norm::QkNorm;
use crate::rope::RopeTable;
use flux_io::ops::gelu_tanh;

/// BFL `SingleStreamBlock` (the parallel block of ViT-22B).
#[derive(Module, Debug)]
pub struct SingleStreamBlock<B: Backend> {
    /// `hidden -> 3 * hidden + mlp_hidden`: q, k, v and the MLP input at once.
    pub(crate) linear1: Linear<B>,
    /// `hidden + mlp_hidden -> hidden`: attention output and MLP activation at once.
    pub(crate) linear2: Linear<B>,
    /// Per-head q/k norms.
    pub(crate) norm: QkNorm<B>,
    /// One (shift, scale, gate) triple.
    pub(crate) modulation: Modulation<B>,
    #[module(skip)]
    num_heads: usize,
    #[module(skip)]
    hidden: usize,
}

impl<B: Backend> SingleStreamBlock<B> {
    /// A block of width `hidden`.
    pub fn new(hidden: usize, heads: usize, mlp_hidden: usize, device: &B::Device) -> Self {
        Self {
            linear1: Linear::new(hidden, 3 * hidden + mlp_hidden, true, device),
            linear2: Linear::new(hidden + mlp_hidden, hidden, true, device),
            norm: QkNorm::new(hidden / heads, device),
            modulation: Modulation::new(hidden, false, device),
            num_heads: heads,
            hidden,
        }
    }

    /// # Shapes
    /// - x: `[b, seq, hidden]` (text tokens then image tokens), vec: `[b, hidden]`
    /// - pe: `[b, 1, seq, head_dim / 2]`
    /// - returns `[b, seq, hidden]`
    pub fn forward(&self, x: Tensor<B, 3>, vec: Tensor<B, 2>, pe: &RopeTable<B>) -> Tensor<B, 3> {
        let (modulation, _) = self.modulation.forward(vec);
        let x_mod = modulation.norm_modulate(x.clone());
        let fused = self.linear1.forward(x_mod);
        // linear2 takes the attention and the MLP's activation side by side.
        let attn_mlp = match attention_on_host(vec![(fused, &self.norm)], self.num_heads, pe, true)
        {
            Ok(attn_mlp) => attn_mlp,
            Err(mut fused) => {
                let fused = fused.remove(0);
                let [_, _, width] = fused.dims();
                let qkv = fused.clone().narrow(2, 0, 3 * self.hidden);
                let mlp = contiguous(fused.narrow(2, 3 * self.hidden, width - 3 * self.hidden));
                let attn = attention_with_ops(vec![(qkv, &self.norm)], self.num_heads, pe);
                Tensor::cat(vec![attn, gelu_tanh(mlp)], 2)
            }
        };
        let out = self.linear2.forward(attn_mlp);
        x + out * modulation.gate
    }
}

/// A contiguous copy of a column slice: flattening cannot be a view of a strided tensor, so
/// every backend copies (a plain 2-D copy), and the elementwise ops that follow run on
/// contiguous memory.
fn contiguous<B: Backend>(x: Tensor<B, 3>) -> Tensor<B, 3> {
    let dims = x.dims();
    x.reshape([dims.iter().product::<usize>()]).reshape(dims)
}
