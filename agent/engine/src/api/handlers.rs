//! One handler per route, each with its `#[utoipa::path]` description, and the types they answer
//! with (their schemas in `/openapi.json` are derived from them).

use std::collections::BTreeMap;

use alloy::primitives::Address;
use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use treasury_policies::{Period, Trigger};
use treasury_signer::root::store::{RequestRecord, RequestState};
use utoipa::{IntoParams, ToSchema};

use super::{ErrorBody, HttpError, Shared};
use crate::journal::{
    Intent, IntentEvent, IntentFilter, IntentId, IntentState, ManualTrigger, OperationRecord,
    TransactionRecord,
};

/// The most intents one list returns.
pub const MAX_LIMIT: u32 = 1000;

type Result<T, E = HttpError> = std::result::Result<T, E>;

fn bad_request(message: impl Into<String>) -> HttpError {
    HttpError::new(StatusCode::BAD_REQUEST, message)
}

/// What `/health` reports of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Liveness {
    /// The process answers.
    Ok,
}

/// The answer of `GET /health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: Liveness,
    /// The agent's version.
    pub version: String,
}

/// Liveness (no token).
#[utoipa::path(get, path = "/health", operation_id = "health",
    responses((status = 200, description = "The agent answers", body = Health)))]
pub async fn health(State(s): State<Shared>) -> Json<Health> {
    Json(Health { status: Liveness::Ok, version: s.status.version.clone() })
}

/// This document (OpenAPI 3.1).
#[utoipa::path(get, path = "/openapi.json", operation_id = "openapi",
    responses((status = 200, description = "OpenAPI 3.1 document", body = Object)))]
pub async fn openapi(State(s): State<Shared>) -> Json<serde_json::Value> {
    Json(s.document.as_ref().clone())
}

/// Prometheus metrics (OpenMetrics text format 1.0.0).
///
/// treasury_intents{state}, treasury_stage_duration_seconds{stage} (histogram),
/// treasury_last_block, treasury_keeper_balance_wei{keeper}, treasury_signer_up{node},
/// treasury_intents_created_total{policy}, treasury_policy_errors_total{policy},
/// treasury_notifications_total{webhook,outcome}; intents by state are read from the journal now.
#[utoipa::path(get, path = "/metrics", operation_id = "metrics",
    responses(
        (status = 200, description = "Metrics", body = String, content_type = "application/openmetrics-text"),
        (status = 500, description = "Journal unreadable", body = ErrorBody),
    ))]
pub async fn metrics(State(s): State<Shared>) -> Result<Response> {
    let counts = s.journal.count_by_state().await?;
    let text = s.metrics.render(&counts);
    Ok(([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response())
}

/// The answer of `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Status {
    /// The chain id.
    pub chain_id: u64,
    /// The Safe holding the funds.
    #[schema(value_type = String)]
    pub safe: Address,
    /// The treasury module enabled on it.
    #[schema(value_type = String)]
    pub module: Address,
    /// The keeper account paying gas.
    #[schema(value_type = String)]
    pub keeper: Address,
    /// The agent's version.
    pub version: String,
    /// Seconds since the API started.
    pub uptime_secs: u64,
    /// The last block the pipeline saw, if any yet.
    pub last_block: Option<u64>,
    /// The keeper's balance in wei (decimal string), once read.
    pub keeper_balance_wei: Option<String>,
    /// Each signer node's availability at the last look.
    pub signers: BTreeMap<String, bool>,
    /// Whether a root service is configured.
    pub root_configured: bool,
    /// Intents by state (every state present).
    pub intents: BTreeMap<String, u64>,
    /// Manual trigger requests not yet handled.
    pub open_manual_triggers: u64,
}

/// Chain, Safe, module, keeper, last block, signers and intents by state.
#[utoipa::path(get, path = "/v1/status", operation_id = "status",
    responses(
        (status = 200, description = "Status", body = Status),
        (status = 500, description = "Journal unreadable", body = ErrorBody),
    ))]
pub async fn status(State(s): State<Shared>) -> Result<Json<Status>> {
    let counts = s.journal.count_by_state().await?;
    let open_triggers = s.journal.open_manual_triggers().await?.len();
    let gauges = s.metrics.gauges();
    Ok(Json(Status {
        chain_id: s.status.chain_id,
        safe: s.status.safe,
        module: s.status.module,
        keeper: s.status.keeper,
        version: s.status.version.clone(),
        uptime_secs: s.started.elapsed().map_or(0, |d| d.as_secs()),
        last_block: gauges.last_block,
        keeper_balance_wei: gauges.keeper.map(|(_, wei)| wei.to_string()),
        signers: gauges.signers,
        root_configured: s.root.is_some(),
        intents: counts.iter().map(|(state, n)| (state.as_str().to_string(), *n)).collect(),
        open_manual_triggers: open_triggers as u64,
    }))
}

/// Query of `GET /v1/intents`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only in this state.
    #[param(value_type = Option<IntentState>)]
    pub state: Option<String>,
    /// Only from this policy.
    pub policy: Option<String>,
    /// At most this many, newest first (1 to 1000, default 100).
    #[param(minimum = 1, maximum = 1000, default = 100)]
    pub limit: Option<u32>,
}

/// The answer of `GET /v1/intents`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct IntentList {
    /// The intents, newest first.
    pub intents: Vec<Intent>,
}

/// Intents, newest first.
#[utoipa::path(get, path = "/v1/intents", operation_id = "listIntents", params(ListQuery),
    responses(
        (status = 200, description = "Intents", body = IntentList),
        (status = 400, description = "Unknown state, bad limit or unknown parameter", body = ErrorBody),
        (status = 500, description = "Journal unreadable", body = ErrorBody),
    ))]
pub async fn list_intents(
    State(s): State<Shared>,
    query: std::result::Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<IntentList>> {
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
    Ok(Json(IntentList { intents }))
}

/// The answer of `GET /v1/intents/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct IntentDetail {
    /// The intent.
    pub intent: Intent,
    /// Its state changes, oldest first.
    pub events: Vec<IntentEvent>,
    /// The operation carrying it, once planned.
    pub operation: Option<OperationRecord>,
    /// The keeper transactions carrying that operation, oldest first.
    pub transactions: Vec<TransactionRecord>,
}

/// The error answers of a lookup by id (documented, never built).
#[derive(utoipa::IntoResponses)]
#[expect(dead_code, reason = "only documents the answers in the OpenAPI document")]
enum LookupErrors {
    /// The id is not an integer
    #[response(status = 400)]
    BadId(ErrorBody),
    /// Nothing has this id
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// The journal is unreadable
    #[response(status = 500)]
    Journal(ErrorBody),
}

/// One intent with its events, operation and keeper transactions.
#[utoipa::path(get, path = "/v1/intents/{id}", operation_id = "showIntent",
    params(("id" = i64, Path, description = "The intent's journal id")),
    responses((status = 200, description = "The intent", body = IntentDetail), LookupErrors))]
pub async fn show_intent(
    State(s): State<Shared>,
    id: std::result::Result<Path<i64>, PathRejection>,
) -> Result<Json<IntentDetail>> {
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
    Ok(Json(IntentDetail { intent, events, operation, transactions }))
}

/// One configured policy, as `GET /v1/policies` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PolicyInfo {
    /// Its name.
    pub name: String,
    /// Its script.
    pub file: String,
    /// What makes it run: `{"kind": "schedule" | "every_blocks" | "on_log" | "manual", ...}`.
    #[schema(value_type = Object)]
    pub trigger: Trigger,
    /// The period its limits count over: `block`, `day`, `week` or `month`.
    #[schema(value_type = String)]
    pub period: Period,
    /// Whether it runs only when triggered (through the API or `treasury trigger`).
    pub manual: bool,
}

/// The answer of `GET /v1/policies`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PolicyList {
    /// The policies, in config order.
    pub policies: Vec<PolicyInfo>,
}

/// Configured policies and their triggers.
#[utoipa::path(get, path = "/v1/policies", operation_id = "listPolicies",
    responses((status = 200, description = "Policies", body = PolicyList)))]
pub async fn list_policies(State(s): State<Shared>) -> Json<PolicyList> {
    let policies = s
        .policies
        .iter()
        .map(|p| PolicyInfo {
            name: p.name.clone(),
            file: p.file.display().to_string(),
            trigger: p.trigger.clone(),
            period: p.period,
            manual: p.trigger == Trigger::Manual,
        })
        .collect();
    Json(PolicyList { policies })
}

/// Queue a run of a manual policy; the running agent picks it up.
#[utoipa::path(post, path = "/v1/policies/{name}/trigger", operation_id = "triggerPolicy",
    params(("name" = String, Path, description = "The policy's name")),
    responses(
        (status = 202, description = "Queued", body = ManualTrigger),
        (status = 404, description = "Unknown policy", body = ErrorBody),
        (status = 409, description = "The policy is not triggered manually", body = ErrorBody),
        (status = 413, description = "Body over 1 MiB", body = String),
        (status = 500, description = "Journal unreadable", body = ErrorBody),
    ))]
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
    let queued: ManualTrigger = s.journal.request_manual_trigger(&name, "api").await?;
    tracing::info!(policy = %name, request = queued.id, "manual trigger queued through the API");
    Ok((StatusCode::ACCEPTED, Json(queued)).into_response())
}

/// A manual trigger request and, once the agent handled it, what came of it.
#[utoipa::path(get, path = "/v1/triggers/{id}", operation_id = "showTrigger",
    params(("id" = i64, Path, description = "The request's id, as `POST /v1/policies/{name}/trigger` answered")),
    responses((status = 200, description = "The request", body = ManualTrigger), LookupErrors))]
pub async fn show_trigger(
    State(s): State<Shared>,
    id: std::result::Result<Path<i64>, PathRejection>,
) -> Result<Json<ManualTrigger>> {
    let Path(id) = id.map_err(|_| bad_request("trigger id must be an integer"))?;
    match s.journal.manual_trigger(id).await? {
        Some(request) => Ok(Json(request)),
        None => Err(HttpError::new(StatusCode::NOT_FOUND, format!("manual trigger #{id} not found"))),
    }
}

/// The answer of `GET /v1/approvals`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Approvals {
    /// The root service's pending requests (as `treasury root show` prints them).
    #[schema(value_type = Vec<Object>)]
    pub approvals: Vec<RequestRecord>,
    /// The intents awaiting the root.
    pub awaiting_root: Vec<Intent>,
}

/// Root signer requests waiting for approval, and intents awaiting the root.
#[utoipa::path(get, path = "/v1/approvals", operation_id = "listApprovals",
    responses(
        (status = 200, description = "Approvals waiting", body = Approvals),
        (status = 500, description = "Journal unreadable", body = ErrorBody),
        (status = 503, description = "Root signer not configured or unreachable", body = ErrorBody),
    ))]
pub async fn approvals(State(s): State<Shared>) -> Result<Json<Approvals>> {
    let Some(root) = &s.root else {
        return Err(HttpError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "root signer not configured (signing.root_url)",
        ));
    };
    let pending = root.list(Some(RequestState::Pending)).await.map_err(|e| {
        tracing::warn!(error = %treasury_signer::error_chain(&e), "HTTP API: root signer unavailable");
        HttpError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("root signer unavailable: {}", treasury_signer::error_chain(&e)),
        )
    })?;
    let filter =
        IntentFilter { state: Some(IntentState::AwaitingRoot), policy: None, limit: Some(MAX_LIMIT) };
    let awaiting_root = s.journal.list(&filter).await?;
    Ok(Json(Approvals { approvals: pending, awaiting_root }))
}

/// Any path not routed.
pub async fn not_found(method: Method, uri: Uri) -> HttpError {
    HttpError::new(StatusCode::NOT_FOUND, format!("no route {method} {}", uri.path()))
}

/// A known path with another method.
pub async fn method_not_allowed(method: Method, uri: Uri) -> HttpError {
    HttpError::new(StatusCode::METHOD_NOT_ALLOWED, format!("{method} is not allowed on {}", uri.path()))
}
