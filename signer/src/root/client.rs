//! The HTTP client of the root service, used by the agent (requester) and by approvers.
use std::time::Duration;

use alloy::primitives::Bytes;
use zeroize::Zeroizing;

use super::error::{Result, RootError};
use super::http::{ErrorBody, Health, RejectBody};
use super::request::EscalationRequest;
use super::store::{Decision, RequestRecord, RequestState};

/// The service's error answer to `what` as the error the service had.
fn remote_error(what: String, status: u16, body: ErrorBody) -> RootError {
    let ErrorBody { code, error, rule, detail, id } = body;
    // The variant's own text; a service that sends none leaves the whole message.
    let text = detail.unwrap_or(error);
    match (code.as_str(), rule) {
        ("guard_denied", Some(rule)) => RootError::GuardDenied { rule, detail: text },
        ("unauthorized", _) => RootError::Unauthorized(text),
        ("unknown_request", _) => RootError::UnknownRequest(text),
        ("expired", _) => RootError::Expired(text),
        ("not_pending", _) => RootError::NotPending { id: id.unwrap_or_default(), state: text },
        ("invalid_input", _) => RootError::InvalidInput(text),
        _ => RootError::Status { what, status, message: text },
    }
}

/// Environment variable conventionally holding a client's bearer token.
pub const TOKEN_ENV: &str = "TREASURY_ROOT_TOKEN";

/// A client of one root service.
#[derive(Clone)]
pub struct RootClient {
    base: String,
    token: Zeroizing<String>,
    http: reqwest::Client,
}

impl std::fmt::Debug for RootClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootClient").field("base", &self.base).finish_non_exhaustive()
    }
}

impl RootClient {
    /// A client of the service at `base` (e.g. `http://127.0.0.1:7400`) with a bearer token.
    pub fn new(base: impl Into<String>, token: impl Into<String>) -> Self {
        let base = base.into().trim_end_matches('/').to_owned();
        Self { base, token: Zeroizing::new(token.into()), http: reqwest::Client::new() }
    }

    async fn call<T: serde::de::DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T> {
        let req = req.bearer_auth(self.token.as_str()).timeout(Duration::from_secs(30));
        let req = req
            .build()
            .map_err(|source| RootError::Transport { what: "building a request".into(), source })?;
        let what = format!("{} {}", req.method(), req.url().path());
        let transport = |source| RootError::Transport { what: what.clone(), source };
        let resp = self.http.execute(req).await.map_err(transport)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(transport)?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|source| RootError::BadAnswer { what, source });
        }
        let Ok(body) = serde_json::from_slice::<ErrorBody>(&bytes) else {
            let message = String::from_utf8_lossy(&bytes).into_owned();
            return Err(RootError::Status { what, status: status.as_u16(), message });
        };
        Err(remote_error(what, status.as_u16(), body))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Service health.
    pub async fn health(&self) -> Result<Health> {
        self.call(self.http.get(self.url("/v1/health"))).await
    }

    /// Submits an escalation request (idempotent: the same payload returns the same request).
    pub async fn submit(&self, request: &EscalationRequest) -> Result<RequestRecord> {
        self.call(self.http.post(self.url("/v1/requests")).json(request)).await
    }

    /// One request.
    pub async fn get(&self, id: &str) -> Result<RequestRecord> {
        self.call(self.http.get(self.url(&format!("/v1/requests/{id}")))).await
    }

    /// Requests, optionally in one state: all of them for an approver, its own for a requester.
    pub async fn list(&self, state: Option<RequestState>) -> Result<Vec<RequestRecord>> {
        let path = match state {
            Some(s) => format!("/v1/requests?state={}", s.as_str()),
            None => "/v1/requests".to_owned(),
        };
        self.call(self.http.get(self.url(&path))).await
    }

    /// Approves a request (approver).
    pub async fn approve(&self, id: &str) -> Result<RequestRecord> {
        self.call(self.http.post(self.url(&format!("/v1/requests/{id}/approve")))).await
    }

    /// Rejects a request with a reason (approver).
    pub async fn reject(&self, id: &str, reason: &str) -> Result<RequestRecord> {
        let body = RejectBody { reason: reason.to_owned() };
        self.call(self.http.post(self.url(&format!("/v1/requests/{id}/reject"))).json(&body)).await
    }

    /// Every decision on a request (approver).
    pub async fn decisions(&self, id: &str) -> Result<Vec<Decision>> {
        self.call(self.http.get(self.url(&format!("/v1/requests/{id}/decisions")))).await
    }

    /// Waits until request `id` is signed and returns the 65-byte root signature; fails when it is
    /// rejected or expires. Transport errors (service restarting) are retried every `poll`.
    pub async fn wait_signed(&self, id: &str, poll: Duration) -> Result<Bytes> {
        loop {
            match self.get(id).await {
                Ok(rec) => match rec.state {
                    RequestState::Signed => {
                        return rec
                            .signature
                            .ok_or_else(|| RootError::SignedWithoutSignature { id: id.to_owned() });
                    }
                    RequestState::Rejected => {
                        return Err(RootError::Rejected {
                            by: rec.decided_by.unwrap_or_default(),
                            reason: rec.reason.unwrap_or_default(),
                        });
                    }
                    RequestState::Expired => return Err(RootError::Expired(id.to_owned())),
                    RequestState::Pending | RequestState::Approved => {}
                },
                Err(e) if e.is_retryable() => {
                    tracing::debug!(error = crate::error_chain(&e), "root service unreachable, retrying")
                }
                Err(e) => return Err(e),
            }
            tokio::time::sleep(poll).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::root::guard::GuardRule;
    use crate::root::http::error_body;

    /// What an approver or the agent sees is the service's own message, each part once.
    #[test]
    fn a_service_error_reads_the_same_at_the_client() {
        let errors = [
            RootError::Unauthorized("unknown token".into()),
            RootError::UnknownRequest("00ab".into()),
            RootError::Expired("00ab".into()),
            RootError::NotPending { id: "00ab".into(), state: "signed".into() },
            RootError::InvalidInput("missing field `calls`".into()),
            RootError::GuardDenied { rule: GuardRule::PeriodCap, detail: "over the cap".into() },
        ];
        for e in errors {
            let (status, body) = error_body(&e);
            let back = remote_error("POST /v1/requests".into(), status.as_u16(), body);
            assert_eq!(back.to_string(), e.to_string());
            assert_eq!(std::mem::discriminant(&back), std::mem::discriminant(&e), "{e}");
        }
    }
}
