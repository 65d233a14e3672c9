//! The HTTP server loop shared by the signer nodes and the root service, with the limits every
//! client is held to.

use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

/// Limits an HTTP server holds every client to, so that a slow or oversized client cannot hold a
/// connection or memory for long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Time a client has to send the request line and headers; the connection closes after it.
    pub header_read_timeout: Duration,
    /// Time from the headers to the response, body upload included; 408 after it.
    pub request_timeout: Duration,
    /// Largest request body accepted; 413 above it.
    pub body_limit: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            // Above the coordinator's longest wait (30 s for a DKG round), so that a legitimate
            // slow round is not cut by the node first.
            request_timeout: Duration::from_secs(30),
            body_limit: 1024 * 1024,
        }
    }
}

/// Serves `router` on `listener` under `limits` until the process ends.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: HttpLimits,
) -> std::io::Result<()> {
    serve_until(listener, router, limits, std::future::pending()).await
}

/// Serves `router` on `listener` under `limits` until `shutdown` completes; then stops accepting,
/// lets every request in flight finish (idle connections are closed) and returns.
///
/// HTTP/1.1 only (every client of the signer speaks it): hyper closes a connection whose headers
/// take longer than `header_read_timeout`; the body limit and the request timeout wrap the router.
pub async fn serve_until(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: HttpLimits,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let router = router
        .layer(RequestBodyLimitLayer::new(limits.body_limit))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, limits.request_timeout));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors and similar: back off instead of spinning, as axum does.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        // Answers are small and latency-bound: send them without waiting on Nagle's algorithm.
        let _ = tcp.set_nodelay(true);
        let connection = http.serve_connection(TokioIo::new(tcp), TowerToHyperService::new(router.clone()));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down: finishing the requests in flight");
    graceful.shutdown().await;
    Ok(())
}
