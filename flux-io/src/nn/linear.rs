//! [`Linear`]: the one linear layer of every model in the workspace.

use burn::module::{Initializer, Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::module::linear;
use burn::tensor::{DType, FloatDType, Tensor};

use super::{LoraAdapter, Packed};

/// `y = x W + b` with `W` held `[d_input, d_output]` (burn's layout; checkpoints store PyTorch's
/// `[out, in]`, and the loader transposes on the way in), or held quantized ([`Packed`]) and
/// dequantized just before the matmul. The module's container name is `Linear`, which is how
/// [`crate::Loader`] recognises weights to transpose or keep packed.
///
/// A packed layer's `weight` is a `[1, 1]` zero that only records the dtype the layer
/// computes in (the model's dtype, or f32 after [`Linear::cast`]).
///
/// `lora` holds the LoRA updates applied at run time beside the weight ([`LoraAdapter`];
/// absent unless LoRAs were attached in run-time mode, see [`crate::lora`]).
#[derive(Module, Debug)]
pub struct Linear<B: Backend> {
    weight: Param<Tensor<B, 2>>,
    bias: Option<Param<Tensor<B, 1>>>,
    packed: Packed<B>,
    lora: LoraAdapter<B>,
}

impl<B: Backend> Linear<B> {
    /// A layer `d_input -> d_output`, with or without a bias. Parameters stay lazy until
    /// loaded or first used (then drawn like burn's `LinearConfig` default: Kaiming uniform),
    /// so building a model allocates nothing.
    pub fn new(d_input: usize, d_output: usize, bias: bool, device: &B::Device) -> Self {
        let init = Initializer::KaimingUniform {
            gain: 1.0 / 3.0f64.sqrt(),
            fan_out_only: false,
        };
        let fans = (Some(d_input), Some(d_output));
        Self {
            weight: init.init_with([d_input, d_output], fans.0, fans.1, device),
            bias: bias.then(|| init.init_with([d_output], fans.0, fans.1, device)),
            packed: Packed::absent(device),
            lora: LoraAdapter::absent(device),
        }
    }

    /// # Shapes
    /// - x: `[..., d_input]` -> `[..., d_output]`
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let dims = x.dims();
        if D > 2 && dims[..D - 2].iter().any(|&n| n > 1) {
            // Batched rows as one `[rows, d_input]` matrix: one GEMM against the weight,
            // instead of a batched matmul that broadcasts the weight to every batch entry.
            let rows: usize = dims[..D - 1].iter().product();
            let y = self.forward(x.reshape([rows, dims[D - 1]]));
            let mut out = dims;
            out[D - 1] = y.dims()[1];
            return y.reshape(out);
        }
        let bias = self.bias.as_ref().map(Param::val);
        if self.packed.is_present()
            && let Some(y) = self.packed.matmul_host(&x)
        {
            // On a CPU backend: from the packed form, tile by tile.
            let y = y.cast(float_dtype(x.dtype()));
            let y = match bias {
                Some(b) => y + b.cast(float_dtype(x.dtype())).unsqueeze(),
                None => y,
            };
            return self.lora.add_to(x, y);
        }
        if self.lora.is_present() {
            let y = linear(x.clone(), self.weight(), bias);
            return self.lora.add_to(x, y);
        }
        linear(x, self.weight(), bias)
    }

    /// The weight, `[d_input, d_output]` (a packed one dequantized, in the layer's dtype).
    pub fn weight(&self) -> Tensor<B, 2> {
        let weight = self.weight.val();
        if self.packed.is_present() {
            let dtype = float_dtype(weight.dtype());
            self.packed.dequantize_transposed().cast(dtype)
        } else {
            weight
        }
    }

    /// The bias, `[d_output]`, if the layer has one.
    pub fn bias(&self) -> Option<Tensor<B, 1>> {
        self.bias.as_ref().map(Param::val)
    }

    /// The stand-in weight of a packed layer: a `[1, 1]` zero in the dtype it computes in.
    pub(crate) fn dtype_carrier<const D: usize>(
        dtype: Option<DType>,
        device: &B::Device,
    ) -> Tensor<B, D> {
        let zero = burn::tensor::TensorData::new(vec![0.0f32], [1; D]);
        match dtype {
            Some(dtype) => Tensor::from_data(zero, (device, dtype)),
            None => Tensor::from_data(zero, device),
        }
    }

    /// The quantized weight, if the layer holds one.
    pub fn packed(&self) -> Option<&Packed<B>> {
        self.packed.is_present().then_some(&self.packed)
    }

    /// The run-time LoRA updates, if the layer holds any.
    pub fn lora(&self) -> Option<&LoraAdapter<B>> {
        self.lora.is_present().then_some(&self.lora)
    }

    /// The dtype the layer computes in.
    pub fn dtype(&self) -> DType {
        self.weight.val().dtype()
    }

    /// The layer taking `d_input` inputs instead of its own (fewer is a no-op): the new inputs
    /// get zero weights, so the outputs are unchanged for inputs that are zero there. A
    /// quantized weight is dequantized first (to the layer's dtype). This is how a control
    /// LoRA's `img_in` update lands on [dev], whose `img_in` takes 64 inputs, as diffusers
    /// expands the layer.
    ///
    /// # Panics
    /// If the layer holds run-time LoRA updates (widen before attaching them).
    #[must_use]
    pub fn widen_input(self, d_input: usize) -> Self {
        assert!(
            !self.lora.is_present(),
            "widen a layer before attaching run-time LoRA updates"
        );
        let weight = self.weight();
        let [d_in, d_out] = weight.dims();
        if d_input <= d_in {
            return self;
        }
        let device = weight.device();
        let zeros = Tensor::<B, 2>::zeros([d_input - d_in, d_out], (&device, weight.dtype()));
        let weight = Tensor::cat(vec![weight, zeros], 0);
        Self {
            weight: Param::initialized(self.weight.id, weight),
            bias: self.bias,
            packed: Packed::absent(&device),
            lora: self.lora,
        }
    }

    /// The layer with its weight and bias cast to `dtype` (e.g. T5 keeps its output
    /// projections in f32 inside a half-precision model). A packed weight stays packed and is
    /// dequantized to `dtype` from then on.
    #[must_use]
    pub fn cast(self, dtype: FloatDType) -> Self {
        Self {
            weight: self.weight.map(|w| w.cast(dtype)),
            bias: self.bias.map(|b| b.map(|b| b.cast(dtype))),
            packed: self.packed,
            lora: self.lora,
        }
    }
}

pub(crate) fn float_dtype(dtype: DType) -> FloatDType {
    match dtype {
        DType::F64 => FloatDType::F64,
        DType::F16 => FloatDType::F16,
        DType::BF16 => FloatDType::BF16,
        _ => FloatDType::F32,
    }
}
