//! Waking up for new blocks: a WebSocket `newHeads` subscription when configured, else a timer.
//!
//! The subscription only wakes the watcher; every read still goes through the pipeline's provider
//! (HTTP by default), so a stalled or dropped WebSocket costs latency, never a block. When the
//! connection fails or drops the watcher logs it, polls every `poll_interval`, and retries the
//! WebSocket every `reconnect` (default [`RECONNECT_DELAY`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use alloy::providers::{DynProvider, Provider, ProviderBuilder, WsConnect};
use alloy::pubsub::Subscription;
use alloy::rpc::types::Header;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// The longest a WebSocket connection and subscription may take before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Default pause between two attempts to (re)connect the WebSocket.
pub const RECONNECT_DELAY: Duration = Duration::from_secs(10);

/// How the watcher learns about new blocks right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// A live WebSocket `newHeads` subscription.
    Ws,
    /// Polling over HTTP every `poll_interval` (no WebSocket configured, or it failed).
    Http,
}

/// The source of wake-ups; dropping it stops the background task.
#[derive(Debug)]
pub(crate) struct Heads {
    notify: Arc<Notify>,
    ws_up: Arc<AtomicBool>,
    task: Option<JoinHandle<()>>,
}

impl Heads {
    /// Timer only.
    pub(crate) fn polling() -> Self {
        Self { notify: Arc::new(Notify::new()), ws_up: Arc::new(AtomicBool::new(false)), task: None }
    }

    /// Subscribes to `url`'s new heads (the first attempt is awaited, so [`Heads::transport`] is
    /// meaningful on return) and keeps the subscription alive in a background task.
    pub(crate) async fn websocket(url: String, reconnect: Duration) -> Self {
        let mut heads = Self::polling();
        let first = subscribe(&url).await;
        match &first {
            Ok(_) => {
                heads.ws_up.store(true, Ordering::SeqCst);
                tracing::info!(url = %treasury_chain::redact::redact_urls(&url), "watching new heads over WebSocket");
            }
            Err(e) => {
                tracing::warn!(url = %treasury_chain::redact::redact_urls(&url), error = %treasury_chain::redact::redact_urls(&e.to_string()), "WebSocket unavailable: polling over HTTP")
            }
        }
        let (notify, ws_up) = (heads.notify.clone(), heads.ws_up.clone());
        let task = tokio::spawn(async move {
            let mut current = first.ok();
            loop {
                if let Some((_provider, mut sub)) = current.take() {
                    ws_up.store(true, Ordering::SeqCst);
                    loop {
                        match sub.recv().await {
                            Ok(_) => notify.notify_one(),
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => notify.notify_one(),
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                        }
                    }
                    ws_up.store(false, Ordering::SeqCst);
                    // Wake the watcher so it polls now rather than after a missed head.
                    notify.notify_one();
                    tracing::warn!(url = %treasury_chain::redact::redact_urls(&url), "WebSocket subscription dropped: polling over HTTP");
                }
                tokio::time::sleep(reconnect).await;
                match subscribe(&url).await {
                    Ok(sub) => {
                        tracing::info!(url = %treasury_chain::redact::redact_urls(&url), "WebSocket reconnected");
                        current = Some(sub);
                    }
                    Err(e) => {
                        tracing::debug!(url = %treasury_chain::redact::redact_urls(&url), error = %treasury_chain::redact::redact_urls(&e.to_string()), "WebSocket still unavailable")
                    }
                }
            }
        });
        heads.task = Some(task);
        heads
    }

    /// Whether blocks arrive over WebSocket now or are polled.
    pub(crate) fn transport(&self) -> Transport {
        if self.ws_up.load(Ordering::SeqCst) { Transport::Ws } else { Transport::Http }
    }

    /// Returns on the next new head (WebSocket) or after `interval`, whichever comes first.
    pub(crate) async fn wait(&self, interval: Duration) {
        let _ = tokio::time::timeout(interval, self.notify.notified()).await;
    }
}

impl Drop for Heads {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Connects to `url` and subscribes to new heads. The transport gives up after one failed
/// reconnection, so a drop surfaces here quickly and the watcher falls back to polling.
/// The subscription holds only a weak handle on the client, so the provider is returned with it
/// and kept alive alongside.
async fn subscribe(url: &str) -> Result<Live, alloy::transports::TransportError> {
    let attempt = async {
        let connect = WsConnect::new(url).with_max_retries(1).with_retry_interval(Duration::from_millis(100));
        let provider = ProviderBuilder::new().connect_ws(connect).await?.erased();
        let sub = provider.subscribe_blocks().await?;
        Ok((provider, sub))
    };
    tokio::time::timeout(CONNECT_TIMEOUT, attempt).await.unwrap_or_else(|_| {
        Err(alloy::transports::TransportErrorKind::custom_str("WebSocket connection timed out"))
    })
}

/// A WebSocket provider and its `newHeads` subscription.
type Live = (DynProvider, Subscription<Header>);
