//! [`Linear`]: the one linear layer of every model in the workspace, built in the form its
//! checkpoint stores (dense, or quantized) with its LoRA updates (see [`crate::Init::linear`]).

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::module::linear;
use burn::tensor::{DType, FloatDType, Tensor};

use crate::adapter::LoraAdapter;
use crate::packed::Packed;
use crate::{FluxBackend, float_dtype};

/// `y = x W + b` with `W` held dense `[d_input, d_output]` (burn's layout: checkpoints store
/// PyTorch's `[out, in]`, which the CPU backends get transposed once at load and the GPU
/// backends as a transposed view), or held quantized ([`Packed`]) and multiplied by the
/// backend's quantized product ([`FluxBackend::packed_matmul`]).
///
/// With run-time LoRA updates ([`LoraAdapter`]) the layer adds `s · B (A x)` to its output.
#[derive(Module, Debug)]
pub struct Linear<B: Backend> {
    weight: Weight<B>,
    bias: Option<Param<Tensor<B, 1>>>,
    lora: Option<LoraAdapter<B>>,
}

/// How a [`Linear`] holds its weight.
// One per layer, a few hundred bytes of tensor handles either way: boxing the larger variant
// would only add an indirection to every forward pass.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Weight<B: Backend> {
    /// `[d_input, d_output]`.
    Dense(Param<Tensor<B, 2>>),
    /// Quantized, `[d_output, d_input]` codes and factors.
    Packed(Packed<B>),
}

impl<B: Backend> Linear<B> {
    /// A layer from its parts (what [`crate::Init`] builds).
    pub(crate) fn from_parts(
        weight: Weight<B>,
        bias: Option<Param<Tensor<B, 1>>>,
        lora: Option<LoraAdapter<B>>,
    ) -> Self {
        Self { weight, bias, lora }
    }

    /// The weight, `[d_input, d_output]`: a packed one dequantized (with tensor ops) to the
    /// layer's dtype.
    pub fn weight(&self) -> Tensor<B, 2> {
        match &self.weight {
            Weight::Dense(w) => w.val(),
            Weight::Packed(p) => p
                .dequantize_with_ops()
                .cast(float_dtype(p.dtype()))
                .transpose(),
        }
    }

    /// The bias, `[d_output]`, if the layer has one.
    pub fn bias(&self) -> Option<Tensor<B, 1>> {
        self.bias.as_ref().map(Param::val)
    }

    /// The quantized weight, if the layer holds one.
    pub fn packed(&self) -> Option<&Packed<B>> {
        match &self.weight {
            Weight::Packed(p) => Some(p),
            Weight::Dense(_) => None,
        }
    }

    /// The run-time LoRA updates, if the layer holds any.
    pub fn lora(&self) -> Option<&LoraAdapter<B>> {
        self.lora.as_ref()
    }

    /// The dtype the layer computes in.
    pub fn dtype(&self) -> DType {
        match &self.weight {
            Weight::Dense(w) => w.val().dtype(),
            Weight::Packed(p) => p.dtype(),
        }
    }

    /// The layer computing in `dtype` (e.g. T5 keeps its output projections in f32 inside a
    /// half-precision model): a dense weight and the bias cast; a quantized weight stays
    /// quantized and is dequantized to `dtype` from then on; run-time LoRA updates cast.
    #[must_use]
    pub fn cast(self, dtype: FloatDType) -> Self {
        Self {
            weight: match self.weight {
                Weight::Dense(w) => Weight::Dense(w.map(|w| w.cast(dtype))),
                Weight::Packed(p) => Weight::Packed(p.with_dtype(dtype.into())),
            },
            bias: self.bias.map(|b| b.map(|b| b.cast(dtype))),
            lora: self.lora.map(|l| l.cast(dtype)),
        }
    }

    /// `[d_input, d_output]`.
    pub fn shape(&self) -> [usize; 2] {
        match &self.weight {
            Weight::Dense(w) => w.lazy_shape().dims(),
            Weight::Packed(p) => {
                let [rows, cols] = p.shape();
                [cols, rows]
            }
        }
    }
}

impl<B: FluxBackend> Linear<B> {
    /// # Shapes
    /// - x: `[..., d_input]` -> `[..., d_output]`
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let dims = x.dims();
        let [d_input, d_output] = self.shape();
        let rows: usize = dims[..D - 1].iter().product();
        let batched = D > 2 && dims[..D - 2].iter().any(|&n| n > 1);
        let bias = self.bias.as_ref().map(Param::val);
        let mut out_dims = dims;
        out_dims[D - 1] = d_output;
        match &self.weight {
            Weight::Packed(packed) => {
                let dtype = float_dtype(x.dtype());
                let x = x.reshape([rows, d_input]);
                let mut y = B::packed_matmul(x.clone(), packed, dtype);
                if let Some(b) = bias {
                    y = y + b.cast(dtype).unsqueeze();
                }
                self.add_lora(x, y).reshape(out_dims)
            }
            // Batched rows as one `[rows, d_input]` matrix: one GEMM against the weight,
            // instead of a batched matmul that broadcasts the weight to every batch entry.
            Weight::Dense(_) if batched => {
                self.forward(x.reshape([rows, d_input])).reshape(out_dims)
            }
            Weight::Dense(w) => {
                let y = linear(x.clone(), w.val(), bias);
                self.add_lora(x, y)
            }
        }
    }

    fn add_lora<const D: usize>(&self, x: Tensor<B, D>, y: Tensor<B, D>) -> Tensor<B, D> {
        match &self.lora {
            Some(lora) => lora.add_to(x, y),
            None => y,
        }
    }
}
