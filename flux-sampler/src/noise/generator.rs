//! [`TorchGenerator`]: PyTorch's CPU generator and its `randn`, bit for bit.

use half::{bf16, f16};

use super::avx_math;
use super::mt19937::Mt19937;

/// Which of torch's two float32 Box-Muller kernels to reproduce.
///
/// For float tensors of 16 or more elements torch's CPU `normal_` transforms blocks of 16
/// uniforms with Box-Muller; the `log`/`sin`/`cos` it calls depend on the CPU capability that
/// torch dispatches to at run time (`torch.backends.cpu.get_cpu_capability()`). bfloat16 and
/// float16 tensors go through the same float32 kernel and are rounded afterwards, so they depend on
/// it too (less often visibly, as the rounding hides most 1-ulp differences).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
#[non_exhaustive]
pub enum CpuKernel {
    /// `AVX2`: the vectorised Cephes polynomials of `avx_mathfun.h` (x86-64 CPUs with AVX2 but
    /// without the AVX-512 subset torch requires: most AMD Zen 1-3 and desktop Intel parts).
    /// The default, and what the fixtures of this workspace were generated with.
    #[default]
    Avx2,
    /// `DEFAULT` and `AVX512` (and ARM): scalar code calling the C library's `logf`, `cosf`,
    /// `sinf`. Bit-exact where Rust's `f32::ln`/`cos`/`sin` call the same libm as torch (Linux
    /// with glibc); elsewhere a value may differ in the last bit.
    Scalar,
}

/// PyTorch's CPU random generator (`torch.Generator("cpu")`): MT19937 plus the cached second
/// Box-Muller value of the scalar normal sampler.
///
/// Successive calls continue the same stream, as successive torch calls with one generator do
/// (diffusers' img2img draws the VAE posterior sample and then the noise from one generator).
#[derive(Clone)]
pub struct TorchGenerator {
    mt: Mt19937,
    next_normal: Option<f64>,
    kernel: CpuKernel,
}

impl std::fmt::Debug for TorchGenerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TorchGenerator")
            .field("kernel", &self.kernel)
            .finish_non_exhaustive()
    }
}

/// Below this many elements torch draws each value with the scalar double sampler.
const BLOCK: usize = 16;

impl TorchGenerator {
    /// `torch.Generator("cpu").manual_seed(seed)` (any `u64`; only the low 32 bits matter, as in
    /// torch), reproducing the [`CpuKernel::Avx2`] kernel.
    pub fn new(seed: u64) -> Self {
        Self::with_kernel(seed, CpuKernel::default())
    }

    /// As [`TorchGenerator::new`], reproducing the given CPU kernel.
    pub fn with_kernel(seed: u64, kernel: CpuKernel) -> Self {
        Self {
            mt: Mt19937::new(seed),
            next_normal: None,
            kernel,
        }
    }

    /// The next 32 random bits (torch's `random()`).
    pub fn next_u32(&mut self) -> u32 {
        self.mt.next_u32()
    }

    /// The next 64 random bits: two draws, the first one high (torch's `random64()`).
    pub fn next_u64(&mut self) -> u64 {
        let hi = self.mt.next_u32() as u64;
        let lo = self.mt.next_u32() as u64;
        (hi << 32) | lo
    }

    /// A float uniform in [0, 1): the low 24 bits of one draw, times 2^-24.
    pub fn uniform_f32(&mut self) -> f32 {
        (self.next_u32() & 0x00ff_ffff) as f32 * (1.0 / 16_777_216.0)
    }

    /// A double uniform in [0, 1): the low 53 bits of a 64-bit draw, times 2^-53.
    pub fn uniform_f64(&mut self) -> f64 {
        (self.next_u64() & ((1u64 << 53) - 1)) as f64 * (1.0 / 9_007_199_254_740_992.0)
    }

    /// One standard normal from torch's scalar double sampler: Box-Muller on two double
    /// uniforms, returning `r cos(theta)` and keeping `r sin(theta)` for the next call.
    pub fn normal_f64(&mut self) -> f64 {
        if let Some(cached) = self.next_normal.take() {
            return cached;
        }
        let u1 = self.uniform_f64();
        let u2 = self.uniform_f64();
        let r = (-2.0 * (-u2).ln_1p()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u1;
        self.next_normal = Some(r * theta.sin());
        r * theta.cos()
    }

    /// Box-Muller on 16 float uniforms in place: pairs (j, j + 8).
    fn box_muller_16(&self, block: &mut [f32]) {
        for j in 0..BLOCK / 2 {
            let u1 = 1.0 - block[j];
            let u2 = block[j + 8];
            let (radius, sin, cos) = match self.kernel {
                CpuKernel::Avx2 => {
                    let radius = (-2.0 * avx_math::log(u1)).sqrt();
                    let (sin, cos) = avx_math::sincos(TWO_PI_F32 * u2);
                    (radius, sin, cos)
                }
                CpuKernel::Scalar => {
                    let radius = (-2.0 * u1.ln()).sqrt();
                    // `2.0f * pi<double> * u2` is evaluated in double, then stored as float.
                    let theta = (2.0 * std::f64::consts::PI * u2 as f64) as f32;
                    (radius, theta.sin(), theta.cos())
                }
            };
            // `fma(n, std, mean)` with std 1 and mean 0: the fma turns -0.0 into +0.0.
            block[j] = (radius * cos).mul_add(1.0, 0.0);
            block[j + 8] = (radius * sin).mul_add(1.0, 0.0);
        }
    }

    /// `torch.randn(n, generator=self, dtype=torch.float32)`, flattened.
    pub fn randn_f32(&mut self, n: usize) -> Vec<f32> {
        if n < BLOCK {
            return (0..n).map(|_| self.normal_f64() as f32).collect();
        }
        // All uniforms first, then Box-Muller per block of 16; a partial tail block is redone
        // over the last 16 elements from 16 fresh uniforms.
        let mut data: Vec<f32> = (0..n).map(|_| self.uniform_f32()).collect();
        for block in data.chunks_exact_mut(BLOCK) {
            self.box_muller_16(block);
        }
        if !n.is_multiple_of(BLOCK) {
            let tail = &mut data[n - BLOCK..];
            for v in tail.iter_mut() {
                *v = self.uniform_f32();
            }
            self.box_muller_16(tail);
        }
        data
    }

    /// The reduced-precision path: float Box-Muller per block of 16 fresh uniforms, rounded.
    /// Unlike float32, the tail block draws its 16 uniforms right after the last full block.
    fn randn_reduced<T>(
        &mut self,
        n: usize,
        from_f32: fn(f32) -> T,
        from_f64: fn(f64) -> T,
    ) -> Vec<T>
    where
        T: Copy + Default,
    {
        if n < BLOCK {
            return (0..n).map(|_| from_f64(self.normal_f64())).collect();
        }
        let mut out = vec![T::default(); n];
        let mut buf = [0f32; BLOCK];
        let mut fill = |generator: &mut Self, dst: &mut [T]| {
            for v in buf.iter_mut() {
                *v = generator.uniform_f32();
            }
            generator.box_muller_16(&mut buf);
            for (d, &v) in dst.iter_mut().zip(buf.iter()) {
                *d = from_f32(v);
            }
        };
        for block in out.chunks_exact_mut(BLOCK) {
            fill(self, block);
        }
        if !n.is_multiple_of(BLOCK) {
            fill(self, &mut out[n - BLOCK..]);
        }
        out
    }

    /// `torch.randn(n, generator=self, dtype=torch.bfloat16)`, flattened.
    pub fn randn_bf16(&mut self, n: usize) -> Vec<bf16> {
        // A double result reaches bfloat16 through float (c10 converts double -> float -> bf16).
        self.randn_reduced(n, bf16::from_f32, |v| bf16::from_f32(v as f32))
    }

    /// `torch.randn(n, generator=self, dtype=torch.float16)`, flattened.
    pub fn randn_f16(&mut self, n: usize) -> Vec<f16> {
        self.randn_reduced(n, f16::from_f32, |v| f16::from_f32(v as f32))
    }
}

/// `2.0f * pi<double>` rounded to float, the constant of the AVX2 kernel.
const TWO_PI_F32: f32 = (2.0 * std::f64::consts::PI) as f32;
