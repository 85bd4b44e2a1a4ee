//! The encoder: image to the moments (mean, log-variance) of the latent distribution.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use flux_nn::{FluxBackend, Init};

use crate::AutoEncoderConfig;
use crate::attention::AttnBlock;
use crate::norm::{GroupNorm, swish};
use crate::resnet::{ResnetBlock, conv3x3};
use crate::sample::Downsample;

/// resnet, attention, resnet at the lowest resolution (BFL `mid`).
#[derive(Module, Debug)]
pub struct MidBlock<B: Backend> {
    /// First resnet.
    pub(crate) block_1: ResnetBlock<B>,
    /// Self-attention over the whole latent.
    pub(crate) attn_1: AttnBlock<B>,
    /// Second resnet.
    pub(crate) block_2: ResnetBlock<B>,
}

impl<B: FluxBackend> MidBlock<B> {
    pub(crate) fn new(channels: usize, groups: usize, init: &Init<B>) -> Self {
        Self {
            block_1: ResnetBlock::new(channels, channels, groups, &init.at("block_1")),
            attn_1: AttnBlock::new(channels, groups, &init.at("attn_1")),
            block_2: ResnetBlock::new(channels, channels, groups, &init.at("block_2")),
        }
    }

    /// # Shapes
    /// `x`: `[b, c, h, w]` -> `[b, c, h, w]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.block_2
            .forward(self.attn_1.forward(self.block_1.forward(x)))
    }
}

/// One encoder level: resnets, then a downsample on all but the last level.
#[derive(Module, Debug)]
pub struct DownLevel<B: Backend> {
    /// The resnets.
    pub(crate) block: Vec<ResnetBlock<B>>,
    /// Halves the resolution (absent on the last level).
    pub(crate) downsample: Option<Downsample<B>>,
}

/// BFL `Encoder`: `conv_in`, levels `down.{i}`, `mid`, `norm_out`, swish, `conv_out`.
#[derive(Module, Debug)]
pub struct Encoder<B: Backend> {
    /// Image to `ch` channels.
    pub(crate) conv_in: Conv2d<B>,
    /// The levels, highest resolution first.
    pub(crate) down: Vec<DownLevel<B>>,
    /// The mid block.
    pub(crate) mid: MidBlock<B>,
    /// Output norm.
    pub(crate) norm_out: GroupNorm<B>,
    /// To `2 * z_channels` moments.
    pub(crate) conv_out: Conv2d<B>,
}

impl<B: FluxBackend> Encoder<B> {
    /// Builds the encoder of `config`.
    pub fn new(config: &AutoEncoderConfig, init: &Init<B>) -> Self {
        let g = config.norm_groups;
        let levels = config.ch_mult.len();
        let mut cin = config.ch;
        let down = (0..levels)
            .map(|i| {
                let level = init.at("down").at(i);
                let blocks = level.at("block");
                let cout = config.ch * config.ch_mult[i];
                let block = (0..config.num_res_blocks)
                    .map(|j| {
                        let from = if j == 0 { cin } else { cout };
                        ResnetBlock::new(from, cout, g, &blocks.at(j))
                    })
                    .collect();
                cin = cout;
                let downsample =
                    (i + 1 < levels).then(|| Downsample::new(cout, &level.at("downsample")));
                DownLevel { block, downsample }
            })
            .collect();
        Self {
            conv_in: conv3x3(init, "conv_in", config.in_channels, config.ch),
            down,
            mid: MidBlock::new(cin, g, &init.at("mid")),
            norm_out: GroupNorm::new(g, cin, &init.at("norm_out")),
            conv_out: conv3x3(init, "conv_out", cin, 2 * config.z_channels),
        }
    }

    /// # Shapes
    /// `x`: `[b, in_channels, h, w]` -> moments `[b, 2 * z_channels, h/8, w/8]` (mean first).
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut h = self.conv_in.forward(x);
        for level in &self.down {
            for block in &level.block {
                h = block.forward(h);
            }
            if let Some(down) = &level.downsample {
                h = down.forward(h);
            }
        }
        let h = self.mid.forward(h);
        self.conv_out.forward(swish(self.norm_out.forward(h)))
    }
}
