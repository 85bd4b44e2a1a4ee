//! LoRAs on the CLIP text encoder (diffusers' `text_encoder.*`, kohya's `lora_te1_*`).

use burn::tensor::backend::Backend;
use flux_io::lora::{self, Adapters, Applied, LoraMode, Target, Targets};

use super::{ClipConfig, ClipTextEncoder};
use crate::Result;

impl ClipConfig {
    /// The names this encoder's linear layers go by in LoRA files: transformers' module
    /// names (`text_model.encoder.layers.0.self_attn.q_proj`, `….mlp.fc1`, with or without
    /// `text_model.`), which are also the module paths here.
    pub fn lora_targets<B: Backend>(&self, device: &B::Device) -> Targets {
        let mut targets = Targets::new();
        // transformers 5 saves (and diffusers 0.42 names LoRAs) without `text_model.`;
        // kohya and older files keep it: both resolve.
        for (path, [input, output]) in lora::linear_layers(&self.init::<B>(device)) {
            let target = Target::whole(path.clone(), input, output);
            if let Some(short) = path.strip_prefix("text_model.") {
                targets.insert(short, target.clone());
            }
            targets.insert(path, target);
        }
        targets
    }
}

impl<B: Backend> ClipTextEncoder<B> {
    /// Applies resolved LoRA updates ([`flux_io::lora::resolve`] against
    /// [`ClipConfig::lora_targets`]), merged or at run time.
    ///
    /// # Errors
    /// [`crate::Error::Load`] wrapping [`flux_io::Error::Lora`] for updates that do not fit.
    pub fn apply_lora(self, adapters: &Adapters, mode: LoraMode) -> Result<(Self, Applied)> {
        let (model, applied) = lora::apply(self, adapters, &[], mode)?;
        if applied.merged + applied.runtime != adapters.len() {
            return Err(flux_io::Error::Lora {
                file: String::new(),
                reason: format!(
                    "{} CLIP layer update(s) resolved but {} of their layers found",
                    adapters.len(),
                    applied.merged + applied.runtime
                ),
            }
            .into());
        }
        Ok((model, applied))
    }

    /// Sets the strengths of run-time LoRA updates (see [`Adapters::with_scales`]).
    pub fn rescale_lora(self, adapters: &Adapters) -> Self {
        lora::rescale(self, adapters, &[]).0
    }
}
