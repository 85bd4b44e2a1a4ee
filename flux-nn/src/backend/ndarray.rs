//! burn-ndarray: attention split into head groups on the host threads (burn's runs one head
//! after another) and quantized products from the packed form. Its other ops stay burn's: a
//! host kernel's data round trip copies on burn-ndarray, which measured slower than its own
//! ops (docs/performance.md).

use burn::backend::NdArray;
use burn::backend::ndarray::{
    FloatNdArrayElement, IntNdArrayElement, NdArrayTensor, QuantElement, SharedArray,
};
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{FloatDType, Tensor};

use super::FluxBackend;
use super::host::{self, head_groups};
use crate::packed::Packed;

impl<E, I, Q> FluxBackend for NdArray<E, I, Q>
where
    E: FloatNdArrayElement,
    I: IntNdArrayElement,
    Q: QuantElement,
    NdArrayTensor: From<SharedArray<E>>,
    NdArrayTensor: From<SharedArray<I>>,
{
    fn runs_on_host() -> bool {
        true
    }

    fn dot_product_attention(
        q: Tensor<Self, 4>,
        k: Tensor<Self, 4>,
        v: Tensor<Self, 4>,
        bias: Option<Tensor<Self, 4>>,
        options: AttentionModuleOptions,
    ) -> Tensor<Self, 4> {
        head_groups(q, k, v, bias, options)
    }

    fn packed_matmul(
        x: Tensor<Self, 2>,
        packed: &Packed<Self>,
        dtype: FloatDType,
    ) -> Tensor<Self, 2> {
        host::packed_product(x, packed, dtype)
    }

    fn dequantize_packed(packed: &Packed<Self>) -> Tensor<Self, 2> {
        host::dequantize(packed, false)
    }
}
