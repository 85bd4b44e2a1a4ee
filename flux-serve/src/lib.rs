//! `flux-serve`: FLUX.1 behind OpenAI's images API on one machine.
//!
//! One process keeps the pipeline loaded; one worker thread owns the device and runs one
//! generation at a time from a bounded FIFO queue (a full queue answers 429 with
//! `Retry-After`). Routes:
//!
//! - `POST /v1/images/generations`, `POST /v1/images/edits` (OpenAI's bodies and responses;
//!   extensions `seed`, `steps`, `guidance`, `negative_prompt`, `true_cfg`, `lora_scales`,
//!   `sampler`, `sigmas`, `cache`);
//!   a client that disconnects cancels its job;
//! - `POST /v1/jobs`, `GET /v1/jobs/{id}`, `GET /v1/jobs/{id}/events` (server-sent progress),
//!   `DELETE /v1/jobs/{id}` (cancel);
//! - `GET /v1/images/{file}` (`url` results), `GET /healthz`, `GET /v1/models`, `GET /` (a web
//!   page).
//!
//! Binds 127.0.0.1 unless told otherwise; with an API key every route needs it.

mod api;
mod jobs;
mod routes;

pub use api::{ApiError, GenerationRequest, ImageData, ImagesResponse, parse_size};
pub use flux::Engine;
pub use jobs::{CacheCounts, JobStatus, State};
pub use routes::{ServeConfig, router};

/// Serves `router` on `listener` until the process is stopped (or Ctrl-C).
///
/// # Errors
/// The server's I/O errors.
pub async fn serve(listener: tokio::net::TcpListener, router: axum::Router) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
