//! The residual block of encoder and decoder.

use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use flux_nn::{FluxBackend, Init};

use crate::norm::{GroupNorm, swish};

/// A 3x3 convolution with padding 1 (`[in, out]` channels).
pub(crate) fn conv3x3<B: FluxBackend>(
    init: &Init<B>,
    name: &str,
    cin: usize,
    cout: usize,
) -> Conv2d<B> {
    let config =
        Conv2dConfig::new([cin, cout], [3, 3]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1));
    init.conv2d(name, &config)
}

/// A 1x1 convolution (`[in, out]` channels).
pub(crate) fn conv1x1<B: FluxBackend>(
    init: &Init<B>,
    name: &str,
    cin: usize,
    cout: usize,
) -> Conv2d<B> {
    init.conv2d(name, &Conv2dConfig::new([cin, cout], [1, 1]))
}

/// `skip(x) + conv2(swish(norm2(conv1(swish(norm1(x))))))`, with a 1x1 `nin_shortcut` as the
/// skip when the width changes (BFL `ResnetBlock`; diffusers `ResnetBlock2D`).
#[derive(Module, Debug)]
pub struct ResnetBlock<B: Backend> {
    /// First norm.
    pub(crate) norm1: GroupNorm<B>,
    /// First 3x3 conv.
    pub(crate) conv1: Conv2d<B>,
    /// Second norm.
    pub(crate) norm2: GroupNorm<B>,
    /// Second 3x3 conv.
    pub(crate) conv2: Conv2d<B>,
    /// 1x1 projection of the skip path when `in != out`.
    pub(crate) nin_shortcut: Option<Conv2d<B>>,
}

impl<B: FluxBackend> ResnetBlock<B> {
    /// A block from `cin` to `cout` channels.
    pub fn new(cin: usize, cout: usize, groups: usize, init: &Init<B>) -> Self {
        Self {
            norm1: GroupNorm::new(groups, cin, &init.at("norm1")),
            conv1: conv3x3(init, "conv1", cin, cout),
            norm2: GroupNorm::new(groups, cout, &init.at("norm2")),
            conv2: conv3x3(init, "conv2", cout, cout),
            nin_shortcut: (cin != cout).then(|| conv1x1(init, "nin_shortcut", cin, cout)),
        }
    }

    /// # Shapes
    /// `x`: `[b, in, h, w]` -> `[b, out, h, w]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let h = self.conv1.forward(swish(self.norm1.forward(x.clone())));
        let h = self.conv2.forward(swish(self.norm2.forward(h)));
        let skip = match &self.nin_shortcut {
            Some(conv) => conv.forward(x),
            None => x,
        };
        skip + h
    }
}
