//! The CPU kernels of the FLUX workspace: plain loops and products over host slices, no
//! deep-learning framework. The layers crate (`flux-nn`) plugs them into burn's CPU backends
//! through its backend seam; the GPU kernels will live here too.
//!
//! - [`softmax`], [`activation`], [`norm`], [`rope`]: row loops written over 8-lane chunks so
//!   that LLVM vectorises them, each compiled once per instruction set and chosen at run time
//!   ([`simd`]: AVX-512 where the CPU has it, AVX2 + FMA, the SSE2 baseline; NEON on arm64).
//! - [`joint_attention`]: FLUX's joint attention from the blocks' fused projections to the
//!   merged heads, in two passes over the host threads.
//! - [`gemm`]: products through the `gemm` crate (burn's own CPU matmul kernels), including a
//!   weight produced one tile of rows at a time; [`packed`]: quantized weights decoded on the
//!   host ([`planes`]: the bit layout of their codes).
//! - [`transpose`]: a matrix of any element width transposed in cache-sized blocks (the load-time
//!   `[out, in]` → `[in, out]` of a linear weight); [`parallel`]: row loops split over threads.
//!
//! `unsafe` code lives in [`gemm`] only (the `gemm` crate's raw-pointer entry point, wrapped
//! behind bounds-checked views).

pub mod activation;
pub mod gemm;
pub mod joint_attention;
pub mod norm;
pub mod packed;
pub mod parallel;
pub mod planes;
pub mod rope;
pub mod simd;
pub mod softmax;
pub mod transpose;
