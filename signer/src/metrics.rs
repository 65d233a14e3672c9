//! Prometheus metrics of the signer services, like the agent's: a signer node's signatures,
//! refusals by reason, nonces left and signing latency; the root service's queue depth,
//! decisions and HSM latency. Each service renders them in the OpenMetrics text format at
//! `GET /metrics` on a listener of its own (`--metrics-listen`), apart from its API.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// Upper bounds (seconds) of the latency buckets: from 1 ms (an HSM signature, a local share) to
/// 10 s (a node waiting on a slow disk).
pub const LATENCY_BUCKETS: [f64; 12] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    route: String,
    reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabel {
    decision: String,
}

/// A signer node's metrics (prefix `treasury_node_`).
pub struct NodeMetrics {
    registry: Registry,
    signatures: Counter,
    refusals: Family<RefusalLabels, Counter>,
    nonces_left: Gauge,
    sign_duration: Histogram,
}

impl std::fmt::Debug for NodeMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeMetrics").finish_non_exhaustive()
    }
}

impl Default for NodeMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl NodeMetrics {
    /// An empty registry with every family registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("treasury_node");
        let signatures = Counter::default();
        let refusals = Family::<RefusalLabels, Counter>::default();
        let nonces_left = Gauge::default();
        let sign_duration = latency_histogram();
        registry.register(
            "signatures",
            "Signature shares this node answered since start",
            signatures.clone(),
        );
        registry.register(
            "refusals",
            "Requests this node refused since start, by route and reason (refusal code)",
            refusals.clone(),
        );
        registry.register(
            "nonces_left",
            "Committed FROST nonces not used yet (each signature consumes one)",
            nonces_left.clone(),
        );
        registry.register_with_unit(
            "sign_duration",
            "Time to check and answer a signing request (guard, nonce erasure, share)",
            Unit::Seconds,
            sign_duration.clone(),
        );
        Self { registry, signatures, refusals, nonces_left, sign_duration }
    }

    /// Counts one answered signature share that took `took`.
    pub fn signed(&self, took: Duration) {
        self.signatures.inc();
        self.sign_duration.observe(took.as_secs_f64());
    }

    /// Counts one refusal on `route` for `reason`.
    pub fn refused(&self, route: &str, reason: &str) {
        self.refusals.get_or_create(&RefusalLabels { route: route.into(), reason: reason.into() }).inc();
    }

    /// The metrics in the OpenMetrics text format, with `nonces_left` read now.
    pub fn render(&self, nonces_left: usize) -> String {
        self.nonces_left.set(i64::try_from(nonces_left).unwrap_or(i64::MAX));
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// The root service's metrics (prefix `treasury_root_`).
pub struct RootMetrics {
    registry: Registry,
    queue_depth: Gauge,
    decisions: Family<DecisionLabel, Counter>,
    hsm_sign_duration: Histogram,
}

impl std::fmt::Debug for RootMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootMetrics").finish_non_exhaustive()
    }
}

impl Default for RootMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl RootMetrics {
    /// An empty registry with every family registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("treasury_root");
        let queue_depth = Gauge::default();
        let decisions = Family::<DecisionLabel, Counter>::default();
        let hsm_sign_duration = latency_histogram();
        registry.register("queue_depth", "Requests waiting for a human approver", queue_depth.clone());
        registry.register(
            "decisions",
            "Decisions since start: approved, auto_approved, rejected, refused (by the guard), signed",
            decisions.clone(),
        );
        registry.register_with_unit(
            "hsm_sign_duration",
            "Time of one signature in the HSM (C_Sign and recovery)",
            Unit::Seconds,
            hsm_sign_duration.clone(),
        );
        for d in ["approved", "auto_approved", "rejected", "refused", "signed"] {
            drop(decisions.get_or_create(&DecisionLabel { decision: d.into() }));
        }
        Self { registry, queue_depth, decisions, hsm_sign_duration }
    }

    /// Counts one `decision` (approved, auto_approved, rejected, refused, signed).
    pub fn decided(&self, decision: &str) {
        self.decisions.get_or_create(&DecisionLabel { decision: decision.into() }).inc();
    }

    /// Records one HSM signature that took `took`.
    pub fn hsm_signed(&self, took: Duration) {
        self.hsm_sign_duration.observe(took.as_secs_f64());
    }

    /// The metrics in the OpenMetrics text format, with the queue depth read now.
    pub fn render(&self, pending: usize) -> String {
        self.queue_depth.set(i64::try_from(pending).unwrap_or(i64::MAX));
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Serves `GET /metrics` (whatever `render` returns) on `listen` until `shutdown` completes;
/// returns the bound address once listening.
pub async fn serve_metrics<F, Fut>(
    listen: SocketAddr,
    render: F,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<SocketAddr>
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = String> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let render = Arc::new(render);
    let router = Router::new().route(
        "/metrics",
        get(move || {
            let render = render.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    render().await,
                )
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) =
            crate::serve::serve_until(listener, router, crate::serve::HttpLimits::default(), shutdown).await
        {
            tracing::warn!(error = %e, "metrics listener stopped");
        }
    });
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_metrics_render_what_was_counted() {
        let m = NodeMetrics::new();
        m.signed(Duration::from_millis(3));
        m.signed(Duration::from_millis(4));
        m.refused("/v1/sign", "budget_exceeded");
        let text = m.render(61);
        assert!(text.contains("treasury_node_signatures_total 2"), "{text}");
        assert!(text.contains("treasury_node_nonces_left 61"), "{text}");
        assert!(
            text.contains(r#"treasury_node_refusals_total{route="/v1/sign",reason="budget_exceeded"} 1"#),
            "{text}"
        );
        assert!(text.contains("treasury_node_sign_duration_seconds_count 2"), "{text}");
    }

    #[test]
    fn root_metrics_render_what_was_counted() {
        let m = RootMetrics::new();
        m.decided("approved");
        m.hsm_signed(Duration::from_millis(2));
        let text = m.render(3);
        assert!(text.contains("treasury_root_queue_depth 3"), "{text}");
        assert!(text.contains(r#"treasury_root_decisions_total{decision="approved"} 1"#), "{text}");
        assert!(text.contains(r#"treasury_root_decisions_total{decision="rejected"} 0"#), "{text}");
        assert!(text.contains("treasury_root_hsm_sign_duration_seconds_count 1"), "{text}");
    }
}
