//! LoRAs on the pipeline: read and matched to the models when the pipeline is built (so a
//! bad or foreign LoRA fails before any weight loads), built into each model as it loads,
//! and rescaled per request in run-time mode. Which model a LoRA module name belongs to is
//! decided here ([`route`]): that is FLUX's pipeline knowledge, not the LoRA crate's.

use std::borrow::Cow;
use std::fmt;
use std::path::PathBuf;

use flux_core::{Flux, FluxConfig};
use flux_lora::{Adapters, LoraFile, LoraMode, Resolved, Route};
use flux_nn::FluxBackend;
use flux_text::{ClipConfig, ClipTextEncoder};

use super::Pipeline;
use crate::{Error, GenerateRequest, Result};

/// The models of the FLUX pipeline that LoRA files carry updates for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Component {
    /// The FLUX transformer (`transformer.`, `lora_unet_`, `diffusion_model.`, bare BFL names).
    Transformer,
    /// The CLIP text encoder (`text_encoder.`, `lora_te1_`, `lora_te_`).
    Clip,
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Transformer => "transformer",
            Self::Clip => "CLIP",
        })
    }
}

/// What one LoRA file did to the pipeline's models.
pub type LoraReport = flux_lora::LoraReport<Component>;

/// Where a LoRA module name points, from its prefix (kohya's `_`-joined forms, and the dotted
/// prefixes diffusers, PEFT, ComfyUI and BFL files use; a bare name is the transformer's).
fn route(stem: &str) -> Route<'_, Component> {
    const FLAT: &[(&str, Option<Component>)] = &[
        ("lora_unet_", Some(Component::Transformer)),
        ("lora_transformer_", Some(Component::Transformer)),
        ("lora_te1_", Some(Component::Clip)),
        ("lora_te2_", None),
        ("lora_te_", Some(Component::Clip)),
    ];
    const DOTTED: &[(&str, Option<Component>)] = &[
        ("text_encoder_2.", None),
        ("text_encoder.", Some(Component::Clip)),
        ("transformer.", Some(Component::Transformer)),
        ("model.diffusion_model.", Some(Component::Transformer)),
        ("diffusion_model.", Some(Component::Transformer)),
        ("base_model.model.", Some(Component::Transformer)),
    ];
    for (table, kohya) in [(FLAT, true), (DOTTED, false)] {
        for (prefix, component) in table {
            if let Some(name) = stem.strip_prefix(prefix) {
                return match component {
                    Some(component) => Route::To {
                        component: *component,
                        name,
                        kohya,
                    },
                    None => Route::Unsupported("T5 text-encoder LoRAs are not supported"),
                };
            }
        }
    }
    Route::To {
        component: Component::Transformer,
        name: stem,
        kohya: false,
    }
}

/// Matches LoRA files (with their strengths) to the pipeline's models as the pipeline does:
/// each module name sent to the transformer or CLIP by its prefix (T5 LoRAs refused by name)
/// and resolved against that model's targets ([`flux_core::FluxConfig::lora_targets`],
/// [`flux_text::ClipConfig::lora_targets`]). Build each model with its
/// [`Resolved::adapters`] (`LoadConfig::adapters`).
///
/// # Errors
/// As [`flux_lora::resolve`]: names that match no layer (unless `lenient`), shapes that do not
/// fit, non-finite strengths.
pub fn resolve_loras(
    loras: &[(LoraFile, f32)],
    targets: &[(Component, &flux_lora::Targets)],
    lenient: bool,
) -> flux_io::Result<Resolved<Component>> {
    flux_lora::resolve(loras, route, targets, lenient)
}

/// The pipeline's LoRAs: each model's resolved updates and how they are applied.
#[derive(Debug)]
pub(super) struct Loras {
    resolved: Resolved<Component>,
    mode: LoraMode,
}

impl Loras {
    /// Reads every `(file, strength)` and matches it to the transformer and CLIP.
    pub(super) fn open<B: FluxBackend>(
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
        let resolved = resolve_loras(&files, &targets, lenient)?;
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

impl<B: FluxBackend> Pipeline<B> {
    /// The component's updates (to build it with) and how they are applied: `(None, _)` when
    /// no LoRA touches it.
    pub(super) fn lora_for(&self, component: Component) -> (Option<Adapters>, LoraMode) {
        match &self.loras {
            Some(loras) => (loras.adapters(component).cloned(), loras.mode),
            None => (None, LoraMode::default()),
        }
    }

    /// What each LoRA given to the builder touches (file, format, strength, layers per
    /// model; in lenient mode, the module names that matched nothing). Empty without LoRAs.
    pub fn lora_reports(&self) -> &[LoraReport] {
        self.loras.as_ref().map_or(&[], |l| &l.resolved.reports)
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
    /// loaded ones; the copy shares every other weight with the loaded model).
    pub(super) fn request_transformer<'a>(
        &self,
        model: Cow<'a, Flux<B>>,
        r: &GenerateRequest,
    ) -> Result<Cow<'a, Flux<B>>> {
        match self.request_adapters(Component::Transformer, r)? {
            Some(adapters) => Ok(Cow::Owned(model.into_owned().rescale_lora(&adapters).0)),
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
        let Some(loras) = &self.loras else {
            return Ok(None);
        };
        let (Some(adapters), Some(scales)) = (loras.adapters(component), &r.lora_scales) else {
            return Ok(None);
        };
        if adapters.scales() == scales.as_slice() {
            return Ok(None);
        }
        Ok(Some(adapters.with_scales(scales)?))
    }
}
