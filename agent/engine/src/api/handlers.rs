//! One handler per route of [`super::ROUTES`].

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use treasury_policies::Trigger;
use treasury_signer::root::store::RequestState;

use super::{HttpError, Shared};
use crate::journal::{IntentFilter, IntentId, IntentState};

/// The most intents one list returns.
pub const MAX_LIMIT: u32 = 1000;

type Result<T, E = HttpError> = std::result::Result<T, E>;

fn bad_request(message: impl Into<String>) -> HttpError {
    HttpError::new(StatusCode::BAD_REQUEST, message)
}

fn counts_json(counts: &BTreeMap<IntentState, u64>) -> Value {
    counts.iter().map(|(state, n)| (state.as_str().to_string(), json!(n))).collect()
}

/// `GET /health`: the process answers (no token).
pub async fn health(State(s): State<Shared>) -> Json<Value> {
    Json(json!({ "status": "ok", "version": s.status.version }))
}

/// `GET /openapi.json`: the OpenAPI 3.1 description of this API.
pub async fn openapi(State(s): State<Shared>) -> Json<Value> {
    Json(super::openapi::document(&s.status.version))
}

/// `GET /metrics`: OpenMetrics text (Prometheus scrapes it), intents by state read from the journal now.
pub async fn metrics(State(s): State<Shared>) -> Result<Response> {
    let counts = s.journal.count_by_state().await?;
    let text = s.metrics.render(&counts);
    Ok(([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response())
}

/// `GET /v1/status`: chain, Safe, module, keeper, version, gauges and intents by state.
pub async fn status(State(s): State<Shared>) -> Result<Json<Value>> {
    let counts = s.journal.count_by_state().await?;
    let open_triggers = s.journal.open_manual_triggers().await?.len();
    let gauges = s.metrics.gauges();
    let uptime = s.started.elapsed().map_or(0, |d| d.as_secs());
    Ok(Json(json!({
        "chain_id": s.status.chain_id,
        "safe": s.status.safe,
        "module": s.status.module,
        "keeper": s.status.keeper,
        "version": s.status.version,
        "uptime_secs": uptime,
        "last_block": gauges.last_block,
        "keeper_balance_wei": gauges.keeper.map(|(_, wei)| wei.to_string()),
        "signers": gauges.signers,
        "root_configured": s.root.is_some(),
        "intents": counts_json(&counts),
        "open_manual_triggers": open_triggers,
    })))
}

/// Query of `GET /v1/intents`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only in this state.
    pub state: Option<String>,
    /// Only from this policy.
    pub policy: Option<String>,
    /// At most this many, newest first (1 to [`MAX_LIMIT`], default 100).
    pub limit: Option<u32>,
}

/// `GET /v1/intents?state=&policy=&limit=`: intents, newest first.
pub async fn list_intents(
    State(s): State<Shared>,
    query: std::result::Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>> {
    let Query(q) = query.map_err(|e| bad_request(e.body_text()))?;
    let state = match q.state.as_deref().filter(|v| !v.is_empty()) {
        None => None,
        Some(v) => Some(v.parse::<IntentState>().map_err(|e| {
            let names: Vec<&str> = IntentState::ALL.iter().map(|s| s.as_str()).collect();
            bad_request(format!("{e} (expected one of {})", names.join(", ")))
        })?),
    };
    if let Some(limit) = q.limit
        && !(1..=MAX_LIMIT).contains(&limit)
    {
        return Err(bad_request(format!("limit must be between 1 and {MAX_LIMIT}")));
    }
    let filter = IntentFilter { state, policy: q.policy.filter(|p| !p.is_empty()), limit: q.limit };
    let intents = s.journal.list(&filter).await?;
    Ok(Json(json!({ "intents": intents })))
}

/// `GET /v1/intents/{id}`: the intent, its events, its operation and keeper transactions.
pub async fn show_intent(
    State(s): State<Shared>,
    id: std::result::Result<Path<i64>, PathRejection>,
) -> Result<Json<Value>> {
    let Path(id) = id.map_err(|_| bad_request("intent id must be an integer"))?;
    let id = IntentId(id);
    let Some((intent, events)) = s.journal.intent(id).await? else {
        return Err(HttpError::new(StatusCode::NOT_FOUND, format!("intent {id} not found")));
    };
    let operation = s.journal.operation_of(id).await?;
    let transactions = match &operation {
        Some(op) => s.journal.transactions(&op.operation_id).await?,
        None => Vec::new(),
    };
    Ok(Json(json!({
        "intent": intent,
        "events": events,
        "operation": operation,
        "transactions": transactions,
    })))
}

/// `GET /v1/policies`: the configured policies and their triggers.
pub async fn list_policies(State(s): State<Shared>) -> Json<Value> {
    let policies: Vec<Value> = s
        .policies
        .iter()
        .map(|p| {
            json!({
                "name": p.name,
                "file": p.file.display().to_string(),
                "trigger": p.trigger,
                "period": p.period,
                "manual": p.trigger == Trigger::Manual,
            })
        })
        .collect();
    Json(json!({ "policies": policies }))
}

/// `POST /v1/policies/{name}/trigger`: queues a run of a manual policy (202).
pub async fn trigger_policy(
    State(s): State<Shared>,
    name: std::result::Result<Path<String>, PathRejection>,
) -> Result<Response> {
    let Path(name) = name.map_err(|e| bad_request(e.body_text()))?;
    let Some(policy) = s.policies.iter().find(|p| p.name == name) else {
        return Err(HttpError::new(StatusCode::NOT_FOUND, format!("unknown policy `{name}`")));
    };
    if policy.trigger != Trigger::Manual {
        return Err(HttpError::new(
            StatusCode::CONFLICT,
            format!("policy `{name}` is triggered by {}, not manually", policy.trigger.kind()),
        ));
    }
    let queued = s.journal.request_manual_trigger(&name, "api").await?;
    tracing::info!(policy = %name, request = queued.id, "manual trigger queued through the API");
    Ok((StatusCode::ACCEPTED, Json(queued)).into_response())
}

/// `GET /v1/approvals`: root requests waiting for an approver, and the intents waiting on them.
pub async fn approvals(State(s): State<Shared>) -> Result<Json<Value>> {
    let Some(root) = &s.root else {
        return Err(HttpError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "root signer not configured (signing.root_url)",
        ));
    };
    let pending = root.list(Some(RequestState::Pending)).await.map_err(|e| {
        tracing::warn!(error = %e, "HTTP API: root signer unavailable");
        HttpError::new(StatusCode::SERVICE_UNAVAILABLE, format!("root signer unavailable: {e}"))
    })?;
    let filter =
        IntentFilter { state: Some(IntentState::AwaitingRoot), policy: None, limit: Some(MAX_LIMIT) };
    let waiting = s.journal.list(&filter).await?;
    Ok(Json(json!({ "approvals": pending, "awaiting_root": waiting })))
}

/// Any path not in [`super::ROUTES`].
pub async fn not_found(method: Method, uri: Uri) -> HttpError {
    HttpError::new(StatusCode::NOT_FOUND, format!("no route {method} {}", uri.path()))
}

/// A known path with another method.
pub async fn method_not_allowed(method: Method, uri: Uri) -> HttpError {
    HttpError::new(StatusCode::METHOD_NOT_ALLOWED, format!("{method} is not allowed on {}", uri.path()))
}
