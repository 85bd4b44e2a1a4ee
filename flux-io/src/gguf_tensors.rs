//! GGUF tensors as a checkpoint's tensors: torch-order shapes (ComfyUI-GGUF's
//! `comfy.gguf.orig_shape` applied) and values decoded to [`TensorData`].

use burn::tensor::TensorData;

use flux_gguf::{GgmlType, GgufFile};

use crate::safetensors_file::le_words;
use crate::stored::TensorMeta;
use crate::{Error, Result};

/// The shape a tensor is meant to have: the `comfy.gguf.orig_shape.<name>` entry when the
/// file records one (ComfyUI-GGUF stores some tensors reshaped), else the stored shape.
fn shape(file: &GgufFile, key: &str) -> Option<Result<Vec<usize>>> {
    let info = file.tensor(key)?;
    let Some(orig) = file.metadata(&format!("comfy.gguf.orig_shape.{key}")) else {
        return Some(Ok(info.shape().to_vec()));
    };
    let bad = |reason: String| Error::BadTensor {
        key: key.to_string(),
        reason,
    };
    let dims = orig
        .as_array()
        .and_then(|a| a.to_i64s())
        .ok_or_else(|| bad("comfy.gguf.orig_shape is not an array of integers".into()));
    Some(dims.and_then(|dims| {
        let shape: Vec<usize> = dims
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| bad(format!("orig_shape {dims:?}"))))
            .collect::<Result<_>>()?;
        let n = shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .ok_or_else(|| bad(format!("orig_shape {dims:?} overflows")))?;
        if n != info.n_elements() {
            return Err(bad(format!(
                "orig_shape {shape:?} holds {n} values, the stored tensor {:?} {}",
                info.shape(),
                info.n_elements()
            )));
        }
        Ok(shape)
    }))
}

/// Stored type and shape of `key`.
pub(crate) fn meta(file: &GgufFile, key: &str) -> Option<TensorMeta> {
    let info = file.tensor(key)?;
    Some(TensorMeta {
        dtype: info.type_name(),
        shape: shape(file, key)?.unwrap_or_else(|_| info.shape().to_vec()),
    })
}

/// `key`'s values: F32, F16 and BF16 as stored, block-quantized types dequantized to f32
/// (bit-identical to gguf-py's `dequantize`).
pub(crate) fn data(file: &GgufFile, key: &str) -> Result<TensorData> {
    let missing = || Error::MissingKeys(vec![key.to_string()]);
    let info = file.tensor(key).ok_or_else(missing)?;
    let shape = shape(file, key).ok_or_else(missing)??;
    let bytes = file.tensor_bytes(key).ok_or_else(missing)?;
    let Some(ty) = info.ggml_type() else {
        return Err(Error::UnsupportedDtype {
            key: key.to_string(),
            dtype: format!("GGUF {}", info.type_name()),
        });
    };
    Ok(match ty {
        GgmlType::F32 => TensorData::new(le_words(bytes, f32::from_le_bytes), shape),
        GgmlType::F16 => TensorData::new(le_words(bytes, half::f16::from_le_bytes), shape),
        GgmlType::BF16 => TensorData::new(le_words(bytes, half::bf16::from_le_bytes), shape),
        _ => TensorData::new(file.dequantize(key)?, shape),
    })
}
