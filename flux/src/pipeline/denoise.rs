//! The denoising stage: starting latents (seeded noise, the caller's latents, or an init image
//! noised to the first remaining step), then the Euler loop over the transformer.

use std::cell::Cell;
use std::collections::HashMap;
use std::ops::ControlFlow;

use burn::tensor::{Tensor, TensorData};
use flux_core::{BranchCaches, Flux, Hidden, RopeTable};
use flux_nn::FluxBackend;
use flux_sampler::{CacheStats, NoiseDtype, Schedule, Shift, TorchGenerator};

use super::Pipeline;
use super::condition::Condition;
use super::text::Encoded;
use super::{MemoryMode, Resolved};
use crate::Component;
use crate::request::strength_as_typed;
use crate::{GenerateRequest, Result, Stage, Variant};

/// The progress reporter `generate_with_progress` threads through the stages.
pub(super) type Report<'a> = dyn FnMut(Stage, usize, usize) -> Result<()> + 'a;

impl<B: FluxBackend> Pipeline<B> {
    pub(super) fn load_transformer(&self) -> Result<Flux<B>> {
        let (adapters, lora_mode) = self.lora_for(Component::Transformer);
        let options = flux_core::LoadConfig {
            config: None,
            dtype: self.dtype,
            offload_blocks: self.offload_blocks,
            quantization: self.quantization,
            adapters,
            lora_mode,
        };
        Ok(flux_core::load_with::<B>(
            &self.files.transformer,
            &self.device,
            options,
        )?)
    }

    /// The schedule diffusers' `FluxPipeline` (or, with an init image, `FluxImg2ImgPipeline`)
    /// runs for the plan's sampler and spacing: `plan.steps` shifted sigmas, of which img2img
    /// keeps those from `img2img_start(steps, strength)` on.
    fn schedule(
        &self,
        r: &GenerateRequest,
        plan: &Resolved,
        image_seq_len: usize,
    ) -> Result<Schedule> {
        let shift = self.kind.shifted().then(Shift::default);
        let full = Schedule::pipeline(plan.sampler, plan.sigmas, plan.steps, image_seq_len, shift)?;
        match &r.init_image {
            None => Ok(full),
            Some((_, strength)) => {
                let start = flux_sampler::img2img_start(plan.steps, strength_as_typed(*strength));
                Ok(full.starting_at(start)?)
            }
        }
    }

    /// The latents the loop starts from, unpacked `[b, 16, h/8, w/8]`, and the tool's
    /// conditioning, drawn in diffusers' order from one torch-compatible generator seeded
    /// with `r.seed`: a control image's posterior noise first (Control); then, for img2img and
    /// Fill, the init image's posterior noise; then the initial noise (unless the caller
    /// supplied it), mixed as `sigma·noise + (1 − sigma)·image_latents` at the first remaining
    /// step (diffusers' `scale_noise`); then the masked image's posterior noise (Fill).
    /// Kontext encodes its references to the posterior mode: no draw. Fill with the caller's
    /// latents starts from them as given (diffusers skips the init image then).
    fn start(
        &self,
        r: &GenerateRequest,
        plan: &Resolved,
        schedule: &Schedule,
        report: &mut Report<'_>,
    ) -> Result<(Tensor<B, 4>, Condition<B>)> {
        let device = &self.device;
        let shape = flux_sampler::diffusers_latent_shape(plan.batch, plan.height, plan.width);
        let mut generator = TorchGenerator::new(r.seed);
        let encodes = self.variant != Variant::TextToImage || r.init_image.is_some();
        if encodes {
            report(Stage::EncodingImage, 0, 1)?;
        }
        let mut condition = match self.variant {
            Variant::Control => self.control_condition(r, plan, &mut generator)?,
            Variant::Kontext => self.kontext_condition(r, plan)?,
            Variant::TextToImage | Variant::Fill => Condition::None,
        };
        let fill_latents = self.variant == Variant::Fill && r.latents.is_some();
        let image_latents = match &r.init_image {
            Some((image, _)) if !fill_latents => {
                Some(self.encode_init_image(image, plan, &mut generator)?)
            }
            _ => None,
        };
        let noise: Tensor<B, 4> = match &r.latents {
            Some(values) => Tensor::from_data(TensorData::new(values.clone(), shape), device),
            None => generator.randn_tensor(shape, NoiseDtype::F32, device)?,
        };
        let latents = match image_latents {
            Some(image_latents) => {
                let sigma = schedule.sigmas()[0];
                noise * sigma + image_latents * (1.0 - sigma)
            }
            None => noise,
        };
        if self.variant == Variant::Fill {
            condition = self.fill_condition(r, plan, &mut generator)?;
        }
        if encodes {
            report(Stage::EncodingImage, 1, 1)?;
        }
        Ok((latents, condition))
    }

    /// Starting latents, then the sampler's loop; returns unpacked latents `[b, 16, h/8, w/8]`
    /// and MagCache calibration's ratios when calibrating. With a step cache, `cache_stats`
    /// holds its counts after every step (the progress reports carry them).
    /// The transformer sees the whole batch in one call, or chunks of `max_batch` rows.
    /// With `negative` (its encodings and the true CFG scale), every step runs the transformer
    /// on the prompts and the negative prompts as one batch and moves along
    /// `neg + scale · (pos − neg)` (diffusers' order of operations; diffusers runs two calls).
    /// With a step cache, each of the two halves keeps its own cache state and decision.
    pub(super) fn denoise(
        &self,
        r: &GenerateRequest,
        plan: &Resolved,
        (txt, pooled): Encoded<B>,
        negative: Option<(Encoded<B>, f32)>,
        report: &mut Report<'_>,
        cache_stats: &Cell<Option<CacheStats>>,
    ) -> Result<(Tensor<B, 4>, Option<Vec<f32>>)> {
        let device = &self.device;
        let [b, _, lh, lw] =
            flux_sampler::diffusers_latent_shape(plan.batch, plan.height, plan.width);
        let n_img = (lh / 2) * (lw / 2);
        let schedule = self.schedule(r, plan, n_img)?;
        let (x, condition) = self.start(r, plan, &schedule, report)?;
        let x = flux_core::pack(x)?;
        let [_, n_txt, _] = txt.dims();

        let loads = self.memory == MemoryMode::Sequential;
        if loads {
            report(Stage::Loading, 0, 1)?;
        }
        let transformer = self.model(|m| &m.transformer, Self::load_transformer)?;
        let transformer = self.request_transformer(transformer, r)?;
        if loads {
            report(Stage::Loading, 1, 1)?;
        }
        // True CFG runs the prompts and the negative prompts as one batch of 2b.
        let (txt, pooled, cfg) = match negative {
            Some(((neg_txt, neg_pooled), scale)) => (
                Tensor::cat(vec![txt, neg_txt], 0),
                Tensor::cat(vec![pooled, neg_pooled], 0),
                Some(scale),
            ),
            None => (txt, pooled, None),
        };
        let rows = if cfg.is_some() { 2 * b } else { b };
        let condition = if cfg.is_some() {
            condition.doubled()
        } else {
            condition
        };
        // At most `chunk` rows per transformer call (`PipelineBuilder::max_batch`; by default
        // one on the CPU backends, where batched calls measured slower per image, and all on
        // GPUs). Every row shares the same ids, so one rotary table serves every call of the
        // same number of rows.
        let default = if B::runs_on_host() { 1 } else { rows };
        let chunk = self.max_batch.unwrap_or(default).clamp(1, rows);
        let mut tables: HashMap<usize, RopeTable<B>> = HashMap::new();
        let mut rope = |n: usize| -> Result<RopeTable<B>> {
            if let Some(table) = tables.get(&n) {
                return Ok(table.clone());
            }
            let img_ids = flux_core::img_ids::<B>(n, plan.height, plan.width, device)?;
            let img_ids = condition.ids(img_ids);
            let table = transformer.rope(flux_core::txt_ids::<B>(n, n_txt, device), img_ids)?;
            tables.insert(n, table.clone());
            Ok(table)
        };
        let total = schedule.num_steps();
        let branches = if cfg.is_some() { 2 } else { 1 };
        let mut caches = plan
            .cache
            .as_ref()
            .map(|c| BranchCaches::new(c, branches, b, total));
        let mut velocity = |x: &Tensor<B, 3>, step: &flux_sampler::Step| -> Result<Tensor<B, 3>> {
            let input = match cfg {
                Some(_) => Tensor::cat(vec![x.clone(), x.clone()], 0),
                None => x.clone(),
            };
            let t = |n: usize| Tensor::<B, 1>::full([n], step.model_t, device);
            let g = |n: usize| plan.guidance.map(|g| Tensor::<B, 1>::full([n], g, device));
            let v = match caches.as_mut() {
                None => {
                    let mut parts = Vec::with_capacity(rows.div_ceil(chunk));
                    for start in (0..rows).step_by(chunk) {
                        let n = chunk.min(rows - start);
                        parts.push(transformer.try_forward_with_rope(
                            condition.input(input.clone().narrow(0, start, n), start, n),
                            txt.clone().narrow(0, start, n),
                            &rope(n)?,
                            t(n),
                            pooled.clone().narrow(0, start, n),
                            g(n),
                        )?);
                    }
                    Tensor::cat(parts, 0)
                }
                Some(caches) => {
                    let h = transformer.embed(
                        condition.input(input, 0, rows),
                        txt.clone(),
                        t(rows),
                        pooled.clone(),
                        g(rows),
                    )?;
                    // The blocks in chunks of at most `chunk` rows.
                    let run = |h: Hidden<B>, blocks: std::ops::Range<usize>| -> Result<Hidden<B>> {
                        let n = h.img.dims()[0];
                        let mut parts = Vec::with_capacity(n.div_ceil(chunk));
                        for start in (0..n).step_by(chunk) {
                            let len = chunk.min(n - start);
                            let part = h.narrow(start, len);
                            parts.push(transformer.blocks(part, &rope(len)?, blocks.clone())?);
                        }
                        Ok(Hidden::cat(parts))
                    };
                    let v = caches.forward(&transformer, h, run)?;
                    cache_stats.set(Some(caches.stats()));
                    v
                }
            };
            // Kontext's reference tokens have no velocity of their own; a half-precision
            // model's velocity is cast back: the latents stay in f32 between steps.
            let v = v.narrow(1, 0, n_img).cast(x.dtype());
            Ok(match cfg {
                Some(scale) => {
                    let (pos, neg) = (v.clone().narrow(0, 0, b), v.narrow(0, b, b));
                    neg.clone() + (pos - neg) * scale
                }
                None => v,
            })
        };
        // A cancelling report stops the loop, which returns the sampler's `Cancelled`
        // (`Error::Cancelled` once converted).
        let latents =
            flux_sampler::denoise(
                &mut velocity,
                x,
                &schedule,
                plan.sampler,
                |step| match report(Stage::Denoising, step.index, total) {
                    Ok(()) => ControlFlow::Continue(()),
                    Err(_) => ControlFlow::Break(()),
                },
            )?;
        report(Stage::Denoising, total, total)?;
        let calibration = caches.as_ref().and_then(BranchCaches::calibration);
        Ok((flux_core::unpack(latents, lh, lw)?, calibration))
    }
}
