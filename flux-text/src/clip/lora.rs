//! LoRAs on the CLIP text encoder (diffusers' `text_encoder.*`, kohya's `lora_te1_*`).

use flux_lora::{Adapters, Target, Targets};
use flux_nn::{FluxBackend, Init, LayerKind};

use super::{ClipConfig, ClipTextEncoder};

impl ClipConfig {
    /// The names this encoder's linear layers go by in LoRA files: transformers' module
    /// names (`text_model.encoder.layers.0.self_attn.q_proj`, `….mlp.fc1`, with or without
    /// `text_model.`), which are also the module paths here.
    pub fn lora_targets<B: FluxBackend>(&self, device: &B::Device) -> Targets {
        let layout = Init::<B>::layout(device);
        let _ = self.init_with(&layout);
        let mut targets = Targets::new();
        // transformers 5 saves (and diffusers 0.42 names LoRAs) without `text_model.`;
        // kohya and older files keep it: both resolve.
        for layer in layout.layers() {
            let LayerKind::Linear {
                d_input, d_output, ..
            } = layer.kind
            else {
                continue;
            };
            let target = Target::whole(layer.path.clone(), d_input, d_output);
            if let Some(short) = layer.path.strip_prefix("text_model.") {
                targets.insert(short, target.clone());
            }
            targets.insert(layer.path, target);
        }
        targets
    }
}

impl<B: FluxBackend> ClipTextEncoder<B> {
    /// Sets the strengths of the run-time LoRA updates the encoder was built with to
    /// `adapters`' (see [`Adapters::with_scales`]), from the strengths it was built at.
    pub fn rescale_lora(self, adapters: &Adapters) -> Self {
        let slots = self.lora.clone();
        slots.rescale(self, adapters).0
    }
}
