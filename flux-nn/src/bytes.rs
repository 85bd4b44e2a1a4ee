//! [`ParamBytes`]: what a model's parameters hold, dense and quantized.

/// Bytes held by a model's parameters, split into dense tensors, quantized weights and
/// run-time LoRA updates, as its [`crate::Init`] built them (a random build's lazily
/// initialised parameters count at the size they will have).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParamBytes {
    /// Dense float parameters (weights, biases, norms, embeddings).
    pub dense: usize,
    /// Quantized linear weights: codes and factors.
    pub packed: usize,
    /// Linear layers holding a quantized weight.
    pub packed_layers: usize,
    /// Run-time LoRA updates ([`crate::LoraAdapter`]).
    pub adapters: usize,
}

impl ParamBytes {
    /// Everything held.
    pub fn total(&self) -> usize {
        self.dense + self.packed + self.adapters
    }
}

impl std::ops::Add for ParamBytes {
    type Output = Self;

    fn add(self, other: Self) -> Self {
        Self {
            dense: self.dense + other.dense,
            packed: self.packed + other.packed,
            packed_layers: self.packed_layers + other.packed_layers,
            adapters: self.adapters + other.adapters,
        }
    }
}
