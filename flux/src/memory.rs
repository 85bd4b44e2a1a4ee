//! Choosing dtype and memory mode from the models' sizes and the memory a device has, so that
//! a newcomer's first run fits the machine (the CLI prints the choice; flags override it).

use burn::tensor::DType;
use flux_core::{QuantType, Quantization};

use crate::{MemoryMode, ModelFiles, Result};

/// Bytes (2 GB) held besides the weights at the peak, as an estimate: the transformer's
/// activations at 1024² (a 12288-wide MLP over 4,608 tokens is 226 MB in f32), the tiled VAE
/// decode, the allocator's slack.
const ACTIVATION_HEADROOM: u64 = 2_000_000_000;

/// Parameter counts of a pipeline's four models, read from the checkpoint headers only, and
/// the bytes of the weights held quantized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelSizes {
    /// The transformer's dense parameters.
    pub transformer: u64,
    /// Bytes of the transformer's quantized weights (GGUF blocks, fp8, or quantized at load).
    pub transformer_packed: u64,
    /// T5's dense parameters.
    pub t5: u64,
    /// Bytes of T5's quantized weights.
    pub t5_packed: u64,
    /// T5's dense output projections (`wo`), which stay in f32 in a half-precision T5.
    pub t5_wo: u64,
    /// CLIP.
    pub clip: u64,
    /// The autoencoder.
    pub vae: u64,
}

impl ModelSizes {
    /// Reads the four checkpoints' headers (memory-mapped; no tensor is read), with the
    /// weights held as stored ([`Quantization::AsStored`]).
    ///
    /// # Errors
    /// [`crate::Error::Load`] when a checkpoint cannot be opened.
    pub fn read(files: &ModelFiles) -> Result<Self> {
        Self::read_with(files, Quantization::AsStored)
    }

    /// [`ModelSizes::read`] for weights held as `quantization` says (which quantizes at load
    /// the transformer and T5 only, as the pipeline does).
    ///
    /// # Errors
    /// [`crate::Error::Load`] when a checkpoint cannot be opened.
    pub fn read_with(files: &ModelFiles, quantization: Quantization) -> Result<Self> {
        let open = |path: &std::path::Path| flux_io::Checkpoint::open(path, None);
        // (dense parameters, bytes held quantized) of the tensors `only` selects.
        let held = |checkpoint: &flux_io::Checkpoint,
                    only: &dyn Fn(&str) -> bool,
                    quantization: Quantization|
         -> (u64, u64) {
            let weights = checkpoint.weights();
            let (mut dense, mut packed) = (0u64, 0f64);
            for meta in weights.keys().filter(|k| only(k)).filter_map(|k| {
                let linear =
                    !(k.contains("embed") || k.contains("shared") || k.contains("token_embd"));
                weights.meta(k).map(|m| (m, linear))
            }) {
                let (meta, linear) = meta;
                let n = meta.shape.iter().product::<usize>() as u64;
                let linear = linear && meta.shape.len() == 2;
                let bits = match quantization {
                    Quantization::Dequantize => None,
                    _ if linear => stored_bits(&meta.dtype).or(match quantization {
                        Quantization::To(q) if n > 1024 && meta.shape[1] % 32 == 0 => {
                            Some(q.bits_per_weight())
                        }
                        _ => None,
                    }),
                    _ => None,
                };
                match bits {
                    Some(bits) => packed += n as f64 * bits / 8.0,
                    None => dense += n,
                }
            }
            (dense, packed.ceil() as u64)
        };
        let all = |_: &str| true;
        // `wo` in both spellings T5 checkpoints use (transformers', llama.cpp's GGUF names).
        let wo = |k: &str| k.contains("DenseReluDense.wo.") || k.contains(".ffn_down.");
        let small = match quantization {
            Quantization::To(_) => Quantization::AsStored,
            q => q,
        };
        let t5 = open(&files.t5)?;
        let (transformer, transformer_packed) =
            held(&open(&files.transformer)?, &all, quantization);
        let (t5_dense, t5_packed) = held(&t5, &all, quantization);
        Ok(Self {
            transformer,
            transformer_packed,
            t5: t5_dense,
            t5_packed,
            t5_wo: held(&t5, &wo, quantization).0,
            clip: held(&open(&files.clip)?, &all, small).0,
            vae: held(&open(&files.vae)?, &all, small).0,
        })
    }

    /// Bytes of weights per model in `dtype`: (transformer, T5, CLIP, VAE).
    fn bytes(&self, dtype: DType) -> [u64; 4] {
        let size = dtype.size() as u64;
        let t5 = match dtype {
            DType::F32 => self.t5 * 4,
            _ => (self.t5 - self.t5_wo) * size + self.t5_wo * 4,
        };
        [
            self.transformer * size + self.transformer_packed,
            t5 + self.t5_packed,
            self.clip * size,
            self.vae * size,
        ]
    }

    /// Estimated peak bytes of a generation with these weights in `dtype` and `memory` mode:
    /// all four models for [`MemoryMode::Resident`], the largest one for
    /// [`MemoryMode::Sequential`], plus 2 GB for activations.
    pub fn peak_bytes(&self, dtype: DType, memory: MemoryMode) -> u64 {
        let models = self.bytes(dtype);
        let weights = match memory {
            MemoryMode::Resident => models.iter().sum(),
            MemoryMode::Sequential => models.into_iter().max().unwrap_or(0),
        };
        weights + ACTIVATION_HEADROOM
    }
}

/// Bits per weight held in memory for a stored quantized type (GGUF block types, fp8).
fn stored_bits(dtype: &str) -> Option<f64> {
    let quant = |t: QuantType| Some(t.bits_per_weight());
    match dtype {
        "Q8_0" => quant(QuantType::Q8_0),
        "Q5_1" => quant(QuantType::Q5_1),
        "Q5_0" => quant(QuantType::Q5_0),
        "Q4_1" => quant(QuantType::Q4_1),
        "Q4_0" => quant(QuantType::Q4_0),
        "F8_E4M3" | "F8_E5M2" => quant(QuantType::Fp8),
        "Q6_K" => Some(6.5625),
        "Q5_K" => Some(5.625),
        "Q4_K" => quant(QuantType::Q4_K),
        "Q3_K" => Some(3.5625),
        "Q2_K" => Some(3.125),
        _ => None,
    }
}

/// A dtype and memory mode for a device, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryPlan {
    /// Float dtype of weights and activations.
    pub dtype: DType,
    /// When the models are in memory.
    pub memory: MemoryMode,
    /// Estimated peak bytes ([`ModelSizes::peak_bytes`]).
    pub peak_bytes: u64,
    /// Whether the estimate is within the memory available.
    pub fits: bool,
}

impl MemoryPlan {
    /// The first of these choices whose estimated peak fits in `available` bytes, in the
    /// order of preference (most exact and fastest first): each of `dtypes` in each of
    /// `memories`. When none fits, the smallest one, with `fits: false`.
    ///
    /// `dtypes` are the float types the device runs well, in preference order (a CPU: f32
    /// then bf16; CUDA: bf16; wgpu: f16); `memories` the modes to consider (resident, then
    /// sequential; or the one a user asked for).
    ///
    /// # Panics
    /// If `dtypes` or `memories` is empty.
    pub fn choose(
        sizes: &ModelSizes,
        available: u64,
        dtypes: &[DType],
        memories: &[MemoryMode],
    ) -> Self {
        assert!(
            !dtypes.is_empty() && !memories.is_empty(),
            "at least one dtype and memory mode to choose from"
        );
        let plan = |dtype: DType, memory| {
            let peak_bytes = sizes.peak_bytes(dtype, memory);
            Self {
                dtype,
                memory,
                peak_bytes,
                fits: peak_bytes <= available,
            }
        };
        let candidates = dtypes
            .iter()
            .flat_map(|&dtype| memories.iter().map(move |&memory| (dtype, memory)));
        let plans: Vec<Self> = candidates.map(|(d, m)| plan(d, m)).collect();
        plans.iter().find(|p| p.fits).cloned().unwrap_or_else(|| {
            plans
                .into_iter()
                .min_by_key(|p| p.peak_bytes)
                .expect("non-empty")
        })
    }
}

impl MemoryPlan {
    /// Memory the operating system can give this process now (`MemAvailable` of
    /// `/proc/meminfo`), or `None` where that cannot be read (not Linux).
    pub fn host_memory_available() -> Option<u64> {
        let info = std::fs::read_to_string("/proc/meminfo").ok()?;
        let kb: u64 = info
            .lines()
            .find_map(|l| l.strip_prefix("MemAvailable:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kb * 1024)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// FLUX.1-schnell's parameter counts (transformer 11.9 G, T5-XXL encoder 4.76 G of which
    /// `wo` 1.0 G, CLIP-L 123 M, VAE 84 M).
    const SCHNELL: ModelSizes = ModelSizes {
        transformer: 11_901_408_320,
        transformer_packed: 0,
        t5: 4_762_310_656,
        t5_packed: 0,
        t5_wo: 1_006_632_960,
        clip: 123_060_480,
        vae: 83_819_683,
    };
    const GB: u64 = 1_000_000_000;

    #[test]
    fn the_choice_follows_the_memory() {
        let cpu = [DType::F32, DType::BF16];
        let both = [MemoryMode::Resident, MemoryMode::Sequential];
        let big = MemoryPlan::choose(&SCHNELL, 128 * GB, &cpu, &both);
        assert_eq!((big.dtype, big.memory), (DType::F32, MemoryMode::Resident));
        let m64 = MemoryPlan::choose(&SCHNELL, 64 * GB, &cpu, &both);
        assert_eq!(
            (m64.dtype, m64.memory),
            (DType::F32, MemoryMode::Sequential)
        );
        let m32 = MemoryPlan::choose(&SCHNELL, 32 * GB, &cpu, &both);
        assert_eq!(
            (m32.dtype, m32.memory),
            (DType::BF16, MemoryMode::Sequential)
        );
        assert!(m32.fits);
        let m24 = MemoryPlan::choose(&SCHNELL, 24 * GB, &cpu, &both);
        assert_eq!(
            (m24.dtype, m24.memory),
            (DType::BF16, MemoryMode::Sequential)
        );
        assert!(
            !m24.fits,
            "24 GB cannot hold 23.8 GB of bf16 weights plus activations"
        );
    }

    #[test]
    fn half_t5_keeps_wo_in_f32() {
        let [_, t5, _, _] = SCHNELL.bytes(DType::BF16);
        assert_eq!(t5, (SCHNELL.t5 - SCHNELL.t5_wo) * 2 + SCHNELL.t5_wo * 4);
    }

    #[test]
    fn t5_wo_is_counted_in_both_spellings() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let text = root.join("flux-text/tests/fixtures");
        let files = |t5: std::path::PathBuf| ModelFiles {
            transformer: root.join("flux-core/tests/fixtures/dev_tiny/bfl.safetensors"),
            vae: root.join("flux-vae/tests/fixtures/ae_tiny.safetensors"),
            clip: text.join("clip"),
            t5,
            clip_tokenizer: crate::ClipTokenizerFiles::Json(text.join("unused")),
            t5_tokenizer: text.join("unused"),
        };
        let dense = Quantization::Dequantize;
        let hf = ModelSizes::read_with(&files(text.join("t5")), dense).unwrap();
        let q8 = files(text.join("t5_gguf/q8_0.gguf"));
        let gguf = ModelSizes::read_with(&q8, dense).unwrap();
        // Two layers of `wo` [32, 64] in the tiny T5, under transformers' and llama.cpp's names.
        assert_eq!(hf.t5_wo, 2 * 32 * 64);
        assert_eq!((gguf.t5, gguf.t5_wo), (hf.t5, hf.t5_wo));
        // Held as stored, the Q8_0 weights count at 8.5 bits each.
        let stored = ModelSizes::read(&q8).unwrap();
        assert!(stored.t5_packed > 0 && stored.t5 < hf.t5);
        let packed_params = hf.t5 - stored.t5;
        assert_eq!(
            stored.t5_packed,
            (packed_params as f64 * 8.5 / 8.0).ceil() as u64
        );
    }

    #[test]
    fn quantized_dev_fits_a_16_gb_gpu() {
        // FLUX.1-dev (the [schnell] counts plus the guidance embedding's 13 M, ignored here)
        // quantized to Q4_0 at load: the transformer's 11.9 G linear weights at 4.5 bits, T5's
        // at 4.5 bits beside its 131 M dense embedding.
        let q4 = ModelSizes {
            transformer: 0,
            transformer_packed: SCHNELL.transformer * 9 / 16,
            t5: 131_596_288,
            t5_packed: (SCHNELL.t5 - 131_596_288) * 9 / 16,
            t5_wo: 0,
            ..SCHNELL
        };
        let plan = MemoryPlan::choose(&q4, 16 * GB, &[DType::BF16], &[MemoryMode::Resident]);
        assert!(plan.fits, "{:.1} GB", plan.peak_bytes as f64 / 1e9);
        assert!(plan.peak_bytes < 12 * GB);
    }
}
