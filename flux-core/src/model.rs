//! [`Flux`]: the whole transformer (BFL `Flux`, `src/flux/model.py`).

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};
use flux_nn::{FluxBackend, Init, Linear, LoraSlots, ParamBytes};

use crate::blocks::Blocks;
use crate::double_block::DoubleStreamBlock;
use crate::embed::{MlpEmbedder, timestep_embedding};
use crate::last_layer::LastLayer;
use crate::rope::{EmbedNd, RopeTable};
use crate::single_block::SingleStreamBlock;
use crate::{Error, FluxConfig, Result};

/// Width of the sinusoidal timestep and guidance embeddings.
const TIME_EMBED_DIM: usize = 256;

/// The FLUX flow-matching transformer. Field names are the BFL checkpoint's keys.
#[derive(Module, Debug)]
pub struct Flux<B: Backend> {
    /// Packed latent tokens -> hidden.
    img_in: Linear<B>,
    /// Timestep embedding -> hidden.
    time_in: MlpEmbedder<B>,
    /// Pooled CLIP vector -> hidden.
    vector_in: MlpEmbedder<B>,
    /// Guidance embedding -> hidden (\[dev\] only).
    guidance_in: Option<MlpEmbedder<B>>,
    /// T5 tokens -> hidden.
    txt_in: Linear<B>,
    /// Double-stream blocks (on the device, or in host memory: [`Flux::offload_blocks`]).
    double_blocks: Blocks<B, DoubleStreamBlock<B>>,
    /// Single-stream blocks.
    single_blocks: Blocks<B, SingleStreamBlock<B>>,
    /// Final modulation and projection.
    final_layer: LastLayer<B>,
    #[module(skip)]
    config: FluxConfig,
    /// What the parameters hold, as built.
    #[module(skip)]
    held: ParamBytes,
    /// Where the run-time LoRA strengths live ([`Flux::rescale_lora`]).
    #[module(skip)]
    pub(crate) lora: LoraSlots,
}

impl<B: FluxBackend> Flux<B> {
    /// Builds the model for a validated `config` from `init` (its names are BFL's keys, with
    /// three spellings Rust fields need: `img_mlp.in_layer`/`out_layer` for `img_mlp.0`/`.2`,
    /// `final_layer.ada_ln_modulation` for `adaLN_modulation.1`), each block moved to host
    /// memory as it is built when `offload` is set.
    pub(crate) fn new(config: FluxConfig, init: &Init<B>, offload: bool) -> Self {
        let h = config.hidden_size;
        let c = &config;
        let failed = || init.failed();
        let double = init.at("double_blocks");
        let double_blocks = Blocks::build(
            c.depth,
            offload,
            |i| {
                DoubleStreamBlock::new(
                    h,
                    c.num_heads,
                    c.mlp_hidden_dim(),
                    c.qkv_bias,
                    &double.at(i),
                )
            },
            failed,
        );
        let single = init.at("single_blocks");
        let single_blocks = Blocks::build(
            c.depth_single_blocks,
            offload,
            |i| SingleStreamBlock::new(h, c.num_heads, c.mlp_hidden_dim(), &single.at(i)),
            failed,
        );
        let model = Self {
            img_in: init.linear("img_in", c.in_channels, h, true),
            time_in: MlpEmbedder::new(TIME_EMBED_DIM, h, &init.at("time_in")),
            vector_in: MlpEmbedder::new(c.vec_in_dim, h, &init.at("vector_in")),
            guidance_in: c
                .guidance_embed
                .then(|| MlpEmbedder::new(TIME_EMBED_DIM, h, &init.at("guidance_in"))),
            txt_in: init.linear("txt_in", c.context_in_dim, h, true),
            double_blocks,
            single_blocks,
            final_layer: LastLayer::new(h, c.out_channels, &init.at("final_layer")),
            config: config.clone(),
            held: ParamBytes::default(),
            lora: LoraSlots::default(),
        };
        Self {
            held: init.held(),
            lora: init.lora_slots(),
            ..model
        }
    }

    /// Block-level offload: moves the weights of every double and single block to host
    /// memory, keeping the embedders and the final layer on the device. Each forward pass then
    /// uploads one block at a time, runs it and frees it, so the device holds the small
    /// resident part plus one block (FLUX.1-dev in bf16: 0.13 GB + 0.68 GB for a double block,
    /// instead of 23.8 GB) at the price of moving the blocks across every step (see
    /// docs/backends.md for the measured cost). Outputs are bit-identical to the resident
    /// model's.
    ///
    /// burn's module API ([`Module::num_params`], records, `to_device`) sees the resident part
    /// only; the blocks follow the device of the resident part.
    #[must_use]
    pub fn offload_blocks(mut self) -> Self {
        self.double_blocks = self.double_blocks.offload();
        self.single_blocks = self.single_blocks.offload();
        self
    }

    /// Whether the blocks are offloaded to host memory ([`Flux::offload_blocks`]).
    pub fn is_offloaded(&self) -> bool {
        self.double_blocks.host_bytes().is_some() || self.single_blocks.host_bytes().is_some()
    }

    /// Bytes of block weights held in host memory (0 when resident).
    pub fn offloaded_bytes(&self) -> usize {
        self.double_blocks.host_bytes().unwrap_or(0) + self.single_blocks.host_bytes().unwrap_or(0)
    }

    /// What the model's parameters hold (dense, quantized, run-time LoRA updates), as built.
    pub fn param_bytes(&self) -> ParamBytes {
        self.held
    }

    /// The float dtype of the weights (and of the activations: inputs are cast to it, norm
    /// statistics, RoPE and the timestep embedding run in f32 whatever it is).
    pub fn dtype(&self) -> DType {
        self.img_in.dtype()
    }

    /// The device the model's resident part lives on (offloaded blocks are uploaded there).
    pub fn device(&self) -> B::Device {
        self.img_in.weight().device()
    }

    /// The model's configuration.
    pub fn config(&self) -> &FluxConfig {
        &self.config
    }

    /// One velocity prediction, with the reference's signature.
    ///
    /// # Shapes
    /// - img: `[b, n_img, in_channels]` packed 2x2 latent patches; img_ids: `[b, n_img, 3]`
    /// - txt: `[b, n_txt, context_in_dim]`; txt_ids: `[b, n_txt, 3]`
    /// - timesteps: `[b]` in [0, 1]; y: `[b, vec_in_dim]`; guidance: `[b]` (\[dev\] only)
    /// - returns `[b, n_img, out_channels]`
    ///
    /// # Panics
    /// On inconsistent shapes or a missing guidance for a guidance-distilled model; use
    /// [`Flux::try_forward`] to get an [`Error`] instead. Why a pair: `forward` keeps the
    /// reference's signature and burn's module convention (infallible, panics on misuse),
    /// which callers and the workspace's public entry points rely on; `try_forward` is the
    /// same computation for inputs that come from outside the program.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        img: Tensor<B, 3>,
        img_ids: Tensor<B, 3>,
        txt: Tensor<B, 3>,
        txt_ids: Tensor<B, 3>,
        timesteps: Tensor<B, 1>,
        y: Tensor<B, 2>,
        guidance: Option<Tensor<B, 1>>,
    ) -> Tensor<B, 3> {
        self.try_forward(img, img_ids, txt, txt_ids, timesteps, y, guidance)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Flux::forward`] returning an error for bad inputs.
    ///
    /// # Errors
    /// [`Error::BadInput`] describing the first inconsistent shape.
    #[allow(clippy::too_many_arguments)]
    pub fn try_forward(
        &self,
        img: Tensor<B, 3>,
        img_ids: Tensor<B, 3>,
        txt: Tensor<B, 3>,
        txt_ids: Tensor<B, 3>,
        timesteps: Tensor<B, 1>,
        y: Tensor<B, 2>,
        guidance: Option<Tensor<B, 1>>,
    ) -> Result<Tensor<B, 3>> {
        let [b, n_img, _] = img.dims();
        let [_, n_txt, _] = txt.dims();
        expect_dims("img_ids", &img_ids.dims(), &[b, n_img, 3])?;
        expect_dims("txt_ids", &txt_ids.dims(), &[b, n_txt, 3])?;
        let pe = self.rope(txt_ids, img_ids)?;
        self.try_forward_with_rope(img, txt, &pe, timesteps, y, guidance)
    }

    /// The rotary tables for a joint sequence (text first). They depend only on the ids, so a
    /// sampler computes them once and reuses them at every step.
    ///
    /// # Shapes
    /// - txt_ids: `[b, n_txt, 3]`, img_ids: `[b, n_img, 3]` -> tables `[b, n_txt + n_img, head_dim/2]`
    ///
    /// # Errors
    /// [`Error::BadInput`] for non-finite ids or mismatched batch sizes.
    pub fn rope(&self, txt_ids: Tensor<B, 3>, img_ids: Tensor<B, 3>) -> Result<RopeTable<B>> {
        let (tb, ib) = (txt_ids.dims()[0], img_ids.dims()[0]);
        if tb != ib {
            return Err(Error::BadInput(format!(
                "txt_ids batch {tb} != img_ids batch {ib}"
            )));
        }
        let ids = Tensor::cat(vec![txt_ids, img_ids], 1);
        EmbedNd::new(self.config.theta, self.config.axes_dim).forward(ids)
    }

    /// [`Flux::try_forward`] with precomputed rotary tables (see [`Flux::rope`]).
    ///
    /// # Errors
    /// [`Error::BadInput`] describing the first inconsistent shape.
    pub fn try_forward_with_rope(
        &self,
        img: Tensor<B, 3>,
        txt: Tensor<B, 3>,
        pe: &RopeTable<B>,
        timesteps: Tensor<B, 1>,
        y: Tensor<B, 2>,
        guidance: Option<Tensor<B, 1>>,
    ) -> Result<Tensor<B, 3>> {
        let h = self.embed(img, txt, timesteps, y, guidance)?;
        let h = self.blocks(h, pe, 0..self.num_blocks())?;
        Ok(self.finish(h))
    }

    /// The first stage of [`Flux::try_forward_with_rope`]: the image and text tokens projected
    /// to the model's width and the conditioning vector (timestep, guidance, pooled text).
    ///
    /// The three stages exist so that a step cache can run the blocks in parts
    /// ([`Flux::blocks`]) and look at the streams in between.
    ///
    /// # Shapes
    /// - img: `[b, n_img, in_channels]`, txt: `[b, n_txt, context_in_dim]`
    /// - timesteps: `[b]`, y: `[b, vec_in_dim]`, guidance: `[b]`
    /// - returns streams `[b, n_img, hidden]`, `[b, n_txt, hidden]` and vec `[b, hidden]`
    ///
    /// # Errors
    /// [`Error::BadInput`] describing the first inconsistent shape, or a missing guidance for a
    /// guidance-distilled model.
    pub fn embed(
        &self,
        img: Tensor<B, 3>,
        txt: Tensor<B, 3>,
        timesteps: Tensor<B, 1>,
        y: Tensor<B, 2>,
        guidance: Option<Tensor<B, 1>>,
    ) -> Result<Hidden<B>> {
        let c = &self.config;
        // Half-precision weights take half-precision activations (f32 inputs are the norm;
        // burn's cast to the same dtype is a no-op).
        let dtype = self.dtype();
        let (img, txt, y) = (img.cast(dtype), txt.cast(dtype), y.cast(dtype));
        let [b, n_img, _] = img.dims();
        let [_, n_txt, _] = txt.dims();
        expect_dims("img", &img.dims(), &[b, n_img, c.in_channels])?;
        expect_dims("txt", &txt.dims(), &[b, n_txt, c.context_in_dim])?;
        expect_dims("timesteps", &timesteps.dims(), &[b])?;
        expect_dims("y", &y.dims(), &[b, c.vec_in_dim])?;

        let mut vec = self
            .time_in
            .forward(timestep_embedding(timesteps, TIME_EMBED_DIM).cast(dtype));
        match (&self.guidance_in, guidance) {
            (Some(guidance_in), Some(g)) => {
                expect_dims("guidance", &g.dims(), &[b])?;
                vec = vec + guidance_in.forward(timestep_embedding(g, TIME_EMBED_DIM).cast(dtype));
            }
            (Some(_), None) => {
                return Err(Error::BadInput(
                    "this model is guidance-distilled ([dev]): a guidance value is required".into(),
                ));
            }
            // [schnell] ignores a guidance value, as the reference does.
            (None, _) => {}
        }
        Ok(Hidden {
            img: self.img_in.forward(img),
            txt: self.txt_in.forward(txt),
            vec: vec + self.vector_in.forward(y),
        })
    }

    /// The number of blocks: the double-stream ones, then the single-stream ones.
    pub fn num_blocks(&self) -> usize {
        self.double_blocks.len() + self.single_blocks.len()
    }

    /// Runs blocks `range` of [`Flux::num_blocks`] (double-stream blocks first) on `h`.
    ///
    /// # Shapes
    /// - h: as [`Flux::embed`] returns; pe: `[b, n_txt + n_img, head_dim / 2]`
    ///
    /// # Errors
    /// [`Error::BadInput`] for a rotary table of the wrong shape or a range past the blocks.
    pub fn blocks(
        &self,
        h: Hidden<B>,
        pe: &RopeTable<B>,
        range: std::ops::Range<usize>,
    ) -> Result<Hidden<B>> {
        let [b, n_img, _] = h.img.dims();
        let n_txt = h.txt.dims()[1];
        expect_dims(
            "rope table",
            &pe.dims(),
            &[b, n_txt + n_img, self.config.head_dim() / 2],
        )?;
        if range.end > self.num_blocks() {
            return Err(Error::BadInput(format!(
                "blocks {range:?} of a model with {} blocks",
                self.num_blocks()
            )));
        }
        let Hidden {
            mut img,
            mut txt,
            vec,
        } = h;
        let depth = self.double_blocks.len();
        for i in range.start..range.end.min(depth) {
            (img, txt) = self.double_blocks.get(i).forward(img, txt, vec.clone(), pe);
        }
        if range.end > depth {
            let mut x = Tensor::cat(vec![txt, img], 1);
            for i in range.start.max(depth)..range.end {
                x = self
                    .single_blocks
                    .get(i - depth)
                    .forward(x, vec.clone(), pe);
            }
            txt = x.clone().narrow(1, 0, n_txt);
            img = x.narrow(1, n_txt, n_img);
        }
        Ok(Hidden { img, txt, vec })
    }

    /// The first double-stream block's modulated image input (TeaCache's signal).
    ///
    /// # Shapes
    /// - h: as [`Flux::embed`] returns -> `[b, n_img, hidden]`
    ///
    /// # Errors
    /// [`Error::BadInput`] for a model without double-stream blocks.
    pub fn first_block_modulated(&self, h: &Hidden<B>) -> Result<Tensor<B, 3>> {
        if self.double_blocks.len() == 0 {
            return Err(Error::BadInput(
                "the model has no double-stream block to take a modulated input from".into(),
            ));
        }
        Ok(self
            .double_blocks
            .get(0)
            .img_modulated(h.img.clone(), h.vec.clone()))
    }

    /// The last stage: the final modulation and projection of the image stream.
    ///
    /// # Shapes
    /// - h: as [`Flux::blocks`] returns -> `[b, n_img, out_channels]`
    pub fn finish(&self, h: Hidden<B>) -> Tensor<B, 3> {
        self.final_layer.forward(h.img, h.vec)
    }
}

/// The transformer's streams between its stages ([`Flux::embed`], [`Flux::blocks`],
/// [`Flux::finish`]).
#[derive(Debug, Clone)]
pub struct Hidden<B: Backend> {
    /// Image stream, `[b, n_img, hidden]`.
    pub img: Tensor<B, 3>,
    /// Text stream, `[b, n_txt, hidden]`.
    pub txt: Tensor<B, 3>,
    /// Conditioning vector, `[b, hidden]`.
    pub vec: Tensor<B, 2>,
}

impl<B: Backend> Hidden<B> {
    /// Rows `start..start + len` of the batch (the streams themselves when that is all of
    /// them).
    pub fn narrow(&self, start: usize, len: usize) -> Self {
        Self {
            img: rows(self.img.clone(), start, len),
            txt: rows(self.txt.clone(), start, len),
            vec: rows(self.vec.clone(), start, len),
        }
    }

    /// The batches of `parts` one after the other.
    ///
    /// # Panics
    /// When `parts` is empty.
    pub fn cat(mut parts: Vec<Self>) -> Self {
        if parts.len() == 1 {
            return parts.remove(0);
        }
        let (img, txt, vec) = parts.into_iter().map(|h| (h.img, h.txt, h.vec)).fold(
            (vec![], vec![], vec![]),
            |(mut i, mut t, mut v), (a, b, c)| {
                i.push(a);
                t.push(b);
                v.push(c);
                (i, t, v)
            },
        );
        Self {
            img: Tensor::cat(img, 0),
            txt: Tensor::cat(txt, 0),
            vec: Tensor::cat(vec, 0),
        }
    }
}

/// Rows `start..start + len` of `t`: `t` itself when that is every row, so that a whole
/// batch keeps its layout (the CPU backends' kernels can round a sliced view differently).
pub(crate) fn rows<B: Backend, const D: usize>(
    t: Tensor<B, D>,
    start: usize,
    len: usize,
) -> Tensor<B, D> {
    if start == 0 && len == t.dims()[0] {
        t
    } else {
        t.narrow(0, start, len)
    }
}

fn expect_dims(what: &str, found: &[usize], expected: &[usize]) -> Result<()> {
    if found == expected {
        Ok(())
    } else {
        Err(Error::BadInput(format!(
            "{what} has shape {found:?}, expected {expected:?}"
        )))
    }
}
