//! One memory-mapped `.safetensors` file.

use std::fs::File;
use std::path::{Path, PathBuf};

use burn::tensor::TensorData;
use memmap2::Mmap;
use safetensors::Dtype;
use safetensors::tensor::{Metadata, TensorInfo};

use crate::{Error, Result};

/// A `.safetensors` file mapped into memory. The header is parsed and validated once (offsets,
/// sizes, total length, so a truncated file is rejected here); tensor bytes are read straight
/// from the map when asked for, so opening a 24 GB file costs no memory.
pub struct SafetensorsFile {
    path: PathBuf,
    mmap: Mmap,
    data_start: usize,
    metadata: Metadata,
    names: Vec<String>,
}

impl std::fmt::Debug for SafetensorsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafetensorsFile")
            .field("path", &self.path)
            .field("tensors", &self.metadata.tensors().len())
            .finish()
    }
}

impl SafetensorsFile {
    /// Maps and validates `path`.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be opened, [`Error::Corrupt`] if it is not a complete,
    /// well-formed safetensors file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let io = |source| Error::Io {
            path: path.clone(),
            source,
        };
        let file = File::open(&path).map_err(io)?;
        // SAFETY: the map is read-only; we never hand out references that outlive `self`, and a
        // checkpoint being rewritten while we read it is outside what any loader can guard against
        // (the same contract as every mmap-based safetensors reader).
        #[allow(unsafe_code)]
        let mmap = unsafe { Mmap::map(&file) }.map_err(io)?;
        let (header_len, metadata) =
            safetensors::SafeTensors::read_metadata(&mmap).map_err(|e| Error::Corrupt {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        let names = metadata.offset_keys();
        Ok(Self {
            path,
            mmap,
            data_start: 8 + header_len,
            metadata,
            names,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Names of all tensors in the file.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }

    /// The header's free-form `__metadata__` string map (e.g. diffusers' LoRA adapter
    /// configs), if present.
    pub fn user_metadata(&self) -> Option<&std::collections::HashMap<String, String>> {
        self.metadata.metadata().as_ref()
    }

    /// Dtype and shape of `name`, if present.
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.metadata.info(name)
    }

    /// The raw little-endian bytes of `name` (borrowed from the map).
    pub fn bytes(&self, name: &str) -> Option<&[u8]> {
        let info = self.metadata.info(name)?;
        let (s, e) = info.data_offsets;
        // Offsets were validated against the file length when the header was read.
        self.mmap.get(self.data_start + s..self.data_start + e)
    }

    /// Gives the pages of `name`'s bytes back to the kernel after they were read
    /// ([`flux_gguf::release_pages`]).
    pub(crate) fn release(&self, name: &str) {
        if let Some(bytes) = self.bytes(name) {
            flux_gguf::release_pages(&self.mmap, bytes);
        }
    }

    /// Reads `key` as [`TensorData`]: F32, F16 and BF16 as stored, F64 and the fp8 formats
    /// (F8_E4M3, F8_E5M2) widened to f32.
    ///
    /// # Errors
    /// [`Error::MissingKeys`] if absent, [`Error::UnsupportedDtype`] for non-float dtypes.
    pub(crate) fn data(&self, key: &str) -> Result<TensorData> {
        let missing = || Error::MissingKeys(vec![key.to_string()]);
        let info = self.info(key).ok_or_else(missing)?;
        let bytes = self.bytes(key).ok_or_else(missing)?;
        let shape = info.shape.clone();
        let data = match info.dtype {
            Dtype::F32 => TensorData::new(le_words(bytes, f32::from_le_bytes), shape),
            Dtype::F16 => TensorData::new(le_words(bytes, half::f16::from_le_bytes), shape),
            Dtype::BF16 => TensorData::new(le_words(bytes, half::bf16::from_le_bytes), shape),
            Dtype::F64 => TensorData::new(
                le_words(bytes, |b: [u8; 8]| f64::from_le_bytes(b) as f32),
                shape,
            ),
            Dtype::F8_E4M3 => TensorData::new(
                bytes
                    .iter()
                    .map(|&b| float8::F8E4M3::from_bits(b).to_f32())
                    .collect::<Vec<f32>>(),
                shape,
            ),
            Dtype::F8_E5M2 => TensorData::new(
                bytes
                    .iter()
                    .map(|&b| float8::F8E5M2::from_bits(b).to_f32())
                    .collect::<Vec<f32>>(),
                shape,
            ),
            other => {
                return Err(Error::UnsupportedDtype {
                    key: key.to_string(),
                    dtype: format!("{other:?}"),
                });
            }
        };
        Ok(data)
    }
}

/// Decodes little-endian words of `N` bytes (an aligned copy: the map gives no alignment).
pub(crate) fn le_words<const N: usize, T>(bytes: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
    bytes
        .chunks_exact(N)
        .map(|c| f(c.try_into().expect("chunks_exact yields N bytes")))
        .collect()
}
