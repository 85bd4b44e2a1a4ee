//! LoRAs on the pipeline: read and matched to the models when the pipeline is built (so a
//! bad or foreign LoRA fails before any weight loads), applied to each model as it loads, and
//! rescaled per request in run-time mode.

use std::borrow::Cow;
use std::path::PathBuf;

use burn::tensor::backend::Backend;
use flux_core::{Flux, FluxConfig};
use flux_io::lora::{self, Adapters, Component, LoraFile, LoraMode, LoraReport};
use flux_text::{ClipConfig, ClipTextEncoder};

use super::Pipeline;
use crate::{Error, GenerateRequest, Result};

/// The pipeline's LoRAs: each model's resolved updates and how they are applied.
#[derive(Debug)]
pub(super) struct Loras {
    resolved: lora::Resolved,
    mode: LoraMode,
}

impl Loras {
    /// Reads every `(file, strength)` and matches it to the transformer and CLIP.
    pub(super) fn open<B: Backend>(
        specs: &[(PathBuf, f32)],
        mode: LoraMode,
        lenient: bool,
        transformer: &FluxConfig,
        clip: &ClipConfig,
        device: &B::Device,
    ) -> Result<Self> {
        let files = specs
            .iter()
            .map(|(path, scale)| Ok((LoraFile::open(path)?, *scale)))
            .collect::<std::result::Result<Vec<_>, flux_io::Error>>()?;
        let transformer = transformer.lora_targets::<B>(device);
        let clip = clip.lora_targets::<B>(device);
        let targets = [
            (Component::Transformer, &transformer),
            (Component::Clip, &clip),
        ];
        let resolved = lora::resolve(&files, &targets, lenient)?;
        Ok(Self { resolved, mode })
    }

    /// The transformer's input width after the LoRAs, where one widens it (a control LoRA).
    pub(super) fn transformer_input(&self) -> Option<usize> {
        self.adapters(Component::Transformer)?.layer_input("img_in")
    }

    fn adapters(&self, component: Component) -> Option<&Adapters> {
        self.resolved.adapters.get(&component)
    }

    /// The strength of each LoRA as loaded.
    fn scales(&self) -> Vec<f32> {
        self.resolved.reports.iter().map(|r| r.scale).collect()
    }
}

impl<B: Backend> Pipeline<B> {
    /// The component's updates and how they are applied, if any LoRA touches it.
    fn lora_for(&self, component: Component) -> Option<(&Adapters, LoraMode)> {
        let loras = self.loras.as_ref()?;
        Some((loras.adapters(component)?, loras.mode))
    }

    /// What each LoRA given to the builder touches (file, format, strength, layers per
    /// model; in lenient mode, the module names that matched nothing). Empty without LoRAs.
    pub fn lora_reports(&self) -> &[LoraReport] {
        self.loras.as_ref().map_or(&[], |l| &l.resolved.reports)
    }

    /// The transformer with the LoRAs applied (at load).
    pub(super) fn with_transformer_loras(&self, model: Flux<B>) -> Result<Flux<B>> {
        match self.lora_for(Component::Transformer) {
            Some((adapters, mode)) => Ok(model.apply_lora(adapters, mode)?.0),
            None => Ok(model),
        }
    }

    /// CLIP with the LoRAs applied (at load).
    pub(super) fn with_clip_loras(&self, model: ClipTextEncoder<B>) -> Result<ClipTextEncoder<B>> {
        match self.lora_for(Component::Clip) {
            Some((adapters, mode)) => Ok(model.apply_lora(adapters, mode)?.0),
            None => Ok(model),
        }
    }

    /// The `(file, strength)` of each LoRA this request runs with, checked: per-request
    /// strengths need run-time mode and one finite value per LoRA.
    pub(super) fn request_loras(&self, r: &GenerateRequest) -> Result<Vec<(String, f32)>> {
        let bad = |m: String| Err(Error::BadRequest(m));
        let Some(loras) = &self.loras else {
            return match &r.lora_scales {
                Some(_) => bad("LoRA strengths given but the pipeline has no LoRA".into()),
                None => Ok(Vec::new()),
            };
        };
        let names = loras.resolved.reports.iter().map(|r| r.name.clone());
        let Some(scales) = &r.lora_scales else {
            return Ok(names.zip(loras.scales()).collect());
        };
        if scales.len() != loras.resolved.reports.len() {
            return bad(format!(
                "{} LoRA strength(s) given for {} LoRA(s)",
                scales.len(),
                loras.resolved.reports.len()
            ));
        }
        if scales.iter().any(|s| !s.is_finite()) {
            return bad(format!("LoRA strengths must be finite: {scales:?}"));
        }
        if loras.mode != LoraMode::Runtime && *scales != loras.scales() {
            return bad(
                "per-request LoRA strengths need the run-time LoRA mode (`LoraMode::Runtime`, \
                 `--lora-mode runtime`); merged LoRAs are fixed at load"
                    .into(),
            );
        }
        Ok(names.zip(scales.iter().copied()).collect())
    }

    /// `model` with this request's LoRA strengths (a rescaled copy when they differ from the
    /// loaded ones; the copy shares every weight with the loaded model).
    pub(super) fn request_transformer<'a>(
        &self,
        model: Cow<'a, Flux<B>>,
        r: &GenerateRequest,
    ) -> Result<Cow<'a, Flux<B>>> {
        match self.request_adapters(Component::Transformer, r)? {
            Some(adapters) => Ok(Cow::Owned(model.into_owned().rescale_lora(&adapters)?.0)),
            None => Ok(model),
        }
    }

    /// As [`Pipeline::request_transformer`], for CLIP.
    pub(super) fn request_clip<'a>(
        &self,
        model: Cow<'a, ClipTextEncoder<B>>,
        r: &GenerateRequest,
    ) -> Result<Cow<'a, ClipTextEncoder<B>>> {
        match self.request_adapters(Component::Clip, r)? {
            Some(adapters) => Ok(Cow::Owned(model.into_owned().rescale_lora(&adapters))),
            None => Ok(model),
        }
    }

    /// The component's adapters at the request's strengths, if they differ from the loaded.
    fn request_adapters(
        &self,
        component: Component,
        r: &GenerateRequest,
    ) -> Result<Option<Adapters>> {
        let (Some((adapters, _)), Some(scales)) = (self.lora_for(component), &r.lora_scales) else {
            return Ok(None);
        };
        if adapters.scales() == scales.as_slice() {
            return Ok(None);
        }
        Ok(Some(adapters.with_scales(scales)?))
    }
}
