//! One denoising step of the transformer at a benchmark size: the model, random inputs, and
//! the rotary tables computed once, as a sampler does (`Flux::rope` + `try_forward_with_rope`).

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Distribution, FloatDType, Tensor};
use flux::FluxBackend;
use flux_core::{Flux, FluxConfig, RopeTable};

use crate::sizes::Size;

/// A randomly initialised model and the inputs of one step (batch 1).
pub struct Step<B: FluxBackend> {
    /// The model (random weights).
    pub model: Flux<B>,
    img: Tensor<B, 3>,
    txt: Tensor<B, 3>,
    pe: RopeTable<B>,
    timesteps: Tensor<B, 1>,
    y: Tensor<B, 2>,
    guidance: Tensor<B, 1>,
}

impl<B: FluxBackend> Step<B> {
    /// Builds the model and the inputs of `size` with a fixed seed.
    ///
    /// # Errors
    /// An invalid config or inconsistent ids (neither happens for the named sizes).
    #[allow(dead_code)]
    pub fn new(size: &Size, device: &B::Device) -> flux_core::Result<Self> {
        let c = &size.config;
        c.validate()?;
        Self::with_model(c.init::<B>(device), size, device)
    }

    /// The inputs of `size`'s step (its token counts) for an already built `model`, e.g. one
    /// loaded from a checkpoint.
    ///
    /// # Errors
    /// Inconsistent ids (does not happen for the named sizes).
    pub fn with_model(model: Flux<B>, size: &Size, device: &B::Device) -> flux_core::Result<Self> {
        Self::with_batch(model, size, 1, device)
    }

    /// As [`Step::with_model`], for a batch of `batch` images in one call.
    ///
    /// # Errors
    /// Inconsistent ids (does not happen for the named sizes).
    pub fn with_batch(
        model: Flux<B>,
        size: &Size,
        batch: usize,
        device: &B::Device,
    ) -> flux_core::Result<Self> {
        B::seed(device, 0);
        let c = model.config().clone();
        let normal = Distribution::Normal(0.0, 1.0);
        let (n_img, n_txt, b) = (size.n_img(), size.n_txt, batch);
        let img_ids = flux_core::img_ids::<B>(b, size.pixels(), size.pixels(), device)?;
        let pe = model.rope(flux_core::txt_ids::<B>(b, n_txt, device), img_ids)?;
        Ok(Self {
            img: Tensor::random([b, n_img, c.in_channels], normal, device),
            txt: Tensor::random([b, n_txt, c.context_in_dim], normal, device),
            pe,
            timesteps: Tensor::full([b], 0.7, device),
            y: Tensor::random([b, c.vec_in_dim], normal, device),
            guidance: Tensor::full([b], 3.5, device),
            model,
        })
    }

    /// The same step with every parameter cast to `dtype` (as loading with that dtype does;
    /// the random weights are drawn in f32 one parameter at a time, then cast).
    #[must_use]
    #[allow(dead_code)]
    pub fn cast(mut self, dtype: FloatDType) -> Self {
        struct Cast(FloatDType);
        impl<B: FluxBackend> ModuleMapper<B> for Cast {
            fn map_float<const D: usize>(
                &mut self,
                param: Param<Tensor<B, D>>,
            ) -> Param<Tensor<B, D>> {
                param.map(|t| t.cast(self.0))
            }
        }
        self.model = self.model.map(&mut Cast(dtype));
        self
    }

    /// The same step with every parameter replaced by a cheap deterministic stand-in in
    /// `dtype`: a 2-d weight is the outer product of a random column and a random row
    /// (scaled by `1/sqrt(rows)`), a 1-d one a random vector. Same shapes and costs as the
    /// drawn weights, without a random kernel over every element (for GPUs: a whole-size
    /// random draw per weight is slow or, on some runtimes, fails to launch).
    #[must_use]
    #[allow(dead_code)]
    pub fn filled(mut self, dtype: FloatDType) -> Self {
        struct Fill(FloatDType);
        impl<B: FluxBackend> ModuleMapper<B> for Fill {
            fn map_float<const D: usize>(
                &mut self,
                param: Param<Tensor<B, D>>,
            ) -> Param<Tensor<B, D>> {
                let shape = param.lazy_shape();
                let device = param.lazy_device();
                let dims = shape.dims::<D>();
                let rows = dims[0];
                let cols: usize = dims[1..].iter().product();
                let u = Distribution::Uniform(-1.0, 1.0);
                let col = Tensor::<B, 2>::random([rows, 1], u, &device);
                let row = Tensor::<B, 2>::random([1, cols], u, &device);
                let value = if D == 1 {
                    col.reshape(shape)
                } else {
                    (col * row / (rows as f64).sqrt()).reshape(shape)
                };
                Param::initialized(param.id, value.cast(self.0))
            }
        }
        self.model = self.model.map(&mut Fill(dtype));
        self
    }

    /// The same step with the model's blocks offloaded to host memory
    /// ([`Flux::offload_blocks`]): every run uploads them one at a time.
    #[must_use]
    pub fn offloaded(mut self) -> Self {
        self.model = self.model.offload_blocks();
        self
    }

    /// One velocity prediction, waited for (read back to the host).
    ///
    /// # Shapes
    /// - returns `[1, n_img, out_channels]`
    ///
    /// # Errors
    /// Whatever `try_forward_with_rope` or the backend's sync returns.
    pub fn run(&self) -> Result<Tensor<B, 3>, Box<dyn std::error::Error>> {
        let out = self.model.try_forward_with_rope(
            self.img.clone(),
            self.txt.clone(),
            &self.pe,
            self.timesteps.clone(),
            self.y.clone(),
            Some(self.guidance.clone()),
        )?;
        B::sync(&out.device())?;
        Ok(out)
    }
}

impl<B: FluxBackend> Step<B> {
    /// A whole Euler run of `steps` steps from the step's latents (FLUX.1-dev's schedule for its
    /// token count), with `cache` as the pipeline runs it (one branch): the final latents, and
    /// the calls computed and reused.
    ///
    /// # Errors
    /// Whatever the stages, the sampler or the backend's sync return.
    #[allow(dead_code)]
    pub fn sample(
        &self,
        steps: usize,
        cache: Option<&flux::Cache>,
    ) -> Result<(Tensor<B, 3>, Option<flux::CacheStats>), Box<dyn std::error::Error>> {
        use flux_sampler::{Sampler, Schedule, Shift, Spacing};
        let [b, n_img, _] = self.img.dims();
        let device = self.img.device();
        let schedule = Schedule::pipeline(
            Sampler::Euler,
            Spacing::Flux,
            steps,
            n_img,
            Some(Shift::default()),
        )?;
        let mut caches = cache.map(|c| flux_core::BranchCaches::new(c, 1, b, steps));
        let model = &self.model;
        let mut velocity = |x: &Tensor<B, 3>,
                            step: &flux_sampler::Step|
         -> Result<Tensor<B, 3>, Box<dyn std::error::Error>> {
            let t = Tensor::<B, 1>::full([b], step.model_t, &device);
            let guidance = Some(self.guidance.clone());
            Ok(match caches.as_mut() {
                None => model.try_forward_with_rope(
                    x.clone(),
                    self.txt.clone(),
                    &self.pe,
                    t,
                    self.y.clone(),
                    guidance,
                )?,
                Some(caches) => {
                    let h =
                        model.embed(x.clone(), self.txt.clone(), t, self.y.clone(), guidance)?;
                    caches.forward(model, h, |h, blocks| model.blocks(h, &self.pe, blocks))?
                }
            })
        };
        let out = flux_sampler::denoise(
            &mut velocity,
            self.img.clone(),
            &schedule,
            Sampler::Euler,
            |_| std::ops::ControlFlow::Continue(()),
        )?;
        B::sync(&out.device())?;
        Ok((out, caches.as_ref().map(flux_core::BranchCaches::stats)))
    }

    /// What a step costs when a step cache reuses the blocks: the embeddings, the first block
    /// when `first_block` (First-Block Cache; MagCache and TeaCache run none), the final
    /// layer. Waited for.
    ///
    /// # Errors
    /// Whatever the stages or the backend's sync return.
    #[allow(dead_code)]
    pub fn run_reused(
        &self,
        first_block: bool,
    ) -> Result<Tensor<B, 3>, Box<dyn std::error::Error>> {
        let h = self.model.embed(
            self.img.clone(),
            self.txt.clone(),
            self.timesteps.clone(),
            self.y.clone(),
            Some(self.guidance.clone()),
        )?;
        let h = if first_block {
            self.model.blocks(h, &self.pe, 0..1)?
        } else {
            h
        };
        let out = self.model.finish(h);
        B::sync(&out.device())?;
        Ok(out)
    }
}

/// A random rank-`rank` LoRA on every linear layer of `config`'s transformer, written as a
/// BFL-named LoRA file and resolved through the real path (`LoraFile` → `resolve_loras`): the
/// updates to build a model with (`Init::with_adapters`), merged or at run time.
///
/// # Errors
/// Writing or reading the temporary file.
#[allow(dead_code)]
pub fn random_lora<B: FluxBackend>(
    config: &FluxConfig,
    rank: usize,
    device: &B::Device,
) -> Result<flux::lora::Adapters, Box<dyn std::error::Error>> {
    use flux::Component;
    use flux::lora::LoraFile;
    let targets = config.lora_targets::<B>(device);
    // One name per layer that stands for all of it (every layer has BFL's); which one does
    // not matter, they all resolve to the layer. Sorted, so the file is the same on every run.
    let mut names: Vec<_> = targets.iter().collect();
    names.sort_by(|a, b| a.0.cmp(b.0));
    let mut layers = std::collections::BTreeMap::new();
    for (name, t) in names {
        if t.rows == (0..t.output) && !t.swap_halves {
            layers
                .entry(t.path.clone())
                .or_insert((name.to_string(), t.input, t.output));
        }
    }
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut seed = 1u64;
    let mut random = |n: usize, scale: f32| -> Vec<u8> {
        (0..n)
            .flat_map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                (u * scale).to_le_bytes()
            })
            .collect()
    };
    for (name, input, output) in layers.values() {
        let s = 1.0 / (*input as f32).sqrt();
        tensors.push((
            format!("{name}.lora_A.weight"),
            vec![rank, *input],
            random(rank * input, s),
        ));
        tensors.push((
            format!("{name}.lora_B.weight"),
            vec![*output, rank],
            random(output * rank, 0.1),
        ));
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, shape, b)| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b);
            (n.clone(), view.expect("consistent sizes"))
        })
        .collect();
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bench_lora.safetensors");
    safetensors::serialize_to_file(views, None, &path)?;
    let file = LoraFile::open(&path)?;
    let mut resolved =
        flux::resolve_loras(&[(file, 1.0)], &[(Component::Transformer, &targets)], false)?;
    Ok(resolved
        .adapters
        .remove(&Component::Transformer)
        .expect("every layer has a LoRA"))
}
