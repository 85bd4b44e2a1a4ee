//! Matching LoRA modules to a model's layers: [`resolve`] turns files into [`Adapters`].

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

use flux_io::{Error, Result};

use crate::delta::{Delta, Matrix};
use crate::file::{LoraFile, LoraFormat};
use crate::targets::{Target, Targets};

/// Where a LoRA module name points ([`resolve`]'s `route`): which of the pipeline's models
/// the name belongs to and the name inside it, or why such names cannot be applied. The
/// routing of name prefixes to models (`lora_unet_`, `transformer.`, `text_encoder.`, ...) is
/// the pipeline's knowledge, not this crate's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a, C> {
    /// A module of model `component`, named `name` there; `kohya`: written with `_` for `.`.
    To {
        /// The model.
        component: C,
        /// The name with the model's prefix removed.
        name: &'a str,
        /// kohya's `_`-joined form (`lora_unet_double_blocks_0_img_attn_qkv`).
        kohya: bool,
    },
    /// A model the pipeline takes no LoRA for; the reason ends up in the error.
    Unsupported(&'static str),
}

/// Rank-`r` factors of one LoRA module, landing on some rows of a layer.
#[derive(Debug, Clone)]
struct Part {
    lora: usize,
    rows: Range<usize>,
    swap_halves: bool,
    /// `[r, input]`.
    down: Matrix,
    /// `[rows.len(), r]`.
    up: Matrix,
    /// `alpha / rank` (the user's scale is applied on top).
    factor: f32,
}

/// Full-weight differences landing on some rows of a layer.
#[derive(Debug, Clone)]
struct DiffPart {
    lora: usize,
    rows: Range<usize>,
    swap_halves: bool,
    /// `[rows.len(), input]`.
    weight: Option<Matrix>,
    /// `[rows.len()]`.
    bias: Option<Vec<f32>>,
}

/// Every update one linear layer receives: low-rank parts (each on some of its rows) and
/// full differences, with the layer's shape (its input possibly widened by an update).
#[derive(Debug, Clone)]
pub struct LayerUpdate {
    input: usize,
    output: usize,
    parts: Vec<Part>,
    diffs: Vec<DiffPart>,
}

/// The LoRA updates of one model, by layer path, with the strength of each LoRA: what a model
/// is built with (`flux_nn::Init`'s adapters), merged into its weights or held beside them.
#[derive(Debug, Clone, Default)]
pub struct Adapters {
    layers: BTreeMap<String, LayerUpdate>,
    /// Full differences of parameters outside linear layers: path -> (LoRA, values).
    params: BTreeMap<String, Vec<(usize, Vec<f32>)>>,
    /// Parameters replaced whole (control LoRAs' norm scales): path -> values.
    sets: BTreeMap<String, Vec<f32>>,
    scales: Vec<f32>,
    /// The strengths the updates were applied at (what [`Adapters::with_scales`] rescales
    /// from: merged bias and norm differences move by the change).
    base_scales: Vec<f32>,
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

    /// The strengths the updates were first applied at (merged differences hold these; see
    /// [`Adapters::with_scales`]).
    pub fn base_scales(&self) -> &[f32] {
        &self.base_scales
    }

    /// The updates of the linear layer at `path`, if any.
    pub fn layer(&self, path: &str) -> Option<&LayerUpdate> {
        self.layers.get(path)
    }

    /// The paths of the linear layers updated.
    pub fn layer_paths(&self) -> impl Iterator<Item = &str> {
        self.layers.keys().map(String::as_str)
    }

    /// The full differences of the parameter at `path` (outside linear layers: norm scales),
    /// each with the index of its LoRA.
    pub fn param_diffs(&self, path: &str) -> &[(usize, Vec<f32>)] {
        self.params.get(path).map_or(&[], Vec::as_slice)
    }

    /// The values replacing the parameter at `path` whole (control LoRAs' norm scales), if any.
    pub fn param_set(&self, path: &str) -> Option<&[f32]> {
        self.sets.get(path).map(Vec::as_slice)
    }

    /// The paths of the parameters outside linear layers that are changed.
    pub fn param_paths(&self) -> impl Iterator<Item = &str> {
        self.params
            .keys()
            .chain(self.sets.keys())
            .map(String::as_str)
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

/// What one LoRA file did, per model `C`.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraReport<C> {
    /// The file name.
    pub name: String,
    /// Its format.
    pub format: LoraFormat,
    /// Its strength.
    pub scale: f32,
    /// Layers it updates, per model.
    pub layers: BTreeMap<C, usize>,
    /// Module names it holds that matched nothing (only in lenient mode; an error otherwise).
    pub unmatched: Vec<String>,
}

impl<C: fmt::Display> fmt::Display for LoraReport<C> {
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
#[derive(Debug, Clone)]
pub struct Resolved<C> {
    /// The updates of each model that any LoRA touches.
    pub adapters: BTreeMap<C, Adapters>,
    /// One per file, in order.
    pub reports: Vec<LoraReport<C>>,
}

/// Matches every module of every LoRA (`(file, strength)`) to the models' [`Targets`], each
/// name sent to its model by `route`.
///
/// # Errors
/// [`Error::LoraUnmatched`] listing the module names that match no layer (unless `lenient`:
/// they are then listed in the report instead), [`Error::Lora`] for factors whose shapes do
/// not fit their layer (naming the module, the layer and both shapes) or a non-finite
/// strength.
pub fn resolve<C: Copy + Ord>(
    loras: &[(LoraFile, f32)],
    route: impl Fn(&str) -> Route<'_, C>,
    targets: &[(C, &Targets)],
    lenient: bool,
) -> Result<Resolved<C>> {
    let mut resolved = Resolved {
        adapters: BTreeMap::new(),
        reports: Vec::new(),
    };
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
        let mut touched: BTreeMap<C, std::collections::BTreeSet<String>> = BTreeMap::new();
        let mut unsupported = None;
        for module in &file.modules {
            let (component, name, flat) = match route(&module.stem) {
                Route::To {
                    component,
                    name,
                    kohya,
                } => (component, name, kohya),
                Route::Unsupported(why) => {
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
        " (Stable Diffusion / SDXL UNet names: not a LoRA for this model)".into()
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
fn landing_row(i: usize, rows: &Range<usize>, swap_halves: bool) -> usize {
    let n = rows.len();
    let i = if swap_halves { (i + n / 2) % n } else { i };
    rows.start + i
}

impl LayerUpdate {
    /// The layer's input width (wider than the model's where an update widens it).
    pub fn input(&self) -> usize {
        self.input
    }

    /// The layer's output width.
    pub fn output(&self) -> usize {
        self.output
    }

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

    /// The per-rank scales alone at `scales` (what a run-time update's strength change
    /// rewrites).
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
