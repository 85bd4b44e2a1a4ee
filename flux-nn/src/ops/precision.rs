//! f32 islands inside half-precision models.

use burn::tensor::backend::Backend;
use burn::tensor::{DType, FloatDType, Tensor};

/// Runs `f` on `x` in f32 and returns the result in `x`'s dtype (a no-op cast for f32): how
/// half-precision models keep norm statistics, softmax and rotations in f32.
pub fn in_f32<B: Backend, const D: usize, const D2: usize>(
    x: Tensor<B, D>,
    f: impl FnOnce(Tensor<B, D>) -> Tensor<B, D2>,
) -> Tensor<B, D2> {
    let dtype = x.dtype();
    if dtype == DType::F32 {
        return f(x);
    }
    f(x.cast(FloatDType::F32)).cast(dtype)
}
