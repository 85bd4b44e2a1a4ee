//! The transformer's stages (`embed`, `blocks(range)`, `finish`), which step caches run in
//! parts, compose to the forward pass.

use burn::backend::NdArray;
use burn::tensor::Tensor;
use flux_core::Hidden;
use flux_io::Weights;

use crate::common::{Inputs, fixture};

type B = NdArray<f32>;

fn bits(t: Tensor<B, 3>) -> Vec<u32> {
    let v: Vec<f32> = t.into_data().to_vec().unwrap();
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn stages_compose_to_the_forward_pass() {
    let device = Default::default();
    let io = Weights::open(fixture("dev_tiny/io.safetensors")).unwrap();
    let inputs = Inputs::<B>::read(&io, &device);
    let model = flux_core::load::<B>(&fixture("dev_tiny/bfl.safetensors"), &device).unwrap();
    let whole = inputs.run(&model);
    let pe = model
        .rope(inputs.txt_ids.clone(), inputs.img_ids.clone())
        .unwrap();
    let h = model
        .embed(
            inputs.img.clone(),
            inputs.txt.clone(),
            inputs.timesteps.clone(),
            inputs.y.clone(),
            inputs.guidance.clone(),
        )
        .unwrap();
    let n = model.num_blocks();
    let all = model.finish(model.blocks(h.clone(), &pe, 0..n).unwrap());
    assert_eq!(bits(all), bits(whole.clone()), "all blocks in one range");
    // First-Block Cache's split: the first block, then the others.
    let first = model.blocks(h.clone(), &pe, 0..1).unwrap();
    let split = model.finish(model.blocks(first, &pe, 1..n).unwrap());
    assert_eq!(bits(split), bits(whole.clone()), "0..1 then 1..n");
    // Every single-block boundary too, and rows taken apart and put back together.
    for cut in 1..n {
        let a = model.blocks(h.clone(), &pe, 0..cut).unwrap();
        let b = model.finish(model.blocks(a, &pe, cut..n).unwrap());
        assert_eq!(bits(b), bits(whole.clone()), "cut at {cut}");
    }
    let rows = Hidden::cat(vec![h.narrow(0, 1), h.narrow(1, 1)]);
    let joined = model.finish(model.blocks(rows, &pe, 0..n).unwrap());
    assert_eq!(bits(joined), bits(whole), "rows narrowed and concatenated");
}
