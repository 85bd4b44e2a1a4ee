//! Resolution changes: stride-2 downsampling and nearest-neighbour x2 upsampling.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use flux_nn::{FluxBackend, Init};

use crate::resnet::conv3x3;

/// Pads right and bottom by one, then a 3x3 stride-2 conv without padding (BFL `Downsample`).
#[derive(Module, Debug)]
pub struct Downsample<B: Backend> {
    /// The stride-2 conv.
    pub(crate) conv: Conv2d<B>,
}

impl<B: FluxBackend> Downsample<B> {
    /// Keeps `channels`.
    pub fn new(channels: usize, init: &Init<B>) -> Self {
        let config = Conv2dConfig::new([channels, channels], [3, 3]).with_stride([2, 2]);
        Self {
            conv: init.conv2d("conv", &config),
        }
    }

    /// # Shapes
    /// `x`: `[b, c, h, w]` -> `[b, c, h/2, w/2]` (even `h`, `w`).
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.conv.forward(pad_right_bottom(x))
    }
}

/// Zero padding of one column on the right and one row at the bottom, in `x`'s dtype
/// (burn 0.21's `pad` fills with the device's default float, which breaks half tensors).
fn pad_right_bottom<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [b, c, h, w] = x.dims();
    let options = (&x.device(), x.dtype());
    let column = Tensor::zeros([b, c, h, 1], options);
    let x = Tensor::cat(vec![x, column], 3);
    let row = Tensor::zeros([b, c, 1, w + 1], options);
    Tensor::cat(vec![x, row], 2)
}

/// Nearest-neighbour x2 upsampling, then a 3x3 conv (BFL `Upsample`).
#[derive(Module, Debug)]
pub struct Upsample<B: Backend> {
    /// The conv after upsampling.
    pub(crate) conv: Conv2d<B>,
}

impl<B: FluxBackend> Upsample<B> {
    /// Keeps `channels`.
    pub fn new(channels: usize, init: &Init<B>) -> Self {
        Self {
            conv: conv3x3(init, "conv", channels, channels),
        }
    }

    /// # Shapes
    /// `x`: `[b, c, h, w]` -> `[b, c, 2h, 2w]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, c, h, w] = x.dims();
        let up = x
            .reshape([b, c, h, 1, w, 1])
            .expand([b, c, h, 2, w, 2])
            .reshape([b, c, 2 * h, 2 * w]);
        self.conv.forward(up)
    }
}
