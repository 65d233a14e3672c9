//! Webhook notifications: execution, failure, escalation waiting, policy error, keeper balance
//! low and policy alerts.
//!
//! [`Notifier::notify`] never blocks and never fails: each webhook has its own bounded queue and
//! its own background task, which POSTs one notification at a time with a timeout per attempt
//! and bounded retries with exponential backoff. A slow or dead receiver therefore only fills
//! its own queue; once full, new notifications for it are dropped with a warning and counted in
//! `treasury_notifications_total{outcome="dropped"}`. Webhook URLs are never logged (chat
//! webhooks carry their secret in the URL): logs and metrics name a webhook by its label.

mod payload;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alloy::primitives::Address;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc};

use crate::config::{NotifyConfig, Webhook, WebhookFormat};
use crate::journal::IntentId;
use crate::metrics::{Delivery, Metrics};

/// Something operators are told about; serialised as JSON tagged by `event`, whose values are
/// the subscription names of `WEBHOOK_EVENTS`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event")]
pub enum Notification {
    /// An operation executed and reached the configured confirmations.
    #[serde(rename = "execution")]
    Executed {
        /// The intents it carried.
        intents: Vec<IntentId>,
        /// The policy that returned them.
        policy: String,
        /// The keeper transaction, hex.
        tx_hash: String,
        /// The block it was mined in.
        block: u64,
    },
    /// An intent could not be executed, or was refused.
    #[serde(rename = "failure")]
    Failed {
        /// The intent.
        intent: IntentId,
        /// The policy that returned it.
        policy: String,
        /// Why (revert reason, refusal, error).
        reason: String,
    },
    /// A tier-2 intent waits for a root approver.
    #[serde(rename = "escalation")]
    EscalationWaiting {
        /// The intent.
        intent: IntentId,
        /// The policy that returned it.
        policy: String,
        /// The root service's request id (`treasury root approve ID`).
        root_request: String,
        /// Why it escalated (tier, limits exceeded).
        reasons: Vec<String>,
    },
    /// A policy run failed (script error, sandbox limit, timeout).
    #[serde(rename = "policy_error")]
    PolicyError {
        /// The policy.
        policy: String,
        /// The error.
        error: String,
    },
    /// The keeper's balance fell under the configured threshold.
    #[serde(rename = "keeper_low")]
    KeeperBalanceLow {
        /// The keeper account.
        keeper: Address,
        /// Its balance, in wei (a decimal string in JSON).
        #[serde(with = "wei")]
        balance_wei: u128,
        /// The threshold, in wei (a decimal string in JSON).
        #[serde(with = "wei")]
        threshold_wei: u128,
    },
    /// An alert raised by a policy (or the agent).
    #[serde(rename = "alert")]
    Alert {
        /// The policy that raised it, or `agent`.
        policy: String,
        /// The message.
        message: String,
    },
    /// A keeper job's perform was mined and confirmed.
    #[serde(rename = "job_performed")]
    JobPerformed {
        /// The job.
        job: String,
        /// The transaction, hex.
        tx_hash: String,
        /// The block it was mined in.
        block: u64,
        /// Whether it succeeded (false: it reverted on chain).
        success: bool,
    },
    /// A keeper job was due but not performed (its check or perform would revert, a cap).
    #[serde(rename = "job_skipped")]
    JobSkipped {
        /// The job.
        job: String,
        /// Why.
        reason: String,
    },
}

impl Notification {
    /// The subscription name of this notification (`execution`, `failure`, `escalation`,
    /// `policy_error`, `keeper_low`, `alert`).
    pub fn event(&self) -> &'static str {
        match self {
            Self::Executed { .. } => "execution",
            Self::Failed { .. } => "failure",
            Self::EscalationWaiting { .. } => "escalation",
            Self::PolicyError { .. } => "policy_error",
            Self::KeeperBalanceLow { .. } => "keeper_low",
            Self::Alert { .. } => "alert",
            Self::JobPerformed { .. } => "job_performed",
            Self::JobSkipped { .. } => "job_skipped",
        }
    }

    /// One line for humans (Slack and Discord payloads).
    pub fn summary(&self) -> String {
        match self {
            Self::Executed { intents, policy, tx_hash, block } => {
                let ids: Vec<String> = intents.iter().map(ToString::to_string).collect();
                format!(
                    "treasury executed intent(s) {} of policy `{policy}` in tx {tx_hash} (block {block})",
                    ids.join(", ")
                )
            }
            Self::Failed { intent, policy, reason } => {
                format!("treasury intent {intent} of policy `{policy}` failed: {reason}")
            }
            Self::EscalationWaiting { intent, policy, root_request, reasons } => format!(
                "treasury intent {intent} of policy `{policy}` waits for root approval \
                 (request {root_request}): {}",
                if reasons.is_empty() { "tier 2".to_string() } else { reasons.join("; ") }
            ),
            Self::PolicyError { policy, error } => format!("treasury policy `{policy}` failed: {error}"),
            Self::KeeperBalanceLow { keeper, balance_wei, threshold_wei } => format!(
                "treasury keeper {keeper} balance is low: {} ETH (threshold {} ETH)",
                ether(*balance_wei),
                ether(*threshold_wei)
            ),
            Self::Alert { policy, message } => format!("treasury alert from policy `{policy}`: {message}"),
            Self::JobPerformed { job, tx_hash, block, success } => format!(
                "treasury keeper job `{job}` performed in tx {tx_hash} (block {block}){}",
                if *success { "" } else { ", which reverted" }
            ),
            Self::JobSkipped { job, reason } => format!("treasury keeper job `{job}` skipped: {reason}"),
        }
    }
}

/// Wei as ether with up to 6 decimals, for humans.
fn ether(wei: u128) -> String {
    const WEI: u128 = 1_000_000_000_000_000_000;
    let micro = (wei % WEI) / 1_000_000_000_000;
    let s = format!("{}.{micro:06}", wei / WEI);
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// `u128` as a decimal string, since JSON numbers lose precision past 2^53.
mod wei {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// Why the notifier could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    /// The HTTP client could not be built (TLS set-up).
    #[error("cannot build the webhook HTTP client")]
    Client(#[source] reqwest::Error),
    /// The variable named by a webhook's `url_env` is unset or empty.
    #[error("{webhook}: environment variable {var} (url_env) is unset or empty")]
    UrlEnv {
        /// The webhook's label.
        webhook: String,
        /// The variable.
        var: String,
    },
    /// A webhook's URL is not an http(s) URL (the URL itself is not shown: it may hold a secret).
    #[error("{webhook}: the webhook URL is not a valid http(s) URL")]
    BadUrl {
        /// The webhook's label.
        webhook: String,
    },
}

/// How hard one notification is tried.
#[derive(Debug, Clone, Copy)]
struct Retry {
    max_attempts: u32,
    timeout: Duration,
    initial: Duration,
    max: Duration,
}

#[derive(Debug)]
struct Hook {
    label: String,
    events: Vec<String>,
    queue: mpsc::Sender<Queued>,
}

#[derive(Debug)]
struct Queued {
    notification: Arc<Notification>,
    at: u64,
}

/// Sends notifications to the configured webhooks; cheap to clone.
#[derive(Debug, Clone)]
pub struct Notifier {
    hooks: Arc<[Hook]>,
    metrics: Arc<Metrics>,
    pending: Arc<Pending>,
}

/// Notifications accepted but not yet delivered or given up, across all webhooks.
#[derive(Debug, Default)]
struct Pending {
    count: AtomicUsize,
    idle: Notify,
}

impl Pending {
    fn add(&self) {
        self.count.fetch_add(1, Ordering::SeqCst);
    }

    fn done(&self) {
        if self.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.idle.notify_waiters();
        }
    }
}

impl Notifier {
    /// Starts one delivery task per webhook of `cfg`; must be called inside a Tokio runtime.
    ///
    /// The tasks end once every clone of the notifier is dropped and their queues are drained.
    pub fn spawn(cfg: &NotifyConfig, metrics: Arc<Metrics>) -> Result<Self, NotifyError> {
        if cfg.webhooks.is_empty() {
            // No HTTP client for no webhook (a process with many treasuries has many notifiers).
            return Ok(Self { hooks: Arc::from(Vec::new()), metrics, pending: Arc::default() });
        }
        let retry = Retry {
            max_attempts: cfg.max_attempts.max(1),
            timeout: cfg.timeout.max(Duration::from_millis(1)),
            initial: cfg.backoff_initial,
            max: cfg.backoff_max.max(cfg.backoff_initial),
        };
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(retry.timeout)
            .user_agent(concat!("treasury/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(NotifyError::Client)?;
        let pending = Arc::new(Pending::default());
        let mut workers = Vec::with_capacity(cfg.webhooks.len());
        for (i, hook) in cfg.webhooks.iter().enumerate() {
            let label = hook.name.clone().unwrap_or_else(|| format!("webhook[{i}]"));
            let url = target(hook, &label)?;
            workers.push(Worker {
                label,
                url,
                format: hook.format,
                client: client.clone(),
                retry,
                metrics: metrics.clone(),
                pending: pending.clone(),
            });
        }
        // Only once every URL resolved: a config error leaves no task behind.
        let hooks = workers
            .into_iter()
            .zip(&cfg.webhooks)
            .map(|(worker, hook)| {
                let (queue, rx) = mpsc::channel(cfg.queue_size.max(1));
                let label = worker.label.clone();
                tokio::spawn(worker.run(rx));
                Hook { label, events: hook.events.clone(), queue }
            })
            .collect();
        Ok(Self { hooks, metrics, pending })
    }

    /// A notifier with no webhook: every notification is discarded.
    pub fn disabled() -> Self {
        Self { hooks: Arc::from(Vec::new()), metrics: Arc::new(Metrics::new()), pending: Arc::default() }
    }

    /// Waits until every notification accepted so far is delivered or given up, at most `grace`;
    /// returns whether it got there. For a clean exit (`treasury run --once`): a receiver that
    /// hangs can only cost `grace`.
    pub async fn drain(&self, grace: Duration) -> bool {
        let wait = async {
            loop {
                let idle = self.pending.idle.notified();
                tokio::pin!(idle);
                idle.as_mut().enable();
                if self.pending.count.load(Ordering::SeqCst) == 0 {
                    return;
                }
                idle.await;
            }
        };
        tokio::time::timeout(grace, wait).await.is_ok()
    }

    /// The label of each webhook (its `name`, or `webhook[INDEX]`), as used in logs and metrics.
    pub fn labels(&self) -> Vec<String> {
        self.hooks.iter().map(|h| h.label.clone()).collect()
    }

    /// Queues `notification` for every webhook subscribed to its event; never blocks or fails.
    ///
    /// When a webhook's queue is full the notification is dropped for that webhook, with a
    /// warning and the `dropped` counter.
    pub fn notify(&self, notification: Notification) {
        let event = notification.event();
        let notification = Arc::new(notification);
        let at = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        for hook in self.hooks.iter() {
            if !hook.events.is_empty() && !hook.events.iter().any(|e| e == event) {
                continue;
            }
            let queued = Queued { notification: notification.clone(), at };
            self.pending.add();
            if let Err(e) = hook.queue.try_send(queued) {
                self.pending.done();
                let why = match e {
                    mpsc::error::TrySendError::Full(_) => "queue full",
                    mpsc::error::TrySendError::Closed(_) => "worker stopped",
                };
                tracing::warn!(webhook = %hook.label, event, why, "notification dropped");
                self.metrics.inc_notification(&hook.label, Delivery::Dropped);
            }
        }
    }
}

/// The URL of `hook`: its `url`, or the value of its `url_env` variable.
fn target(hook: &Webhook, label: &str) -> Result<reqwest::Url, NotifyError> {
    let url = match &hook.url_env {
        Some(var) => std::env::var(var)
            .ok()
            .filter(|u| !u.trim().is_empty())
            .ok_or_else(|| NotifyError::UrlEnv { webhook: label.to_string(), var: var.clone() })?,
        None => hook.url.clone(),
    };
    reqwest::Url::parse(url.trim())
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .ok_or_else(|| NotifyError::BadUrl { webhook: label.to_string() })
}

/// The delivery task of one webhook.
struct Worker {
    label: String,
    url: reqwest::Url,
    format: WebhookFormat,
    client: reqwest::Client,
    retry: Retry,
    metrics: Arc<Metrics>,
    pending: Arc<Pending>,
}

impl Worker {
    async fn run(self, mut rx: mpsc::Receiver<Queued>) {
        while let Some(queued) = rx.recv().await {
            let body = payload::body(self.format, &queued.notification, queued.at);
            let outcome = self.deliver(queued.notification.event(), &body).await;
            self.metrics.inc_notification(&self.label, outcome);
            self.pending.done();
        }
    }

    async fn deliver(&self, event: &str, body: &serde_json::Value) -> Delivery {
        let mut backoff = self.retry.initial;
        for attempt in 1..=self.retry.max_attempts {
            let sent = self.client.post(self.url.clone()).json(body).timeout(self.retry.timeout).send().await;
            match sent {
                Ok(resp) if resp.status().is_success() => {
                    tracing::debug!(webhook = %self.label, event, attempt, "notification delivered");
                    return Delivery::Delivered;
                }
                Ok(resp) if !retryable(resp.status()) => {
                    let status = resp.status().as_u16();
                    tracing::warn!(webhook = %self.label, event, status, "notification refused, not retried");
                    return Delivery::Failed;
                }
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    tracing::warn!(webhook = %self.label, event, attempt, status, "webhook attempt failed");
                }
                Err(e) => {
                    let error = e.without_url();
                    tracing::warn!(webhook = %self.label, event, attempt, %error, "webhook attempt failed");
                }
            }
            if attempt < self.retry.max_attempts {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(self.retry.max);
            }
        }
        tracing::warn!(webhook = %self.label, event, attempts = self.retry.max_attempts, "notification given up");
        Delivery::Failed
    }
}

/// Whether an HTTP answer may go better later: server errors, timeouts, rate limits.
fn retryable(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls_from_the_config_or_the_environment_never_echoed() {
        let hook = |url: &str, env: Option<&str>| Webhook {
            url: url.into(),
            url_env: env.map(String::from),
            name: None,
            events: vec![],
            format: WebhookFormat::Slack,
        };
        let url = target(&hook("https://hooks.example.org/x", None), "a").unwrap();
        assert_eq!(url.as_str(), "https://hooks.example.org/x");
        let unset = target(&hook("", Some("TREASURY_TEST_SURELY_UNSET_VAR")), "ops").unwrap_err();
        assert_eq!(
            unset.to_string(),
            "ops: environment variable TREASURY_TEST_SURELY_UNSET_VAR (url_env) is unset or empty"
        );
        // PATH is set in any test environment, and is no URL.
        let bad = target(&hook("", Some("PATH")), "ops").unwrap_err().to_string();
        assert_eq!(bad, "ops: the webhook URL is not a valid http(s) URL");
        let secret = target(&hook("ftp://secret-token@example.org", None), "b").unwrap_err().to_string();
        assert!(!secret.contains("secret-token"), "{secret}");
    }

    #[test]
    fn ether_amounts_for_humans() {
        assert_eq!(ether(50_000_000_000_000_000), "0.05");
        assert_eq!(ether(2_000_000_000_000_000_000), "2");
        assert_eq!(ether(1_234_567_890_000_000_000), "1.234567");
        assert_eq!(ether(0), "0");
    }

    #[test]
    fn wei_round_trips_as_a_decimal_string() {
        let n = Notification::KeeperBalanceLow {
            keeper: Address::ZERO,
            balance_wei: u128::MAX,
            threshold_wei: 5,
        };
        let json = serde_json::to_value(&n).unwrap();
        assert_eq!(json["event"], "keeper_low");
        assert_eq!(json["balance_wei"], u128::MAX.to_string());
        assert_eq!(serde_json::from_value::<Notification>(json).unwrap(), n);
    }

    #[test]
    fn every_event_is_a_subscription_name() {
        let all = [
            Notification::Executed { intents: vec![], policy: "p".into(), tx_hash: "0x".into(), block: 1 },
            Notification::Failed { intent: IntentId(1), policy: "p".into(), reason: "r".into() },
            Notification::EscalationWaiting {
                intent: IntentId(1),
                policy: "p".into(),
                root_request: "r".into(),
                reasons: vec![],
            },
            Notification::PolicyError { policy: "p".into(), error: "e".into() },
            Notification::KeeperBalanceLow { keeper: Address::ZERO, balance_wei: 1, threshold_wei: 2 },
            Notification::Alert { policy: "p".into(), message: "m".into() },
            Notification::JobPerformed { job: "j".into(), tx_hash: "0x".into(), block: 1, success: true },
            Notification::JobSkipped { job: "j".into(), reason: "r".into() },
        ];
        let mut events: Vec<&str> = all.iter().map(Notification::event).collect();
        let mut names = crate::config::WEBHOOK_EVENTS.to_vec();
        events.sort_unstable();
        names.sort_unstable();
        assert_eq!(events, names);
        for n in &all {
            assert_eq!(serde_json::to_value(n).unwrap()["event"], n.event());
        }
    }
}
