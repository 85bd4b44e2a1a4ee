//! LoRAs on the transformer: the names its layers go by in LoRA files, and applying
//! resolved updates to a loaded model (resident or offloaded).

use burn::module::Module;
use burn::tensor::backend::Backend;
use flux_io::Source;
use flux_io::lora::{self, Adapters, Applied, LoraMode, Target, Targets};

use crate::blocks::Blocks;
use crate::checkpoint::{DiffusersKeys, bfl_key};
use crate::model::{new_double_block, new_single_block};
use crate::{Flux, FluxConfig, Result};

impl FluxConfig {
    /// The names this transformer's linear layers go by in LoRA files: BFL's
    /// (`double_blocks.0.img_attn.qkv`, as BFL, ComfyUI and kohya write them), diffusers'
    /// (`transformer_blocks.0.attn.to_q`: the first `hidden_size` rows of `qkv`; single
    /// blocks' `proj_mlp`: the MLP rows of `linear1`; `norm_out.linear`: the final
    /// modulation with its halves swapped) and XLabs' (`double_blocks.0.processor.qkv_lora1`
    /// for the image stream, `…2` for text, `proj_lora1/2`; single blocks' `qkv_lora` and
    /// `proj_lora`). Norm scales answer to their checkpoint keys (BFL's and diffusers'), for
    /// ComfyUI's full differences (`….norm.key_norm.scale.diff`).
    pub fn lora_targets<B: Backend>(&self, device: &B::Device) -> Targets {
        let skeleton = Flux::<B>::new(self.clone(), device);
        let hidden = self.hidden_size;
        let mut targets = Targets::new();
        for (path, [input, output]) in lora::linear_layers(&skeleton) {
            let whole = Target {
                // BFL's control LoRAs widen `img_in` to take the control latents.
                widen: path == "img_in",
                ..Target::whole(path.clone(), input, output)
            };
            let weight = format!("{path}.weight");
            let module = |key: &str| key.strip_suffix(".weight").unwrap_or(key).to_string();
            targets.insert(module(&bfl_key(&weight)), whole.clone());
            match flux_io::KeyMap::source(&DiffusersKeys, &weight) {
                Source::Key(key) => targets.insert(module(&key), whole.clone()),
                Source::SwapHalves(key) => targets.insert(
                    module(&key),
                    Target {
                        swap_halves: true,
                        ..whole.clone()
                    },
                ),
                Source::Concat(keys) => {
                    // q, k, v are `hidden` rows each; single blocks' `proj_mlp` the rest.
                    let mut start = 0;
                    for (i, key) in keys.iter().enumerate() {
                        let rows = if i + 1 < keys.len() {
                            hidden
                        } else {
                            output - start
                        };
                        targets.insert(
                            module(key),
                            Target {
                                rows: start..start + rows,
                                ..whole.clone()
                            },
                        );
                        start += rows;
                    }
                }
            }
            for (alias, rows) in xlabs_names(&path, hidden) {
                let rows = rows.unwrap_or(0..output);
                targets.insert(
                    alias,
                    Target {
                        rows,
                        ..whole.clone()
                    },
                );
            }
        }
        for (path, shape) in lora::other_params(&skeleton) {
            let key = bfl_key(&path);
            targets.insert_param(key.clone(), path.clone(), shape.clone());
            if let Source::Key(key) = flux_io::KeyMap::source(&DiffusersKeys, &path) {
                targets.insert_param(key, path, shape);
            }
        }
        targets
    }
}

/// XLabs' names for the layer at `path`, with the rows they cover (`None`: all).
fn xlabs_names(path: &str, hidden: usize) -> Vec<(String, Option<std::ops::Range<usize>>)> {
    let table: &[(&str, &str, bool)] = &[
        ("img_attn.qkv", "qkv_lora1", false),
        ("txt_attn.qkv", "qkv_lora2", false),
        ("img_attn.proj", "proj_lora1", false),
        ("txt_attn.proj", "proj_lora2", false),
        ("linear1", "qkv_lora", true),
        ("linear2", "proj_lora", false),
    ];
    let mut names = Vec::new();
    for block in ["double_blocks.", "single_blocks."] {
        let Some((index, inner)) = path.strip_prefix(block).and_then(|r| r.split_once('.')) else {
            continue;
        };
        for (module, alias, qkv_rows) in table {
            if inner == *module {
                let rows = qkv_rows.then_some(0..3 * hidden);
                names.push((format!("{block}{index}.processor.{alias}"), rows));
            }
        }
    }
    names
}

/// A change made to each part of the model in turn (generic over the part's type, which a
/// closure cannot be).
trait PartMap<B: Backend> {
    fn map<M: Module<B>>(&mut self, module: M, prefix: &[&str]) -> flux_io::Result<M>;
}

struct Apply<'a> {
    adapters: &'a Adapters,
    mode: LoraMode,
    applied: Applied,
}

impl<B: Backend> PartMap<B> for Apply<'_> {
    fn map<M: Module<B>>(&mut self, module: M, prefix: &[&str]) -> flux_io::Result<M> {
        let (module, done) = lora::apply(module, self.adapters, prefix, self.mode)?;
        self.applied += done;
        Ok(module)
    }
}

struct Rescale<'a> {
    adapters: &'a Adapters,
    layers: usize,
}

impl<B: Backend> PartMap<B> for Rescale<'_> {
    fn map<M: Module<B>>(&mut self, module: M, prefix: &[&str]) -> flux_io::Result<M> {
        let (module, n) = lora::rescale(module, self.adapters, prefix);
        self.layers += n;
        Ok(module)
    }
}

impl<B: Backend> Flux<B> {
    /// Applies resolved LoRA updates ([`flux_io::lora::resolve`] against
    /// [`FluxConfig::lora_targets`]), merged or at run time ([`LoraMode`]), to the resident
    /// part and every block (offloaded blocks are uploaded, updated and offloaded again).
    ///
    /// # Errors
    /// [`crate::Error::Load`] wrapping [`flux_io::Error::Lora`]: a layer whose shape differs
    /// from what the updates were resolved for, a full-weight difference on a quantized
    /// layer, or updates naming layers this model does not have.
    pub fn apply_lora(mut self, adapters: &Adapters, mode: LoraMode) -> Result<(Self, Applied)> {
        if let Some(input) = adapters.layer_input("img_in") {
            // A control LoRA: [dev] becomes a control model, `img_in` taking the noisy
            // latents' 64 channels and the control latents' 64 (zero weights until the
            // LoRA's update lands on them).
            self = self.widen_input(input);
        }
        let mut apply = Apply {
            adapters,
            mode,
            applied: Applied::default(),
        };
        let model = self.map_parts(&mut apply)?;
        let applied = apply.applied;
        let total = applied.merged + applied.runtime;
        if total != adapters.len() {
            return Err(flux_io::Error::Lora {
                file: String::new(),
                reason: format!(
                    "{} layer update(s) resolved but {total} of their layers found in the model",
                    adapters.len()
                ),
            }
            .into());
        }
        Ok((model, applied))
    }

    /// Sets the strengths of run-time LoRA updates to `adapters`' (made by
    /// [`Adapters::with_scales`] from the ones applied); merged updates stay as merged.
    /// Returns the model and the number of layers rescaled.
    ///
    /// # Errors
    /// Never for a model the adapters were applied to.
    pub fn rescale_lora(self, adapters: &Adapters) -> Result<(Self, usize)> {
        let mut rescale = Rescale {
            adapters,
            layers: 0,
        };
        let model = self.map_parts(&mut rescale)?;
        Ok((model, rescale.layers))
    }

    /// Runs `f` on the resident part (blocks aside) and on each block, with its path.
    fn map_parts(mut self, f: &mut impl PartMap<B>) -> Result<Self> {
        let device = self.device();
        let config = self.config().clone();
        let double = std::mem::replace(&mut self.double_blocks, Blocks::Resident(Vec::new()));
        let single = std::mem::replace(&mut self.single_blocks, Blocks::Resident(Vec::new()));
        let mut model = f.map(self, &[])?;
        model.double_blocks = double.try_map_each(
            || new_double_block(&config, &device),
            &device,
            |block, i| f.map(block, &["double_blocks", &i.to_string()]),
        )?;
        model.single_blocks = single.try_map_each(
            || new_single_block(&config, &device),
            &device,
            |block, i| f.map(block, &["single_blocks", &i.to_string()]),
        )?;
        Ok(model)
    }
}
