//! The agent's HTTP API for keepers and dashboards (axum).
//!
//! Every route but `/health` needs `Authorization: Bearer TOKEN`; the token is compared in
//! constant time and never logged. `/metrics` is behind the token too (Prometheus sends it with
//! `authorization: { credentials_file: … }`): it names policies, signer nodes and the keeper's
//! balance. Errors are JSON `{"error": "..."}`. The routes are listed once, in
//! [`openapi::routes_and_document`]: the router and the OpenAPI document served at
//! `/openapi.json` are built together from the handlers' `#[utoipa::path]` attributes and types.
//! Requests are traced, and held to a body limit and a timeout, by `tower-http` layers.
//!
//! # Layout
//! - [`handlers`]: one function per route, and the types it answers with.
//! - [`openapi`]: the routes and the OpenAPI 3.1 document generated from them.
//! - [`dashboard`]: the read-only HTML dashboard at `/dashboard` (token or its own session).
//! - [`payments`]: the bookkeeping export (`/v1/payments/export`).

pub mod dashboard;
pub mod handlers;
pub mod jobs;
pub mod openapi;
pub mod payments;

use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use alloy::primitives::Address;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use treasury_policies::PolicyEntry;
use treasury_signer::root::RootClient;
use treasury_signer::serve::HttpLimits;

use crate::config::Config;
use crate::journal::{Journal, JournalError};
use crate::metrics::Metrics;

/// Routes served without a token.
pub const PUBLIC_ROUTES: [&str; 1] = ["/health"];

/// What the status endpoint reports that does not change while the agent runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusInfo {
    /// The chain id.
    pub chain_id: u64,
    /// The Safe holding the funds.
    pub safe: Address,
    /// The treasury module enabled on it.
    pub module: Address,
    /// The keeper account paying gas.
    pub keeper: Address,
    /// The agent's version.
    pub version: String,
}

impl StatusInfo {
    /// From a checked config and the keeper's address; the version is this build's.
    pub fn from_config(config: &Config, keeper: Address) -> Self {
        Self {
            chain_id: config.chain.chain_id,
            safe: config.safe.address,
            module: config.safe.module,
            keeper,
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

/// The bearer token clients must present; its `Debug` never shows it.
#[derive(Clone)]
pub struct ApiToken(String);

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

impl ApiToken {
    /// A token; refuses an empty one (or one of blanks), which would let anyone in.
    pub fn new(token: impl Into<String>) -> Result<Self, ApiError> {
        let token = token.into();
        if token.trim().is_empty() { Err(ApiError::EmptyToken) } else { Ok(Self(token)) }
    }

    /// The token held by the environment variable `name` (the config's `api.token_env`).
    pub fn from_env(name: &str) -> Result<Self, ApiError> {
        let token = std::env::var(name).map_err(|_| ApiError::TokenEnv(name.to_string()))?;
        Self::new(token).map_err(|_| ApiError::TokenEnv(name.to_string()))
    }

    /// Whether `presented` is the token, compared in constant time (only the length may leak).
    pub fn matches(&self, presented: &str) -> bool {
        bool::from(self.0.as_bytes().ct_eq(presented.as_bytes()))
    }
}

/// Everything the handlers read.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// The journal (intents, events, operations, transactions, manual triggers).
    pub journal: Journal,
    /// The configured policies.
    pub policies: Vec<PolicyEntry>,
    /// The metrics the pipeline updates.
    pub metrics: Arc<Metrics>,
    /// The root service, for approvals waiting; `None` when the config names none.
    pub root: Option<RootClient>,
    /// Chain, Safe, module, keeper and version.
    pub status: StatusInfo,
    /// The bearer token clients must present.
    pub token: ApiToken,
    /// What the payments export reads on chain; `None` answers it with 503.
    pub payments: Option<crate::export::PaymentsSource>,
}

/// The state as the handlers share it.
#[derive(Debug, Clone)]
pub struct Shared {
    state: Arc<ApiState>,
    started: SystemTime,
    /// The OpenAPI document of these routes, as served.
    document: Arc<serde_json::Value>,
    /// The dashboard's signed-in sessions.
    dashboard: Arc<dashboard::Sessions>,
}

impl std::ops::Deref for Shared {
    type Target = ApiState;

    fn deref(&self) -> &ApiState {
        &self.state
    }
}

/// Why the API cannot start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The token is empty.
    #[error("the API token is empty")]
    EmptyToken,
    /// The environment variable naming the token is unset or empty (its value is never shown).
    #[error("environment variable {0} (api.token_env) is unset or empty")]
    TokenEnv(String),
    /// Serving failed.
    #[error("the HTTP API stopped serving")]
    Serve(#[from] std::io::Error),
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: String,
}

/// An error answered as JSON `{"error": "..."}`.
#[derive(Debug)]
pub struct HttpError {
    status: StatusCode,
    message: String,
}

impl HttpError {
    /// An error with this status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(ErrorBody { error: self.message })).into_response()
    }
}

impl From<JournalError> for HttpError {
    fn from(e: JournalError) -> Self {
        let chain = treasury_signer::error_chain(&e);
        tracing::error!(error = %chain, "HTTP API: journal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, format!("journal: {chain}"))
    }
}

/// Every route served, as (method, path in OpenAPI/axum syntax): the operations of the document.
pub fn routes() -> Vec<(String, String)> {
    let document = serde_json::to_value(openapi::document("")).expect("the document serialises");
    let mut routes = Vec::new();
    for (path, item) in document["paths"].as_object().into_iter().flatten() {
        for (method, _) in item.as_object().into_iter().flatten() {
            routes.push((method.to_uppercase(), path.clone()));
        }
    }
    routes
}

/// The API's router (with authentication, tracing and limits), for [`serve`] or embedding.
pub fn router(state: ApiState) -> Router {
    let (router, document) = openapi::routes_and_document(&state.status.version);
    let document = serde_json::to_value(&document).expect("the document serialises");
    let shared = Shared {
        state: Arc::new(state),
        started: SystemTime::now(),
        document: Arc::new(document),
        dashboard: Arc::default(),
    };
    let limits = HttpLimits::default();
    router
        .merge(dashboard::router())
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(middleware::from_fn_with_state(shared.clone(), authenticate))
        .layer(RequestBodyLimitLayer::new(limits.body_limit))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, limits.request_timeout))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .with_state(shared)
}

/// The span of one request: method and path only (never a header, so never the token).
fn request_span(req: &Request) -> tracing::Span {
    tracing::debug_span!("HTTP API request", method = %req.method(), path = %req.uri().path())
}

/// Serves the API on `listener` until `shutdown` completes, then lets requests in flight finish.
///
/// Every request is held to the signer services' [`HttpLimits`] (body 1 MiB → 413, 30 s → 408),
/// applied by [`router`]; the headers' read timeout of those services is not (`axum::serve`
/// has no such setting).
pub async fn serve(
    listener: TcpListener,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ApiError> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "HTTP API listening");
    }
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await?;
    Ok(())
}

/// Lets public routes through; everything else needs the bearer token. Logs refusals at info
/// (method and path, never a header or the token); [`TraceLayer`] logs every request at debug.
async fn authenticate(State(shared): State<Shared>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    // The dashboard checks the token or its own session cookie itself (a browser sends no header).
    let dashboard = path == "/dashboard" || path.starts_with("/dashboard/");
    let allowed = PUBLIC_ROUTES.contains(&path.as_str()) || dashboard || {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        match presented {
            None => {
                return unauthorized(&method, &path, "missing bearer token (Authorization: Bearer TOKEN)");
            }
            Some(token) => shared.token.matches(token),
        }
    };
    if !allowed {
        return unauthorized(&method, &path, "invalid bearer token");
    }
    next.run(req).await
}

fn unauthorized(method: &axum::http::Method, path: &str, error: &'static str) -> Response {
    tracing::info!(%method, %path, error, "HTTP API request refused");
    let mut resp = HttpError::new(StatusCode::UNAUTHORIZED, error).into_response();
    resp.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_exactly() {
        let token = ApiToken::new("s3cret-token").unwrap();
        assert!(token.matches("s3cret-token"));
        assert!(!token.matches("s3cret-tokem"));
        assert!(!token.matches("s3cret-token "));
        assert!(!token.matches(""));
        assert!(ApiToken::new("  ").is_err());
        assert_eq!(format!("{token:?}"), "ApiToken(<redacted>)");
    }

    #[test]
    fn status_info_from_the_example_config() {
        let (_dir, config) = crate::config::tests::example_config();
        let info = StatusInfo::from_config(&config, Address::repeat_byte(7));
        assert_eq!(info.chain_id, 31337);
        assert_eq!(info.safe, Address::repeat_byte(0x11));
        assert_eq!(info.module, Address::repeat_byte(0x22));
        assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn the_document_describes_the_routes_and_who_may_call_them() {
        let doc = serde_json::to_value(openapi::document("1.2.3")).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["info"]["version"], "1.2.3");
        let mut routes = routes();
        routes.sort();
        let expected = [
            ("GET", "/health"),
            ("GET", "/metrics"),
            ("GET", "/openapi.json"),
            ("GET", "/v1/approvals"),
            ("GET", "/v1/intents"),
            ("GET", "/v1/intents/{id}"),
            ("GET", "/v1/jobs"),
            ("GET", "/v1/jobs/{name}"),
            ("GET", "/v1/payments/export"),
            ("GET", "/v1/policies"),
            ("GET", "/v1/status"),
            ("GET", "/v1/triggers/{id}"),
            ("POST", "/v1/policies/{name}/trigger"),
        ];
        let expected: Vec<(String, String)> =
            expected.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
        assert_eq!(routes, expected);
        assert_eq!(doc["security"], serde_json::json!([{ "bearerAuth": [] }]));
        assert_eq!(doc["components"]["securitySchemes"]["bearerAuth"]["scheme"], "bearer");
        for (method, path) in &routes {
            let op = &doc["paths"][path][method.to_lowercase()];
            if PUBLIC_ROUTES.contains(&path.as_str()) {
                assert_eq!(op["security"], serde_json::json!([]), "{path} is public");
            } else {
                assert!(op.get("security").is_none(), "{path} inherits the token requirement");
                assert!(op["responses"]["401"].is_object(), "{path} documents its 401");
            }
        }
        let limit = &doc["paths"]["/v1/intents"]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "limit")
            .unwrap()["schema"];
        assert_eq!(limit["maximum"], handlers::MAX_LIMIT, "{limit}");
    }
}
