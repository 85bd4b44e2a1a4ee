//! Schedules and the Euler step against BFL's and diffusers' values (fixtures:
//! scripts/reference/gen_sampler.py).

use std::ops::ControlFlow;

use burn::tensor::{Tensor, TensorData, backend::Backend};
use flux_sampler::{
    Error, Sampler, Schedule, ScheduleKind, Shift, Step, denoise, euler_step, schedule,
};
use safetensors::SafeTensors;

const CASES: [(usize, usize); 9] = [
    (1, 4096),
    (4, 4096),
    (4, 1024),
    (20, 4080),
    (28, 4096),
    (50, 4096),
    (28, 16384),
    (4, 48),
    (7, 6),
];

fn fixture(name: &str) -> Vec<f32> {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let bytes = BYTES.get_or_init(|| {
        std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/sampler.safetensors"
        ))
        .expect("sampler fixtures")
    });
    let st = SafeTensors::deserialize(bytes).expect("valid safetensors");
    let view = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
    view.data()
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

use flux_testkit::max_abs_diff as max_abs_err;

#[test]
fn bfl_schedule_matches_get_schedule() {
    let mut worst = 0f32;
    for (steps, seq) in CASES {
        let dev = schedule(steps, seq, Some(Shift::default()));
        worst = worst.max(max_abs_err(
            &dev,
            &fixture(&format!("bfl.n{steps}.seq{seq}")),
        ));
        let schnell = schedule(steps, seq, None);
        let reference = fixture(&format!("bfl.n{steps}.seq{seq}.noshift"));
        worst = worst.max(max_abs_err(&schnell, &reference));
        assert_eq!(*dev.last().unwrap(), 0.0);
    }
    eprintln!("BFL schedule: max abs err {worst:e}");
    assert!(worst <= 1e-6, "max abs err {worst:e}");
}

#[test]
fn diffusers_schedule_is_bit_exact() {
    for (steps, seq) in CASES {
        let dev =
            Schedule::new(ScheduleKind::Diffusers, steps, seq, Some(Shift::default())).unwrap();
        let name = format!("diffusers.n{steps}.seq{seq}");
        let reference = fixture(&name);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(dev.sigmas()), bits(&reference), "{name}");
        let timesteps = fixture(&format!("diffusers_timesteps.n{steps}.seq{seq}"));
        assert_eq!(bits(dev.timesteps()), bits(&timesteps), "{name} timesteps");
        let schnell = Schedule::new(ScheduleKind::Diffusers, steps, seq, None).unwrap();
        let reference = fixture(&format!("diffusers_schnell.n{steps}.seq{seq}"));
        assert_eq!(bits(schnell.sigmas()), bits(&reference), "{name} schnell");
    }
}

#[test]
fn custom_sigmas_follow_diffusers() {
    // FluxPipeline passes linspace(1, 1/n, n) as custom sigmas: the same path.
    let n = 4;
    let sigmas: Vec<f32> = (0..n).map(|i| (1.0 - i as f64 / n as f64) as f32).collect();
    let mu = Shift::default().mu(4096);
    let custom = Schedule::diffusers_custom(&sigmas, Some(mu)).unwrap();
    assert_eq!(custom.sigmas(), fixture("diffusers.n4.seq4096").as_slice());
}

fn tensor<B: Backend>(values: Vec<f32>, shape: [usize; 3], device: &B::Device) -> Tensor<B, 3> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

fn euler_matches_scheduler_step<B: Backend>(device: &B::Device) {
    let x = tensor::<B>(fixture("euler.x"), [2, 6, 64], device);
    let v = tensor::<B>(fixture("euler.v"), [2, 6, 64], device);
    let s = Schedule::new(ScheduleKind::Diffusers, 4, 4096, Some(Shift::default())).unwrap();
    let out = euler_step(x, v, s.sigmas()[1], s.sigmas()[2]);
    let got = out.into_data().convert::<f32>().to_vec::<f32>().unwrap();
    let err = max_abs_err(&got, &fixture("euler.out"));
    assert!(err <= 1e-6, "max abs err {err:e}");
}

#[test]
fn euler_step_matches_diffusers_ndarray() {
    euler_matches_scheduler_step::<burn::backend::NdArray<f32>>(&Default::default());
}

#[test]
fn euler_step_matches_diffusers_flex() {
    euler_matches_scheduler_step::<burn::backend::Flex>(&Default::default());
}

type B = burn::backend::NdArray<f32>;

/// The flow of a straight line from noise `x1` to data `x0` has constant velocity `x1 - x0`:
/// Euler then lands on `x0` whatever the schedule.
#[test]
fn denoise_integrates_a_constant_flow_exactly() {
    let device = Default::default();
    let x0 = tensor::<B>(vec![0.25, -1.0, 2.0, 0.5, 0.0, -0.75], [1, 2, 3], &device);
    let x1 = tensor::<B>(vec![1.0, 0.5, -0.5, 0.0, 2.0, 1.5], [1, 2, 3], &device);
    let velocity = x1.clone() - x0.clone();
    let mut seen = Vec::new();
    let mut model = |_: &Tensor<B, 3>, step: &Step| -> Result<Tensor<B, 3>, Error> {
        seen.push(step.t);
        Ok(velocity.clone())
    };
    let s = Schedule::new(ScheduleKind::Bfl, 5, 4096, Some(Shift::default())).unwrap();
    let mut progress = Vec::new();
    let out = denoise(&mut model, x1, &s, Sampler::Euler, |step| {
        progress.push((step.index, step.total));
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(seen, s.sigmas()[..5].to_vec());
    assert_eq!(progress, (0..5).map(|i| (i, 5)).collect::<Vec<_>>());
    let got = out.into_data().to_vec::<f32>().unwrap();
    let want = x0.into_data().to_vec::<f32>().unwrap();
    assert!(max_abs_err(&got, &want) < 1e-6);
}

#[test]
fn denoise_can_be_cancelled_and_checks_shapes() {
    let device = Default::default();
    let x = tensor::<B>(vec![1.0; 6], [1, 2, 3], &device);
    let s = Schedule::new(ScheduleKind::Diffusers, 4, 256, Some(Shift::default())).unwrap();
    let mut calls = 0;
    let mut model = |x: &Tensor<B, 3>, _: &Step| -> Result<Tensor<B, 3>, Error> {
        calls += 1;
        Ok(x.clone())
    };
    let run = denoise(&mut model, x.clone(), &s, Sampler::Euler, |step| {
        if step.index == 2 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .unwrap_err();
    assert_eq!(
        run,
        Error::Cancelled {
            completed: 2,
            total: 4
        }
    );
    assert_eq!(calls, 2);

    let mut wrong = |_: &Tensor<B, 3>, _: &Step| -> Result<Tensor<B, 3>, Error> {
        Ok(tensor::<B>(vec![0.0; 4], [1, 2, 2], &Default::default()))
    };
    let err = denoise(&mut wrong, x, &s, Sampler::Euler, |_| {
        ControlFlow::Continue(())
    })
    .unwrap_err();
    assert_eq!(
        err,
        Error::VelocityShape {
            step: 0,
            expected: vec![1, 2, 3],
            found: vec![1, 2, 2]
        }
    );
}
