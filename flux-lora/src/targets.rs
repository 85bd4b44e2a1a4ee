//! [`Targets`]: the names a model's linear layers go by in LoRA files.

use std::collections::HashMap;
use std::ops::Range;

/// Where one LoRA module name lands: a linear layer and the rows of its `[out, in]` weight
/// that the name stands for (all of them, or one projection of a fused one: diffusers'
/// `to_k` is the middle third of BFL's `qkv`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The layer's module path in the model (`double_blocks.0.img_attn.qkv`).
    pub path: String,
    /// The layer's input width.
    pub input: usize,
    /// The layer's output width.
    pub output: usize,
    /// The rows this name updates.
    pub rows: Range<usize>,
    /// The name's rows are stored with their two halves swapped against the layer's (diffusers'
    /// `norm_out.linear`: (scale, shift) where BFL has (shift, scale)).
    pub swap_halves: bool,
    /// An update may widen the layer's input (new inputs start at zero weight): BFL's control
    /// LoRAs give `img_in` 128 inputs (latents and control latents) where \[dev\] has 64.
    pub widen: bool,
}

impl Target {
    /// The whole layer `path`, `[output, input]`.
    pub fn whole(path: impl Into<String>, input: usize, output: usize) -> Self {
        Self {
            path: path.into(),
            input,
            output,
            rows: 0..output,
            swap_halves: false,
            widen: false,
        }
    }
}

/// The module names one model answers to in LoRA files (dotted, as diffusers, PEFT, BFL and
/// XLabs write them, and with `_` for `.` as kohya writes them), each a [`Target`]. Built by
/// the model crate from its own key tables, so a LoRA resolves exactly against what the model
/// holds.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    names: HashMap<String, Target>,
    flat: HashMap<String, String>,
    /// Parameters outside linear layers (norm scales) that full differences may update:
    /// name -> (parameter path, shape).
    params: HashMap<String, (String, Vec<usize>)>,
}

impl Targets {
    /// No names.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `name` (and its kohya form, `.` replaced by `_`).
    pub fn insert(&mut self, name: impl Into<String>, target: Target) {
        let name = name.into();
        self.flat.insert(name.replace('.', "_"), name.clone());
        self.names.insert(name, target);
    }

    /// Adds a parameter outside the linear layers (e.g. an RMSNorm `scale`) under the name
    /// LoRA files give it (ComfyUI: the checkpoint key), for full differences (`.diff`).
    pub fn insert_param(
        &mut self,
        name: impl Into<String>,
        path: impl Into<String>,
        shape: Vec<usize>,
    ) {
        let name = name.into();
        self.flat
            .entry(name.replace('.', "_"))
            .or_insert_with(|| name.clone());
        self.params.insert(name, (path.into(), shape));
    }

    /// The parameter path and shape of a dotted or kohya name, if it is a parameter target.
    pub fn get_param(&self, name: &str, flat: bool) -> Option<(&str, &[usize])> {
        let name = if flat { self.flat.get(name)? } else { name };
        self.params
            .get(name)
            .map(|(p, s)| (p.as_str(), s.as_slice()))
    }

    /// The target of a dotted name.
    pub fn get(&self, name: &str) -> Option<&Target> {
        self.names.get(name)
    }

    /// The target of a kohya name (`double_blocks_0_img_attn_qkv`).
    pub fn get_flat(&self, name: &str) -> Option<&Target> {
        self.flat.get(name).and_then(|n| self.names.get(n))
    }

    /// Every name and its target (in no particular order).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Target)> {
        self.names.iter().map(|(n, t)| (n.as_str(), t))
    }

    /// Number of names.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}
