//! The layers a model is built of, as an [`super::Init::layout`] build records them.

/// One layer or parameter a model's constructors created, with its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// Its path in the model (`double_blocks.0.img_attn.qkv`; for a parameter, its own path:
    /// `double_blocks.0.img_attn.norm.key_norm.scale`).
    pub path: String,
    /// What it is.
    pub kind: LayerKind,
}

/// What a recorded [`Layer`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerKind {
    /// A linear layer (built by [`super::Init::linear`]).
    Linear {
        /// Input width.
        d_input: usize,
        /// Output width.
        d_output: usize,
        /// Whether it has a bias.
        bias: bool,
    },
    /// Any other parameter (norm scales, embeddings, convolutions' weights).
    Param {
        /// Its shape.
        shape: Vec<usize>,
    },
}
