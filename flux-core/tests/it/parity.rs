//! Parity of the transformer with diffusers' `FluxTransformer2DModel` on tiny random models,
//! through every checkpoint layout and stored dtype (fixtures: scripts/reference/gen_flux.py).

use crate::common::{Inputs, fixture, max_abs_diff, tensor};
use burn::backend::{Flex, NdArray};
use flux_io::Weights;
use flux_nn::FluxBackend;

/// The bar for f32 computation on f32 (or exactly representable) weights.
const F32_TOL: f32 = 1e-4;

/// Loads `checkpoint` of `case`, runs the fixture inputs and returns max |ours - reference|
/// against the output stored under `expected`.
fn parity<B: FluxBackend>(case: &str, checkpoint: &str, expected: &str) -> f32 {
    let device = B::Device::default();
    let io = Weights::open(fixture(&format!("{case}/io.safetensors"))).unwrap();
    let model = flux_core::load::<B>(fixture(&format!("{case}/{checkpoint}")), &device)
        .unwrap_or_else(|e| panic!("loading {case}/{checkpoint}: {e}"));
    let out = Inputs::<B>::read(&io, &device).run(&model);
    let err = max_abs_diff(out, tensor(&io, expected, &device));
    eprintln!("{case}/{checkpoint} vs {expected}: max abs err {err:.3e}");
    err
}

macro_rules! parity_tests {
    ($backend:ty, $mod:ident) => {
        mod $mod {
            use super::*;

            #[test]
            fn dev_bfl_f32() {
                assert!(parity::<$backend>("dev_tiny", "bfl.safetensors", "out") <= F32_TOL);
            }

            #[test]
            fn dev_diffusers_sharded_f32() {
                assert!(parity::<$backend>("dev_tiny", "diffusers", "out") <= F32_TOL);
            }

            #[test]
            fn dev_bf16_stored() {
                assert!(
                    parity::<$backend>("dev_tiny", "bfl_bf16.safetensors", "out_bf16") <= F32_TOL
                );
            }

            #[test]
            fn dev_f16_stored_diffusers_single_file() {
                assert!(
                    parity::<$backend>("dev_tiny", "diffusers_f16.safetensors", "out_f16")
                        <= F32_TOL
                );
            }

            #[test]
            fn dev_comfy_scaled_fp8() {
                assert!(
                    parity::<$backend>("dev_tiny", "comfy_fp8_scaled.safetensors", "out_fp8")
                        <= F32_TOL
                );
            }

            #[test]
            fn schnell_bfl() {
                assert!(parity::<$backend>("schnell_tiny", "bfl.safetensors", "out") <= F32_TOL);
            }

            #[test]
            fn four_heads_sharded_with_config_json() {
                assert!(parity::<$backend>("heads4", "diffusers", "out") <= F32_TOL);
            }
        }
    };
}

parity_tests!(NdArray<f32>, ndarray);
parity_tests!(Flex, flex);

/// BFL, diffusers (sharded) and fp8 files of the same model: same config, and the f32 layouts
/// give identical outputs.
#[test]
fn layouts_agree() {
    type B = NdArray<f32>;
    let device = Default::default();
    let io = Weights::open(fixture("dev_tiny/io.safetensors")).unwrap();
    let inputs = Inputs::<B>::read(&io, &device);
    let bfl = flux_core::load::<B>(fixture("dev_tiny/bfl.safetensors"), &device).unwrap();
    let diffusers = flux_core::load::<B>(fixture("dev_tiny/diffusers"), &device).unwrap();
    let fp8 =
        flux_core::load::<B>(fixture("dev_tiny/comfy_fp8_scaled.safetensors"), &device).unwrap();
    assert_eq!(bfl.config(), diffusers.config());
    assert_eq!(bfl.config(), fp8.config());
    let diff = max_abs_diff(inputs.run(&bfl), inputs.run(&diffusers));
    assert!(diff <= 1e-6, "BFL vs diffusers layout: {diff}");
}
