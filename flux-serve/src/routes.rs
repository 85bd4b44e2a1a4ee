//! The routes: OpenAI's images API, jobs with progress events, generated files, health, the
//! web page; every error an OpenAI-style JSON body.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Multipart, Path, Request, State as AxState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use flux::{GenerateRequest, Variant};
use futures_util::stream::{self, Stream};
use image::DynamicImage;

use crate::api::{
    ApiError, GenerationRequest, ImageData, ImagesResponse, ResponseFormat, parse_size,
};
use crate::jobs::{JobStatus, Rejected, Scheduler, State, Ticket};
use flux::Engine;

/// How the server is set up.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Jobs that may wait for the device (a full queue answers 429).
    pub queue: usize,
    /// Required on every route when set (`Authorization: Bearer KEY`, or `?api_key=KEY` for
    /// the page and its event streams).
    pub api_key: Option<String>,
    /// Largest `n`.
    pub max_n: usize,
    /// Largest side in pixels.
    pub max_side: usize,
    /// Longest a synchronous request waits for its images (then the job is cancelled: 504).
    pub timeout: Duration,
    /// Largest JSON body in bytes.
    pub json_limit: usize,
    /// Largest multipart upload in bytes.
    pub upload_limit: usize,
    /// Where generated PNGs are written.
    pub out_dir: std::path::PathBuf,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            queue: 8,
            api_key: None,
            max_n: 4,
            max_side: 2048,
            timeout: Duration::from_secs(600),
            json_limit: 64 * 1024,
            upload_limit: 20 * 1024 * 1024,
            out_dir: std::env::temp_dir().join("flux-serve"),
        }
    }
}

struct App {
    engine: Arc<dyn Engine>,
    jobs: Arc<Scheduler>,
    config: ServeConfig,
}

type Shared = AxState<Arc<App>>;

/// The router, with the worker thread started.
///
/// # Errors
/// If the output folder cannot be created.
pub fn router(engine: Arc<dyn Engine>, config: ServeConfig) -> std::io::Result<Router> {
    std::fs::create_dir_all(&config.out_dir)?;
    let jobs = Scheduler::start(engine.clone(), config.queue, config.out_dir.clone());
    let upload_limit = config.upload_limit;
    let app = Arc::new(App {
        engine,
        jobs,
        config,
    });
    Ok(Router::new()
        .route("/", get(page))
        .route("/healthz", get(healthz))
        .route("/v1/models", get(models))
        .route("/v1/images/generations", post(generations))
        .route(
            "/v1/images/edits",
            post(edits).layer(DefaultBodyLimit::max(upload_limit)),
        )
        .route("/v1/jobs", post(create_job))
        .route("/v1/jobs/{id}", get(job).delete(cancel_job))
        .route("/v1/jobs/{id}/events", get(job_events))
        .route("/v1/images/{file}", get(image_file))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(app.clone(), authorize))
        .with_state(app))
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

/// Constant-time equality (the key's length is not secret).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn authorize(app: Shared, request: Request, next: Next) -> Response {
    let Some(key) = &app.config.api_key else {
        return next.run(request).await;
    };
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let query = request
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("api_key="));
    match bearer.or(query) {
        Some(given) if same(given.as_bytes(), key.as_bytes()) => next.run(request).await,
        _ => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "a valid API key is required (Authorization: Bearer KEY)",
        )
        .into_response(),
    }
}

async fn page() -> Html<&'static str> {
    Html(include_str!("page.html"))
}

async fn healthz(app: Shared) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok", "pending": app.jobs.pending() }))
}

async fn models(app: Shared) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "object": "list",
        "data": [{
            "id": app.engine.kind().name(),
            "object": "model",
            "created": 0,
            "owned_by": "black-forest-labs",
        }],
    }))
}

/// Bodies up to this size are read to their end even when they are over the JSON limit, so
/// that a client still sending gets its 413 instead of a connection reset under its write
/// (closing a socket with unread data resets it); larger ones are cut off.
const DRAIN_LIMIT: usize = 1 << 20;

/// Reads `body` to its end, keeping nothing.
async fn discard(body: Body) {
    use futures_util::StreamExt;
    let mut stream = body.into_data_stream();
    while let Some(Ok(_)) = stream.next().await {}
}

/// A JSON body within the limit, parsed, every failure a 4xx JSON error.
async fn json_body(app: &App, body: Body) -> Result<GenerationRequest, ApiError> {
    let limit = app.config.json_limit;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!("the body is larger than {limit} bytes"),
        )
    };
    let bytes: Bytes = axum::body::to_bytes(body, limit.max(DRAIN_LIMIT))
        .await
        .map_err(|_| too_large())?;
    if bytes.len() > limit {
        return Err(too_large());
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::invalid("body", format!("the body is not a valid request: {e}")))
}

/// A checked [`GenerateRequest`] and how to answer with it.
fn request_of(
    app: &App,
    body: &GenerationRequest,
) -> Result<(GenerateRequest, ResponseFormat), ApiError> {
    if let Some(field) = body.unknown_field() {
        return Err(ApiError::invalid(
            "body",
            format!("unknown field `{field}`"),
        ));
    }
    let format = ResponseFormat::parse(body.response_format.as_deref())?;
    if body.n == 0 || body.n > app.config.max_n {
        return Err(ApiError::invalid(
            "n",
            format!("n must be between 1 and {}", app.config.max_n),
        ));
    }
    if let Some(model) = &body.model
        && model != app.engine.kind().name()
    {
        return Err(ApiError::invalid(
            "model",
            format!(
                "this server runs `{}`, not `{model}`",
                app.engine.kind().name()
            ),
        ));
    }
    let (w, h) = parse_size(body.size.as_deref(), app.config.max_side)?;
    let mut r = GenerateRequest::new(body.prompt.clone())
        .with_size(w, h)
        .with_images_per_prompt(body.n)
        .with_seed(body.seed.unwrap_or(0));
    r.steps = body.steps;
    r.guidance = body.guidance;
    r.true_cfg = body.true_cfg;
    r.lora_scales = body.lora_scales.clone();
    if let Some(negative) = &body.negative_prompt {
        r = r.with_negative_prompt(negative.clone());
    }
    if let Some(sampler) = &body.sampler {
        r = r.with_sampler(
            sampler
                .parse()
                .map_err(|e| ApiError::invalid("sampler", e))?,
        );
    }
    if let Some(sigmas) = &body.sigmas {
        r = r.with_sigmas(sigmas.parse().map_err(|e| ApiError::invalid("sigmas", e))?);
    }
    if let Some(cache) = &body.cache {
        let cache: flux::Cache = cache.parse().map_err(|e| ApiError::invalid("cache", e))?;
        if matches!(&cache, flux::Cache::Mag(m) if m.ratios == flux::MagRatios::Calibrate) {
            return Err(ApiError::invalid(
                "cache",
                "magcache:calibrate measures a model's ratios: run it with the generate CLI",
            ));
        }
        r = r.with_cache(cache);
    }
    if let Some(steps) = body.steps
        && steps > 100
    {
        return Err(ApiError::invalid("steps", "steps must be at most 100"));
    }
    Ok((r, format))
}

/// `resolve` as a 400.
fn check(app: &App, r: &GenerateRequest) -> Result<(), ApiError> {
    app.engine
        .resolve(r)
        .map(|_| ())
        .map_err(|e| ApiError::invalid("prompt", e.to_string()))
}

fn submit(app: &App, prompt: String, r: GenerateRequest) -> Result<Ticket, ApiError> {
    app.jobs.submit(prompt, r).map_err(|e| match e {
        Rejected::Full => ApiError {
            retry_after: Some(5),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                format!(
                    "the queue is full ({} jobs wait): retry later",
                    app.config.queue
                ),
            )
        },
        Rejected::Stopped => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "the generation worker has stopped",
        ),
    })
}

/// Cancels its job when dropped before the job ended: a synchronous client that disconnects
/// (axum drops the handler) frees the device for the next job.
struct CancelOnDrop(Ticket);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if !self.0.status.borrow().state.is_terminal() {
            self.0.cancel.store(true, Ordering::Relaxed);
        }
    }
}

/// Waits for a job's end (within the timeout) and answers with its images.
async fn wait_images(
    app: &App,
    ticket: Ticket,
    format: ResponseFormat,
    headers: &HeaderMap,
) -> Result<Json<ImagesResponse>, ApiError> {
    let mut guard = CancelOnDrop(ticket);
    let finished = tokio::time::timeout(app.config.timeout, async {
        loop {
            let state = guard.0.status.borrow_and_update().state;
            if state.is_terminal() {
                return;
            }
            if guard.0.status.changed().await.is_err() {
                return;
            }
        }
    })
    .await;
    if finished.is_err() {
        return Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!(
                "no images within {:?}: the job was cancelled",
                app.config.timeout
            ),
        ));
    }
    let status = guard.0.status.borrow().clone();
    images_response(app, &status, format, headers).await
}

async fn images_response(
    app: &App,
    status: &JobStatus,
    format: ResponseFormat,
    headers: &HeaderMap,
) -> Result<Json<ImagesResponse>, ApiError> {
    match status.state {
        State::Done => {}
        State::Cancelled => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "cancelled",
                "the job was cancelled",
            ));
        }
        _ => {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                status
                    .error
                    .clone()
                    .unwrap_or_else(|| "the job failed".into()),
            ));
        }
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let mut data = Vec::new();
    for name in &status.files {
        data.push(match format {
            ResponseFormat::Url => ImageData {
                b64_json: None,
                url: Some(format!("http://{host}/v1/images/{name}")),
            },
            ResponseFormat::B64Json => {
                let path = app.jobs.file(name).expect("the worker registers its files");
                let bytes = tokio::fs::read(&path).await.map_err(|e| {
                    ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "server_error",
                        format!("reading {name}: {e}"),
                    )
                })?;
                ImageData {
                    b64_json: Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
                    url: None,
                }
            }
        });
    }
    Ok(Json(ImagesResponse {
        created: status.created,
        data,
    }))
}

async fn generations(
    app: Shared,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ImagesResponse>, ApiError> {
    let body = json_body(&app, body).await?;
    let (r, format) = request_of(&app, &body)?;
    check(&app, &r)?;
    let ticket = submit(&app, body.prompt, r)?;
    wait_images(&app, ticket, format, &headers).await
}

/// The fields of a generations body that are text whatever they look like (a prompt of
/// digits is still a prompt).
const STRING_FIELDS: &[&str] = &[
    "prompt",
    "negative_prompt",
    "sampler",
    "sigmas",
    "cache",
    "size",
    "response_format",
    "model",
    "user",
];

/// `POST /v1/images/edits`: multipart `image` (+ `mask`), `strength`, and every field of
/// `generations` (`prompt`, `n`, `size`, `response_format` and our `seed`, `steps`,
/// `guidance`, `negative_prompt`, `true_cfg`, `sampler`, `sigmas`, `cache`, `lora_scales` as
/// JSON, e.g. `[0.5]`). What the image does
/// depends on the model: a Kontext model edits it, a Fill model repaints its mask, a
/// text-to-image model starts from it (img2img, strength 0.6 unless given).
async fn edits(
    app: Shared,
    headers: HeaderMap,
    request: Request,
) -> Result<Json<ImagesResponse>, ApiError> {
    let limit = app.config.upload_limit;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(len) = declared.filter(|&len| len > limit) {
        // Read a moderately oversized upload to its end before answering, so that a client
        // still sending gets the 413 rather than a reset under its write (as `json_body`).
        if len <= limit.saturating_mul(2).max(DRAIN_LIMIT) {
            discard(request.into_body()).await;
        }
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!("the upload is {len} bytes, larger than this server's {limit}"),
        ));
    }
    let multipart = <Multipart as axum::extract::FromRequest<()>>::from_request(request, &()).await;
    let mut multipart = multipart.map_err(|e| ApiError::invalid("body", e.body_text()))?;
    // The text fields become a generations body, so both routes take the same fields and
    // check them the same way (numbers exactly: a seed keeps all 64 bits).
    let mut fields = serde_json::Map::new();
    let (mut image, mut mask, mut strength) = (None, None, None);
    let too_large = |e: axum::extract::multipart::MultipartError| {
        ApiError::new(e.status(), "invalid_request_error", e.body_text())
    };
    while let Some(field) = multipart.next_field().await.map_err(too_large)? {
        let name = field.name().unwrap_or("").to_string();
        let bytes = field.bytes().await.map_err(too_large)?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        match name.as_str() {
            "image" | "image[]" => image = Some(decode(&bytes, "image")?),
            "mask" => mask = Some(decode(&bytes, "mask")?),
            "strength" => {
                let value = text.trim().parse::<f32>().ok().filter(|v| v.is_finite());
                let value = value
                    .ok_or_else(|| ApiError::invalid("strength", "strength is not a number"))?;
                strength = Some(value);
            }
            _ => {
                let value = if STRING_FIELDS.contains(&name.as_str()) {
                    serde_json::Value::String(text)
                } else {
                    serde_json::from_str(text.trim()).unwrap_or(serde_json::Value::String(text))
                };
                fields.insert(name, value);
            }
        }
    }
    fields
        .entry("prompt")
        .or_insert_with(|| serde_json::Value::String(String::new()));
    let mut body: GenerationRequest = serde_json::from_value(serde_json::Value::Object(fields))
        .map_err(|e| ApiError::invalid("body", format!("the form is not a valid request: {e}")))?;
    let image = image.ok_or_else(|| ApiError::invalid("image", "an image is required"))?;
    let mask_for_check = if app.engine.variant() == Variant::Fill {
        None
    } else {
        mask.clone()
    };
    if body.size.is_none() {
        body.size = Some(format!(
            "{}x{}",
            image.width() / 16 * 16,
            image.height() / 16 * 16
        ));
    }
    let (r, format) = request_of(&app, &body)?;
    let r = match app.engine.variant() {
        Variant::Fill => {
            let mask = mask.ok_or_else(|| {
                ApiError::invalid(
                    "mask",
                    "a Fill model repaints the white part of a mask: send one",
                )
            })?;
            r.with_init_image(image, strength.unwrap_or(1.0))
                .with_mask(mask)
        }
        Variant::Kontext => r.with_reference_image(image),
        Variant::Control => r.with_control_image(image),
        Variant::TextToImage => r.with_init_image(image, strength.unwrap_or(0.6)),
    };
    // A mask for a model that takes none: `resolve` names what it needs.
    let r = match (app.engine.variant(), mask_for_check) {
        (Variant::Fill, _) | (_, None) => r,
        (_, Some(mask)) => r.with_mask(mask),
    };
    check(&app, &r)?;
    let ticket = submit(&app, body.prompt, r)?;
    wait_images(&app, ticket, format, &headers).await
}

fn decode(bytes: &[u8], param: &'static str) -> Result<DynamicImage, ApiError> {
    image::load_from_memory(bytes)
        .map_err(|e| ApiError::invalid(param, format!("the {param} is not a readable image: {e}")))
}

async fn create_job(app: Shared, body: Body) -> Result<Response, ApiError> {
    let body = json_body(&app, body).await?;
    let (r, _) = request_of(&app, &body)?;
    check(&app, &r)?;
    let ticket = submit(&app, body.prompt, r)?;
    let status = ticket.status.borrow().clone();
    Ok((StatusCode::ACCEPTED, Json(status)).into_response())
}

fn ticket(app: &App, id: &str) -> Result<Ticket, ApiError> {
    app.jobs
        .ticket(id)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no job `{id}`")))
}

async fn job(app: Shared, Path(id): Path<String>) -> Result<Json<JobStatus>, ApiError> {
    Ok(Json(ticket(&app, &id)?.status.borrow().clone()))
}

async fn cancel_job(app: Shared, Path(id): Path<String>) -> Result<Json<JobStatus>, ApiError> {
    let t = ticket(&app, &id)?;
    t.cancel.store(true, Ordering::Relaxed);
    Ok(Json(t.status.borrow().clone()))
}

async fn job_events(
    app: Shared,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let t = ticket(&app, &id)?;
    let events = stream::unfold((t.status, false), |(mut rx, over)| async move {
        if over {
            return None;
        }
        let status = rx.borrow_and_update().clone();
        let terminal = status.state.is_terminal();
        let name = serde_json::to_value(status.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let event = Event::default()
            .event(name)
            .json_data(&status)
            .unwrap_or_default();
        let over = terminal || rx.changed().await.is_err();
        Some((Ok(event), (rx, over)))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

async fn image_file(app: Shared, Path(file): Path<String>) -> Result<Response, ApiError> {
    // Only names the worker gave its files: no request reaches the filesystem otherwise.
    let path = app.jobs.file(&file).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no image `{file}`"),
        )
    })?;
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|e| ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("{file}: {e}")))?;
    Ok(([(header::CONTENT_TYPE, "image/png")], bytes).into_response())
}
