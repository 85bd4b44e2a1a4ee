//! The facade's own parts: PNG metadata, locating model files, the hub at the network boundary.

use flux::{Error, ImageMetadata, ModelFiles, read_png_text, save_png};
use image::RgbImage;

#[test]
fn png_keeps_pixels_and_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.png");
    let image = RgbImage::from_fn(48, 32, |x, y| image::Rgb([x as u8 * 5, y as u8 * 7, 200]));
    let mut meta = ImageMetadata {
        prompt: "a café in Kyoto, 夜 🌙".into(),
        seed: 42,
        steps: 28,
        guidance: Some(3.5),
        model: "FLUX.1-dev".into(),
        width: 48,
        height: 32,
        quantization: Some("q4_0".into()),
        loras: vec![
            ("style.safetensors".into(), 0.8),
            ("turbo:v2.safetensors".into(), 1.0),
        ],
        negative_prompt: Some(("blurry".into(), 4.0)),
        tool: Some("fill".into()),
        tool_inputs: vec![("mask", "mask.png".into())],
        sampler: Some("dpmpp-2m".into()),
        sigmas: Some("beta".into()),
        cache: Some("teacache:0.4".into()),
    };
    meta.record_cache_counts(flux::CacheStats {
        computed: 12,
        reused: 16,
    });
    save_png(&image, &path, &meta).unwrap();
    let back = image::open(&path).unwrap().to_rgb8();
    assert_eq!(back, image);
    let text = read_png_text(&path).unwrap();
    let get = |k: &str| {
        text.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("prompt"), Some("a café in Kyoto, 夜 🌙"));
    assert_eq!(get("seed"), Some("42"));
    assert_eq!(get("steps"), Some("28"));
    assert_eq!(get("guidance"), Some("3.5"));
    assert_eq!(get("model"), Some("FLUX.1-dev"));
    assert_eq!(get("size"), Some("48x32"));
    assert_eq!(get("quantization"), Some("q4_0"));
    assert_eq!(get("negative_prompt"), Some("blurry"));
    assert_eq!(get("tool"), Some("fill"));
    assert_eq!(get("mask"), Some("mask.png"));
    assert_eq!(get("true_cfg"), Some("4"));
    assert_eq!(get("sampler"), Some("dpmpp-2m"));
    assert_eq!(get("sigmas"), Some("beta"));
    assert_eq!(get("cache"), Some("teacache:0.4 (computed 12, reused 16)"));
    assert_eq!(
        get("loras"),
        Some("style.safetensors:0.8, turbo:v2.safetensors:1")
    );
}

#[test]
fn png_to_unwritable_path_is_an_error() {
    let image = RgbImage::new(16, 16);
    let meta = ImageMetadata {
        prompt: "x".into(),
        seed: 0,
        steps: 1,
        guidance: None,
        model: "m".into(),
        width: 16,
        height: 16,
        quantization: None,
        loras: Vec::new(),
        negative_prompt: None,
        tool: None,
        tool_inputs: Vec::new(),
        sampler: None,
        sigmas: None,
        cache: None,
    };
    let err = save_png(&image, "/nonexistent-dir/out.png", &meta).unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent-dir/out.png"),
        "{err}"
    );
}

#[test]
fn missing_model_dir_says_what_to_download() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("vae")).unwrap();
    let err = ModelFiles::from_dir(dir.path()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::MissingFiles { .. }), "{msg}");
    for part in [
        "transformer",
        "text_encoder",
        "text_encoder_2",
        "tokenizer_2/tokenizer.json",
        "tokenizer/vocab.json",
    ] {
        assert!(msg.contains(part), "{msg} should name {part}");
    }
    assert!(
        !msg.contains("/vae"),
        "vae exists and must not be listed: {msg}"
    );
    assert!(msg.contains("huggingface-cli download"), "{msg}");
    let err = ModelFiles::from_dir("/nonexistent/FLUX.1-dev").unwrap_err();
    assert!(err.to_string().contains("/nonexistent/FLUX.1-dev"), "{err}");
}

#[test]
fn bfl_files_at_the_top_are_found() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for sub in ["text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2"] {
        std::fs::create_dir(d.join(sub)).unwrap();
    }
    for file in [
        "flux1-schnell.safetensors",
        "ae.safetensors",
        "tokenizer/vocab.json",
        "tokenizer/merges.txt",
        "tokenizer_2/tokenizer.json",
    ] {
        std::fs::write(d.join(file), b"").unwrap();
    }
    let files = ModelFiles::from_dir(d).unwrap();
    assert_eq!(files.transformer, d.join("flux1-schnell.safetensors"));
    assert_eq!(files.vae, d.join("ae.safetensors"));
    files.check().unwrap();
}

/// The real download code, up to the network boundary: with nothing listening at the endpoint
/// the error names the repository and file and says what to do, instead of hanging.
#[cfg(feature = "hub")]
#[test]
fn hub_download_offline_is_a_clear_error() {
    let cache = tempfile::tempdir().unwrap();
    let options = flux::hub::HubOptions {
        endpoint: Some("http://127.0.0.1:9".into()),
        cache_dir: Some(cache.path().to_path_buf()),
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let err = flux::hub::download_with("black-forest-labs/FLUX.1-schnell", &options).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Hub { .. }), "{msg}");
    assert!(
        msg.contains("black-forest-labs/FLUX.1-schnell") && msg.contains("model_index.json"),
        "{msg}"
    );
    assert!(msg.contains("offline?"), "{msg}");
    assert!(
        started.elapsed().as_secs() < 30,
        "took {:?}",
        started.elapsed()
    );
}
