//! One chain behind several HTTP JSON-RPC endpoints: each request goes to one endpoint at a time,
//! the one that answered last, and moves on to the next when that one fails at the transport level
//! (connection refused or reset, timeout, an HTTP error status); when every endpoint failed, the
//! round is tried again after a pause.
//!
//! Why not alloy's `FallbackLayer`: it sends each request to several endpoints at once and
//! returns the first answer, a JSON-RPC error included. The agent pins its reads to a block hash;
//! a lagging node's "header not found" could win that race over a node that has the block, and two
//! consecutive reads could come from two nodes at different heads. One endpoint at a time, sticky to
//! the one that works, keeps a run of reads on one node's view unless that node fails.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use alloy::transports::http::{Http, reqwest};
use alloy::transports::{TransportError, TransportErrorKind, TransportFut};
use alloy_json_rpc::{RequestPacket, ResponsePacket};
use tower::Service;

/// How hard a [`FailoverTransport`] tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailoverOptions {
    /// How long one request to one endpoint may take, connecting included.
    pub request_timeout: Duration,
    /// How long connecting to one endpoint may take.
    pub connect_timeout: Duration,
    /// Rounds over every endpoint before a request fails (the first included).
    pub rounds: u32,
    /// The pause before each further round; doubled after each.
    pub backoff: Duration,
}

impl Default for FailoverOptions {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            rounds: 2,
            backoff: Duration::from_millis(200),
        }
    }
}

/// An alloy transport over several HTTP endpoints of one chain (see the module's documentation).
#[derive(Debug, Clone)]
pub struct FailoverTransport {
    endpoints: Arc<[Http<reqwest::Client>]>,
    /// Index of the endpoint that answered last: the first one tried.
    preferred: Arc<AtomicUsize>,
    options: FailoverOptions,
}

impl FailoverTransport {
    /// A transport over `urls` (at least one), tried in this order at first.
    pub fn new(urls: &[reqwest::Url], options: FailoverOptions) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(options.request_timeout)
            .connect_timeout(options.connect_timeout)
            .build()?;
        let endpoints = urls.iter().map(|u| Http::with_client(client.clone(), u.clone())).collect();
        Ok(Self { endpoints, preferred: Arc::new(AtomicUsize::new(0)), options })
    }

    /// How many endpoints it spreads over.
    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    /// Whether it has no endpoint (every request then fails).
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// The index of the endpoint the next request goes to first.
    pub fn preferred(&self) -> usize {
        self.preferred.load(Ordering::Relaxed)
    }

    async fn request(self, req: RequestPacket) -> Result<ResponsePacket, TransportError> {
        let n = self.endpoints.len();
        if n == 0 {
            return Err(TransportErrorKind::custom_str("no RPC endpoint configured"));
        }
        let mut last = None;
        let mut pause = self.options.backoff;
        for round in 0..self.options.rounds.max(1) {
            if round > 0 {
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            let first = self.preferred.load(Ordering::Relaxed) % n;
            for i in (0..n).map(|k| (first + k) % n) {
                let mut endpoint = self.endpoints[i].clone();
                match endpoint.call(req.clone()).await {
                    Ok(answer) => {
                        if i != first {
                            tracing::warn!(endpoint = i, "RPC: moved to another endpoint");
                        }
                        self.preferred.store(i, Ordering::Relaxed);
                        return Ok(answer);
                    }
                    Err(e) => {
                        tracing::debug!(endpoint = i, error = %e, "RPC endpoint failed");
                        last = Some(e);
                    }
                }
            }
        }
        Err(last.unwrap_or_else(|| TransportErrorKind::custom_str("every RPC endpoint failed")))
    }
}

impl Service<RequestPacket> for FailoverTransport {
    type Response = ResponsePacket;
    type Error = TransportError;
    type Future = TransportFut<'static>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: RequestPacket) -> Self::Future {
        Box::pin(self.clone().request(req))
    }
}
