//! Helpers: small safetensors files and fixed inputs.

use std::path::{Path, PathBuf};

use flux_io::{KeyMap, Source};

pub use flux_testkit::{ramp, write_safetensors as write};

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
