//! Matching LoRA modules to a model's layers: [`resolve`] turns files into [`Adapters`].

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

use super::delta::{Delta, Matrix};
use super::file::{LoraFile, LoraFormat};
use super::targets::{Target, Targets};
use crate::{Error, Result};

/// The models of the FLUX pipeline that LoRA files carry updates for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
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

/// Where a module name points, from its prefix: `(component, name, kohya-style)`, or why it
/// cannot be applied.
fn route(stem: &str) -> std::result::Result<(Component, &str, bool), &'static str> {
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
    for (table, flat) in [(FLAT, true), (DOTTED, false)] {
        for (prefix, component) in table {
            if let Some(rest) = stem.strip_prefix(prefix) {
                return match component {
                    Some(c) => Ok((*c, rest, flat)),
                    None => Err("T5 text-encoder LoRAs are not supported"),
                };
            }
        }
    }
    Ok((Component::Transformer, stem, false))
}

/// Rank-`r` factors of one LoRA module, landing on some rows of a layer.
#[derive(Debug, Clone)]
pub(crate) struct Part {
    pub lora: usize,
    pub rows: Range<usize>,
    pub swap_halves: bool,
    /// `[r, input]`.
    pub down: Matrix,
    /// `[rows.len(), r]`.
    pub up: Matrix,
    /// `alpha / rank` (the user's scale is applied on top).
    pub factor: f32,
}

/// Full-weight differences landing on some rows of a layer.
#[derive(Debug, Clone)]
pub(crate) struct DiffPart {
    pub lora: usize,
    pub rows: Range<usize>,
    pub swap_halves: bool,
    /// `[rows.len(), input]`.
    pub weight: Option<Matrix>,
    /// `[rows.len()]`.
    pub bias: Option<Vec<f32>>,
}

/// Every update one linear layer receives.
#[derive(Debug, Clone)]
pub(crate) struct LayerUpdate {
    pub input: usize,
    pub output: usize,
    pub parts: Vec<Part>,
    pub diffs: Vec<DiffPart>,
}

/// The LoRA updates of one model, by layer path, with the strength of each LoRA. Apply them
/// with [`super::apply`]; change the strengths of run-time updates with [`super::rescale`].
#[derive(Debug, Clone, Default)]
pub struct Adapters {
    pub(crate) layers: BTreeMap<String, LayerUpdate>,
    /// Full differences of parameters outside linear layers: path -> (LoRA, values).
    pub(crate) params: BTreeMap<String, Vec<(usize, Vec<f32>)>>,
    /// Parameters replaced whole (control LoRAs' norm scales): path -> values.
    pub(crate) sets: BTreeMap<String, Vec<f32>>,
    pub(crate) scales: Vec<f32>,
    /// The strengths the updates were applied at (what [`Adapters::with_scales`] rescales
    /// from: merged bias and norm differences move by the change).
    pub(crate) base_scales: Vec<f32>,
}

impl Adapters {
    /// Number of layers (and other parameters, such as norm scales) updated.
    pub fn len(&self) -> usize {
        self.layers.len() + self.params.len() + self.sets.len()
    }

    /// The input width the updates give the linear layer at `path`, if any update it: the
    /// layer's own, or wider where an update widens it ([`Target::widen`]: BFL's control
    /// LoRAs take `img_in` from 64 to 128 inputs).
    pub fn layer_input(&self, path: &str) -> Option<usize> {
        self.layers.get(path).map(|l| l.input)
    }

    /// Whether nothing is updated.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The strength of each LoRA, in the order given to [`resolve`].
    pub fn scales(&self) -> &[f32] {
        &self.scales
    }

    /// The same updates at other strengths (one per LoRA).
    ///
    /// # Errors
    /// [`Error::Lora`] if the count differs or a strength is not finite.
    pub fn with_scales(&self, scales: &[f32]) -> Result<Self> {
        if scales.len() != self.scales.len() || !scales.iter().all(|s| s.is_finite()) {
            return Err(Error::Lora {
                file: String::new(),
                reason: format!(
                    "{} LoRA strength(s) given for {} LoRA(s): {scales:?}",
                    scales.len(),
                    self.scales.len()
                ),
            });
        }
        for (path, layer) in &self.layers {
            for diff in layer.diffs.iter().filter(|d| d.weight.is_some()) {
                if scales[diff.lora] != self.base_scales[diff.lora] {
                    return Err(Error::Lora {
                        file: String::new(),
                        reason: format!(
                            "LoRA {} holds a full-weight difference for `{path}`, merged at \
                             load: its strength cannot change per request (load it at the \
                             strength wanted)",
                            diff.lora + 1
                        ),
                    });
                }
            }
        }
        Ok(Self {
            layers: self.layers.clone(),
            params: self.params.clone(),
            sets: self.sets.clone(),
            base_scales: self.base_scales.clone(),
            scales: scales.to_vec(),
        })
    }
}

/// What one LoRA file did.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraReport {
    /// The file name.
    pub name: String,
    /// Its format.
    pub format: LoraFormat,
    /// Its strength.
    pub scale: f32,
    /// Layers it updates, per model.
    pub layers: BTreeMap<Component, usize>,
    /// Module names it holds that matched nothing (only in lenient mode; an error otherwise).
    pub unmatched: Vec<String>,
}

impl fmt::Display for LoraReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}, strength {}):",
            self.name, self.format, self.scale
        )?;
        let parts: Vec<String> = self
            .layers
            .iter()
            .map(|(c, n)| format!("{n} {c} layer(s)"))
            .collect();
        write!(f, " {}", parts.join(", "))?;
        if !self.unmatched.is_empty() {
            write!(f, "; {} module(s) matched nothing", self.unmatched.len())?;
        }
        Ok(())
    }
}

/// [`resolve`]'s result: each model's updates and a report per file.
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    /// The updates of each model that any LoRA touches.
    pub adapters: BTreeMap<Component, Adapters>,
    /// One per file, in order.
    pub reports: Vec<LoraReport>,
}

/// Matches every module of every LoRA (`(file, strength)`) to the models' [`Targets`].
///
/// # Errors
/// [`Error::LoraUnmatched`] listing the module names that match no layer (unless `lenient`:
/// they are then listed in the report instead), [`Error::Lora`] for factors whose shapes do
/// not fit their layer (naming the module, the layer and both shapes) or a non-finite
/// strength.
pub fn resolve(
    loras: &[(LoraFile, f32)],
    targets: &[(Component, &Targets)],
    lenient: bool,
) -> Result<Resolved> {
    let mut resolved = Resolved::default();
    let scales: Vec<f32> = loras.iter().map(|(_, s)| *s).collect();
    for (index, (file, scale)) in loras.iter().enumerate() {
        if !scale.is_finite() {
            return Err(Error::Lora {
                file: file.name().into(),
                reason: format!("strength {scale} is not finite"),
            });
        }
        let mut report = LoraReport {
            name: file.name().into(),
            format: file.format(),
            scale: *scale,
            layers: BTreeMap::new(),
            unmatched: Vec::new(),
        };
        let mut touched: BTreeMap<Component, std::collections::BTreeSet<String>> = BTreeMap::new();
        let mut unsupported = None;
        for module in &file.modules {
            let (component, name, flat) = match route(&module.stem) {
                Ok(found) => found,
                Err(why) => {
                    unsupported = Some(why);
                    report.unmatched.push(module.stem.clone());
                    continue;
                }
            };
            let Some((_, targets)) = targets.iter().find(|(c, _)| *c == component) else {
                report.unmatched.push(module.stem.clone());
                continue;
            };
            let adapters = resolved
                .adapters
                .entry(component)
                .or_insert_with(|| Adapters {
                    layers: BTreeMap::new(),
                    params: BTreeMap::new(),
                    sets: BTreeMap::new(),
                    scales: scales.clone(),
                    base_scales: scales.clone(),
                });
            let fail = |reason: String| Error::Lora {
                file: file.name().into(),
                reason,
            };
            if let Delta::ParamDiff { shape, values } | Delta::ParamSet { shape, values } =
                &module.delta
            {
                let set = matches!(module.delta, Delta::ParamSet { .. });
                let Some((path, expected)) = targets.get_param(name, flat) else {
                    report.unmatched.push(module.stem.clone());
                    continue;
                };
                if shape != expected {
                    let what = if set {
                        format!("`{}`", module.stem)
                    } else {
                        format!("`{}.diff`", module.stem)
                    };
                    return Err(fail(format!(
                        "{what} has shape {shape:?} but `{path}` is {expected:?}"
                    )));
                }
                if set {
                    if adapters.sets.contains_key(path) {
                        return Err(fail(format!(
                            "`{path}` is replaced by two control LoRAs: load one of them"
                        )));
                    }
                    adapters.sets.insert(path.to_string(), values.clone());
                } else {
                    adapters
                        .params
                        .entry(path.to_string())
                        .or_default()
                        .push((index, values.clone()));
                }
                touched
                    .entry(component)
                    .or_default()
                    .insert(path.to_string());
                continue;
            }
            let target = if flat {
                targets.get_flat(name)
            } else {
                targets.get(name)
            };
            let Some(target) = target else {
                report.unmatched.push(module.stem.clone());
                continue;
            };
            let layer = adapters
                .layers
                .entry(target.path.clone())
                .or_insert_with(|| LayerUpdate {
                    input: target.input,
                    output: target.output,
                    parts: Vec::new(),
                    diffs: Vec::new(),
                });
            add(layer, index, &module.stem, &module.delta, target).map_err(fail)?;
            touched
                .entry(component)
                .or_default()
                .insert(target.path.clone());
        }
        if !report.unmatched.is_empty() && !lenient {
            let hint = match unsupported {
                Some(why) => format!(" ({why})"),
                None => hint(&report.unmatched),
            };
            return Err(Error::LoraUnmatched {
                file: file.name().into(),
                keys: std::mem::take(&mut report.unmatched),
                hint,
            });
        }
        if touched.is_empty() {
            return Err(Error::Lora {
                file: file.name().into(),
                reason: "no module of it matches a layer of this model: it would do nothing".into(),
            });
        }
        report.layers = touched.into_iter().map(|(c, s)| (c, s.len())).collect();
        resolved.reports.push(report);
    }
    Ok(resolved)
}

/// What unmatched names suggest.
fn hint(names: &[String]) -> String {
    let sd = [
        "down_blocks",
        "up_blocks",
        "mid_block",
        "input_blocks",
        "output_blocks",
    ];
    if names.iter().any(|n| sd.iter().any(|s| n.contains(s))) {
        " (Stable Diffusion / SDXL UNet names: not a FLUX.1 LoRA)".into()
    } else {
        String::new()
    }
}

/// Checks `delta` against `target` and adds it to `layer`.
fn add(
    layer: &mut LayerUpdate,
    lora: usize,
    stem: &str,
    delta: &Delta,
    target: &Target,
) -> std::result::Result<(), String> {
    let rows = target.rows.len();
    let expected = [rows, target.input];
    let mismatch = |found: [usize; 2]| {
        format!(
            "`{stem}` updates a {found:?} weight but `{}` (rows {:?} of [{}, {}]) is {expected:?}",
            target.path, target.rows, target.output, target.input
        )
    };
    if let Delta::ParamDiff { shape, .. } | Delta::ParamSet { shape, .. } = delta {
        return Err(format!(
            "`{stem}.diff` has shape {shape:?} but `{}` is a [{}, {}] linear weight",
            target.path, target.output, target.input
        ));
    }
    if let Delta::Full { weight, bias } = delta {
        if let Some(w) = weight
            && w.shape() != expected
        {
            return Err(mismatch(w.shape()));
        }
        if let Some(b) = bias
            && b.len() != rows
        {
            return Err(format!(
                "`{stem}.diff_b` has {} values but `{}` has {rows} output rows",
                b.len(),
                target.path
            ));
        }
        layer.diffs.push(DiffPart {
            lora,
            rows: target.rows.clone(),
            swap_halves: target.swap_halves,
            weight: weight.clone(),
            bias: bias.clone(),
        });
        return Ok(());
    }
    let shape = delta.shape().expect("low-rank deltas have a shape");
    let widens = target.widen && shape[0] == rows && shape[1] > target.input;
    if shape != expected && !widens {
        return Err(mismatch(shape));
    }
    // A wider input: the layer takes the new inputs with zero weights, and every other
    // update's factors are zero-padded to it (as diffusers expands a control LoRA's layer).
    layer.input = layer.input.max(shape[1]);
    if target.swap_halves && !rows.is_multiple_of(2) {
        return Err(format!("`{stem}`: {rows} rows cannot be split into halves"));
    }
    let factors = delta.factors().expect("low-rank deltas factor");
    layer.parts.push(Part {
        lora,
        rows: target.rows.clone(),
        swap_halves: target.swap_halves,
        down: factors.down,
        up: factors.up,
        factor: factors.factor,
    });
    Ok(())
}

/// Row `i` of a part as it lands in the layer (halves swapped where the name stores them so).
pub(crate) fn landing_row(i: usize, rows: &Range<usize>, swap_halves: bool) -> usize {
    let n = rows.len();
    let i = if swap_halves { (i + n / 2) % n } else { i };
    rows.start + i
}

impl LayerUpdate {
    /// Total rank of the low-rank parts.
    pub fn rank(&self) -> usize {
        self.parts.iter().map(|p| p.down.rows).sum()
    }

    /// The stacked run-time factors at `scales`: `down` `[input, R]` and `up` `[R, output]`
    /// row-major, and `scale` `[R]`.
    pub fn stacked(&self, scales: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let rank = self.rank();
        let mut down = vec![0.0f32; self.input * rank];
        let mut up = vec![0.0f32; rank * self.output];
        let mut at = 0;
        for part in &self.parts {
            let r = part.down.rows;
            let cols = part.down.cols;
            for k in 0..r {
                for j in 0..cols {
                    down[j * rank + at + k] = part.down.values[k * cols + j];
                }
                for i in 0..part.up.rows {
                    let row = landing_row(i, &part.rows, part.swap_halves);
                    up[(at + k) * self.output + row] = part.up.values[i * r + k];
                }
            }
            at += r;
        }
        (down, up, self.stacked_scales(scales))
    }

    /// The per-rank scales alone at `scales` (what [`super::rescale`] rewrites).
    pub fn stacked_scales(&self, scales: &[f32]) -> Vec<f32> {
        self.parts
            .iter()
            .flat_map(|p| std::iter::repeat_n(p.factor * scales[p.lora], p.down.rows))
            .collect()
    }

    /// The full-weight differences at `scales`, `[input, output]` row-major (burn's layout),
    /// if there are any.
    pub fn weight_diff(&self, scales: &[f32]) -> Option<Vec<f32>> {
        if !self.has_weight_diff() {
            return None;
        }
        let (input, output) = (self.input, self.output);
        let mut weight = vec![0.0f32; input * output];
        for diff in &self.diffs {
            let Some(w) = &diff.weight else { continue };
            let s = scales[diff.lora];
            for i in 0..w.rows {
                let row = landing_row(i, &diff.rows, diff.swap_halves);
                for j in 0..w.cols {
                    weight[j * output + row] += s * w.values[i * w.cols + j];
                }
            }
        }
        Some(weight)
    }

    /// Adds the bias differences at `scales` to a bias `[output]`.
    pub fn add_to_bias(&self, bias: &mut [f32], scales: &[f32]) {
        for diff in &self.diffs {
            let Some(b) = &diff.bias else { continue };
            for (i, v) in b.iter().enumerate() {
                bias[landing_row(i, &diff.rows, diff.swap_halves)] += scales[diff.lora] * v;
            }
        }
    }

    /// Whether it holds full-weight differences (applied merged in either mode).
    pub fn has_weight_diff(&self) -> bool {
        self.diffs.iter().any(|d| d.weight.is_some())
    }

    /// Whether it holds bias differences.
    pub fn has_bias_diff(&self) -> bool {
        self.diffs.iter().any(|d| d.bias.is_some())
    }
}
