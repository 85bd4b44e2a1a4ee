//! A checkpoint: one safetensors file, or a folder of shards, seen as one map of named tensors.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use burn::tensor::TensorData;
use safetensors::Dtype;

use super::SafetensorsFile;
use crate::{Error, Result};

/// A stored tensor's description, before any data is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorMeta {
    /// The dtype stored in the file.
    pub dtype: Dtype,
    /// The stored shape (PyTorch convention).
    pub shape: Vec<usize>,
}

/// All tensors of a checkpoint, memory-mapped. Names are the file's own (no prefix stripping);
/// [`Weights::keys`] lists them in a stable order.
#[derive(Debug)]
pub struct Weights {
    files: Vec<SafetensorsFile>,
    /// tensor name -> index into `files`.
    index: BTreeMap<String, usize>,
}

impl Weights {
    /// Opens `path`: a `.safetensors` file, or a folder. In a folder, a
    /// `*.safetensors.index.json` (diffusers / transformers shards) names the files to use;
    /// without one, every `*.safetensors` file in the folder is opened.
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::Corrupt`] for a bad file, [`Error::NoWeights`] for a folder without
    /// weights, [`Error::BadIndex`] for a broken shard index, [`Error::DuplicateKey`] when two
    /// shards hold the same tensor.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let meta = std::fs::metadata(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let files = if meta.is_dir() {
            shard_files(path)?
        } else {
            vec![path.to_path_buf()]
        };
        Self::from_files(
            files
                .iter()
                .map(SafetensorsFile::open)
                .collect::<Result<Vec<_>>>()?,
        )
    }

    /// Gathers already opened files into one map.
    ///
    /// # Errors
    /// [`Error::DuplicateKey`] when two files hold the same tensor name.
    pub fn from_files(files: Vec<SafetensorsFile>) -> Result<Self> {
        let mut index: BTreeMap<String, usize> = BTreeMap::new();
        for (i, file) in files.iter().enumerate() {
            for name in file.names() {
                if let Some(&j) = index.get(name) {
                    return Err(Error::DuplicateKey {
                        key: name.to_string(),
                        first: files[j].path().to_path_buf(),
                        second: file.path().to_path_buf(),
                    });
                }
                index.insert(name.to_string(), i);
            }
        }
        Ok(Self { files, index })
    }

    /// All tensor names, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether the checkpoint holds no tensor at all.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Whether `key` is stored.
    pub fn contains(&self, key: &str) -> bool {
        self.index.contains_key(key)
    }

    /// The files this checkpoint was read from.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(SafetensorsFile::path)
    }

    /// Dtype and shape of `key`.
    pub fn meta(&self, key: &str) -> Option<TensorMeta> {
        let info = self.files[*self.index.get(key)?].info(key)?;
        Some(TensorMeta {
            dtype: info.dtype,
            shape: info.shape.clone(),
        })
    }

    /// Reads `key` into host memory as [`TensorData`], keeping F32, F16 and BF16 as stored (burn
    /// converts to the device's float type when the tensor is created) and widening F64 and the
    /// fp8 formats (F8_E4M3, F8_E5M2) to f32. One tensor at a time: the map itself stays on disk.
    ///
    /// # Errors
    /// [`Error::MissingKeys`] if absent, [`Error::UnsupportedDtype`] for non-float dtypes.
    pub fn data(&self, key: &str) -> Result<TensorData> {
        let missing = || Error::MissingKeys(vec![key.to_string()]);
        let file = &self.files[*self.index.get(key).ok_or_else(missing)?];
        let info = file.info(key).ok_or_else(missing)?;
        let bytes = file.bytes(key).ok_or_else(missing)?;
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
fn le_words<const N: usize, T>(bytes: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
    bytes
        .chunks_exact(N)
        .map(|c| f(c.try_into().expect("chunks_exact yields N bytes")))
        .collect()
}

/// The shard files of a folder: those named by an index file, else every `*.safetensors`.
fn shard_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let io = |source| Error::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    let is_file_named = |p: &PathBuf, suffix: &str| {
        p.is_file()
            && p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(suffix))
    };
    if let Some(index) = entries
        .iter()
        .find(|p| is_file_named(p, ".safetensors.index.json"))
    {
        return index_files(index, dir);
    }
    let files: Vec<PathBuf> = entries
        .into_iter()
        .filter(|p| is_file_named(p, ".safetensors"))
        .collect();
    if files.is_empty() {
        return Err(Error::NoWeights(dir.to_path_buf()));
    }
    Ok(files)
}

/// Reads a shard index (`{"weight_map": {"tensor": "file", ...}}`) and returns its files in order.
fn index_files(index: &Path, dir: &Path) -> Result<Vec<PathBuf>> {
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: HashMap<String, String>,
    }
    let bad = |reason: String| Error::BadIndex {
        path: index.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(index).map_err(|source| Error::Io {
        path: index.to_path_buf(),
        source,
    })?;
    let parsed: Index = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let mut names: Vec<&String> = parsed.weight_map.values().collect();
    names.sort();
    names.dedup();
    if names.is_empty() {
        return Err(bad("weight_map is empty".into()));
    }
    names
        .into_iter()
        .map(|name| {
            let p = dir.join(name);
            if p.is_file() {
                Ok(p)
            } else {
                Err(bad(format!("shard `{name}` is not in {}", dir.display())))
            }
        })
        .collect()
}
