//! [`FluxBackend`]: the one seam through which a backend's fast kernels reach the models.
//!
//! Model code calls one method per fused operation — `B::joint_attention(..)`,
//! `B::layer_norm_modulate(..)`, `B::gelu_tanh(..)`, the quantized product behind
//! [`crate::Linear`] — and never asks which backend it runs on. Each method's default is the
//! portable formulation with burn's tensor ops ([`crate::ops`]), correct on every backend;
//! a backend overrides the methods it has a faster kernel for:
//!
//! | backend | overrides | module |
//! |---|---|---|
//! | burn-flex (`Flex`) | everything, on f32 tensors: the host kernels of `flux-kernels` | `flex` |
//! | burn-ndarray (`NdArray`) | attention split into head groups on the host threads, quantized products and dequantization on the host | `ndarray` |
//! | burn-cubecl (`Wgpu`, `Cuda`, ...) | CubeCL kernels: joint attention (q/k/v split, RMSNorm and RoPE in one kernel a part), LayerNorm + modulation, RMSNorm, tanh and quick GELU; attention by `GpuAttention` (tensor-core flash, or materialised by head groups with a fused softmax) | `cubecl` |
//! | burn-autodiff (`Autodiff<B>`) | every method runs `B`'s kernel when no input tracks gradients | `autodiff` |
//!
//! A new kernel is an override in one of those impls (and a test against the portable
//! form); no block's `forward` changes. The defaults of composite methods are built from the
//! other methods (the default [`FluxBackend::joint_attention`] calls `Self::rms_norm`,
//! `Self::rotate_pairs` and `Self::dot_product_attention`), so a backend that overrides only the attention
//! gets it inside the joint attention too.
//!
//! Rust's orphan rule lets only this crate implement the trait for burn's backend types: the
//! impls above exist behind this crate's features (`flex`, `ndarray`, `cubecl`, `autodiff`,
//! set by the facade's backend features). burn's `fusion` wrapper (`Fusion<B>`, burn's
//! `fusion` feature) has no impl yet: a model on it is a compile error naming the missing
//! impl, never a silent slow path.

#[cfg(feature = "cubecl")]
pub(crate) mod cubecl;
#[cfg(feature = "flex")]
mod flex;
#[cfg(any(feature = "flex", feature = "ndarray"))]
pub(crate) mod host;
#[cfg(feature = "ndarray")]
mod ndarray;
#[cfg(all(test, feature = "flex", feature = "ndarray"))]
mod tests;

use burn::tensor::backend::Backend;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{FloatDType, Tensor};

use crate::ops::{self, QkvStream, Rope};
use crate::packed::Packed;

/// A burn backend the workspace's models run on, with its fused kernels (see the module docs).
/// Every method has a portable default; implement it for a new backend with `impl FluxBackend
/// for MyBackend {}` (in this crate) and override what it runs faster.
pub trait FluxBackend: Backend {
    /// Whether the backend's tensors live in host memory (the CPU backends). The loader then
    /// writes linear weights in the `[in, out]` layout their matmuls read fastest, and the
    /// pipeline runs batches one image per transformer call (faster there,
    /// docs/performance.md).
    fn runs_on_host() -> bool {
        false
    }

    /// Whether linear weights are held `[in, out]` in memory (burn's own layout) rather than
    /// as a transposed view of a checkpoint's `[out, in]`: the CPU backends hand a view's
    /// strides to `gemm`, whose products with a column-major right-hand side are much slower;
    /// the GPU backends' matmuls take either layout.
    fn linear_weights_in_out() -> bool {
        Self::runs_on_host()
    }

    /// Scaled dot-product attention, `softmax(scale · q kᵀ + bias) v` per batch and head, in
    /// the inputs' dtype (`options.scale` defaults to `head_dim^-0.5`; `options.is_causal`
    /// masks keys after each query).
    ///
    /// # Shapes
    /// - q: `[b, heads, seq_q, d]`, k and v: `[b, heads, seq_kv, d]`
    /// - bias: `[b or 1, heads, seq_q, seq_kv]`
    /// - returns `[b, heads, seq_q, d]`
    fn dot_product_attention(
        q: Tensor<Self, 4>,
        k: Tensor<Self, 4>,
        v: Tensor<Self, 4>,
        bias: Option<Tensor<Self, 4>>,
        options: AttentionModuleOptions,
    ) -> Tensor<Self, 4> {
        ops::attention(q, k, v, bias, options)
    }

    /// FLUX's joint attention from each stream's fused projection (text first): per stream,
    /// q, k, v split into heads and q, k RMS-normed with the stream's scales (eps 1e-6); the
    /// streams joined along the sequence, q and k rotated by `rope`, `softmax(q kᵀ / √d) v`,
    /// heads merged.
    ///
    /// # Shapes
    /// - each stream's `qkv`: `[b, seq_i, 3 · heads · d]` (more columns are ignored)
    /// - rope: tables for `Σ seq_i` positions
    /// - returns `[b, Σ seq_i, heads · d]`
    fn joint_attention(
        streams: Vec<QkvStream<Self>>,
        heads: usize,
        rope: &Rope<Self>,
    ) -> Tensor<Self, 3> {
        ops::joint_attention(streams, heads, rope)
    }

    /// The single-stream block's two halves side by side: the joint attention of the q, k, v
    /// columns of `fused` ([`FluxBackend::joint_attention`] of one stream) and tanh-GELU of
    /// its remaining columns (the MLP's input): `cat(attention, gelu_tanh(mlp), -1)`.
    ///
    /// # Shapes
    /// - fused.qkv: `[b, seq, 3 · heads · d + mlp]` -> `[b, seq, heads · d + mlp]`
    fn attention_and_gelu(
        fused: QkvStream<Self>,
        heads: usize,
        rope: &Rope<Self>,
    ) -> Tensor<Self, 3> {
        ops::attention_and_gelu(fused, heads, rope)
    }

    /// Rotary embedding on interleaved pairs: each `(x0, x1)` of the last dimension rotated by
    /// its angle, `(x0 cos − x1 sin, x1 cos + x0 sin)`, computed in f32.
    ///
    /// # Shapes
    /// - x: `[b, heads, seq, d]` with tables `[b or 1, seq, d / 2]` -> same
    fn rotate_pairs(x: Tensor<Self, 4>, rope: &Rope<Self>) -> Tensor<Self, 4> {
        ops::rotate_pairs(x, rope)
    }

    /// `LayerNorm(x) · (1 + scale) + shift`: LayerNorm without affine over the last
    /// dimension (statistics in f32), then the adaLN modulation.
    ///
    /// # Shapes
    /// - x: `[b, seq, dim]`; scale, shift: `[b, 1, dim]` -> `[b, seq, dim]`
    fn layer_norm_modulate(
        x: Tensor<Self, 3>,
        scale: Tensor<Self, 3>,
        shift: Tensor<Self, 3>,
        eps: f64,
    ) -> Tensor<Self, 3> {
        ops::layer_norm_modulate(x, scale, shift, eps)
    }

    /// RMSNorm over the last dimension with a learned `scale`: `x / sqrt(mean(x²) + eps) ·
    /// scale`, statistics in f32, result in `x`'s dtype.
    ///
    /// # Shapes
    /// - x: `[..., dim]`, scale: `[dim]` -> `[..., dim]`
    fn rms_norm<const D: usize>(
        x: Tensor<Self, D>,
        scale: Tensor<Self, 1>,
        eps: f64,
    ) -> Tensor<Self, D> {
        ops::rms_norm(x, scale, eps)
    }

    /// GELU with the tanh approximation (PyTorch's `gelu(approximate="tanh")`).
    ///
    /// # Shapes
    /// - x: any -> same
    fn gelu_tanh<const D: usize>(x: Tensor<Self, D>) -> Tensor<Self, D> {
        ops::gelu_tanh(x)
    }

    /// CLIP's quick GELU, `x · sigmoid(1.702 x)`.
    ///
    /// # Shapes
    /// - x: any -> same
    fn quick_gelu<const D: usize>(x: Tensor<Self, D>) -> Tensor<Self, D> {
        ops::quick_gelu(x)
    }

    /// `x Wᵀ` for a quantized weight `W` (`[rows, cols]`), in `dtype`: by default the weight
    /// dequantized with tensor ops ([`FluxBackend::dequantize_packed`]), then a matmul.
    ///
    /// # Shapes
    /// - x: `[m, cols]` -> `[m, rows]`
    fn packed_matmul(
        x: Tensor<Self, 2>,
        packed: &Packed<Self>,
        dtype: FloatDType,
    ) -> Tensor<Self, 2> {
        let weight = Self::dequantize_packed(packed).cast(dtype);
        x.cast(dtype).matmul(weight.transpose())
    }

    /// A quantized weight's values, `[rows, cols]` in f32: exactly gguf-py's on backends that
    /// round every op (the CPU backends do).
    fn dequantize_packed(packed: &Packed<Self>) -> Tensor<Self, 2> {
        packed.dequantize_with_ops()
    }
}
