//! Reading a LoRA file: its tensors grouped by module, whatever the format stores.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use flux_io::{Error, Result, Weights};
use serde_json::Value;

use crate::delta::{Delta, Matrix, Side};

/// The community format a LoRA file is written in (detected from its keys; reported, never
/// needed to apply it: every format's keys are resolved the same way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoraFormat {
    /// diffusers / PEFT: `transformer.transformer_blocks.0.attn.to_q.lora_A.weight`.
    Diffusers,
    /// kohya sd-scripts and trainers that copy it: `lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight`.
    Kohya,
    /// BFL / ComfyUI module names: `diffusion_model.double_blocks.0.img_attn.qkv.lora_A.weight`,
    /// full-weight `.diff` / `.diff_b`.
    Bfl,
    /// XLabs: `double_blocks.0.processor.qkv_lora1.down.weight`.
    XLabs,
    /// LyCORIS LoKr (`lokr_w1`, `lokr_w2` or `lokr_w2_a` / `lokr_w2_b`).
    LoKr,
    /// LyCORIS LoHa (`hada_w1_a`, `hada_w1_b`, `hada_w2_a`, `hada_w2_b`).
    LoHa,
    /// BFL's structure-control LoRAs (`flux1-canny-dev-lora`, `flux1-depth-dev-lora`): BFL
    /// names, `lora_B` biases, RMSNorm scales replaced whole, and an `img_in` update that
    /// widens the model's input to take the control latents.
    Control,
}

impl fmt::Display for LoraFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Diffusers => "diffusers/PEFT",
            Self::Kohya => "kohya",
            Self::Bfl => "BFL/ComfyUI",
            Self::XLabs => "XLabs",
            Self::LoKr => "LyCORIS LoKr",
            Self::LoHa => "LyCORIS LoHa",
            Self::Control => "BFL control",
        })
    }
}

/// A LoRA file read into memory: one update per module it touches, in f32.
#[derive(Debug, Clone)]
pub struct LoraFile {
    name: String,
    format: LoraFormat,
    pub(crate) modules: Vec<LoraModule>,
}

/// One module's update, under the file's own module name (`stem`: the key without its
/// `.lora_A.weight`-like suffix).
#[derive(Debug, Clone)]
pub(crate) struct LoraModule {
    pub stem: String,
    pub delta: Delta,
}

/// What a key suffix holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Role {
    Down,
    Up,
    Alpha,
    Diff,
    DiffBias,
    LokrW1,
    LokrW1A,
    LokrW1B,
    LokrW2,
    LokrW2A,
    LokrW2B,
    HadaW1A,
    HadaW1B,
    HadaW2A,
    HadaW2B,
    /// `lora_B.bias`: a bias on the up factor (PEFT's `lora_bias`; BFL's control LoRAs), added
    /// to the layer's bias at the LoRA's scale.
    UpBias,
    /// A parameter's new value, replacing it (BFL's control LoRAs ship their RMSNorm scales
    /// whole: `….norm.query_norm.scale`; diffusers' `….attn.norm_q.weight`).
    Replace,
}

/// The kind of update a module's roles make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    LowRank,
    LoKr,
    LoHa,
    Diff,
    Replace,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::LowRank => "LoRA",
            Kind::LoKr => "LoKr",
            Kind::LoHa => "LoHa",
            Kind::Diff => "full difference",
            Kind::Replace => "replacement value",
        }
    }

    /// The kind a role belongs to (`None`: alpha and the bias difference, which go with any).
    fn of(role: Role) -> Option<Kind> {
        Some(match role {
            Role::Down | Role::Up => Kind::LowRank,
            Role::LokrW1
            | Role::LokrW1A
            | Role::LokrW1B
            | Role::LokrW2
            | Role::LokrW2A
            | Role::LokrW2B => Kind::LoKr,
            Role::HadaW1A | Role::HadaW1B | Role::HadaW2A | Role::HadaW2B => Kind::LoHa,
            Role::Diff => Kind::Diff,
            Role::Replace => Kind::Replace,
            Role::Alpha | Role::DiffBias | Role::UpBias => return None,
        })
    }

    /// The kinds present among `roles`, in order.
    fn present(roles: &BTreeMap<Role, String>) -> Vec<Kind> {
        let mut kinds: Vec<Kind> = roles.keys().filter_map(|r| Kind::of(*r)).collect();
        kinds.dedup();
        kinds
    }
}

/// Key suffixes, longest first where one ends another.
const SUFFIXES: &[(&str, Role)] = &[
    (".lora_A.default.weight", Role::Down),
    (".lora_B.default.weight", Role::Up),
    (".lora_A.weight", Role::Down),
    (".lora_B.weight", Role::Up),
    (".lora_B.bias", Role::UpBias),
    (".lora_down.weight", Role::Down),
    (".lora_up.weight", Role::Up),
    (".down.weight", Role::Down),
    (".up.weight", Role::Up),
    (".alpha", Role::Alpha),
    (".diff", Role::Diff),
    (".diff_b", Role::DiffBias),
    (".lokr_w1", Role::LokrW1),
    (".lokr_w1_a", Role::LokrW1A),
    (".lokr_w1_b", Role::LokrW1B),
    (".lokr_w2", Role::LokrW2),
    (".lokr_w2_a", Role::LokrW2A),
    (".lokr_w2_b", Role::LokrW2B),
    (".hada_w1_a", Role::HadaW1A),
    (".hada_w1_b", Role::HadaW1B),
    (".hada_w2_a", Role::HadaW2A),
    (".hada_w2_b", Role::HadaW2B),
];

/// Suffixes of adapter types this loader does not apply: an error naming them, never skipped.
const UNSUPPORTED: &[(&str, &str)] = &[
    (".lora_mid.weight", "LoCon mid weights (convolutions)"),
    (".lokr_t2", "CP-decomposed LoKr (convolutions)"),
    (".hada_t1", "CP-decomposed LoHa (convolutions)"),
    (".hada_t2", "CP-decomposed LoHa (convolutions)"),
    (".dora_scale", "DoRA"),
    (".lora_magnitude_vector", "DoRA"),
];

/// diffusers' safetensors metadata key holding each component's PEFT config.
const PEFT_METADATA: &str = "lora_adapter_metadata";

impl LoraFile {
    /// Reads a LoRA `.safetensors` file (memory-mapped; every factor read in f32).
    ///
    /// # Errors
    /// [`Error::Io`] / [`Error::Corrupt`] for an unreadable or truncated file;
    /// [`Error::Lora`] for a factor without its partner, shapes that do not fit, an adapter
    /// type this loader cannot apply, or a file with no LoRA tensors;
    /// [`Error::NonFinite`] for NaN or infinite values.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let weights = Weights::open(path)?;
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into(),
        );
        Self::read(&weights, name)
    }

    /// The file name it was read from.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The format its keys are written in.
    pub fn format(&self) -> LoraFormat {
        self.format
    }

    /// Number of modules it updates.
    pub fn len(&self) -> usize {
        self.modules.len()
    }

    /// Whether it updates nothing (never true for an opened file).
    pub fn is_empty(&self) -> bool {
        self.modules.is_empty()
    }

    fn read(weights: &Weights, name: String) -> Result<Self> {
        let err = |reason: String| Error::Lora {
            file: name.clone(),
            reason,
        };
        let mut groups: BTreeMap<String, BTreeMap<Role, String>> = BTreeMap::new();
        let mut unknown = Vec::new();
        for key in weights.keys() {
            if let Some((_, what)) = UNSUPPORTED.iter().find(|(s, _)| key.ends_with(s)) {
                return Err(err(format!("`{key}`: {what} cannot be applied")));
            }
            match SUFFIXES.iter().find(|(s, _)| key.ends_with(s)) {
                Some((suffix, role)) => {
                    let stem = &key[..key.len() - suffix.len()];
                    groups
                        .entry(stem.to_string())
                        .or_default()
                        .insert(*role, key.to_string());
                }
                None if is_replacement(key) => {
                    groups
                        .entry(key.to_string())
                        .or_default()
                        .insert(Role::Replace, key.to_string());
                }
                None => unknown.push(key.to_string()),
            }
        }
        if !unknown.is_empty() {
            return Err(Error::LoraUnmatched {
                file: name,
                keys: unknown,
                hint: " (not a LoRA tensor name)".into(),
            });
        }
        if groups.is_empty() {
            return Err(err("no LoRA tensors in the file".into()));
        }
        let peft = PeftAlphas::read(weights, &name)?;
        let format = detect(&groups);
        let mut reader = Reader {
            weights,
            file: &name,
        };
        let mut modules = Vec::new();
        for (stem, roles) in groups {
            reader.check_kinds(&stem, &roles)?;
            let delta = reader.delta(&stem, &roles, &peft)?;
            if let Some(key) = roles.get(&Role::UpBias) {
                // PEFT scales the up factor's bias with the whole product: `factor · b`.
                let Delta::LowRank { factor, .. } = &delta else {
                    return Err(err(format!("`{key}` belongs to no lora_A / lora_B pair")));
                };
                let bias = reader.values(key)?.1.iter().map(|b| b * factor).collect();
                modules.push(LoraModule {
                    stem: stem.clone(),
                    delta: Delta::Full {
                        weight: None,
                        bias: Some(bias),
                    },
                });
            }
            let bias_too = !matches!(
                delta,
                Delta::Full { .. } | Delta::ParamDiff { .. } | Delta::ParamSet { .. }
            );
            if let (true, Some(key)) = (bias_too, roles.get(&Role::DiffBias)) {
                // A bias difference beside a low-rank weight update (ComfyUI patches the
                // weight and the bias separately).
                let bias = reader.values(key)?.1;
                modules.push(LoraModule {
                    stem: stem.clone(),
                    delta: Delta::Full {
                        weight: None,
                        bias: Some(bias),
                    },
                });
            }
            modules.push(LoraModule { stem, delta });
        }
        Ok(Self {
            name,
            format,
            modules,
        })
    }
}

/// Whether a key outside the LoRA suffixes is a whole parameter that replaces the model's:
/// an RMSNorm scale as BFL's control LoRAs store it (`….query_norm.scale`, `….key_norm.scale`)
/// or as diffusers converts it (`….attn.norm_q.weight`, `norm_k`, `norm_added_q`,
/// `norm_added_k`: the keys diffusers loads into the transformer beside a control LoRA).
fn is_replacement(key: &str) -> bool {
    if let Some(stem) = key.strip_suffix(".scale") {
        return stem.ends_with("query_norm") || stem.ends_with("key_norm");
    }
    key.strip_suffix(".weight")
        .and_then(|stem| stem.rsplit('.').next())
        .is_some_and(|last| ["norm_q", "norm_k", "norm_added_q", "norm_added_k"].contains(&last))
}

/// The format, from the module names and factor kinds.
fn detect(groups: &BTreeMap<String, BTreeMap<Role, String>>) -> LoraFormat {
    let has_role = |r: Role| groups.values().any(|g| g.contains_key(&r));
    let mut stems = groups.keys().map(String::as_str);
    if has_role(Role::Replace) {
        LoraFormat::Control
    } else if has_role(Role::LokrW1) || has_role(Role::LokrW1A) {
        LoraFormat::LoKr
    } else if has_role(Role::HadaW1A) {
        LoraFormat::LoHa
    } else if stems.clone().any(|s| s.contains(".processor.")) {
        LoraFormat::XLabs
    } else if stems.clone().any(|s| s.starts_with("lora_")) {
        LoraFormat::Kohya
    } else if stems.any(|s| s.contains("double_blocks.") || s.contains("single_blocks."))
        || has_role(Role::Diff)
    {
        LoraFormat::Bfl
    } else {
        LoraFormat::Diffusers
    }
}

/// diffusers' PEFT configs stored in the file's metadata, per component (`transformer`,
/// `text_encoder`): `lora_alpha`, `alpha_pattern`, `use_rslora`.
struct PeftAlphas(BTreeMap<String, PeftConfig>);

#[derive(Default)]
struct PeftConfig {
    alpha: Option<f32>,
    patterns: Vec<(String, f32)>,
    rslora: bool,
}

impl PeftAlphas {
    fn read(weights: &Weights, file: &str) -> Result<Self> {
        let mut configs = BTreeMap::new();
        let Some(text) = weights.user_metadata(PEFT_METADATA) else {
            return Ok(Self(configs));
        };
        let bad = |reason: String| Error::Lora {
            file: file.to_string(),
            reason: format!("metadata `{PEFT_METADATA}`: {reason}"),
        };
        let json: Value = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        let Value::Object(map) = json else {
            return Err(bad("not a JSON object".into()));
        };
        for (key, value) in map {
            // Keys are `<component>.<field>` (diffusers packs each component's config).
            let (component, field) = key.split_once('.').unwrap_or(("", key.as_str()));
            let config: &mut PeftConfig = configs.entry(component.to_string()).or_default();
            match field {
                "lora_alpha" => config.alpha = value.as_f64().map(|a| a as f32),
                "use_rslora" => config.rslora = value.as_bool().unwrap_or(false),
                "alpha_pattern" => {
                    if let Value::Object(p) = value {
                        config.patterns = p
                            .into_iter()
                            .filter_map(|(k, v)| Some((k, v.as_f64()? as f32)))
                            .collect();
                    }
                }
                _ => {}
            }
        }
        Ok(Self(configs))
    }

    /// `(alpha, rslora)` for the module `stem` (`transformer.transformer_blocks.0.attn.to_q`).
    fn alpha(&self, stem: &str) -> Option<(f32, bool)> {
        let (component, module) = stem.split_once('.')?;
        let config = self.0.get(component)?;
        // PEFT matches a pattern against the module name's end, at a `.` boundary.
        let pattern = config
            .patterns
            .iter()
            .find(|(p, _)| module == p || module.ends_with(&format!(".{p}")));
        let alpha = pattern.map(|(_, a)| *a).or(config.alpha)?;
        Some((alpha, config.rslora))
    }
}

struct Reader<'a> {
    weights: &'a Weights,
    file: &'a str,
}

impl Reader<'_> {
    fn err(&self, reason: String) -> Error {
        Error::Lora {
            file: self.file.to_string(),
            reason,
        }
    }

    /// One kind of weight update per module: LoRA factors, LoKr, LoHa or a full difference.
    fn check_kinds(&self, stem: &str, roles: &BTreeMap<Role, String>) -> Result<()> {
        let kinds: Vec<&str> = Kind::present(roles).into_iter().map(Kind::name).collect();
        if kinds.len() > 1 {
            return Err(self.err(format!(
                "`{stem}` holds {} updates of one weight; a module holds one kind",
                kinds.join(" and ")
            )));
        }
        Ok(())
    }

    /// All values of `key` in f32, checked finite.
    fn values(&mut self, key: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let data = self.weights.data(key)?;
        let shape = data.shape.to_vec();
        let values: Vec<f32> = data
            .convert::<f32>()
            .into_vec()
            .map_err(|e| Error::BadTensor {
                key: key.to_string(),
                reason: format!("{e:?}"),
            })?;
        if !values.iter().all(|v| v.is_finite()) {
            return Err(Error::NonFinite(key.to_string()));
        }
        Ok((shape, values))
    }

    /// `key` as a matrix: 2-D, or a 1×1 convolution `[out, in, 1, 1]`.
    fn matrix(&mut self, key: &str) -> Result<Matrix> {
        let (shape, values) = self.values(key)?;
        match shape[..] {
            [rows, cols] => Ok(Matrix::new(rows, cols, values)),
            [rows, cols, 1, 1] => Ok(Matrix::new(rows, cols, values)),
            _ => Err(self.err(format!(
                "`{key}` has shape {shape:?}; a linear layer's factor is 2-D"
            ))),
        }
    }

    fn scalar(&mut self, key: &str) -> Result<f32> {
        let (shape, values) = self.values(key)?;
        match values[..] {
            [v] => Ok(v),
            _ => Err(self.err(format!(
                "`{key}` should hold one value, has shape {shape:?}"
            ))),
        }
    }

    fn delta(
        &mut self,
        stem: &str,
        roles: &BTreeMap<Role, String>,
        peft: &PeftAlphas,
    ) -> Result<Delta> {
        let key = |r: Role| roles.get(&r).map(String::as_str);
        let alpha = match key(Role::Alpha) {
            Some(k) => Some(self.scalar(k)?),
            None => None,
        };
        if let Some(down) = key(Role::Down) {
            let up = key(Role::Up)
                .ok_or_else(|| self.err(format!("`{down}` has no matching up / lora_B factor")))?;
            let (down_m, up_m) = (self.matrix(down)?, self.matrix(up)?);
            if up_m.cols != down_m.rows {
                return Err(self.err(format!(
                    "`{up}` {:?} and `{down}` {:?} do not multiply (ranks {} and {})",
                    up_m.shape(),
                    down_m.shape(),
                    up_m.cols,
                    down_m.rows
                )));
            }
            let rank = down_m.rows as f32;
            let factor = match (alpha, peft.alpha(stem)) {
                (Some(a), _) => a / rank,
                (None, Some((a, true))) => a / rank.sqrt(),
                (None, Some((a, false))) => a / rank,
                (None, None) => 1.0,
            };
            return Ok(Delta::LowRank {
                down: down_m,
                up: up_m,
                factor,
            });
        }
        if let Some(up) = key(Role::Up) {
            return Err(self.err(format!("`{up}` has no matching down / lora_A factor")));
        }
        let kind = Kind::present(roles).first().copied();
        if kind == Some(Kind::LoKr) {
            return self.lokr(stem, &key, alpha);
        }
        if kind == Some(Kind::LoHa) {
            let mut get = |r: Role, name: &str| match key(r) {
                Some(k) => self.matrix(k),
                None => Err(self.err(format!("`{stem}.{name}` missing for a LoHa module"))),
            };
            let w1 = (
                get(Role::HadaW1A, "hada_w1_a")?,
                get(Role::HadaW1B, "hada_w1_b")?,
            );
            let w2 = (
                get(Role::HadaW2A, "hada_w2_a")?,
                get(Role::HadaW2B, "hada_w2_b")?,
            );
            let fits = w1.0.cols == w1.1.rows
                && w2.0.cols == w2.1.rows
                && w1.0.rows == w2.0.rows
                && w1.1.cols == w2.1.cols;
            if !fits {
                return Err(self.err(format!(
                    "`{stem}`: LoHa factors {:?} @ {:?} and {:?} @ {:?} do not make one matrix",
                    w1.0.shape(),
                    w1.1.shape(),
                    w2.0.shape(),
                    w2.1.shape()
                )));
            }
            let factor = alpha.map_or(1.0, |a| a / w1.1.rows as f32);
            return Ok(Delta::LoHa { w1, w2, factor });
        }
        if let Some(k) = key(Role::Replace) {
            let (shape, values) = self.values(k)?;
            return Ok(Delta::ParamSet { shape, values });
        }
        let weight = match key(Role::Diff) {
            Some(k) => {
                let (shape, values) = self.values(k)?;
                match shape[..] {
                    [rows, cols] | [rows, cols, 1, 1] => Some(Matrix::new(rows, cols, values)),
                    _ if key(Role::DiffBias).is_none() => {
                        return Ok(Delta::ParamDiff { shape, values });
                    }
                    _ => {
                        return Err(self.err(format!(
                            "`{k}` has shape {shape:?}: a weight difference with a bias \
                             difference must be 2-D"
                        )));
                    }
                }
            }
            None => None,
        };
        let bias = match key(Role::DiffBias) {
            Some(k) => Some(self.values(k)?.1),
            None => None,
        };
        if weight.is_none() && bias.is_none() {
            let keys: Vec<&str> = roles.values().map(String::as_str).collect();
            return Err(self.err(format!(
                "`{}` belong(s) to no LoRA factors (no lora_A/lora_B or down/up pair)",
                keys.join("`, `")
            )));
        }
        Ok(Delta::Full { weight, bias })
    }

    fn lokr<'k>(
        &mut self,
        stem: &str,
        key: &dyn Fn(Role) -> Option<&'k str>,
        alpha: Option<f32>,
    ) -> Result<Delta> {
        // ComfyUI: the rank `dim` is w2_b's rows when w2 is a product, else w1_b's when w1
        // is; the scale is alpha / dim, or 1 without an alpha or without a product.
        let mut dim = None;
        let mut side = |full: Role, a: Role, b: Role, name: &str| -> Result<Side> {
            if let Some(k) = key(full) {
                return Ok(Side::Full(self.matrix(k)?));
            }
            match (key(a), key(b)) {
                (Some(a), Some(b)) => {
                    let (a_m, b_m) = (self.matrix(a)?, self.matrix(b)?);
                    if a_m.cols != b_m.rows {
                        return Err(self.err(format!(
                            "`{a}` {:?} and `{b}` {:?} do not multiply",
                            a_m.shape(),
                            b_m.shape()
                        )));
                    }
                    dim = Some(b_m.rows);
                    Ok(Side::Product(a_m, b_m))
                }
                _ => Err(self.err(format!(
                    "`{stem}.{name}` (or its `_a` / `_b` factors) missing for a LoKr module"
                ))),
            }
        };
        let w1 = side(Role::LokrW1, Role::LokrW1A, Role::LokrW1B, "lokr_w1")?;
        let w2 = side(Role::LokrW2, Role::LokrW2A, Role::LokrW2B, "lokr_w2")?;
        let factor = match (alpha, dim) {
            (Some(a), Some(d)) => a / d as f32,
            _ => 1.0,
        };
        Ok(Delta::LoKr { w1, w2, factor })
    }
}
