//! OpenAI's images API shapes (requests, responses, errors) and our extensions.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

/// `POST /v1/images/generations` (and `POST /v1/jobs`): OpenAI's body plus our extensions.
#[derive(Debug, Clone, Deserialize)]
pub struct GenerationRequest {
    /// What to draw.
    pub prompt: String,
    /// Images to make (OpenAI's `n`).
    #[serde(default = "one")]
    pub n: usize,
    /// `"WxH"`, sides multiples of 16 (default `1024x1024`).
    #[serde(default)]
    pub size: Option<String>,
    /// `b64_json` (default) or `url`.
    #[serde(default)]
    pub response_format: Option<String>,
    /// OpenAI's `model` (accepted and checked against the loaded one when given).
    #[serde(default)]
    pub model: Option<String>,
    /// OpenAI's `user` (accepted, ignored).
    #[serde(default)]
    pub user: Option<String>,
    /// Extension: seed of the initial noise (default 0).
    #[serde(default)]
    pub seed: Option<u64>,
    /// Extension: sampler steps.
    #[serde(default)]
    pub steps: Option<usize>,
    /// Extension: guidance scale (\[dev\]).
    #[serde(default)]
    pub guidance: Option<f32>,
    /// Extension: negative prompt (acts with `true_cfg` above 1).
    #[serde(default)]
    pub negative_prompt: Option<String>,
    /// Extension: true classifier-free guidance scale.
    #[serde(default)]
    pub true_cfg: Option<f32>,
    /// Extension: per-request LoRA strengths (run-time LoRA mode).
    #[serde(default)]
    pub lora_scales: Option<Vec<f32>>,
    /// Extension: the sampler, `euler` (default) or `dpmpp-2m`.
    #[serde(default)]
    pub sampler: Option<String>,
    /// Extension: the sigma spacing, `flux` (default), `karras`, `exponential` or `beta`.
    #[serde(default)]
    pub sigmas: Option<String>,
    /// Extension: a step cache, `first-block:T`, `teacache:T` or `magcache:T`.
    #[serde(default)]
    pub cache: Option<String>,
    /// Any other field: OpenAI's that do not apply here are accepted and ignored
    /// (`IGNORED_FIELDS`); anything else is an error (a misspelt extension must not be
    /// silently dropped).
    #[serde(flatten)]
    pub other: std::collections::BTreeMap<String, serde_json::Value>,
}

/// OpenAI image fields accepted and ignored.
pub const IGNORED_FIELDS: &[&str] = &[
    "quality",
    "style",
    "background",
    "moderation",
    "output_format",
    "output_compression",
    "partial_images",
    "stream",
];

impl GenerationRequest {
    /// The first field that is neither ours nor OpenAI's.
    pub fn unknown_field(&self) -> Option<&str> {
        self.other
            .keys()
            .map(String::as_str)
            .find(|k| !IGNORED_FIELDS.contains(k))
    }
}

fn one() -> usize {
    1
}

/// How images come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFormat {
    /// Base64 PNG in the JSON.
    B64Json,
    /// A URL of this server (`/v1/images/{file}`).
    Url,
}

impl ResponseFormat {
    /// OpenAI's names.
    pub fn parse(value: Option<&str>) -> Result<Self, ApiError> {
        match value {
            None | Some("b64_json") => Ok(Self::B64Json),
            Some("url") => Ok(Self::Url),
            Some(other) => Err(ApiError::invalid(
                "response_format",
                format!("response_format `{other}` is not one of b64_json, url"),
            )),
        }
    }
}

/// One image of a response: exactly one of the two fields.
#[derive(Debug, Clone, Serialize)]
pub struct ImageData {
    /// Base64 PNG.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub b64_json: Option<String>,
    /// Where to fetch it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// OpenAI's images response.
#[derive(Debug, Clone, Serialize)]
pub struct ImagesResponse {
    /// Unix seconds.
    pub created: u64,
    /// The images.
    pub data: Vec<ImageData>,
}

/// An error answered as OpenAI answers them: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// What went wrong, for a person.
    pub message: String,
    /// OpenAI's `type`.
    pub kind: &'static str,
    /// The offending parameter, if one.
    pub param: Option<&'static str>,
    /// A machine-readable code.
    pub code: Option<&'static str>,
    /// Seconds to wait (429).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// 400 for a bad parameter.
    pub fn invalid(param: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: Some(param),
            code: None,
            retry_after: None,
        }
    }

    /// A 4xx/5xx of another kind.
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
            retry_after: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        });
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(seconds),
            );
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// `"WxH"` into pixels: positive multiples of 16 up to `max` per side.
pub fn parse_size(size: Option<&str>, max: usize) -> Result<(usize, usize), ApiError> {
    let Some(size) = size else {
        return Ok((1024, 1024));
    };
    let bad = |m: String| ApiError::invalid("size", m);
    let (w, h) = size
        .split_once(['x', 'X'])
        .ok_or_else(|| bad(format!("size `{size}` is not WIDTHxHEIGHT")))?;
    let side = |v: &str| -> Result<usize, ApiError> {
        let v: usize = v
            .trim()
            .parse()
            .map_err(|_| bad(format!("size `{size}` is not WIDTHxHEIGHT")))?;
        if v == 0 || !v.is_multiple_of(16) || v > max {
            return Err(bad(format!(
                "size `{size}`: each side must be a positive multiple of 16, at most {max}"
            )));
        }
        Ok(v)
    };
    Ok((side(w)?, side(h)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_checked() {
        assert_eq!(parse_size(None, 2048).unwrap(), (1024, 1024));
        assert_eq!(parse_size(Some("512x768"), 2048).unwrap(), (512, 768));
        for bad in ["512", "500x512", "0x16", "4096x4096", "ax16", "16x"] {
            assert!(parse_size(Some(bad), 2048).is_err(), "{bad}");
        }
    }
}
