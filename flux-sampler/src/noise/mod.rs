//! Seeded Gaussian noise equal, bit for bit, to `torch.randn` on a seeded CPU generator.
//!
//! `torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed), dtype=dtype)` is
//! reproduced by [`TorchGenerator`] (see [the crate docs](crate#noise) for the algorithm and
//! its one CPU dependence). [`noise_tensor`] draws on the CPU and uploads the values, so every
//! burn backend starts from identical latents.

mod avx_math;
mod generator;
mod mt19937;

pub use generator::{CpuKernel, TorchGenerator};

use burn::tensor::{Tensor, TensorData, backend::Backend};
use half::{bf16, f16};

use crate::error::{Error, Result};

/// The dtype torch is asked for. It changes the values, not just their precision: bfloat16 and
/// float16 are float32 Box-Muller results rounded, and for a length that is not a multiple of 16
/// their last block comes from other uniforms than float32's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum NoiseDtype {
    /// `torch.float32` (diffusers' `FluxPipeline` in f32).
    #[default]
    F32,
    /// `torch.bfloat16` (BFL's `get_noise`; diffusers with `torch_dtype=torch.bfloat16`).
    BF16,
    /// `torch.float16`.
    F16,
}

/// The latent shape diffusers' `FluxPipeline.prepare_latents` draws for an image of
/// `height × width` pixels: `[batch, 16, 2·(height / 16), 2·(width / 16)]` (floor division; the
/// pipeline then packs it to `[batch, (h/16)·(w/16), 64]`).
pub fn diffusers_latent_shape(batch: usize, height: usize, width: usize) -> [usize; 4] {
    [batch, 16, 2 * (height / 16), 2 * (width / 16)]
}

/// The latent shape of BFL's `get_noise`: `[batch, 16, 2·ceil(height / 16), 2·ceil(width / 16)]`
/// (equal to [`diffusers_latent_shape`] when both sides are multiples of 16).
pub fn bfl_latent_shape(batch: usize, height: usize, width: usize) -> [usize; 4] {
    [batch, 16, 2 * height.div_ceil(16), 2 * width.div_ceil(16)]
}

fn numel(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| Error::NoiseTooLarge {
            shape: shape.to_vec(),
        })
}

/// `torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))`, row-major.
///
/// # Errors
/// [`Error::NoiseTooLarge`] when the element count overflows.
pub fn torch_randn_f32(seed: u64, shape: &[usize]) -> Result<Vec<f32>> {
    Ok(TorchGenerator::new(seed).randn_f32(numel(shape)?))
}

/// As [`torch_randn_f32`] with `dtype=torch.bfloat16`.
///
/// # Errors
/// [`Error::NoiseTooLarge`] when the element count overflows.
pub fn torch_randn_bf16(seed: u64, shape: &[usize]) -> Result<Vec<bf16>> {
    Ok(TorchGenerator::new(seed).randn_bf16(numel(shape)?))
}

/// As [`torch_randn_f32`] with `dtype=torch.float16`.
///
/// # Errors
/// [`Error::NoiseTooLarge`] when the element count overflows.
pub fn torch_randn_f16(seed: u64, shape: &[usize]) -> Result<Vec<f16>> {
    Ok(TorchGenerator::new(seed).randn_f16(numel(shape)?))
}

impl TorchGenerator {
    /// The next `torch.randn(shape, generator=self, dtype=dtype)` as a tensor on `device`,
    /// widened to `f32` on the host (exact for every dtype) and stored in the device's float
    /// dtype.
    ///
    /// # Shapes
    /// Returns `shape`.
    ///
    /// # Errors
    /// [`Error::NoiseTooLarge`] when the element count overflows.
    pub fn randn_tensor<B: Backend, const D: usize>(
        &mut self,
        shape: [usize; D],
        dtype: NoiseDtype,
        device: &B::Device,
    ) -> Result<Tensor<B, D>> {
        let n = numel(&shape)?;
        let values: Vec<f32> = match dtype {
            NoiseDtype::F32 => self.randn_f32(n),
            NoiseDtype::BF16 => self.randn_bf16(n).into_iter().map(f32::from).collect(),
            NoiseDtype::F16 => self.randn_f16(n).into_iter().map(f32::from).collect(),
        };
        Ok(Tensor::from_data(TensorData::new(values, shape), device))
    }
}

/// `torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed), dtype=dtype)` as a
/// tensor on `device` (the [`CpuKernel::Avx2`] kernel; use [`TorchGenerator::with_kernel`] and
/// [`TorchGenerator::randn_tensor`] for the other one or for several draws from one generator).
///
/// # Shapes
/// Returns `shape`; for FLUX, [`diffusers_latent_shape`] or [`bfl_latent_shape`].
///
/// # Errors
/// [`Error::NoiseTooLarge`] when the element count overflows.
pub fn noise_tensor<B: Backend, const D: usize>(
    seed: u64,
    shape: [usize; D],
    dtype: NoiseDtype,
    device: &B::Device,
) -> Result<Tensor<B, D>> {
    TorchGenerator::new(seed).randn_tensor(shape, dtype, device)
}
