//! [`GgufWriter`]: writes GGUF v3 files (alignment 32), streaming tensor
//! data one tensor at a time.
//!
//! Writing has two phases. First declare metadata and every tensor's name,
//! type and shape on a [`GgufWriter`]; then [`GgufWriter::start_data`] writes
//! the header and returns a [`GgufDataWriter`] that takes each tensor's
//! encoded bytes in the declared order. Only one tensor's bytes need to be
//! in memory at a time. The file is written under `<path>.partial` and
//! renamed to `path` by [`GgufDataWriter::finish`]; if the data writer is
//! dropped before that, the partial file is removed.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::GgufError;
use crate::parse::{DEFAULT_ALIGNMENT, MAX_DIMS};
use crate::types::GgmlType;
use crate::value::{MetadataValue, encode_str};

/// A tensor declared on a [`GgufWriter`].
#[derive(Clone, Debug)]
struct Planned {
    name: String,
    ty: GgmlType,
    shape: Vec<usize>,
    n_bytes: usize,
    offset: u64,
}

/// Collects metadata and tensor declarations for a new GGUF file.
#[derive(Debug)]
pub struct GgufWriter {
    path: PathBuf,
    metadata: Vec<(String, MetadataValue)>,
    keys: HashSet<String>,
    tensors: Vec<Planned>,
    names: HashSet<String>,
    data_len: u64,
}

impl GgufWriter {
    /// A writer for a file to be created at `path` (nothing is created yet).
    pub fn new(path: impl AsRef<Path>) -> Self {
        GgufWriter {
            path: path.as_ref().to_path_buf(),
            metadata: Vec::new(),
            keys: HashSet::new(),
            tensors: Vec::new(),
            names: HashSet::new(),
            data_len: 0,
        }
    }

    fn err(&self, problem: String) -> GgufError {
        GgufError::Writer {
            path: self.path.clone(),
            problem,
        }
    }

    /// Adds a metadata entry; entries are written in the order added.
    /// `general.alignment`, if given, must be `U32(32)`: this writer always
    /// aligns to 32 bytes.
    pub fn add_metadata(
        &mut self,
        key: &str,
        value: impl Into<MetadataValue>,
    ) -> Result<(), GgufError> {
        let value = value.into();
        if key == "general.alignment" && value != MetadataValue::U32(DEFAULT_ALIGNMENT as u32) {
            return Err(self.err(format!("general.alignment must be U32(32), got {value:?}")));
        }
        if !self.keys.insert(key.to_string()) {
            return Err(self.err(format!("metadata key '{key}' added twice")));
        }
        self.metadata.push((key.to_string(), value));
        Ok(())
    }

    /// Declares a tensor of type `ty` with `shape` in PyTorch order
    /// (1 to 4 dimensions; the last one a whole number of blocks).
    pub fn add_tensor_info(
        &mut self,
        name: &str,
        ty: GgmlType,
        shape: &[usize],
    ) -> Result<(), GgufError> {
        if shape.is_empty() || shape.len() > MAX_DIMS as usize {
            return Err(self.err(format!(
                "tensor '{name}': shape {shape:?} must have 1 to {MAX_DIMS} dimensions"
            )));
        }
        let n_values = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        let n_bytes = match n_values {
            Some(n) if shape[shape.len() - 1].is_multiple_of(ty.block_size()) => ty.bytes_for(n),
            _ => None,
        };
        let Some(n_bytes) = n_bytes else {
            return Err(self.err(format!(
                "tensor '{name}': shape {shape:?} overflows or its last dimension is not a \
                 multiple of the {ty} block size {}",
                ty.block_size()
            )));
        };
        if !self.names.insert(name.to_string()) {
            return Err(self.err(format!("tensor '{name}' declared twice")));
        }
        let offset = self.data_len;
        self.data_len = align(offset + n_bytes as u64);
        self.tensors.push(Planned {
            name: name.to_string(),
            ty,
            shape: shape.to_vec(),
            n_bytes,
            offset,
        });
        Ok(())
    }

    fn header(&self) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(b"GGUF");
        h.extend_from_slice(&3u32.to_le_bytes());
        h.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        h.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            encode_str(key, &mut h);
            value.encode(&mut h);
        }
        for t in &self.tensors {
            encode_str(&t.name, &mut h);
            h.extend_from_slice(&(t.shape.len() as u32).to_le_bytes());
            for &d in t.shape.iter().rev() {
                h.extend_from_slice(&(d as u64).to_le_bytes());
            }
            h.extend_from_slice(&t.ty.id().to_le_bytes());
            h.extend_from_slice(&t.offset.to_le_bytes());
        }
        h.resize(align(h.len() as u64) as usize, 0);
        h
    }

    /// Creates `<path>.partial`, writes the header and tensor infos, and
    /// returns the writer for the tensor data.
    pub fn start_data(self) -> Result<GgufDataWriter, GgufError> {
        let mut partial: OsString = self.path.clone().into_os_string();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        let io = |action, source| GgufError::Io {
            path: partial.clone(),
            action,
            source,
        };
        let file = File::create(&partial).map_err(|e| io("create", e))?;
        let mut data = GgufDataWriter {
            path: self.path.clone(),
            partial: partial.clone(),
            file: Some(BufWriter::with_capacity(1 << 20, file)),
            tensors: self.tensors.clone(),
            next: 0,
        };
        data.write(&self.header())?;
        Ok(data)
    }
}

fn align(n: u64) -> u64 {
    n.div_ceil(DEFAULT_ALIGNMENT) * DEFAULT_ALIGNMENT
}

/// Writes the tensor data of a file started by [`GgufWriter::start_data`].
#[derive(Debug)]
pub struct GgufDataWriter {
    path: PathBuf,
    partial: PathBuf,
    file: Option<BufWriter<File>>,
    tensors: Vec<Planned>,
    next: usize,
}

impl GgufDataWriter {
    fn write(&mut self, bytes: &[u8]) -> Result<(), GgufError> {
        let Some(file) = self.file.as_mut() else {
            return Err(GgufError::Writer {
                path: self.path.clone(),
                problem: "already finished".into(),
            });
        };
        file.write_all(bytes).map_err(|source| GgufError::Io {
            path: self.partial.clone(),
            action: "write",
            source,
        })
    }

    /// Name, type, PyTorch shape and byte size of the tensor whose data is
    /// expected next, or `None` when all have been written.
    pub fn next_tensor(&self) -> Option<(&str, GgmlType, &[usize], usize)> {
        self.tensors
            .get(self.next)
            .map(|t| (t.name.as_str(), t.ty, &t.shape[..], t.n_bytes))
    }

    /// Writes the encoded bytes of tensor `name`, which must be the next one
    /// declared and exactly its declared size.
    pub fn write_tensor(&mut self, name: &str, bytes: &[u8]) -> Result<(), GgufError> {
        let problem = match self.tensors.get(self.next) {
            None => Some(format!(
                "tensor '{name}' written after all declared tensors"
            )),
            Some(t) if t.name != name => Some(format!(
                "tensor '{name}' written where '{}' was declared next",
                t.name
            )),
            Some(t) if t.n_bytes != bytes.len() => Some(format!(
                "tensor '{name}' ({} {:?}) needs {} bytes, got {}",
                t.ty,
                t.shape,
                t.n_bytes,
                bytes.len()
            )),
            Some(_) => None,
        };
        if let Some(problem) = problem {
            return Err(GgufError::Writer {
                path: self.path.clone(),
                problem,
            });
        }
        self.write(bytes)?;
        let pad = align(bytes.len() as u64) as usize - bytes.len();
        self.write(&[0u8; DEFAULT_ALIGNMENT as usize][..pad])?;
        self.next += 1;
        Ok(())
    }

    /// Checks every declared tensor was written, flushes, syncs and renames
    /// the file to its final path.
    pub fn finish(mut self) -> Result<(), GgufError> {
        if let Some((name, ..)) = self.next_tensor() {
            return Err(GgufError::Writer {
                path: self.path.clone(),
                problem: format!("finished before tensor '{name}' was written"),
            });
        }
        let result = self.flush_and_rename();
        if result.is_err() {
            let _ = std::fs::remove_file(&self.partial);
        }
        result
    }

    fn flush_and_rename(&mut self) -> Result<(), GgufError> {
        let io = |action, source| GgufError::Io {
            path: self.partial.clone(),
            action,
            source,
        };
        if let Some(file) = self.file.take() {
            let file = file.into_inner().map_err(|e| io("write", e.into_error()))?;
            file.sync_all().map_err(|e| io("sync", e))?;
        }
        std::fs::rename(&self.partial, &self.path).map_err(|source| GgufError::Io {
            path: self.path.clone(),
            action: "rename the finished file into place",
            source,
        })
    }
}

impl Drop for GgufDataWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            // Unfinished: do not leave a half-written file behind.
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}
