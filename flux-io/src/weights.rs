//! A checkpoint: one safetensors or GGUF file, or a folder of shards, seen as one map of named
//! tensors.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use burn::tensor::TensorData;

use flux_gguf::GgufFile;

use crate::checkpoint::read_json;
use crate::stored::{Raw, TensorMeta};
use crate::{Error, Result, SafetensorsFile, gguf_tensors};

/// One file of a checkpoint.
#[derive(Debug)]
enum StoredFile {
    Safetensors(SafetensorsFile),
    Gguf(GgufFile),
}

impl StoredFile {
    fn open(path: &Path) -> Result<Self> {
        let is_gguf = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
        Ok(if is_gguf {
            Self::Gguf(GgufFile::open(path)?)
        } else {
            Self::Safetensors(SafetensorsFile::open(path)?)
        })
    }

    fn path(&self) -> &Path {
        match self {
            Self::Safetensors(f) => f.path(),
            Self::Gguf(f) => f.path(),
        }
    }

    fn names(&self) -> Vec<&str> {
        match self {
            Self::Safetensors(f) => f.names().collect(),
            Self::Gguf(f) => f.tensors().map(|t| t.name()).collect(),
        }
    }

    fn meta(&self, key: &str) -> Option<TensorMeta> {
        match self {
            Self::Safetensors(f) => f.info(key).map(|info| TensorMeta {
                dtype: format!("{:?}", info.dtype),
                shape: info.shape.clone(),
            }),
            Self::Gguf(f) => gguf_tensors::meta(f, key),
        }
    }
}

/// All tensors of a checkpoint, memory-mapped. Names are the file's own (no prefix stripping);
/// [`Weights::keys`] lists them in a stable order.
#[derive(Debug)]
pub struct Weights {
    files: Vec<StoredFile>,
    /// tensor name -> index into `files`.
    index: BTreeMap<String, usize>,
}

impl Weights {
    /// Opens `path`: a `.safetensors` or `.gguf` file, or a folder. In a folder, a
    /// `*.safetensors.index.json` (diffusers / transformers shards) names the files to use;
    /// without one, every `*.safetensors` file in the folder is opened.
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::Corrupt`] for a bad safetensors file, [`Error::Gguf`] for a bad
    /// GGUF file, [`Error::NoWeights`] for a folder without weights, [`Error::BadIndex`] for a
    /// broken shard index, [`Error::DuplicateKey`] when two shards hold the same tensor.
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
        let files = files
            .iter()
            .map(|p| StoredFile::open(p))
            .collect::<Result<Vec<_>>>()?;
        Self::gather(files)
    }

    /// Gathers opened files into one map ([`Error::DuplicateKey`] when two hold one name).
    fn gather(files: Vec<StoredFile>) -> Result<Self> {
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

    /// The value of `key` in a safetensors file's `__metadata__` (the first file that has it).
    pub fn user_metadata(&self, key: &str) -> Option<&str> {
        self.files.iter().find_map(|f| match f {
            StoredFile::Safetensors(f) => f.user_metadata()?.get(key).map(String::as_str),
            StoredFile::Gguf(_) => None,
        })
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
        self.files.iter().map(StoredFile::path)
    }

    /// Stored type and shape of `key`.
    pub fn meta(&self, key: &str) -> Option<TensorMeta> {
        self.files[*self.index.get(key)?].meta(key)
    }

    /// The stored shape of `key`.
    ///
    /// # Errors
    /// [`Error::MissingKeys`] naming it when absent.
    pub fn shape(&self, key: &str) -> Result<Vec<usize>> {
        self.meta(key)
            .map(|m| m.shape)
            .ok_or_else(|| Error::MissingKeys(vec![key.to_string()]))
    }

    /// How many consecutive groups `{prefix}0.`, `{prefix}1.`, ... the checkpoint holds (the
    /// layers of a stack, e.g. `encoder.block.`).
    pub fn count_indexed(&self, prefix: &str) -> usize {
        let mut n = 0;
        while self
            .index
            .range(format!("{prefix}{n}.")..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(&format!("{prefix}{n}.")))
        {
            n += 1;
        }
        n
    }

    /// Reads `key` into host memory as [`TensorData`], one tensor at a time (the map itself
    /// stays on disk). safetensors: F32, F16 and BF16 as stored (burn converts to the device's
    /// float type when the tensor is created), F64 and the fp8 formats (F8_E4M3, F8_E5M2)
    /// widened to f32. GGUF: F32, F16, BF16 as stored, the block-quantized types dequantized to
    /// f32, reshaped to `comfy.gguf.orig_shape` when the file records one.
    ///
    /// # Errors
    /// [`Error::MissingKeys`] if absent, [`Error::UnsupportedDtype`] for non-float types.
    pub fn data(&self, key: &str) -> Result<TensorData> {
        let missing = || Error::MissingKeys(vec![key.to_string()]);
        match &self.files[*self.index.get(key).ok_or_else(missing)?] {
            StoredFile::Safetensors(file) => file.data(key),
            StoredFile::Gguf(file) => gguf_tensors::data(file, key),
        }
    }

    /// Gives `key`'s pages in the memory map back to the kernel: the loader calls it once it
    /// has copied the tensor, so a checkpoint is not resident twice while it loads (and
    /// converters reading a whole file tensor by tensor stay at one tensor's memory). Reading
    /// `key` again still works (the pages fault back in from the file).
    pub fn release(&self, key: &str) {
        match self.index.get(key).map(|&i| &self.files[i]) {
            Some(StoredFile::Safetensors(file)) => file.release(key),
            Some(StoredFile::Gguf(file)) => file.release(key),
            None => {}
        }
    }

    /// The stored bytes of `key` as they are in the file (no conversion), with their encoding
    /// and stored shape; `None` if absent.
    pub fn raw(&self, key: &str) -> Option<Raw<'_>> {
        match &self.files[*self.index.get(key)?] {
            StoredFile::Safetensors(file) => {
                let info = file.info(key)?;
                Some(Raw::Safetensors {
                    dtype: info.dtype,
                    bytes: file.bytes(key)?,
                    shape: info.shape.clone(),
                })
            }
            StoredFile::Gguf(file) => {
                let info = file.tensor(key)?;
                Some(Raw::Gguf {
                    ty: info.ggml_type()?,
                    bytes: file.tensor_bytes(key)?,
                    shape: info.shape().to_vec(),
                })
            }
        }
    }

    /// `general.architecture` of the checkpoint's GGUF file, if it is one (`"flux"` for
    /// city96's and stable-diffusion.cpp's FLUX files).
    pub fn gguf_architecture(&self) -> Option<&str> {
        self.files.iter().find_map(|f| match f {
            StoredFile::Gguf(file) => file.architecture(),
            StoredFile::Safetensors(_) => None,
        })
    }

    /// Checks that a GGUF checkpoint is of one of the `accepted` architectures (a safetensors
    /// checkpoint, which records none, passes).
    ///
    /// # Errors
    /// [`Error::UnknownLayout`] naming the file's architecture and `model`, what was expected.
    pub fn expect_gguf_architecture(&self, accepted: &[&str], model: &str) -> Result<()> {
        match self.gguf_architecture() {
            Some(arch) if !accepted.contains(&arch) => Err(Error::UnknownLayout(format!(
                "a GGUF file of architecture `{arch}`, not a {model} (`{}`)",
                accepted.join("`, `")
            ))),
            _ => Ok(()),
        }
    }
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
    let parsed: Index = read_json(index).map_err(|e| match e {
        Error::BadConfig { reason, .. } => bad(reason),
        other => other,
    })?;
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
