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
//!
//! At most [`FailoverOptions::max_in_flight`] requests are in flight to one endpoint at a time; the
//! others wait for one to finish. One process may run 1,000 lanes on one shared provider (issue 16),
//! and every request in flight holds an HTTP/1.1 connection of its own, with its buffers and
//! channels: unbounded, the lanes' synchronised polls kept hundreds of connections open. The pool
//! keeps no more idle connections than that bound either.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use alloy::transports::http::{Http, reqwest};
use alloy::transports::{TransportError, TransportErrorKind, TransportFut};
use alloy_json_rpc::{RequestPacket, ResponsePacket};
use tokio::sync::Semaphore;
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
    /// Requests in flight to one endpoint at once (and idle connections kept to it); further
    /// requests wait their turn (the wait is not part of `request_timeout`).
    pub max_in_flight: usize,
}

impl Default for FailoverOptions {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            rounds: 2,
            backoff: Duration::from_millis(200),
            max_in_flight: 32,
        }
    }
}

/// An alloy transport over several HTTP endpoints of one chain (see the module's documentation).
#[derive(Debug, Clone)]
pub struct FailoverTransport {
    endpoints: Arc<[Http<reqwest::Client>]>,
    /// Per endpoint, the permits for requests in flight ([`FailoverOptions::max_in_flight`]).
    in_flight: Arc<[Arc<Semaphore>]>,
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
            .pool_max_idle_per_host(options.max_in_flight.max(1))
            .build()?;
        let endpoints = urls.iter().map(|u| Http::with_client(client.clone(), u.clone())).collect();
        let in_flight = urls.iter().map(|_| Arc::new(Semaphore::new(options.max_in_flight.max(1)))).collect();
        Ok(Self { endpoints, in_flight, preferred: Arc::new(AtomicUsize::new(0)), options })
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
                // Never closed: acquiring only waits for a request to this endpoint to finish.
                let _permit = self.in_flight[i].acquire().await.map_err(TransportErrorKind::custom)?;
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use alloy::providers::Provider;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A JSON-RPC endpoint answering every request with block number 1 after a pause, counting
    /// how many requests it holds at once (the most ever in `peak`).
    async fn slow_endpoint(peak: Arc<AtomicUsize>) -> reqwest::Url {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let now = Arc::new(AtomicUsize::new(0));
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let (now, peak) = (now.clone(), peak.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        // One request: headers, then a Content-Length body.
                        let body = loop {
                            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                                let len: usize = head
                                    .lines()
                                    .find_map(|l| l.strip_prefix("content-length:"))
                                    .map_or(0, |v| v.trim().parse().unwrap());
                                if buf.len() >= end + 4 + len {
                                    let body = buf[end + 4..end + 4 + len].to_vec();
                                    buf.drain(..end + 4 + len);
                                    break body;
                                }
                            }
                            let mut chunk = [0u8; 4096];
                            match socket.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let held = now.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(held, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        now.fetch_sub(1, Ordering::SeqCst);
                        let req: serde_json::Value = serde_json::from_slice(&body).unwrap();
                        let answer = serde_json::json!({"jsonrpc": "2.0", "id": req["id"], "result": "0x1"})
                            .to_string();
                        let response = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
                            answer.len()
                        );
                        if socket.write_all(response.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        format!("http://{addr}").parse().unwrap()
    }

    #[tokio::test]
    async fn requests_beyond_max_in_flight_wait_their_turn() {
        let peak = Arc::new(AtomicUsize::new(0));
        let url = slow_endpoint(peak.clone()).await;
        let options = FailoverOptions { max_in_flight: 2, ..FailoverOptions::default() };
        let provider = crate::provider::connect_endpoints_with(&[url], options).unwrap();
        let answers = futures::future::join_all((0..12).map(|_| provider.get_block_number())).await;
        assert!(answers.iter().all(|a| matches!(a, Ok(1))), "{answers:?}");
        assert!(peak.load(Ordering::SeqCst) <= 2, "{} requests at once", peak.load(Ordering::SeqCst));
    }
}
