//! The named transformer sizes shared by `benches/transformer.rs` and `examples/bench.rs`
//! (and mirrored in `scripts/reference/bench_torch.py`: keep the three in step).

use flux_core::FluxConfig;

/// One benchmark size: a model and the token counts of one denoising step.
#[derive(Debug, Clone)]
pub struct Size {
    /// The name on the command line.
    pub name: &'static str,
    /// The model.
    pub config: FluxConfig,
    /// Image tokens per side (the image is `16 * side` pixels square).
    pub grid: usize,
    /// Text tokens.
    pub n_txt: usize,
}

impl Size {
    /// Image tokens.
    pub fn n_img(&self) -> usize {
        self.grid * self.grid
    }

    /// Image width and height in pixels (2x2 patches of 8x-downsampled latents).
    pub fn pixels(&self) -> usize {
        16 * self.grid
    }
}

/// A FLUX-shaped config: `hidden` wide in `heads` heads, the released RoPE split
/// (hd/8, 7hd/16, 7hd/16), MLP ratio 4, qkv bias and a guidance embedding like [dev].
fn narrow(
    hidden: usize,
    heads: usize,
    depth: (usize, usize),
    context: usize,
    vec: usize,
) -> FluxConfig {
    let head_dim = hidden / heads;
    FluxConfig {
        vec_in_dim: vec,
        context_in_dim: context,
        hidden_size: hidden,
        num_heads: heads,
        depth: depth.0,
        depth_single_blocks: depth.1,
        axes_dim: [head_dim / 8, head_dim * 7 / 16, head_dim * 7 / 16],
        ..FluxConfig::dev()
    }
}

/// All sizes, smallest first.
pub fn all() -> Vec<Size> {
    vec![
        // hidden 128, 4 heads, 1 double + 2 single blocks, 256 image + 64 text tokens.
        Size {
            name: "tiny",
            config: narrow(128, 4, (1, 2), 256, 64),
            grid: 16,
            n_txt: 64,
        },
        // A 512x512 image through a narrow FLUX: hidden 512, 8 heads, 2 double + 4 single.
        Size {
            name: "small",
            config: narrow(512, 8, (2, 4), 4096, 768),
            grid: 32,
            n_txt: 256,
        },
        // A 512x512 image through the real width (3072, 24 heads), 1 double + 2 single blocks:
        // the released model's per-block cost at CPU-friendly depth.
        Size {
            name: "medium",
            config: narrow(3072, 24, (1, 2), 4096, 768),
            grid: 32,
            n_txt: 512,
        },
        // FLUX.1-dev at 1024x1024 (4096 image + 512 text tokens), random weights: for GPUs.
        Size {
            name: "dev",
            config: FluxConfig::dev(),
            grid: 64,
            n_txt: 512,
        },
    ]
}

/// The size called `name`.
pub fn by_name(name: &str) -> Option<Size> {
    all().into_iter().find(|s| s.name == name)
}
