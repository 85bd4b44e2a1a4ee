//! Attention on burn's CubeCL backends: which kernel runs FLUX's attention, chosen per
//! process ([`GpuAttention`], `FLUX_GPU_ATTENTION`), never per block.
//!
//! burn 0.21's own choice is poor at FLUX's shape (bf16, 24 heads, 4 608 tokens, head_dim
//! 128): its autotuner times only the flash group, where cubek's tensor-core kernel refuses
//! bf16 and the scalar `unit` kernel wins at 78.6 ms a call (docs/performance.md, H100), while
//! without `autotune` every call takes the unfused fallback with the whole score matrix in
//! the activations' dtype. The strategies here:
//!
//! - `flash`: cubek's flash attention on tensor cores ("blackbox accelerated": matrix-multiply
//!   fragments, online softmax, no score matrix in memory), for f16 and bf16 models. It
//!   validates f16 only, so bf16 inputs are cast to f16 (three passes over q, k, v; f16 holds
//!   FLUX's normed q, k and its v with room to spare) and the result cast back. f32 models
//!   (asking for f32 arithmetic), runtimes without the matrix instructions and shapes the
//!   kernel refuses run `materialized` instead.
//! - `materialized`: two batched matmuls (the backend's tuned matmul) around an f32 softmax, a
//!   group of heads at a time so the scores never exceed 512 MiB.
//! - `unit`: cubek's flash kernel on scalar units (any runtime; burn's autotuned pick).
//! - `burn`: burn's `attention` op as it decides (autotune or fallback, by build features).

use std::str::FromStr;
use std::sync::{Mutex, OnceLock};

use burn::tensor::backend::DeviceOps;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{DType, FloatDType, Tensor, TensorPrimitive};
use burn_cubecl::cubecl::server::ComputeServer;
use burn_cubecl::kernel::attention::{AttentionStrategy, attention as cube_attention};
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use cubek_attention::routines::blackbox_accelerated::BlackboxAcceleratedStrategy;

use super::Cube;
use crate::ops;

/// The environment variable that picks the attention kernel of the CubeCL backends for the
/// process: `flash`, `flash:PLANES` (2, 4 or 8 planes of 32 units a cube), `materialized`,
/// `unit`, `burn`; unset: `flash`.
pub const ATTENTION_ENV: &str = "FLUX_GPU_ATTENTION";

/// Which kernel runs attention on burn's CubeCL backends (CUDA, ROCm, wgpu); see the module
/// docs. Parsed from [`ATTENTION_ENV`]; `Display` writes the same names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuAttention {
    /// cubek's tensor-core flash attention on f16 (bf16 cast), with `planes` planes a cube;
    /// `materialized` for f32 inputs and where it cannot launch.
    Flash {
        /// Planes (warps) a cube: 2, 4 or 8.
        planes: u8,
    },
    /// Batched matmuls around an f32 softmax, heads in groups of at most 512 MiB of scores.
    Materialized,
    /// cubek's flash attention on scalar units.
    Unit,
    /// burn's `attention` op as its build decides.
    Burn,
}

impl Default for GpuAttention {
    fn default() -> Self {
        Self::Flash { planes: 4 }
    }
}

/// Calls a flash kernel refused, each with the kernel's reason: not tried again (each try
/// casts q, k, v first).
static REFUSED: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

impl GpuAttention {
    /// The strategies, runtimes and shapes whose flash kernel refused to launch in this
    /// process (and ran `materialized` instead), each with the kernel's reason: a way for a
    /// benchmark or a log to see that the kernel it asked for did not run.
    pub fn refusals() -> Vec<String> {
        REFUSED.lock().map_or_else(
            |_| Vec::new(),
            |r| {
                r.iter()
                    .map(|(key, why)| format!("{key}: {}", why.trim()))
                    .collect()
            },
        )
    }

    /// The process's choice: [`ATTENTION_ENV`] read once (an unknown value is reported on
    /// stderr once and the default used).
    pub fn from_env() -> Self {
        static CHOICE: OnceLock<GpuAttention> = OnceLock::new();
        *CHOICE.get_or_init(|| match std::env::var(ATTENTION_ENV) {
            Err(_) => Self::default(),
            Ok(value) => value.parse().unwrap_or_else(|e| {
                eprintln!("{ATTENTION_ENV}: {e}; using {}", Self::default());
                Self::default()
            }),
        })
    }

    /// `softmax(scale · q kᵀ + bias) v` with this strategy. `Flash` and `Unit` calls with a
    /// bias, a causal mask, a softcap or a custom scale (which cubek's kernels do not take)
    /// run `materialized`, or burn's op for what that lacks.
    ///
    /// # Shapes
    /// As [`crate::FluxBackend::dot_product_attention`].
    ///
    /// # Errors
    /// The kernel's setup error when `Flash` or `Unit` cannot launch on this runtime or
    /// shape (the caller decides what runs instead).
    pub fn try_attention<R, F, I, BT>(
        self,
        q: Tensor<CubeBackend<R, F, I, BT>, 4>,
        k: Tensor<CubeBackend<R, F, I, BT>, 4>,
        v: Tensor<CubeBackend<R, F, I, BT>, 4>,
        bias: Option<Tensor<CubeBackend<R, F, I, BT>, 4>>,
        options: AttentionModuleOptions,
    ) -> Result<Tensor<CubeBackend<R, F, I, BT>, 4>, String>
    where
        R: CubeRuntime,
        R::Server: ComputeServer,
        R::Device: DeviceOps,
        F: FloatElement,
        I: IntElement,
        BT: BoolElement,
    {
        let plain = bias.is_none() && options.softcap.is_none() && options.scale.is_none();
        let exotic = options.is_causal || options.softcap.is_some();
        match self {
            Self::Burn => Ok(ops::attention(q, k, v, bias, options)),
            _ if exotic => Ok(ops::attention(q, k, v, bias, options)),
            Self::Materialized => Ok(materialized(q, k, v, bias, options)),
            _ if !plain => Ok(materialized(q, k, v, bias, options)),
            // f32 models asked for f32 arithmetic: no f16 kernel for them.
            Self::Flash { .. } if !is_half(q.dtype()) => Ok(materialized(q, k, v, bias, options)),
            Self::Unit => flash(q, k, v, AttentionStrategy::FlashUnit, None),
            Self::Flash { planes } => flash(
                q,
                k,
                v,
                AttentionStrategy::FlashBlackboxAccelerated(BlackboxAcceleratedStrategy {
                    num_planes: planes,
                    seq_q: 1,
                    seq_kv: 1,
                }),
                Some(FloatDType::F16),
            ),
        }
    }

    /// [`GpuAttention::try_attention`], running `materialized` where the flash kernel cannot
    /// launch.
    pub fn attention<R, F, I, BT>(
        self,
        q: Tensor<CubeBackend<R, F, I, BT>, 4>,
        k: Tensor<CubeBackend<R, F, I, BT>, 4>,
        v: Tensor<CubeBackend<R, F, I, BT>, 4>,
        bias: Option<Tensor<CubeBackend<R, F, I, BT>, 4>>,
        options: AttentionModuleOptions,
    ) -> Tensor<CubeBackend<R, F, I, BT>, 4>
    where
        R: CubeRuntime,
        R::Server: ComputeServer,
        R::Device: DeviceOps,
        F: FloatElement,
        I: IntElement,
        BT: BoolElement,
    {
        let key = format!(
            "{self} on {}: q {:?}, k {:?}, {:?}",
            std::any::type_name::<R>(),
            q.dims(),
            k.dims(),
            q.dtype()
        );
        let refused = |key: &String| {
            REFUSED
                .lock()
                .is_ok_and(|r| r.iter().any(|(k, _)| k == key))
        };
        if matches!(self, Self::Flash { .. } | Self::Unit) && refused(&key) {
            return materialized(q, k, v, bias, options);
        }
        let again = (q.clone(), k.clone(), v.clone(), bias.clone());
        self.try_attention(q, k, v, bias, options)
            .unwrap_or_else(|reason| {
                if let Ok(mut r) = REFUSED.lock() {
                    r.push((key, reason));
                }
                let (q, k, v, bias) = again;
                materialized(q, k, v, bias, options)
            })
    }
}

/// [`GpuAttention::Materialized`]: the portable grouping with the fused row softmax.
fn materialized<B: Cube>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    bias: Option<Tensor<B, 4>>,
    options: AttentionModuleOptions,
) -> Tensor<B, 4> {
    ops::attention_materialized_within(
        q,
        k,
        v,
        bias,
        options,
        ops::MATERIALIZED_SCORE_BYTES,
        super::fused::softmax_rows,
    )
}

/// Whether `dtype` is a 16-bit float.
fn is_half(dtype: DType) -> bool {
    matches!(dtype, DType::F16 | DType::BF16)
}

/// cubek's flash kernel on contiguous q, k, v in `dtype` (their own when `None`), the result
/// in q's dtype.
fn flash<B: Cube>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    strategy: AttentionStrategy,
    dtype: Option<FloatDType>,
) -> Result<Tensor<B, 4>, String> {
    let out_dtype = crate::float_dtype(q.dtype());
    let kernel_dtype = dtype.unwrap_or(out_dtype);
    let prepare = |t: Tensor<B, 4>| {
        let t = if kernel_dtype == out_dtype {
            t
        } else {
            t.cast(kernel_dtype)
        };
        burn_cubecl::kernel::into_contiguous(t.into_primitive().tensor())
    };
    let out = cube_attention(
        prepare(q),
        prepare(k),
        prepare(v),
        None,
        None,
        AttentionModuleOptions::default(),
        strategy,
    )
    .map_err(|e| format!("{e:?}"))?;
    let out = Tensor::from_primitive(TensorPrimitive::Float(out));
    Ok(if kernel_dtype == out_dtype {
        out
    } else {
        out.cast(out_dtype)
    })
}

impl FromStr for GpuAttention {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "flash" => Ok(Self::default()),
            "materialized" => Ok(Self::Materialized),
            "unit" => Ok(Self::Unit),
            "burn" => Ok(Self::Burn),
            other => match other.strip_prefix("flash:").map(str::parse::<u8>) {
                Some(Ok(planes @ (2 | 4 | 8))) => Ok(Self::Flash { planes }),
                _ => Err(format!(
                    "unknown attention {other:?}: flash, flash:2, flash:4, flash:8, \
                     materialized, unit or burn"
                )),
            },
        }
    }
}

impl std::fmt::Display for GpuAttention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Flash { planes } => write!(f, "flash:{planes}"),
            Self::Materialized => f.write_str("materialized"),
            Self::Unit => f.write_str("unit"),
            Self::Burn => f.write_str("burn"),
        }
    }
}
