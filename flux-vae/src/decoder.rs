//! The decoder: latent to image.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use flux_nn::{FluxBackend, Init};

use crate::AutoEncoderConfig;
use crate::encoder::MidBlock;
use crate::norm::{GroupNorm, swish};
use crate::resnet::{ResnetBlock, conv3x3};
use crate::sample::Upsample;

/// One decoder level: `num_res_blocks + 1` resnets, then an upsample on all but level 0.
#[derive(Module, Debug)]
pub struct UpLevel<B: Backend> {
    /// The resnets.
    pub(crate) block: Vec<ResnetBlock<B>>,
    /// Doubles the resolution (absent on level 0).
    pub(crate) upsample: Option<Upsample<B>>,
}

/// BFL `Decoder`: `conv_in`, `mid`, levels `up.{i}` run from the last to the first,
/// `norm_out`, swish, `conv_out`.
#[derive(Module, Debug)]
pub struct Decoder<B: Backend> {
    /// Latent to the widest channel count.
    pub(crate) conv_in: Conv2d<B>,
    /// The mid block.
    pub(crate) mid: MidBlock<B>,
    /// The levels, indexed like the encoder's (`up.0` is the full-resolution one, run last).
    pub(crate) up: Vec<UpLevel<B>>,
    /// Output norm.
    pub(crate) norm_out: GroupNorm<B>,
    /// To image channels.
    pub(crate) conv_out: Conv2d<B>,
}

impl<B: FluxBackend> Decoder<B> {
    /// Builds the decoder of `config`.
    pub fn new(config: &AutoEncoderConfig, init: &Init<B>) -> Self {
        let g = config.norm_groups;
        let levels = config.ch_mult.len();
        let top = config.ch * config.ch_mult[levels - 1];
        let conv_in = conv3x3(init, "conv_in", config.z_channels, top);
        let mid = MidBlock::new(top, g, &init.at("mid"));
        let mut cin = top;
        // Built deepest level first (the order the checkpoint's shapes chain in), stored by
        // level index as the checkpoint names them (`up.0` is the shallowest).
        let mut up: Vec<UpLevel<B>> = (0..levels)
            .rev()
            .map(|i| {
                let level = init.at("up").at(i);
                let blocks = level.at("block");
                let cout = config.ch * config.ch_mult[i];
                let block = (0..=config.num_res_blocks)
                    .map(|j| {
                        let from = if j == 0 { cin } else { cout };
                        ResnetBlock::new(from, cout, g, &blocks.at(j))
                    })
                    .collect();
                cin = cout;
                let upsample = (i > 0).then(|| Upsample::new(cout, &level.at("upsample")));
                UpLevel { block, upsample }
            })
            .collect();
        up.reverse();
        Self {
            conv_in,
            mid,
            up,
            norm_out: GroupNorm::new(g, config.ch, &init.at("norm_out")),
            conv_out: conv3x3(init, "conv_out", config.ch, config.out_ch),
        }
    }

    /// # Shapes
    /// `z` (unscaled latent): `[b, z_channels, h, w]` -> `[b, out_ch, 8h, 8w]`.
    pub fn forward(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut h = self.mid.forward(self.conv_in.forward(z));
        for level in self.up.iter().rev() {
            for block in &level.block {
                h = block.forward(h);
            }
            if let Some(up) = &level.upsample {
                h = up.forward(h);
            }
        }
        self.conv_out.forward(swish(self.norm_out.forward(h)))
    }
}
