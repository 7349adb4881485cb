//! The REST API (axum), over the same engine as gRPC. Described by
//! `coordinator/openapi.json`, served at `GET /openapi.json`.
//!
//! Errors are `application/problem+json` (RFC 9457), with their status from the
//! one table in [`crate::status`], `Retry-After` where a retry can help, and
//! extension members such as `holder` and `reachable_regions`. Request bodies are
//! strict: malformed JSON, unknown, missing and mistyped fields and trailing bytes
//! are `400`, naming the field where there is one; bodies over 64 KiB are `413`.
//! Paths are percent-decoded strictly: a `%` not followed by two hex digits is
//! `400`, and a resource path with an unencoded `/` is a `404` that shows the
//! `%2F` form. The query of `GET /locks` is as strict: an unknown or repeated
//! parameter, a bad escape or a `limit` out of bounds is `400` naming it.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use globallock_protocol::access::{Credentials, Verb};
use globallock_protocol::fence::MAX_TOKEN;
use globallock_protocol::lock_id::LockId;
use globallock_protocol::request::{self, InvalidInput, Limits, MAX_PAGE_SIZE};
use globallock_telemetry::propagation::adopt_http_parent;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::{Instrument, info_span};

use crate::engine::{AcquireParams, LockEngine};
use crate::error::{LockError, Reachability};
use crate::regions::Regions;
use crate::status::present;
use crate::status_page::{self, StatusPage};

/// The OpenAPI document as written (default bounds).
pub const OPENAPI: &str = include_str!("../openapi.json");

/// The OpenAPI document with this server's TTL and wait bounds filled in.
pub fn openapi_document(limits: Limits) -> String {
    let Ok(mut doc) = serde_json::from_str::<Value>(OPENAPI) else {
        return OPENAPI.to_owned();
    };
    let ms = |d: Duration| json!(millis(d));
    let schemas = &mut doc["components"]["schemas"];
    for schema in ["AcquireRequest", "RenewRequest"] {
        let ttl = &mut schemas[schema]["properties"]["ttl_ms"];
        ttl["minimum"] = ms(limits.min_ttl);
        ttl["maximum"] = ms(limits.max_ttl);
    }
    schemas["AcquireRequest"]["properties"]["wait_ms"]["maximum"] = ms(limits.max_wait);
    doc.to_string()
}

/// Largest request body accepted.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// What every handler needs.
#[derive(Debug, Clone)]
struct AppState {
    /// The engine shared with gRPC.
    engine: Arc<LockEngine>,
    /// Region health, for `/readyz`.
    regions: Arc<Regions>,
    /// The OpenAPI document with this server's bounds.
    openapi: Arc<str>,
    /// The status page's own state.
    status_page: Arc<StatusPage>,
}

/// The REST router over `engine`.
pub fn router(engine: Arc<LockEngine>, regions: Arc<Regions>) -> Router {
    Router::new()
        .route("/locks", post(create_lock).get(list_locks))
        .route("/locks/{lock_id}", get(get_lock).delete(delete_lock))
        .route("/locks/{lock_id}/renew", put(renew_lock))
        .route("/resources/{resource}", get(get_resource))
        .route("/resources/{resource}/validate", post(validate_token))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi))
        .route("/admin/contention", get(top_contended))
        .route("/", get(status_page))
        .route("/status/page.css", get(status_page_css))
        .route("/status/page.js", get(status_page_js))
        .route("/status.json", get(status_json))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(reject_bad_escapes))
        .layer(axum::middleware::from_fn(trace_request))
        .with_state(AppState {
            openapi: openapi_document(engine.limits()).into(),
            status_page: Arc::new(StatusPage::default()),
            engine,
            regions,
        })
}

/// A span per request, with method and path, a child of the caller's trace when
/// it sent a `traceparent` header (the engine adds its own fields).
async fn trace_request(request: Request, next: axum::middleware::Next) -> Response {
    let span = info_span!(
        "http",
        http.method = %request.method(),
        http.path = %request.uri().path(),
        http.status = tracing::field::Empty
    );
    adopt_http_parent(&span, request.headers());
    async move {
        let response = next.run(request).await;
        tracing::Span::current().record("http.status", response.status().as_u16());
        response
    }
    .instrument(span)
    .await
}

/// A path with a `%` that is not followed by two hex digits is `400`: decoding
/// it leniently would take it literally and name another resource than the
/// client meant.
async fn reject_bad_escapes(request: Request, next: axum::middleware::Next) -> Response {
    match bad_escape(request.uri().path()) {
        None => next.run(request).await,
        Some(escape) => {
            let path = request.uri().path();
            let problem = Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-argument",
                format!(
                    "the path {path:?} has an invalid percent-encoding {escape:?}: a % must \
                     start %XX (two hex digits); write % itself as %25"
                ),
            );
            let field = if path.starts_with("/resources/") {
                Some("resource")
            } else if path.starts_with("/locks/") {
                Some("lock_id")
            } else {
                None
            };
            match field {
                Some(field) => problem.with("field", json!(field)).into_response(),
                None => problem.into_response(),
            }
        }
    }
}

/// The first `%` escape in `path` that is not `%` and two hex digits.
fn bad_escape(path: &str) -> Option<&str> {
    let bytes = path.as_bytes();
    let at = (0..bytes.len()).find(|&i| {
        bytes[i] == b'%'
            && !(bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    })?;
    let end = (at + 3).min(path.len());
    Some(path.get(at..end).unwrap_or(&path[at..]))
}

// ---------------------------------------------------------------------------
// Problems (RFC 9457)
// ---------------------------------------------------------------------------

/// An error response.
#[derive(Debug)]
pub struct Problem {
    /// HTTP status.
    status: StatusCode,
    /// Short slug naming the problem type.
    kind: &'static str,
    /// Human-readable explanation of this occurrence.
    detail: String,
    /// Extension members.
    extensions: serde_json::Map<String, Value>,
    /// `Retry-After`, when a retry can help.
    retry_after: Option<Duration>,
}

impl Problem {
    fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            detail: detail.into(),
            extensions: serde_json::Map::new(),
            retry_after: None,
        }
    }

    fn with(mut self, key: &str, value: Value) -> Self {
        self.extensions.insert(key.to_owned(), value);
        self
    }

    fn invalid(input: &InvalidInput) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid-argument",
            input.to_string(),
        )
        .with("field", json!(input.field))
    }
}

fn reachability_json(reach: &Reachability) -> (Value, Value) {
    let unreachable: Vec<Value> = reach
        .unreachable
        .iter()
        .map(|f| json!({"region": f.region, "reason": f.status.message()}))
        .collect();
    (json!(reach.reachable), json!(unreachable))
}

impl From<LockError> for Problem {
    fn from(error: LockError) -> Self {
        let presentation = present(&error);
        let status =
            StatusCode::from_u16(presentation.http).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut problem = Problem::new(status, presentation.kind, error.to_string());
        problem.retry_after = presentation.retry_after;
        match &error {
            LockError::Invalid(input) => problem = problem.with("field", json!(input.field)),
            LockError::RequestIdReused { .. } => {
                problem = problem.with("field", json!("Idempotency-Key"))
            }
            LockError::Held {
                owner, remaining, ..
            } => {
                problem = problem.with(
                    "holder",
                    json!({"owner": owner, "expires_in_ms": millis(*remaining)}),
                );
            }
            LockError::WaitExpired {
                holder: Some((owner, remaining)),
                ..
            } => {
                problem = problem.with(
                    "holder",
                    json!({"owner": owner, "expires_in_ms": millis(*remaining)}),
                );
            }
            LockError::Unavailable(reach) => {
                let (reachable, unreachable) = reachability_json(reach);
                problem = problem
                    .with("reachable_regions", reachable)
                    .with("unreachable_regions", unreachable);
            }
            _ => {}
        }
        problem
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let title = self.status.canonical_reason().unwrap_or("Error").to_owned();
        let mut body = serde_json::Map::new();
        body.insert(
            "type".into(),
            json!(format!("urn:globallock:problem:{}", self.kind)),
        );
        body.insert("title".into(), json!(title));
        body.insert("status".into(), json!(self.status.as_u16()));
        body.insert("detail".into(), json!(self.detail));
        if let Some(after) = self.retry_after {
            body.insert("retry_after_ms".into(), json!(millis(after)));
        }
        body.extend(self.extensions);
        let mut response = (
            self.status,
            serde_json::to_string(&Value::Object(body)).unwrap_or_default(),
        )
            .into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(after) = self.retry_after {
            let seconds = after.as_millis().div_ceil(1000).max(1);
            if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
                headers.insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

// ---------------------------------------------------------------------------
// Strict JSON bodies
// ---------------------------------------------------------------------------

/// A JSON body parsed strictly; every failure is a problem naming what is wrong.
struct StrictJson<T>(T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for StrictJson<T> {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Problem> {
        if !is_json(request.headers()) {
            return Err(not_json(request.headers()));
        }
        let bytes = read_body(request, state).await?;
        parse_strict(&bytes).map(Self)
    }
}

/// An optional JSON body: none at all, or zero bytes whatever its Content-Type
/// (`curl -XPUT` sends none, `curl -XPUT -d ''` zero form bytes), is `None`;
/// a body that is there is parsed as strictly as [`StrictJson`].
struct OptionalJson<T>(Option<T>);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Problem> {
        let json = is_json(request.headers());
        let problem = (!json).then(|| not_json(request.headers()));
        let bytes = read_body(request, state).await?;
        if bytes.is_empty() {
            return Ok(Self(None));
        }
        match problem {
            Some(problem) => Err(problem),
            None => parse_strict(&bytes).map(|value| Self(Some(value))),
        }
    }
}

/// The media type without parameters, lowercased.
fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase()
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_owned()
}

/// `application/json` or any `+json` type.
fn is_json(headers: &HeaderMap) -> bool {
    let essence = media_type(headers);
    essence == "application/json" || essence.ends_with("+json")
}

fn not_json(headers: &HeaderMap) -> Problem {
    Problem::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
        format!(
            "the body must be application/json (got {:?})",
            media_type(headers)
        ),
    )
}

/// The whole body, at most [`MAX_BODY_BYTES`].
async fn read_body<S: Send + Sync>(request: Request, state: &S) -> Result<Bytes, Problem> {
    Bytes::from_request(request, state)
        .await
        .map_err(|rejection| {
            let status = rejection.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                Problem::new(
                    status,
                    "body-too-large",
                    format!("the body is larger than {MAX_BODY_BYTES} bytes"),
                )
            } else {
                Problem::new(
                    StatusCode::BAD_REQUEST,
                    "invalid-body",
                    rejection.body_text(),
                )
            }
        })
}

/// Parse one JSON value and nothing after it; a failure names the field where
/// there is one (also a missing or unknown one, which serde reports at the
/// object itself).
fn parse_strict<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let message = error.inner().to_string();
        let field = if path == "." {
            named_field(&message).map(str::to_owned)
        } else {
            Some(path.clone())
        };
        let problem = Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-body",
            format!("invalid JSON body at {path}: {message}"),
        );
        match field {
            Some(field) => problem.with("field", json!(field)),
            None => problem,
        }
    })?;
    deserializer.end().map_err(|error| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-body",
            format!("trailing bytes after the JSON body: {error}"),
        )
    })?;
    Ok(value)
}

/// The field serde names in "missing field `x`" or "unknown field `x`, ...".
fn named_field(message: &str) -> Option<&str> {
    ["missing field `", "unknown field `"]
        .into_iter()
        .find_map(|prefix| message.split_once(prefix)?.1.split_once('`'))
        .map(|(field, _)| field)
}

/// A path parameter, percent-decoded; a bad encoding is a problem, not plain text.
fn path_param(
    param: Result<Path<String>, PathRejection>,
    field: &'static str,
) -> Result<String, Problem> {
    param.map(|Path(value)| value).map_err(|rejection| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-argument",
            format!("{field}: {}", rejection.body_text()),
        )
        .with("field", json!(field))
    })
}

/// A lock id from a path. One that does not parse names no lock: over REST that
/// is a path to nothing, so 404 (gRPC says INVALID_ARGUMENT for the same id).
fn parse_lock_id(lock_id: &str) -> Result<LockId, Problem> {
    lock_id.parse().map_err(|e: InvalidInput| {
        Problem::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("no such lock: {}", e.problem),
        )
        .with("field", json!("lock_id"))
    })
}

// ---------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AcquireBody {
    resource: String,
    owner: String,
    ttl_ms: u64,
    #[serde(default)]
    wait_ms: u64,
}

#[derive(Debug, Serialize)]
struct LockBody {
    lock_id: String,
    resource: String,
    owner: String,
    fencing_token: u64,
    ttl_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    validity_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_in_ms: Option<u64>,
    granted_regions: Vec<String>,
}

async fn create_lock(
    State(state): State<AppState>,
    Creds(credentials): Creds,
    headers: HeaderMap,
    StrictJson(body): StrictJson<AcquireBody>,
) -> Result<Response, Problem> {
    let request_id = match headers.get("idempotency-key") {
        None => String::new(),
        Some(value) => {
            let key = value.to_str().map_err(|_| {
                Problem::invalid(&InvalidInput::new(
                    "Idempotency-Key",
                    "must be printable ASCII",
                ))
            })?;
            if key.is_empty() {
                return Err(Problem::invalid(&InvalidInput::new(
                    "Idempotency-Key",
                    "must not be empty when sent",
                )));
            }
            request::request_id(key)
                .map_err(|e| Problem::invalid(&InvalidInput::new("Idempotency-Key", e.problem)))?;
            key.to_owned()
        }
    };
    let caller = state
        .engine
        .authorize(&credentials, Verb::Acquire, &body.resource)?;
    let acquired = state
        .engine
        .acquire(AcquireParams {
            resource: body.resource,
            owner: body.owner,
            ttl_ms: body.ttl_ms,
            wait_ms: body.wait_ms,
            request_id,
            principal: caller.principal,
        })
        .await?;
    let location = format!("/locks/{}", acquired.lock_id);
    let body = LockBody {
        lock_id: acquired.lock_id,
        resource: acquired.resource,
        owner: acquired.owner,
        fencing_token: acquired.fencing_token,
        ttl_ms: acquired.ttl_ms,
        validity_ms: Some(millis(acquired.validity)),
        expires_in_ms: None,
        granted_regions: acquired.granted_regions,
    };
    let mut response = (StatusCode::CREATED, axum::Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

/// The query of `GET /locks`.
#[derive(Debug, Default, PartialEq, Eq)]
struct ListQuery {
    prefix: String,
    /// `None`: the default page size.
    limit: Option<u64>,
    page_token: String,
}

/// Parse the query of `GET /locks` strictly: each parameter at most once,
/// percent-decoded to UTF-8 (`+` is a space), `limit` an integer from 1 to
/// 1000; anything else (an unknown parameter too) is a problem naming it.
fn list_query(raw: Option<&str>) -> Result<ListQuery, Problem> {
    let mut query = ListQuery::default();
    let mut seen: Vec<String> = Vec::new();
    for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = query_component(name).unwrap_or_else(|_| name.to_owned());
        let field: &'static str = match name.as_str() {
            "prefix" => "prefix",
            "limit" => "limit",
            "page_token" => "page_token",
            _ => {
                return Err(Problem::new(
                    StatusCode::BAD_REQUEST,
                    "invalid-argument",
                    format!(
                        "unknown query parameter {name:?}: GET /locks takes prefix, limit and \
                         page_token"
                    ),
                )
                .with("field", json!(name)));
            }
        };
        if seen.contains(&name) {
            return Err(Problem::invalid(&InvalidInput::new(
                field,
                "is given more than once",
            )));
        }
        seen.push(name);
        let value = query_component(value)
            .map_err(|problem| Problem::invalid(&InvalidInput::new(field, problem)))?;
        match field {
            "prefix" => query.prefix = value,
            "page_token" => query.page_token = value,
            _ => {
                let limit = value
                    .parse::<u64>()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE_SIZE as u64).contains(n))
                    .ok_or_else(|| {
                        Problem::invalid(&InvalidInput::new(
                            "limit",
                            format!(
                                "{value:?} is not an integer between 1 and {MAX_PAGE_SIZE} \
                                 (leave it out for {})",
                                request::DEFAULT_PAGE_SIZE
                            ),
                        ))
                    })?;
                query.limit = Some(limit);
            }
        }
    }
    Ok(query)
}

/// One percent-decoded query name or value (`+` is a space); `Err` says why not.
fn query_component(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let digit = |k: usize| bytes.get(k).and_then(|b| char::from(*b).to_digit(16));
                let byte = digit(i + 1)
                    .zip(digit(i + 2))
                    .and_then(|(high, low)| u8::try_from(high * 16 + low).ok());
                let Some(byte) = byte else {
                    return Err(format!(
                        "has an invalid percent-encoding at byte {i}: a % must start %XX (two \
                         hex digits); write % itself as %25"
                    ));
                };
                out.push(byte);
                i += 2;
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| "is not UTF-8 once percent-decoded".to_owned())
}

#[derive(Debug, Serialize)]
struct ListedLockBody {
    resource: String,
    owner: String,
    fencing_token: u64,
    expires_in_ms: u64,
    granted_regions: Vec<String>,
}

#[derive(Debug, Serialize)]
struct LockListBody {
    locks: Vec<ListedLockBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_page_token: Option<String>,
}

/// `GET /locks?prefix=&limit=&page_token=`: the locks held now, a page at a
/// time, as a majority of regions agree (no lock ids).
async fn list_locks(
    State(state): State<AppState>,
    Creds(credentials): Creds,
    RawQuery(raw): RawQuery,
) -> Result<Response, Problem> {
    let query = list_query(raw.as_deref())?;
    // Listing a prefix needs `describe` on all of it.
    state
        .engine
        .authorize(&credentials, Verb::Describe, &query.prefix)?;
    let page = state
        .engine
        .list(&query.prefix, query.limit.unwrap_or(0), &query.page_token)
        .await?;
    let body = LockListBody {
        locks: page
            .locks
            .into_iter()
            .map(|lock| ListedLockBody {
                resource: lock.resource,
                owner: lock.owner,
                fencing_token: lock.fencing_token,
                expires_in_ms: millis(lock.expires_in),
                granted_regions: lock.regions,
            })
            .collect(),
        next_page_token: Some(page.next_page_token).filter(|t| !t.is_empty()),
    };
    Ok(axum::Json(body).into_response())
}

async fn get_lock(
    State(state): State<AppState>,
    Creds(credentials): Creds,
    lock_id: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
    let lock_id = path_param(lock_id, "lock_id")?;
    let parsed = parse_lock_id(&lock_id)?;
    let caller = state
        .engine
        .authorize(&credentials, Verb::Describe, parsed.resource())?;
    let description = state.engine.describe(parsed.resource()).await?;
    match description.holder {
        // Another principal's lock is not found, whoever knows its id.
        Some(holder) if holder.lock_id == lock_id && caller.may_see(&holder.principal) => {
            Ok(axum::Json(LockBody {
                lock_id: holder.lock_id,
                resource: parsed.resource().to_owned(),
                owner: holder.owner,
                fencing_token: holder.fencing_token,
                ttl_ms: holder.ttl_ms,
                validity_ms: None,
                expires_in_ms: Some(millis(holder.expires_in)),
                granted_regions: holder.regions,
            })
            .into_response())
        }
        _ => Err(LockError::NotFound { lock_id }.into()),
    }
}

async fn delete_lock(
    State(state): State<AppState>,
    Creds(credentials): Creds,
    lock_id: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, Problem> {
    let lock_id = path_param(lock_id, "lock_id")?;
    let parsed = parse_lock_id(&lock_id)?;
    let caller = state
        .engine
        .authorize(&credentials, Verb::Release, parsed.resource())?;
    state.engine.release(&lock_id, &caller).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RenewBody {
    /// Absent: keep the granted TTL. `null` is not absent: it is rejected.
    #[serde(default, deserialize_with = "present_u64")]
    ttl_ms: Option<u64>,
}

/// A field that may be absent but, when present, must be a `u64` (not `null`).
fn present_u64<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    u64::deserialize(deserializer).map(Some)
}

async fn renew_lock(
    State(state): State<AppState>,
    Creds(credentials): Creds,
    lock_id: Result<Path<String>, PathRejection>,
    OptionalJson(body): OptionalJson<RenewBody>,
) -> Result<Response, Problem> {
    let lock_id = path_param(lock_id, "lock_id")?;
    let parsed = parse_lock_id(&lock_id)?;
    let caller = state
        .engine
        .authorize(&credentials, Verb::Renew, parsed.resource())?;
    // An explicit 0 is out of bounds; an absent ttl_ms (or no body at all) keeps
    // the granted TTL.
    let ttl_ms = match body.and_then(|b| b.ttl_ms) {
        Some(0) => {
            let limits = state.engine.limits();
            return Err(Problem::invalid(
                &limits
                    .ttl(0)
                    .err()
                    .unwrap_or_else(|| InvalidInput::new("ttl_ms", "must not be 0")),
            ));
        }
        Some(ttl) => ttl,
        None => 0,
    };
    let renewed = state.engine.renew(&lock_id, ttl_ms, &caller).await?;
    Ok(axum::Json(json!({
        "lock_id": lock_id,
        "fencing_token": renewed.fencing_token,
        "ttl_ms": renewed.ttl_ms,
        "validity_ms": millis(renewed.validity),
    }))
    .into_response())
}

async fn get_resource(
    State(state): State<AppState>,
    Creds(credentials): Creds,
    resource: Result<Path<String>, PathRejection>,
) -> Result<Response, Problem> {
    let resource = path_param(resource, "resource")?;
    let caller = state
        .engine
        .authorize(&credentials, Verb::Describe, &resource)?;
    let description = state.engine.describe(&resource).await?;
    let body = match description.holder {
        // The lock id is the holder's own: nobody else learns it.
        Some(h) if caller.may_see(&h.principal) => json!({
            "resource": resource,
            "held": true,
            "owner": h.owner,
            "lock_id": h.lock_id,
            "fencing_token": h.fencing_token,
            "expires_in_ms": millis(h.expires_in),
        }),
        Some(h) => json!({
            "resource": resource,
            "held": true,
            "owner": h.owner,
            "fencing_token": h.fencing_token,
            "expires_in_ms": millis(h.expires_in),
        }),
        None => json!({"resource": resource, "held": false}),
    };
    Ok(axum::Json(body).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ValidateBody {
    fencing_token: u64,
}

async fn validate_token(
    State(state): State<AppState>,
    Creds(credentials): Creds,
    resource: Result<Path<String>, PathRejection>,
    StrictJson(body): StrictJson<ValidateBody>,
) -> Result<Response, Problem> {
    let resource = path_param(resource, "resource")?;
    state
        .engine
        .authorize(&credentials, Verb::Validate, &resource)?;
    if body.fencing_token > MAX_TOKEN {
        return Err(Problem::invalid(&InvalidInput::new(
            "fencing_token",
            format!(
                "{} is above the largest token, {MAX_TOKEN}",
                body.fencing_token
            ),
        )));
    }
    let (current, current_token) = state.engine.validate(&resource, body.fencing_token).await?;
    Ok(axum::Json(json!({"current": current, "current_token": current_token})).into_response())
}

async fn healthz() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

async fn readyz(State(state): State<AppState>) -> Result<Response, Problem> {
    match state.regions.readiness() {
        Ok(reach) => {
            let (reachable, unreachable) = reachability_json(&reach);
            Ok(axum::Json(json!({"ready": true, "reachable_regions": reachable, "unreachable_regions": unreachable})).into_response())
        }
        Err(reach) => Err(Problem::from(LockError::Unavailable(reach))),
    }
}

async fn openapi(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.openapi.to_string(),
    )
        .into_response()
}

/// The most contended resources on this coordinator (bounded top-K; resource
/// names never become metric labels). Needs `admin` on every resource.
async fn top_contended(
    State(state): State<AppState>,
    Creds(credentials): Creds,
) -> Result<Response, Problem> {
    state.engine.authorize(&credentials, Verb::Admin, "")?;
    let top: Vec<Value> = state
        .engine
        .contention()
        .top(20)
        .into_iter()
        .map(|(resource, refused, overcount)| json!({"resource": resource, "refused_acquires": refused, "max_overcount": overcount}))
        .collect();
    Ok(axum::Json(json!({ "top": top })).into_response())
}

/// `GET /`: the status page. It and everything it loads need `admin` on every
/// resource, like `/admin/contention`.
async fn status_page(
    State(state): State<AppState>,
    Creds(credentials): Creds,
) -> Result<Response, Problem> {
    state.engine.authorize(&credentials, Verb::Admin, "")?;
    Ok(page_file(
        status_page::INDEX_HTML,
        "text/html; charset=utf-8",
    ))
}

async fn status_page_css(
    State(state): State<AppState>,
    Creds(credentials): Creds,
) -> Result<Response, Problem> {
    state.engine.authorize(&credentials, Verb::Admin, "")?;
    Ok(page_file(status_page::PAGE_CSS, "text/css; charset=utf-8"))
}

async fn status_page_js(
    State(state): State<AppState>,
    Creds(credentials): Creds,
) -> Result<Response, Problem> {
    state.engine.authorize(&credentials, Verb::Admin, "")?;
    Ok(page_file(
        status_page::PAGE_JS,
        "text/javascript; charset=utf-8",
    ))
}

/// One of the status page's files, with headers that keep it to its own
/// origin (no external fetches, no framing) and out of caches.
fn page_file(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                status_page::CONTENT_SECURITY_POLICY,
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

/// `GET /status.json`: what the status page shows (needs `admin` on every
/// resource).
async fn status_json(
    State(state): State<AppState>,
    Creds(credentials): Creds,
) -> Result<Response, Problem> {
    state.engine.authorize(&credentials, Verb::Admin, "")?;
    let snapshot = state
        .status_page
        .snapshot(&state.engine, &state.regions)
        .await;
    let mut response = axum::Json(snapshot).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// The names in the client certificate of a REST connection (none over
/// plaintext, or when the client showed none); set once per connection.
#[derive(Debug, Clone, Default)]
pub struct RestPeer {
    /// URI and DNS names of the client certificate.
    pub names: Vec<String>,
}

/// The caller's credentials: its connection's certificate names and its
/// `Authorization: Bearer` header.
struct Creds(Credentials);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Creds {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        let names = parts
            .extensions
            .get::<axum::extract::ConnectInfo<RestPeer>>()
            .map(|info| info.0.names.clone())
            .unwrap_or_default();
        Ok(Self(crate::access::http_credentials(&parts.headers, names)))
    }
}

async fn no_route(uri: Uri) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "not-found",
        format!(
            "no such endpoint{}; see /openapi.json",
            slash_hint(uri.path(), true)
        ),
    )
}

async fn method_not_allowed(uri: Uri) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        format!(
            "method not allowed on this endpoint{}; see /openapi.json",
            slash_hint(uri.path(), false)
        ),
    )
}

/// For a path under `/resources/` with more than one segment: the resource name
/// is one path segment, so a `/` in it must be sent as `%2F`. Shows the path
/// with the name so encoded, taking a trailing `/validate` as the endpoint when
/// `validate_is_endpoint` (for a path no route matched; when the validate route
/// matched with another method, the whole rest may be the name).
fn slash_hint(path: &str, validate_is_endpoint: bool) -> String {
    let Some(rest) = path.strip_prefix("/resources/") else {
        return String::new();
    };
    if !rest.trim_end_matches('/').contains('/') {
        return String::new();
    }
    let (name, endpoint) = match rest.strip_suffix("/validate") {
        Some(name) if validate_is_endpoint => (name, "/validate"),
        _ => (rest, ""),
    };
    format!(
        ": a resource name is one path segment, so percent-encode each `/` in it as %2F, \
         e.g. /resources/{}{endpoint}",
        name.replace('/', "%2F")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem_field(result: Result<ListQuery, Problem>) -> (StatusCode, Value) {
        let problem = result.expect_err("refused");
        (
            problem.status,
            problem.extensions.get("field").cloned().unwrap_or_default(),
        )
    }

    #[test]
    fn a_list_query_is_decoded_strictly() {
        assert_eq!(list_query(None).ok(), Some(ListQuery::default()));
        assert_eq!(list_query(Some("")).ok(), Some(ListQuery::default()));
        assert_eq!(
            list_query(Some(
                "prefix=orders%2Feu+west%2F%C3%BC&limit=2&page_token=b3Jk"
            ))
            .ok(),
            Some(ListQuery {
                prefix: "orders/eu west/ü".into(),
                limit: Some(2),
                page_token: "b3Jk".into(),
            })
        );
        assert_eq!(
            list_query(Some("prefix=&limit=1000")).ok(),
            Some(ListQuery {
                limit: Some(1_000),
                ..ListQuery::default()
            })
        );
        for (query, field) in [
            ("limit=0", "limit"),
            ("limit=1001", "limit"),
            ("limit=", "limit"),
            ("limit=-1", "limit"),
            ("limit=+5", "limit"),
            ("limit=ten", "limit"),
            ("prefix=a&prefix=b", "prefix"),
            ("prefix=%ZZ", "prefix"),
            ("prefix=%+1", "prefix"),
            ("prefix=%4", "prefix"),
            ("prefix=%FF", "prefix"),
            ("page_token=%", "page_token"),
            ("pefix=orders", "pefix"),
        ] {
            assert_eq!(
                problem_field(list_query(Some(query))),
                (StatusCode::BAD_REQUEST, json!(field)),
                "{query}"
            );
        }
    }
}
