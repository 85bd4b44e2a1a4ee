//! One memory-mapped `.safetensors` file.

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
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
}
