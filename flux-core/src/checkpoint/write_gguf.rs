//! [`write_gguf`]: a FLUX transformer checkpoint quantized once into a GGUF file as city96's
//! converter (ComfyUI-GGUF) writes them, for ComfyUI-GGUF, stable-diffusion.cpp and us.

use std::path::Path;

use flux_gguf::{GgmlType, GgufWriter, MetadataValue, f32_to_f16_bits, quantize};
use flux_io::{Checkpoint, Weights};

use super::CheckpointLayout;
use crate::{QuantType, Result};

/// What [`write_gguf`] wrote.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GgufSummary {
    /// Tensors written, per stored type name (`"Q8_0"`, `"F16"`, `"F32"`).
    pub tensors: Vec<(String, usize)>,
    /// Bytes of tensor data written.
    pub data_bytes: u64,
    /// Keys of the source left out: tensors of other models in a ComfyUI all-in-one file,
    /// and fp8 `scale_weight`s (applied to their weights).
    pub skipped: usize,
}

/// How city96's converter stores one tensor: 1-d tensors and those of at most 1024 values in
/// F32, those whose rows are not whole blocks in F16, the rest in `ty`.
fn stored_type(shape: &[usize], ty: GgmlType) -> GgmlType {
    let n: usize = shape.iter().product();
    if shape.len() == 1 || n <= 1024 {
        GgmlType::F32
    } else if !shape[shape.len() - 1].is_multiple_of(ty.block_size()) {
        GgmlType::F16
    } else {
        ty
    }
}

/// Writes the FLUX transformer at `src` (a BFL or ComfyUI checkpoint: `.safetensors`, fp8
/// with `scale_weight`s, or another `.gguf`) to `dst` as a GGUF of architecture `flux` with
/// BFL key names, quantized to `ty` with gguf-py's arithmetic (Q4_K with ggml's), one tensor
/// at a time (memory: one tensor, not the model; its rows quantized on every core). The file is written under `<dst>.partial` and renamed when
/// complete.
///
/// # Errors
/// [`crate::Error::Load`]: unreadable source, a diffusers-layout source (convert its keys to
/// BFL's first: `transformer_blocks.N.attn.to_q` has no GGUF name), [`QuantType::Fp8`] (GGUF
/// has no fp8 type), or the file cannot be written.
pub fn write_gguf(
    src: impl AsRef<Path>,
    dst: impl AsRef<Path>,
    ty: QuantType,
) -> Result<GgufSummary> {
    let unsupported = |reason: String| flux_io::Error::UnknownLayout(reason);
    let Some(ggml) = ty.ggml_type() else {
        return Err(unsupported(
            "GGUF has no fp8 type: choose q8_0, q5_1, q5_0, q4_1, q4_k or q4_0".into(),
        )
        .into());
    };
    let checkpoint = Checkpoint::open(src, Some("transformer"))?;
    let weights = checkpoint.weights();
    let prefix = match CheckpointLayout::detect(weights)? {
        CheckpointLayout::Bfl { prefix } => prefix,
        CheckpointLayout::Diffusers => {
            return Err(unsupported(
                "a diffusers-layout transformer: GGUF files use BFL's key names; write one from \
                 the BFL release (flux1-dev.safetensors) or a ComfyUI checkpoint"
                    .into(),
            )
            .into());
        }
    };
    let mut summary = GgufSummary::default();
    let mut plan: Vec<(String, String, GgmlType, Vec<usize>)> = Vec::new();
    for key in weights.keys() {
        let Some(name) = key.strip_prefix(prefix.as_str()) else {
            summary.skipped += 1;
            continue;
        };
        if name.ends_with(".scale_weight") {
            summary.skipped += 1;
            continue;
        }
        let shape = weights.shape(key)?;
        plan.push((
            key.to_string(),
            name.to_string(),
            stored_type(&shape, ggml),
            shape,
        ));
    }
    let gguf = |e: flux_gguf::GgufError| crate::Error::Load(e.into());
    let mut writer = GgufWriter::new(dst);
    writer
        .add_metadata("general.architecture", MetadataValue::String("flux".into()))
        .map_err(gguf)?;
    writer
        .add_metadata("general.quantization_version", MetadataValue::U32(2))
        .map_err(gguf)?;
    writer
        .add_metadata(
            "general.file_type_name",
            MetadataValue::String(ggml.name().into()),
        )
        .map_err(gguf)?;
    for (_, name, stored, shape) in &plan {
        writer.add_tensor_info(name, *stored, shape).map_err(gguf)?;
    }
    let mut data = writer.start_data().map_err(gguf)?;
    for (key, name, stored, shape) in &plan {
        let values = values(weights, key)?;
        let bytes = match stored {
            GgmlType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            GgmlType::F16 => values
                .iter()
                .flat_map(|&v| f32_to_f16_bits(v).to_le_bytes())
                .collect(),
            _ => {
                quantize_rows(*stored, &values, shape.last().copied().unwrap_or(1)).map_err(gguf)?
            }
        };
        summary.data_bytes += bytes.len() as u64;
        data.write_tensor(name, &bytes).map_err(gguf)?;
        match summary.tensors.iter_mut().find(|(t, _)| t == stored.name()) {
            Some((_, n)) => *n += 1,
            None => summary.tensors.push((stored.name().to_string(), 1)),
        }
    }
    data.finish().map_err(gguf)?;
    Ok(summary)
}

/// [`quantize`] on whole rows of `cols` values split over the available cores (the blocks of
/// a row never cross into the next, so the bytes are those of one call).
fn quantize_rows(
    ty: GgmlType,
    values: &[f32],
    cols: usize,
) -> std::result::Result<Vec<u8>, flux_gguf::GgufError> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rows = values.len() / cols.max(1);
    if threads == 1 || rows < 2 * threads || values.len() < 1 << 16 {
        return quantize(ty, values);
    }
    let per = rows.div_ceil(threads) * cols;
    std::thread::scope(|s| {
        let parts: Vec<_> = values
            .chunks(per)
            .map(|part| s.spawn(move || quantize(ty, part)))
            .collect();
        let mut bytes = Vec::new();
        for part in parts {
            bytes.extend(part.join().expect("a quantizing thread panicked")?);
        }
        Ok(bytes)
    })
}

/// `key` in f32, an fp8 weight multiplied by its `scale_weight`.
fn values(weights: &Weights, key: &str) -> Result<Vec<f32>> {
    let bad = |reason: String| flux_io::Error::BadTensor {
        key: key.to_string(),
        reason,
    };
    let values: Vec<f32> = weights
        .data(key)?
        .convert::<f32>()
        .into_vec()
        .map_err(|e| bad(format!("{e:?}")))?;
    // Copied out: the source's pages are not needed again (memory stays at one tensor).
    weights.release(key);
    let scale_key = key
        .strip_suffix(".weight")
        .map(|s| format!("{s}.scale_weight"));
    let values = match scale_key.filter(|k| weights.contains(k)) {
        Some(scale_key) => {
            let scale: Vec<f32> = weights
                .data(&scale_key)?
                .convert::<f32>()
                .into_vec()
                .map_err(|e| bad(format!("{e:?}")))?;
            let &[s] = scale.as_slice() else {
                return Err(
                    bad(format!("`{scale_key}` holds {} values, not 1", scale.len())).into(),
                );
            };
            values.into_iter().map(|v| v * s).collect()
        }
        None => values,
    };
    if !values.iter().all(|v| v.is_finite()) {
        return Err(flux_io::Error::NonFinite(key.to_string()).into());
    }
    Ok(values)
}
