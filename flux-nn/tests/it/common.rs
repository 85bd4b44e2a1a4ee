//! Helpers: small safetensors files and fixed inputs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use flux_io::{KeyMap, Source};
use safetensors::tensor::{Dtype, TensorView};

/// A safetensors file of f32 tensors `(name, shape, values)`.
pub fn write(dir: &Path, name: &str, tensors: &[(&str, Vec<usize>, Vec<f32>)]) -> PathBuf {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views: Vec<(&str, TensorView)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((n, s, _), b)| (*n, TensorView::new(Dtype::F32, s.clone(), b).unwrap()))
        .collect();
    let path = dir.join(name);
    safetensors::serialize_to_file(views, None::<HashMap<String, String>>, &path).unwrap();
    path
}

/// Deterministic values in about `[-11, 11] · scale`.
pub fn ramp(n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 37 % 23) as f32 - 11.0) * scale)
        .collect()
}

/// The checkpoint's keys are the parameters' paths.
pub struct Same;

impl KeyMap for Same {
    fn source(&self, path: &str) -> Source {
        Source::Key(path.to_string())
    }
}

/// `tests/fixtures` of flux-gguf.
pub fn gguf_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../flux-gguf/tests/fixtures")
        .join(name)
}
