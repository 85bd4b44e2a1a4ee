//! Choosing dtype and memory mode from the models' sizes and the memory a device has, so that
//! a newcomer's first run fits the machine (the CLI prints the choice; flags override it).

use burn::tensor::DType;

use crate::{MemoryMode, ModelFiles, Result};

/// Bytes (2 GB) held besides the weights at the peak, as an estimate: the transformer's
/// activations at 1024² (a 12288-wide MLP over 4,608 tokens is 226 MB in f32), the tiled VAE
/// decode, the allocator's slack.
const ACTIVATION_HEADROOM: u64 = 2_000_000_000;

/// Parameter counts of a pipeline's four models, read from the checkpoint headers only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelSizes {
    /// The transformer.
    pub transformer: u64,
    /// T5, all of it.
    pub t5: u64,
    /// T5's output projections (`wo`), which stay in f32 in a half-precision T5.
    pub t5_wo: u64,
    /// CLIP.
    pub clip: u64,
    /// The autoencoder.
    pub vae: u64,
}

impl ModelSizes {
    /// Reads the four checkpoints' headers (memory-mapped; no tensor is read).
    ///
    /// # Errors
    /// [`crate::Error::Load`] when a checkpoint cannot be opened.
    pub fn read(files: &ModelFiles) -> Result<Self> {
        let open = |path: &std::path::Path| flux_io::Checkpoint::open(path, None);
        let params = |checkpoint: &flux_io::Checkpoint, only: &dyn Fn(&str) -> bool| -> u64 {
            let weights = checkpoint.weights();
            weights
                .keys()
                .filter(|k| only(k))
                .filter_map(|k| weights.meta(k))
                .map(|m| m.shape.iter().product::<usize>() as u64)
                .sum()
        };
        let all = |_: &str| true;
        // `wo` in both spellings T5 checkpoints use (transformers', llama.cpp's GGUF names).
        let wo = |k: &str| k.contains("DenseReluDense.wo.") || k.contains(".ffn_down.");
        let t5 = open(&files.t5)?;
        Ok(Self {
            transformer: params(&open(&files.transformer)?, &all),
            t5: params(&t5, &all),
            t5_wo: params(&t5, &wo),
            clip: params(&open(&files.clip)?, &all),
            vae: params(&open(&files.vae)?, &all),
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
            self.transformer * size,
            t5,
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
        t5: 4_762_310_656,
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
        let hf = ModelSizes::read(&files(text.join("t5"))).unwrap();
        let gguf = ModelSizes::read(&files(text.join("t5_gguf/q8_0.gguf"))).unwrap();
        // Two layers of `wo` [32, 64] in the tiny T5, under transformers' and llama.cpp's names.
        assert_eq!(hf.t5_wo, 2 * 32 * 64);
        assert_eq!((gguf.t5, gguf.t5_wo), (hf.t5, hf.t5_wo));
    }
}
