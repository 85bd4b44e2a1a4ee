//! An offloaded module stays in host memory: a clone uploads its parameters when used, and
//! computes exactly what the resident module computes.

use burn::backend::{Flex, NdArray};
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use flux_nn::quant::QuantType;
use flux_nn::{FluxBackend, Init, Linear, offload};

use crate::common::ramp;

#[derive(Module, Debug)]
struct Pair<B: Backend> {
    dense: Linear<B>,
    packed: Linear<B>,
}

/// Whether every parameter of a module is (not) initialised.
fn initialised<B: Backend, M: Module<B>>(module: &M) -> Vec<bool> {
    struct Seen(Vec<bool>);
    impl<B: Backend> ModuleVisitor<B> for Seen {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.0.push(param.is_initialized());
        }
        fn visit_int<const D: usize>(&mut self, param: &Param<Tensor<B, D, Int>>) {
            self.0.push(param.is_initialized());
        }
    }
    let mut seen = Seen(Vec::new());
    module.visit(&mut seen);
    seen.0
}

fn check<B: FluxBackend>() {
    let device = Default::default();
    let build = |init: &Init<B>| Pair {
        dense: init.linear("dense", 64, 64, true),
        packed: Init::random_quantized(&device, QuantType::Q4_K).linear("packed", 256, 64, true),
    };
    let model = build(&Init::random(&device));
    let x = Tensor::<B, 2>::from_data(TensorData::new(ramp(256, 0.1), [1, 256]), &device);
    let run = |m: &Pair<B>| -> Vec<f32> {
        let y = m.dense.forward(m.packed.forward(x.clone()));
        y.into_data().convert::<f32>().into_vec().unwrap()
    };
    let resident = run(&model);
    let (offloaded, bytes) = offload(model);
    // Dense 64x64 + 64, packed Q4_K codes and factors + 64 bias values, in host memory.
    assert!(bytes > (64 * 64 + 64) * 4, "{bytes}");
    assert!(initialised(&offloaded).iter().all(|i| !i));
    let copy = offloaded.clone();
    assert_eq!(run(&copy), resident);
    assert!(initialised(&copy).iter().all(|&i| i));
    // The offloaded module itself was never uploaded.
    assert!(initialised(&offloaded).iter().all(|i| !i));
}

#[test]
fn offloaded_modules_upload_their_clones() {
    check::<Flex>();
    check::<NdArray>();
}
