//! What the end-to-end tests share: the recorded reference runs and the tiny pipelines.

#![allow(dead_code)] // each test binary uses its own subset

use flux::FluxBackend;
use std::path::PathBuf;

use burn::backend::NdArray;
use flux::{GenerateRequest, MemoryMode, Pipeline};
use flux_io::{SafetensorsFile, Weights};

pub type B = NdArray<f32>;

pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

pub struct Run {
    pub request: GenerateRequest,
    pub expected: Vec<f32>,
    pub expected_u8: Vec<u8>,
}

/// The request of a recorded run (its prompt, size, steps, guidance and initial latents) and
/// the reference's images, float in [0, 1] and 8-bit.
pub fn run(name: &str) -> Run {
    let recorded = Recorded::open(&format!("tiny_pipeline_runs/{name}"));
    Run {
        request: recorded
            .request()
            .with_latents(recorded.values("latents_in")),
        expected: recorded.values("image"),
        expected_u8: recorded.bytes("image_u8"),
    }
}

pub fn pipeline(folder: &str, t5_len: usize, memory: MemoryMode) -> Pipeline<B> {
    Pipeline::<B>::builder()
        .model_dir(fixture(folder))
        .t5_max_len(t5_len)
        .memory(memory)
        .build()
        .unwrap_or_else(|e| panic!("{folder}: {e}"))
}

/// Max abs error of the float image and the share of equal 8-bit values.
pub fn compare<Bk: FluxBackend>(pipeline: &Pipeline<Bk>, run: &Run) -> (f32, f64) {
    let out = pipeline.generate_float(&run.request).unwrap();
    assert_eq!(out.len(), run.expected.len());
    let err = max_abs(&out, &run.expected);
    let images = flux::vae::rgb8_images(
        &out,
        run.request.batch_size(),
        run.request.height,
        run.request.width,
    );
    let ours: Vec<u8> = images.iter().flat_map(|im| im.as_raw().clone()).collect();
    let same = ours
        .iter()
        .zip(&run.expected_u8)
        .filter(|(a, b)| a == b)
        .count();
    (err, same as f64 / ours.len() as f64)
}

/// Runs the recorded run `name` and holds it to the f32 bars: max abs error ≤ 1e-4 and
/// ≥ 99.9 % identical 8-bit values (printed as `{name}: max abs err …`).
pub fn assert_matches<Bk: FluxBackend>(pipeline: &Pipeline<Bk>, name: &str) {
    let (err, same) = compare(pipeline, &run(name));
    eprintln!(
        "{name}: max abs err {err:.2e}, identical 8-bit values {:.4}%",
        same * 100.0
    );
    assert!(err <= 1e-4 && same >= 0.999, "{name}: {err} {same}");
}

/// Largest |a − b| over two equally long slices; infinite when either holds NaN or inf.
pub use flux_testkit::max_abs_diff as max_abs;

/// The bit patterns of f32 values, for exact comparisons that print well.
pub fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// A recorded reference run: the script's JSON (call arguments, tensor shapes) beside a
/// safetensors file of its tensors (`<stem>.json`, `<stem>.safetensors` under the fixtures).
pub struct Recorded {
    pub json: serde_json::Value,
    io: Weights,
    file: SafetensorsFile,
}

impl Recorded {
    /// The run at `stem` (e.g. `tools/runs/fill`).
    pub fn open(stem: &str) -> Self {
        let path = |ext: &str| fixture(&format!("{stem}.{ext}"));
        Self {
            json: serde_json::from_str(&std::fs::read_to_string(path("json")).unwrap()).unwrap(),
            io: Weights::open(path("safetensors")).unwrap(),
            file: SafetensorsFile::open(path("safetensors")).unwrap(),
        }
    }

    /// A float tensor's values, as f32.
    pub fn values(&self, key: &str) -> Vec<f32> {
        self.io.data(key).unwrap().to_vec::<f32>().unwrap()
    }

    /// The raw bytes of a stored tensor (u8 is not a float dtype for the weight loader).
    pub fn bytes(&self, key: &str) -> Vec<u8> {
        self.file.bytes(key).unwrap().to_vec()
    }

    /// The request as the reference was called: prompts, size, steps, and where the call gave
    /// them guidance, seed, images per prompt, negative prompt(s) and true CFG scale.
    pub fn request(&self) -> GenerateRequest {
        let j = &self.json;
        let prompts: Vec<String> = match &j["prompt"] {
            serde_json::Value::String(p) => vec![p.clone()],
            serde_json::Value::Array(ps) => {
                ps.iter().map(|p| p.as_str().unwrap().to_string()).collect()
            }
            other => panic!("prompt {other}"),
        };
        let mut r = GenerateRequest::batch(prompts)
            .with_size(self.usize("width"), self.usize("height"))
            .with_steps(self.usize("num_inference_steps"));
        if let Some(g) = j["guidance_scale"].as_f64() {
            r = r.with_guidance(g as f32);
        }
        if let Some(seed) = j["seed"].as_u64() {
            r = r.with_seed(seed);
        }
        if let Some(n) = j["num_images_per_prompt"].as_u64() {
            r = r.with_images_per_prompt(n as usize);
        }
        match &j["negative_prompt"] {
            serde_json::Value::String(p) => r = r.with_negative_prompt(p.as_str()),
            serde_json::Value::Array(ps) => {
                r = r.with_negative_prompts(ps.iter().map(|p| p.as_str().unwrap()))
            }
            _ => {}
        }
        if let Some(s) = j["true_cfg_scale"].as_f64() {
            r = r.with_true_cfg(s as f32);
        }
        match j["sampler"].as_str() {
            None | Some("euler") => {}
            Some("dpmpp_2m") => r = r.with_sampler(flux::Sampler::DpmPp2m),
            Some(other) => panic!("sampler {other}"),
        }
        if let Some(s) = j["sigmas"].as_str() {
            r = r.with_sigmas(s.parse().unwrap());
        }
        let cache = &j["cache"];
        let threshold = cache["threshold"].as_f64().unwrap_or(0.0);
        match cache["kind"].as_str() {
            None => {}
            Some("first_block_cache") => r = r.with_cache(flux::Cache::FirstBlock { threshold }),
            Some("teacache") => r = r.with_cache(flux::Cache::Tea { threshold }),
            Some("magcache") => {
                let mut m = flux::MagCache::flux(threshold as f32);
                m.max_skip_steps = cache["max_skip_steps"].as_u64().unwrap() as usize;
                m.retention_ratio = cache["retention_ratio"].as_f64().unwrap();
                if cache["calibrate"].as_bool() == Some(true) {
                    m.ratios = flux::MagRatios::Calibrate;
                }
                r = r.with_cache(flux::Cache::Mag(m));
            }
            Some(other) => panic!("cache {other}"),
        }
        r
    }

    /// An integer argument of the call.
    pub fn usize(&self, key: &str) -> usize {
        self.json[key].as_u64().unwrap() as usize
    }

    /// A stored tensor's shape.
    pub fn dims(&self, key: &str) -> Vec<usize> {
        self.json["tensors"][key]["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect()
    }

    /// Image `index` of a `[.., h, w, 3]` uint8 tensor.
    pub fn image(&self, key: &str, index: usize) -> image::DynamicImage {
        let dims = self.dims(key);
        let [h, w] = [dims[dims.len() - 3], dims[dims.len() - 2]];
        let bytes = self.file.bytes(key).unwrap();
        let one = bytes[index * h * w * 3..(index + 1) * h * w * 3].to_vec();
        image::DynamicImage::ImageRgb8(image::RgbImage::from_raw(w as u32, h as u32, one).unwrap())
    }

    /// Compares `out` (images as floats, `[b, h, w, 3]`) with the run's `image` and
    /// `image_u8`: max abs error ≤ 1e-3 and at least `min_same` identical 8-bit values.
    pub fn check_images(&self, name: &str, out: &[f32], min_same: f64) {
        let err = max_abs(out, &self.values("image"));
        let dims = self.dims("image");
        let ours: Vec<u8> = flux::vae::rgb8_images(out, dims[0], dims[1], dims[2])
            .iter()
            .flat_map(|im| im.as_raw().clone())
            .collect();
        let theirs = self.bytes("image_u8");
        let same =
            ours.iter().zip(&theirs).filter(|(a, b)| a == b).count() as f64 / ours.len() as f64;
        eprintln!(
            "{name}: max abs err {err:.2e}, identical 8-bit values {:.4}%",
            same * 100.0
        );
        assert!(err <= 1e-3, "{name}: {err}");
        assert!(same >= min_same, "{name}: {same}");
    }
}
