//! [`Schedule::pipeline`] against the schedules diffusers' `FluxPipeline` sets on its
//! scheduler (fixtures: scripts/reference/gen_sampling.py, `schedules.json`): Euler with the
//! Karras, exponential and beta spacings and DPM-Solver++ 2M's flow grid, for 1 to 50 steps at
//! 6 and 4096 image tokens, sigmas and timesteps to the bit.

use flux_sampler::{Sampler, Schedule, Shift, Spacing};

fn floats(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| (x.as_f64().unwrap() as f32).to_bits())
        .collect()
}

#[test]
fn schedules_match_diffusers_to_the_bit() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/schedules.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(json["skipped"].as_array().map(Vec::len), Some(0));
    let cases = json["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 48);
    for case in cases {
        let kind = case["kind"].as_str().unwrap();
        let (sampler, spacing) = match kind {
            "dpmpp_2m" => (Sampler::DpmPp2m, Spacing::Flux),
            other => (Sampler::Euler, other.parse().unwrap()),
        };
        let steps = case["steps"].as_u64().unwrap() as usize;
        let seq = case["image_seq_len"].as_u64().unwrap() as usize;
        let s = Schedule::pipeline(sampler, spacing, steps, seq, Some(Shift::default())).unwrap();
        let what = format!("{kind} n={steps} seq={seq}");
        assert_eq!(
            s.sigmas().iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            floats(&case["sigmas"]),
            "{what} sigmas"
        );
        assert_eq!(
            s.timesteps()
                .iter()
                .map(|x| x.to_bits())
                .collect::<Vec<_>>(),
            floats(&case["timesteps"]),
            "{what} timesteps"
        );
    }
}
