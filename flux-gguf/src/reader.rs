//! [`GgufFile`]: a memory-mapped, validated GGUF file.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::dequant::dequantize_into;
use crate::error::GgufError;
use crate::parse::parse;
use crate::tensor::GgufTensorInfo;
use crate::value::MetadataValue;

/// A GGUF file (version 2 or 3), memory-mapped and validated on open.
///
/// [`open`](Self::open) checks the whole header, all metadata and every
/// tensor info, and that every tensor's bytes lie inside the file at an
/// aligned offset. Tensors stored in a ggml type this module cannot decode
/// (IQ*, Q8_1, TQ*, integer types, ...) do not stop the file from opening, so
/// it can still be inspected; [`check_supported`](Self::check_supported)
/// reports the first such tensor and [`dequantize`](Self::dequantize) fails
/// for it. A type id gguf-py does not know at all is rejected on open, since
/// its byte size and therefore its bounds cannot be checked.
///
/// The file must not be modified by anyone while it is open: its bytes are
/// borrowed straight from the memory map.
pub struct GgufFile {
    path: PathBuf,
    map: Mmap,
    version: u32,
    metadata: Vec<(String, MetadataValue)>,
    metadata_index: HashMap<String, usize>,
    tensors: Vec<GgufTensorInfo>,
    tensor_index: HashMap<String, usize>,
    alignment: u64,
    data_start: u64,
}

impl GgufFile {
    /// Opens, maps and validates the GGUF file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, GgufError> {
        let path = path.as_ref().to_path_buf();
        let io = |action, source| GgufError::Io {
            path: path.clone(),
            action,
            source,
        };
        let file = File::open(&path).map_err(|e| io("open", e))?;
        // SAFETY: the map is read-only and lives as long as `GgufFile`. It is
        // only sound if no process truncates or rewrites the file while it is
        // mapped; that is a documented requirement of `GgufFile`, the same one
        // every memory-mapping model loader has.
        #[allow(unsafe_code)]
        let map = unsafe { Mmap::map(&file) }.map_err(|e| io("map into memory", e))?;
        let parsed = parse(&path, &map)?;
        let index = |names: Vec<&String>| -> HashMap<String, usize> {
            names
                .into_iter()
                .enumerate()
                .map(|(i, n)| (n.clone(), i))
                .collect()
        };
        let metadata_index = index(parsed.metadata.iter().map(|(k, _)| k).collect());
        let tensor_index = index(parsed.tensors.iter().map(|t| &t.name).collect());
        Ok(GgufFile {
            path,
            map,
            version: parsed.version,
            metadata: parsed.metadata,
            metadata_index,
            tensors: parsed.tensors,
            tensor_index,
            alignment: parsed.alignment,
            data_start: parsed.data_start,
        })
    }

    /// The path the file was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The GGUF format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The data-section alignment (`general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// File offset where the tensor data section starts.
    pub fn data_start(&self) -> u64 {
        self.data_start
    }

    /// The metadata value stored under `key`.
    pub fn metadata(&self, key: &str) -> Option<&MetadataValue> {
        self.metadata_index.get(key).map(|&i| &self.metadata[i].1)
    }

    /// All metadata keys, in file order.
    pub fn metadata_keys(&self) -> impl Iterator<Item = &str> {
        self.metadata.iter().map(|(k, _)| k.as_str())
    }

    /// `general.architecture` (`"flux"` for FLUX files), if present and a string.
    /// Opening does not check it: the caller decides which architectures it accepts.
    pub fn architecture(&self) -> Option<&str> {
        self.metadata("general.architecture")
            .and_then(MetadataValue::as_str)
    }

    /// All tensors, in file order.
    pub fn tensors(&self) -> impl Iterator<Item = &GgufTensorInfo> {
        self.tensors.iter()
    }

    /// Number of tensors.
    pub fn tensor_count(&self) -> usize {
        self.tensors.len()
    }

    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The encoded bytes of tensor `name`, borrowed from the memory map.
    pub fn tensor_bytes(&self, name: &str) -> Option<&[u8]> {
        self.tensor(name).and_then(|t| self.bytes_of(t))
    }

    /// Gives the pages of `name`'s bytes back to the kernel after they were read
    /// ([`release_pages`](crate::release_pages)): a loader that copies each tensor out of the
    /// map keeps the file from being counted twice in its resident memory.
    pub fn release(&self, name: &str) {
        if let Some(bytes) = self.tensor_bytes(name) {
            crate::pages::release_pages(&self.map, bytes);
        }
    }

    /// Bounds of this file's tensors were validated on open; `get` only
    /// matters for an info that came from another file.
    fn bytes_of(&self, t: &GgufTensorInfo) -> Option<&[u8]> {
        let start = usize::try_from(t.file_offset).ok()?;
        self.map.get(start..start.checked_add(t.n_bytes)?)
    }

    /// Fails with [`GgufError::UnsupportedType`] for the first tensor whose
    /// type this module cannot dequantize.
    pub fn check_supported(&self) -> Result<(), GgufError> {
        match self.tensors.iter().find(|t| t.ggml_type().is_none()) {
            Some(t) => Err(self.unsupported(t)),
            None => Ok(()),
        }
    }

    fn unsupported(&self, t: &GgufTensorInfo) -> GgufError {
        GgufError::UnsupportedType {
            path: self.path.clone(),
            tensor: t.name.clone(),
            type_name: t.type_name(),
        }
    }

    /// Decodes tensor `name` to f32 values in storage order (row-major in the
    /// order of [`GgufTensorInfo::shape`]). Nothing else (such as a
    /// `comfy.gguf.orig_shape.*` entry) is applied.
    pub fn dequantize(&self, name: &str) -> Result<Vec<f32>, GgufError> {
        let t = self.tensor(name).ok_or_else(|| GgufError::Tensor {
            path: self.path.clone(),
            tensor: name.to_string(),
            problem: "no tensor of that name in the file".into(),
        })?;
        let mut out = vec![0.0f32; t.n_elements];
        self.dequantize_tensor_into(t, &mut out)?;
        Ok(out)
    }

    /// Decodes tensor `t` (from [`tensors`](Self::tensors) or
    /// [`tensor`](Self::tensor)) into `out`, whose length must be
    /// [`GgufTensorInfo::n_elements`].
    pub fn dequantize_tensor_into(
        &self,
        t: &GgufTensorInfo,
        out: &mut [f32],
    ) -> Result<(), GgufError> {
        let ty = t.ggml_type().ok_or_else(|| self.unsupported(t))?;
        let bad = |problem: String| GgufError::Tensor {
            path: self.path.clone(),
            tensor: t.name.clone(),
            problem,
        };
        let bytes = self
            .bytes_of(t)
            .ok_or_else(|| bad("this tensor info does not belong to this file".into()))?;
        dequantize_into(ty, bytes, out).map_err(|e| bad(e.to_string()))
    }
}

impl fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("bytes", &self.map.len())
            .field("metadata_entries", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}
