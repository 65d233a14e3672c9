//! The root service's authenticated HTTP API.
//!
//! Every route takes `Authorization: Bearer <token>`; the token's SHA-256 names a client and its role.
//! - `GET  /v1/health` (any client): root address and whether the HSM session is open.
//! - `POST /v1/requests` (requester): body [`EscalationRequest`] → [`RequestRecord`] (202).
//! - `GET  /v1/requests/{id}` (any client) → [`RequestRecord`].
//! - `GET  /v1/requests?state=pending` (any client) → list: an approver sees every request, a
//!   requester only the ones it submitted.
//! - `POST /v1/requests/{id}/approve` (approver) → [`RequestRecord`].
//! - `POST /v1/requests/{id}/reject` (approver), body `{"reason": …}` → [`RequestRecord`].
//! - `GET  /v1/requests/{id}/decisions` (approver) → every decision with who and when.
//!
//! The approvals page ([`super::page`]) is served beside the API, under `/approvals`.
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::config::{ClientEntry, Role};
use super::error::RootError;
use super::guard::GuardRule;
use super::request::EscalationRequest;
use super::service::RootService;
use super::store::RequestState;

/// The JSON body of every error answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Machine-readable code.
    pub code: String,
    /// Human-readable message.
    pub error: String,
    /// The guard rule, for `guard_denied`.
    #[serde(default)]
    pub rule: Option<GuardRule>,
    /// The error's own text without its prefix: the guard's detail, the message of `unauthorized`
    /// and `invalid_input`, the request id of `unknown_request` and `expired`, the state of
    /// `not_pending`.
    #[serde(default)]
    pub detail: Option<String>,
    /// The request id, for `not_pending`.
    #[serde(default)]
    pub id: Option<String>,
}

/// Health answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Health {
    /// Root address, when known.
    pub address: Option<alloy::primitives::Address>,
    /// Whether the HSM session is open.
    pub hsm_connected: bool,
}

/// Body of a rejection.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RejectBody {
    /// Why.
    pub reason: String,
}

/// Query of the list route.
#[derive(Debug, Clone, Deserialize)]
pub struct ListQuery {
    /// Only requests in this state.
    pub state: Option<RequestState>,
}

struct ApiError(RootError);

impl From<RootError> for ApiError {
    fn from(e: RootError) -> Self {
        Self(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = error_body(&self.0);
        (status, Json(body)).into_response()
    }
}

/// The HTTP status and JSON body answering `e`.
pub(crate) fn error_body(e: &RootError) -> (StatusCode, ErrorBody) {
    let (status, code) = match e {
        RootError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
        RootError::GuardDenied { .. } => (StatusCode::FORBIDDEN, "guard_denied"),
        RootError::UnknownRequest(_) => (StatusCode::NOT_FOUND, "unknown_request"),
        RootError::Expired(_) => (StatusCode::CONFLICT, "expired"),
        RootError::NotPending { .. } => (StatusCode::CONFLICT, "not_pending"),
        RootError::InvalidInput(_) => (StatusCode::BAD_REQUEST, "invalid_input"),
        e if e.is_retryable() => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    };
    let (rule, detail, id) = match e {
        RootError::GuardDenied { rule, detail } => (Some(*rule), Some(detail.clone()), None),
        RootError::Unauthorized(text)
        | RootError::UnknownRequest(text)
        | RootError::Expired(text)
        | RootError::InvalidInput(text) => (None, Some(text.clone()), None),
        RootError::NotPending { id, state } => (None, Some(state.clone()), Some(id.clone())),
        _ => (None, None, None),
    };
    (status, ErrorBody { code: code.into(), error: crate::error_chain(e), rule, detail, id })
}

type ApiResult<T> = Result<T, ApiError>;

fn client<'a>(svc: &'a RootService, headers: &HeaderMap, role: Option<Role>) -> ApiResult<&'a ClientEntry> {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| RootError::Unauthorized("missing bearer token".into()))?;
    let c = svc.config.client(token).ok_or_else(|| RootError::Unauthorized("unknown token".into()))?;
    match role {
        Some(r) if r != c.role => Err(RootError::Unauthorized(format!("{} may not do this", c.name)).into()),
        _ => Ok(c),
    }
}

/// The API's router.
pub fn router(svc: Arc<RootService>) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/requests", post(submit).get(list))
        .route("/v1/requests/{id}", get(get_one))
        .route("/v1/requests/{id}/approve", post(approve))
        .route("/v1/requests/{id}/reject", post(reject))
        .route("/v1/requests/{id}/decisions", get(decisions))
        .with_state(svc.clone())
        .merge(super::page::router(svc))
}

async fn health(State(svc): State<Arc<RootService>>, headers: HeaderMap) -> ApiResult<Json<Health>> {
    client(&svc, &headers, None)?;
    Ok(Json(Health { address: svc.key().known_address(), hsm_connected: svc.key().is_connected() }))
}

async fn submit(
    State(svc): State<Arc<RootService>>,
    headers: HeaderMap,
    body: Result<Json<EscalationRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<impl IntoResponse> {
    let c = client(&svc, &headers, Some(Role::Requester))?;
    let Json(req) = body.map_err(|e| RootError::InvalidInput(e.body_text()))?;
    let rec = svc.submit(req, &c.name).await?;
    Ok((StatusCode::ACCEPTED, Json(rec)))
}

async fn get_one(
    State(svc): State<Arc<RootService>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    client(&svc, &headers, None)?;
    Ok(Json(svc.get(&id).await?))
}

async fn list(
    State(svc): State<Arc<RootService>>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> ApiResult<impl IntoResponse> {
    let c = client(&svc, &headers, None)?;
    let mut list = svc.list(q.state).await?;
    // A requester (the agent) follows its own requests without ever holding approver rights.
    if c.role != Role::Approver {
        list.retain(|r| r.requester == c.name);
    }
    Ok(Json(list))
}

async fn approve(
    State(svc): State<Arc<RootService>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let c = client(&svc, &headers, Some(Role::Approver))?;
    Ok(Json(svc.approve(&id, &c.name).await?))
}

async fn reject(
    State(svc): State<Arc<RootService>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<RejectBody>,
) -> ApiResult<impl IntoResponse> {
    let c = client(&svc, &headers, Some(Role::Approver))?;
    Ok(Json(svc.reject(&id, &c.name, &body.reason).await?))
}

async fn decisions(
    State(svc): State<Arc<RootService>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    client(&svc, &headers, Some(Role::Approver))?;
    Ok(Json(svc.decisions(&id).await?))
}

/// Serves the API on `listener` with the signing worker running, until the process ends.
pub async fn serve(svc: Arc<RootService>, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    serve_until(svc, listener, std::future::pending()).await
}

/// Serves the API with the signing worker running until `shutdown` completes; then finishes the
/// requests in flight and the worker's current signing pass, and returns.
pub async fn serve_until(
    svc: Arc<RootService>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let worker = svc.spawn_worker_until(stopped);
    let served =
        crate::serve::serve_until(listener, router(svc), crate::serve::HttpLimits::default(), shutdown).await;
    let _ = stop.send(true);
    if let Err(e) = worker.await {
        tracing::warn!(error = %e, "the signing worker ended abnormally");
    }
    served
}
