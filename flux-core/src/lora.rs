//! LoRAs on the transformer: the names its layers go by in LoRA files, and applying
//! resolved updates to a loaded model (resident or offloaded).

use flux_io::Source;
use flux_lora::{Adapters, Target, Targets};
use flux_nn::{FluxBackend, Init, LayerKind};

use crate::checkpoint::{DiffusersKeys, bfl_key};
use crate::{Flux, FluxConfig};

impl FluxConfig {
    /// The names this transformer's linear layers go by in LoRA files: BFL's
    /// (`double_blocks.0.img_attn.qkv`, as BFL, ComfyUI and kohya write them), diffusers'
    /// (`transformer_blocks.0.attn.to_q`: the first `hidden_size` rows of `qkv`; single
    /// blocks' `proj_mlp`: the MLP rows of `linear1`; `norm_out.linear`: the final
    /// modulation with its halves swapped) and XLabs' (`double_blocks.0.processor.qkv_lora1`
    /// for the image stream, `…2` for text, `proj_lora1/2`; single blocks' `qkv_lora` and
    /// `proj_lora`). Norm scales answer to their checkpoint keys (BFL's and diffusers'), for
    /// ComfyUI's full differences (`….norm.key_norm.scale.diff`).
    pub fn lora_targets<B: FluxBackend>(&self, device: &B::Device) -> Targets {
        let layout = Init::layout(device);
        let _ = Flux::<B>::new(self.clone(), &layout, false);
        let hidden = self.hidden_size;
        let mut targets = Targets::new();
        let mut params = Vec::new();
        for layer in layout.layers() {
            let (path, input, output) = match layer.kind {
                LayerKind::Linear {
                    d_input, d_output, ..
                } => (layer.path, d_input, d_output),
                LayerKind::Param { shape } => {
                    params.push((layer.path, shape));
                    continue;
                }
            };
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
        for (path, shape) in params {
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

impl<B: FluxBackend> Flux<B> {
    /// Sets the strengths of the run-time LoRA updates the model was built with
    /// ([`crate::LoadConfig::adapters`]) to `adapters`' (made by [`Adapters::with_scales`]
    /// from them), and moves merged bias and norm differences by the change; merged low-rank
    /// updates stay as merged. Call it on the model as loaded: each call rescales from the
    /// strengths it was built at. Returns the model and the number of parameters rewritten.
    pub fn rescale_lora(self, adapters: &Adapters) -> (Self, usize) {
        let slots = self.lora.clone();
        slots.rescale(self, adapters)
    }
}
