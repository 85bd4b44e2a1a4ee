//! transformers' checkpoint conventions shared by the CLIP and SigLIP loaders.

use flux_io::Checkpoint;
use serde::de::DeserializeOwned;

use crate::Result;

/// The checkpoint's `config.json` as `C`: the tower's own config, or the `section` of a
/// two-tower config that holds it (a `CLIPConfig`'s `text_config`, a `SiglipConfig`'s
/// `vision_config`). `None` when there is no `config.json`.
///
/// # Errors
/// [`flux_io::Error::BadConfig`] naming the file when it does not parse as `C`.
pub(crate) fn tower_config<C: DeserializeOwned>(
    checkpoint: &Checkpoint,
    section: &str,
) -> Result<Option<C>> {
    let Some(json) = checkpoint.config::<serde_json::Value>()? else {
        return Ok(None);
    };
    let json = json.get(section).cloned().unwrap_or(json);
    serde_json::from_value(json).map(Some).map_err(|e| {
        flux_io::Error::BadConfig {
            path: checkpoint.config_path().unwrap_or(checkpoint.path()).into(),
            reason: e.to_string(),
        }
        .into()
    })
}
