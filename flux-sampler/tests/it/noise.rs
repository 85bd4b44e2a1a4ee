//! Bit-exact parity of the noise with `torch.randn` (fixtures: scripts/reference/gen_noise.py).

use burn::tensor::Tensor;
use flux_sampler::{
    CpuKernel, NoiseDtype, TorchGenerator, bfl_latent_shape, diffusers_latent_shape, noise_tensor,
    torch_randn_bf16, torch_randn_f32,
};
use safetensors::SafeTensors;
use sha2::{Digest, Sha256};

const SEEDS: [u64; 5] = [0, 1, 42, (1 << 32) + 5, (1 << 63) - 1];
const SIZES: [usize; 8] = [1, 7, 15, 16, 17, 100, 1000, 4097];

fn fixtures() -> SafeTensors<'static> {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let bytes = BYTES.get_or_init(|| {
        std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/noise.safetensors"
        ))
        .expect("noise fixtures")
    });
    SafeTensors::deserialize(bytes).expect("valid safetensors")
}

fn raw(name: &str) -> Vec<u8> {
    fixtures()
        .tensor(name)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .data()
        .to_vec()
}

/// Little-endian bytes of a draw in `dtype` from `generator`.
fn draw(generator: &mut TorchGenerator, dtype: &str, n: usize) -> Vec<u8> {
    match dtype {
        "f32" => generator
            .randn_f32(n)
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        "bf16" => generator
            .randn_bf16(n)
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        "f16" => generator
            .randn_f16(n)
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        _ => unreachable!(),
    }
}

fn kernel(name: &str) -> CpuKernel {
    match name {
        "avx2" => CpuKernel::Avx2,
        _ => CpuKernel::Scalar,
    }
}

/// Index of the first differing element (of `width` bytes), if any.
fn first_difference(a: &[u8], b: &[u8], width: usize) -> Option<usize> {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.chunks(width)
        .zip(b.chunks(width))
        .position(|(x, y)| x != y)
}

fn check_small(kernel_name: &str, seeds: &[u64]) {
    for &seed in seeds {
        for dtype in ["f32", "bf16", "f16"] {
            for n in SIZES {
                let name = format!("small.{kernel_name}.{dtype}.s{seed}.n{n}");
                let mut generator = TorchGenerator::with_kernel(seed, kernel(kernel_name));
                let ours = draw(&mut generator, dtype, n);
                let width = if dtype == "f32" { 4 } else { 2 };
                assert_eq!(first_difference(&ours, &raw(&name), width), None, "{name}");
            }
        }
    }
}

#[test]
fn small_draws_match_torch_avx2_kernel() {
    check_small("avx2", &SEEDS);
}

#[test]
fn small_draws_match_torch_scalar_kernel() {
    check_small("scalar", &[0, 42]);
}

fn check_large(kernel_name: &str, case: &str) {
    let prefix = format!("large.{kernel_name}.{case}");
    let t = fixtures();
    let shape: Vec<usize> = raw(&format!("{prefix}.shape"))
        .chunks(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as usize)
        .collect();
    let seed = u64::from_le_bytes(raw(&format!("{prefix}.seed")).try_into().unwrap());
    let head = t.tensor(&format!("{prefix}.head")).unwrap();
    let dtype = match head.dtype() {
        safetensors::Dtype::F32 => "f32",
        safetensors::Dtype::BF16 => "bf16",
        safetensors::Dtype::F16 => "f16",
        other => panic!("{prefix}: unexpected dtype {other:?}"),
    };
    let width = if dtype == "f32" { 4 } else { 2 };
    let n: usize = shape.iter().product();
    let mut generator = TorchGenerator::with_kernel(seed, kernel(kernel_name));
    let ours = draw(&mut generator, dtype, n);
    let edge = head.data().len();
    assert_eq!(
        first_difference(&ours[..edge], head.data(), width),
        None,
        "{prefix} head"
    );
    let tail = raw(&format!("{prefix}.tail"));
    assert_eq!(
        first_difference(&ours[ours.len() - edge..], &tail, width),
        None,
        "{prefix} tail"
    );
    let digest = Sha256::digest(&ours);
    assert_eq!(
        digest.as_slice(),
        raw(&format!("{prefix}.sha256")),
        "{prefix} full hash"
    );
}

#[test]
fn pipeline_latents_match_torch() {
    for case in [
        "diffusers_1024_f32",
        "diffusers_1024_bf16",
        "diffusers_768x1360_f32",
        "diffusers_768x1360_bf16",
        "bfl_1024_bf16",
        "bfl_1000x1000_bf16",
        "diffusers_batch2_512x768_f16",
    ] {
        check_large("avx2", case);
    }
    for case in ["diffusers_1024_f32", "bfl_1024_bf16"] {
        check_large("scalar", case);
    }
}

#[test]
fn documented_latent_shapes_are_the_drawn_ones() {
    let shape = |case: &str| -> Vec<usize> {
        raw(&format!("large.avx2.{case}.shape"))
            .chunks(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as usize)
            .collect()
    };
    assert_eq!(
        shape("diffusers_1024_f32"),
        diffusers_latent_shape(1, 1024, 1024)
    );
    assert_eq!(
        shape("diffusers_768x1360_f32"),
        diffusers_latent_shape(1, 768, 1360)
    );
    assert_eq!(
        shape("diffusers_batch2_512x768_f16"),
        diffusers_latent_shape(2, 512, 768)
    );
    assert_eq!(shape("bfl_1024_bf16"), bfl_latent_shape(1, 1024, 1024));
    assert_eq!(shape("bfl_1000x1000_bf16"), bfl_latent_shape(1, 1000, 1000));
    assert_ne!(
        bfl_latent_shape(1, 1000, 1000),
        diffusers_latent_shape(1, 1000, 1000)
    );
}

#[test]
fn successive_draws_continue_the_stream() {
    // img2img's two draws, the cached normal carried across small calls, then other dtypes.
    let mut generator = TorchGenerator::new(3);
    let draws = [
        (1024, "f32"),
        (1024, "f32"),
        (5, "f32"),
        (3, "f32"),
        (17, "bf16"),
        (1, "bf16"),
        (40, "f16"),
    ];
    for (i, (n, dtype)) in draws.into_iter().enumerate() {
        let ours = draw(&mut generator, dtype, n);
        let width = if dtype == "f32" { 4 } else { 2 };
        assert_eq!(
            first_difference(&ours, &raw(&format!("seq.{i}")), width),
            None,
            "seq.{i}"
        );
    }
}

#[test]
fn seeds_share_their_low_32_bits_like_torch() {
    let a = torch_randn_f32(5, &[2, 50]).unwrap();
    let b = torch_randn_f32((1 << 32) + 5, &[2, 50]).unwrap();
    assert_eq!(a, b);
    let e = torch_randn_f32(0, &[usize::MAX, 2]).unwrap_err();
    assert!(
        matches!(&e, flux_sampler::Error::NoiseTooLarge { shape } if shape[1] == 2),
        "{e}"
    );
}

fn tensor_matches_host<B: burn::tensor::backend::Backend>(device: &B::Device) {
    let shape = [1, 16, 4, 6];
    let t: Tensor<B, 4> = noise_tensor(42, shape, NoiseDtype::BF16, device).unwrap();
    assert_eq!(t.dims(), shape);
    let host: Vec<f32> = torch_randn_bf16(42, &shape)
        .unwrap()
        .into_iter()
        .map(f32::from)
        .collect();
    let got = t.into_data().convert::<f32>().to_vec::<f32>().unwrap();
    assert_eq!(got, host);
    let t: Tensor<B, 2> = noise_tensor(7, [3, 5], NoiseDtype::F32, device).unwrap();
    let got = t.into_data().to_vec::<f32>().unwrap();
    assert_eq!(got, torch_randn_f32(7, &[3, 5]).unwrap());
}

#[test]
fn noise_tensor_uploads_the_host_values_ndarray() {
    tensor_matches_host::<burn::backend::NdArray<f32>>(&Default::default());
}

#[test]
fn noise_tensor_uploads_the_host_values_flex() {
    tensor_matches_host::<burn::backend::Flex>(&Default::default());
}

#[test]
fn uniforms_of_exactly_zero_match_torch() {
    // u1 = 1 (log 0, radius 0) and u2 = 0 (angle 0): once in 2^24 draws each.
    for (seed, n) in [(1u64, 2_753_136usize), (2, 10_427_184)] {
        let ours = draw(&mut TorchGenerator::new(seed), "f32", n);
        let name = format!("rare.s{seed}.n{n}");
        assert_eq!(
            first_difference(&ours[(n - 16) * 4..], &raw(&name), 4),
            None,
            "{name}"
        );
    }
}
