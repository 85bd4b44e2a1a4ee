//! [`DoubleStreamBlock`]: image and text streams with their own weights and one joint attention.

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use flux_nn::{FluxBackend, Init};

use crate::attention::SelfAttention;
use crate::mlp::Mlp;
use crate::modulation::Modulation;
use crate::rope::RopeTable;

/// BFL `DoubleStreamBlock`.
#[derive(Module, Debug)]
pub struct DoubleStreamBlock<B: Backend> {
    /// Image-stream modulation (two triples: attention, MLP).
    img_mod: Modulation<B>,
    /// Image-stream attention weights.
    img_attn: SelfAttention<B>,
    /// Image-stream MLP.
    img_mlp: Mlp<B>,
    /// Text-stream modulation.
    txt_mod: Modulation<B>,
    /// Text-stream attention weights.
    txt_attn: SelfAttention<B>,
    /// Text-stream MLP.
    txt_mlp: Mlp<B>,
    #[module(skip)]
    num_heads: usize,
}

impl<B: FluxBackend> DoubleStreamBlock<B> {
    /// A block of width `hidden`.
    pub fn new(
        hidden: usize,
        heads: usize,
        mlp_hidden: usize,
        qkv_bias: bool,
        init: &Init<B>,
    ) -> Self {
        Self {
            img_mod: Modulation::new(hidden, true, &init.at("img_mod")),
            img_attn: SelfAttention::new(hidden, heads, qkv_bias, &init.at("img_attn")),
            img_mlp: Mlp::new(hidden, mlp_hidden, &init.at("img_mlp")),
            txt_mod: Modulation::new(hidden, true, &init.at("txt_mod")),
            txt_attn: SelfAttention::new(hidden, heads, qkv_bias, &init.at("txt_attn")),
            txt_mlp: Mlp::new(hidden, mlp_hidden, &init.at("txt_mlp")),
            num_heads: heads,
        }
    }

    /// The image stream's modulated input to the attention, `(1 + scale)·LayerNorm(img) +
    /// shift` (diffusers' `norm1(hidden_states, emb=temb)[0]`): TeaCache's signal.
    ///
    /// # Shapes
    /// - img: `[b, n_img, hidden]`, vec: `[b, hidden]` -> `[b, n_img, hidden]`
    pub fn img_modulated(&self, img: Tensor<B, 3>, vec: Tensor<B, 2>) -> Tensor<B, 3> {
        self.img_mod.forward(vec).0.norm_modulate(img)
    }

    /// # Shapes
    /// - img: `[b, n_img, hidden]`, txt: `[b, n_txt, hidden]`, vec: `[b, hidden]`
    /// - pe: tables for the joint sequence (text first), `[b, n_txt + n_img, head_dim / 2]`
    /// - returns (img, txt) with the input shapes
    pub fn forward(
        &self,
        img: Tensor<B, 3>,
        txt: Tensor<B, 3>,
        vec: Tensor<B, 2>,
        pe: &RopeTable<B>,
    ) -> (Tensor<B, 3>, Tensor<B, 3>) {
        let (img_mod1, img_mod2) = self.img_mod.forward(vec.clone());
        let (txt_mod1, txt_mod2) = self.txt_mod.forward(vec);
        let (img_mod2, txt_mod2) = (img_mod2.expect("double"), txt_mod2.expect("double"));

        let img_qkv = self.img_attn.qkv(img_mod1.norm_modulate(img.clone()));
        let txt_qkv = self.txt_attn.qkv(txt_mod1.norm_modulate(txt.clone()));
        let attn = B::joint_attention(vec![txt_qkv, img_qkv], self.num_heads, pe);
        let n_txt = txt.dims()[1];
        let n_img = img.dims()[1];
        let txt_attn = attn.clone().narrow(1, 0, n_txt);
        let img_attn = attn.narrow(1, n_txt, n_img);

        let img = img + self.img_attn.proj(img_attn) * img_mod1.gate;
        let img =
            img.clone() + self.img_mlp.forward(img_mod2.norm_modulate(img)) * img_mod2.gate.clone();

        let txt = txt + self.txt_attn.proj(txt_attn) * txt_mod1.gate;
        let txt =
            txt.clone() + self.txt_mlp.forward(txt_mod2.norm_modulate(txt)) * txt_mod2.gate.clone();
        (img, txt)
    }
}
