//! [`Engine`]: a pipeline whatever its backend, built from a [`Device`] choice with the
//! automatic dtype and memory plan ([`EngineBuilder`]) — what the `generate` CLI and
//! `flux-serve` both hold, so that choosing a device, a dtype and a memory mode is written once.

use std::fmt;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::str::FromStr;

use burn::tensor::DType;
use image::RgbImage;

use crate::{
    Error, FluxBackend, GenerateRequest, LoraMode, LoraReport, MemoryMode, MemoryPlan, ModelFiles,
    ModelKind, ModelSizes, Pipeline, Progress, Quantization, ReduxFiles, Resolved, Result, Variant,
};

/// Where an [`Engine`] runs: one of burn's backends, chosen at run time among those compiled
/// in (the facade's `flex`/`ndarray`, `wgpu` and `cuda` features).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Device {
    /// The CPU: burn-flex (burn-ndarray when only the `ndarray` feature is on).
    #[default]
    Cpu,
    /// A GPU through wgpu (Vulkan, Metal, DX12).
    Wgpu,
    /// An NVIDIA GPU through CUDA.
    Cuda,
}

impl Device {
    /// Every device, compiled in or not.
    pub const ALL: [Self; 3] = [Self::Cpu, Self::Wgpu, Self::Cuda];

    /// Its name (`cpu`, `wgpu`, `cuda`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Wgpu => "wgpu",
            Self::Cuda => "cuda",
        }
    }

    /// Whether its backend is compiled in.
    pub fn compiled_in(self) -> bool {
        match self {
            Self::Cpu => cfg!(any(feature = "flex", feature = "ndarray")),
            Self::Wgpu => cfg!(feature = "wgpu"),
            Self::Cuda => cfg!(feature = "cuda"),
        }
    }

    /// The float types it runs well, most exact first (what the automatic plan tries): the
    /// CPU f32 then bf16; CUDA bf16; wgpu f16 (WGSL has no bf16).
    pub fn dtypes(self) -> &'static [DType] {
        match self {
            Self::Cpu => &[DType::F32, DType::BF16],
            Self::Wgpu => &[DType::F16],
            Self::Cuda => &[DType::BF16],
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Device {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|d| d.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| Error::BadRequest(format!("device `{s}`: one of cpu, wgpu, cuda")))
    }
}

/// A FLUX pipeline whatever its backend: what a front-end holds (a trait object, so it is not
/// generic over the backend). Implemented by every [`Pipeline`].
pub trait Engine: Send + Sync + 'static {
    /// Checks a request and fills in the model's defaults without running anything
    /// ([`Pipeline::resolve`]).
    ///
    /// # Errors
    /// As [`Pipeline::resolve`].
    fn resolve(&self, request: &GenerateRequest) -> Result<Resolved>;

    /// Runs a request; the callback sees every progress report and can cancel
    /// ([`Pipeline::generate_with_progress`]).
    ///
    /// # Errors
    /// As [`Pipeline::generate`], and [`Error::Cancelled`].
    fn generate(
        &self,
        request: &GenerateRequest,
        on_progress: &mut dyn FnMut(Progress) -> ControlFlow<()>,
    ) -> Result<Vec<RgbImage>>;

    /// Runs a request with MagCache calibrating: its images and the magnitude ratios measured
    /// ([`Pipeline::calibrate_mag_cache`]).
    ///
    /// # Errors
    /// As [`Pipeline::generate`].
    fn calibrate_mag_cache(&self, request: &GenerateRequest) -> Result<(Vec<RgbImage>, Vec<f32>)>;

    /// The model: \[dev\] or \[schnell\].
    fn kind(&self) -> ModelKind;

    /// The variant (text-to-image, Kontext, Fill, Control).
    fn variant(&self) -> Variant;

    /// What each LoRA touched ([`Pipeline::lora_reports`]).
    fn lora_reports(&self) -> &[LoraReport];
}

impl<B: FluxBackend> Engine for Pipeline<B>
where
    Pipeline<B>: Send + Sync,
{
    fn resolve(&self, request: &GenerateRequest) -> Result<Resolved> {
        Pipeline::resolve(self, request)
    }

    fn generate(
        &self,
        request: &GenerateRequest,
        on_progress: &mut dyn FnMut(Progress) -> ControlFlow<()>,
    ) -> Result<Vec<RgbImage>> {
        self.generate_with_progress(request, on_progress)
    }

    fn calibrate_mag_cache(&self, request: &GenerateRequest) -> Result<(Vec<RgbImage>, Vec<f32>)> {
        Pipeline::calibrate_mag_cache(self, request)
    }

    fn kind(&self) -> ModelKind {
        Pipeline::kind(self)
    }

    fn variant(&self) -> Variant {
        Pipeline::variant(self)
    }

    fn lora_reports(&self) -> &[LoraReport] {
        Pipeline::lora_reports(self)
    }
}

/// The dtype and memory mode an [`EngineBuilder`] will build with, and the memory it planned
/// for ([`EngineBuilder::plan`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Plan {
    /// The choice and its estimated peak.
    pub memory: MemoryPlan,
    /// Whether the dtype and memory mode were chosen automatically (not both given).
    pub automatic: bool,
    /// The memory planned for, in bytes (`None`: unknown — a GPU's memory cannot be read, so
    /// it is given with [`EngineBuilder::available_memory`]).
    pub available: Option<u64>,
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const GB: f64 = 1e9;
        let m = &self.memory;
        write!(
            f,
            "{:?}, {:?} memory: estimated peak {:.1} GB of weights and activations",
            m.dtype,
            m.memory,
            m.peak_bytes as f64 / GB
        )?;
        match self.available {
            Some(bytes) => write!(f, ", {:.1} GB available", bytes as f64 / GB),
            None => write!(f, ", memory available unknown"),
        }
    }
}

/// Builds an [`Engine`] on a [`Device`] chosen at run time, with [`PipelineBuilder`]'s
/// choices; the dtype and memory mode, unless given, are planned from the models' sizes and
/// the memory available ([`MemoryPlan::choose`]). Errors are deferred to
/// [`EngineBuilder::build`].
///
/// [`PipelineBuilder`]: crate::PipelineBuilder
#[derive(Debug, Clone)]
#[must_use]
pub struct EngineBuilder {
    files: ModelFiles,
    device: Device,
    dtype: Option<DType>,
    memory: Option<MemoryMode>,
    available: Option<u64>,
    quantization: Quantization,
    offload_blocks: bool,
    variant: Option<Variant>,
    loras: Vec<(PathBuf, f32)>,
    lora_mode: LoraMode,
    lora_lenient: bool,
    redux: Option<ReduxFiles>,
    t5_max_len: Option<usize>,
    max_batch: Option<usize>,
}

impl EngineBuilder {
    /// An engine for `files` on the CPU, everything else automatic or default.
    pub fn new(files: ModelFiles) -> Self {
        Self {
            files,
            device: Device::Cpu,
            dtype: None,
            memory: None,
            available: None,
            quantization: Quantization::default(),
            offload_blocks: false,
            variant: None,
            loras: Vec::new(),
            lora_mode: LoraMode::default(),
            lora_lenient: false,
            redux: None,
            t5_max_len: None,
            max_batch: None,
        }
    }

    /// The device to run on (default [`Device::Cpu`]).
    pub fn device(mut self, device: Device) -> Self {
        self.device = device;
        self
    }

    /// The float dtype (default: planned — the most exact one of [`Device::dtypes`] whose
    /// peak fits).
    pub fn dtype(mut self, dtype: DType) -> Self {
        self.dtype = Some(dtype);
        self
    }

    /// The memory mode (default: planned — resident when it fits, else sequential).
    pub fn memory(mut self, memory: MemoryMode) -> Self {
        self.memory = Some(memory);
        self
    }

    /// The memory to plan for, in bytes (default: what the OS reports available for the CPU;
    /// unknown for a GPU, whose memory cannot be read here).
    pub fn available_memory(mut self, bytes: u64) -> Self {
        self.available = Some(bytes);
        self
    }

    /// As [`crate::PipelineBuilder::quantization`].
    pub fn quantization(mut self, quantization: Quantization) -> Self {
        self.quantization = quantization;
        self
    }

    /// As [`crate::PipelineBuilder::offload_blocks`].
    pub fn offload_blocks(mut self, offload: bool) -> Self {
        self.offload_blocks = offload;
        self
    }

    /// As [`crate::PipelineBuilder::variant`].
    pub fn variant(mut self, variant: Variant) -> Self {
        self.variant = Some(variant);
        self
    }

    /// As [`crate::PipelineBuilder::lora`].
    pub fn lora(mut self, path: impl Into<PathBuf>, strength: f32) -> Self {
        self.loras.push((path.into(), strength));
        self
    }

    /// As [`crate::PipelineBuilder::lora_mode`].
    pub fn lora_mode(mut self, mode: LoraMode) -> Self {
        self.lora_mode = mode;
        self
    }

    /// As [`crate::PipelineBuilder::lora_lenient`].
    pub fn lora_lenient(mut self, lenient: bool) -> Self {
        self.lora_lenient = lenient;
        self
    }

    /// As [`crate::PipelineBuilder::redux`].
    pub fn redux(mut self, files: ReduxFiles) -> Self {
        self.redux = Some(files);
        self
    }

    /// As [`crate::PipelineBuilder::t5_max_len`].
    pub fn t5_max_len(mut self, len: usize) -> Self {
        self.t5_max_len = Some(len);
        self
    }

    /// As [`crate::PipelineBuilder::max_batch`].
    pub fn max_batch(mut self, rows: usize) -> Self {
        self.max_batch = Some(rows);
        self
    }

    /// The files it builds from.
    pub fn files(&self) -> &ModelFiles {
        &self.files
    }

    /// The dtype and memory mode it will build with: those given, else the first of the
    /// device's dtypes (most exact first) in resident, then sequential mode whose estimated
    /// peak fits the memory available, else the smallest (with `fits: false`). Reads the
    /// checkpoints' headers only.
    ///
    /// # Errors
    /// Unreadable checkpoints (headers).
    pub fn plan(&self) -> Result<Plan> {
        let available = self.available.or_else(|| match self.device {
            Device::Cpu => MemoryPlan::host_memory_available(),
            _ => None,
        });
        let dtypes = match self.dtype {
            Some(dtype) => vec![dtype],
            None => self.device.dtypes().to_vec(),
        };
        let memories = match self.memory {
            Some(memory) => vec![memory],
            None => vec![MemoryMode::Resident, MemoryMode::Sequential],
        };
        let sizes = ModelSizes::read_with(&self.files, self.quantization)?;
        Ok(Plan {
            memory: MemoryPlan::choose(&sizes, available.unwrap_or(u64::MAX), &dtypes, &memories),
            automatic: self.dtype.is_none() || self.memory.is_none(),
            available,
        })
    }

    /// Plans ([`EngineBuilder::plan`]) and builds the pipeline on the device.
    ///
    /// # Errors
    /// [`Error::BadRequest`] for a device whose backend is not compiled in (naming the cargo
    /// feature), [`Error::Load`] wrapping [`flux_io::Error::Device`] for one that cannot start,
    /// and every error of [`crate::PipelineBuilder::build`].
    pub fn build(self) -> Result<Box<dyn Engine>> {
        let plan = self.plan()?;
        match self.device {
            #[cfg(feature = "flex")]
            Device::Cpu => self.build_on::<burn::backend::Flex>(&plan),
            #[cfg(all(feature = "ndarray", not(feature = "flex")))]
            Device::Cpu => self.build_on::<burn::backend::NdArray>(&plan),
            #[cfg(feature = "wgpu")]
            Device::Wgpu => self.build_on::<burn::backend::Wgpu>(&plan),
            #[cfg(feature = "cuda")]
            Device::Cuda => self.build_on::<burn::backend::Cuda>(&plan),
            #[allow(unreachable_patterns)]
            device => Err(Error::BadRequest(format!(
                "the {device} backend is not compiled in: build with the `{}` cargo feature",
                match device {
                    Device::Cpu => "flex",
                    other => other.name(),
                }
            ))),
        }
    }

    #[allow(dead_code)]
    fn build_on<B: FluxBackend>(self, plan: &Plan) -> Result<Box<dyn Engine>>
    where
        Pipeline<B>: Send + Sync,
    {
        let device = B::Device::default();
        flux_nn::check_device::<B>(&device)?;
        let mut builder = Pipeline::<B>::builder()
            .files(self.files)
            .device(device)
            .dtype(plan.memory.dtype)
            .memory(plan.memory.memory)
            .offload_blocks(self.offload_blocks)
            .quantization(self.quantization)
            .lora_mode(self.lora_mode)
            .lora_lenient(self.lora_lenient);
        for (path, strength) in self.loras {
            builder = builder.lora(path, strength);
        }
        if let Some(variant) = self.variant {
            builder = builder.variant(variant);
        }
        if let Some(files) = self.redux {
            builder = builder.redux(files);
        }
        if let Some(len) = self.t5_max_len {
            builder = builder.t5_max_len(len);
        }
        if let Some(rows) = self.max_batch {
            builder = builder.max_batch(rows);
        }
        Ok(Box::new(builder.build()?))
    }
}
