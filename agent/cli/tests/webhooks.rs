//! Webhook notifications to local HTTP receivers: payload formats, event filters, retries with
//! backoff, bounded attempts, and dead receivers (closed port, hanging) that neither block
//! `notify()` nor delay a healthy webhook. Assertions count and order deliveries; waits are
//! bounded but never measured.
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use alloy::primitives::Address;
use axum::http::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use treasury_agent::config::{NotifyConfig, Webhook, WebhookFormat};
use treasury_agent::journal::IntentId;
use treasury_agent::metrics::{Delivery, Metrics};
use treasury_agent::notify::{Notification, Notifier};

/// The longest any wait in these tests may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(30);

#[derive(Clone, Copy)]
enum Behaviour {
    /// 200 to everything.
    Ok,
    /// 500 to the first `n` requests, then 200.
    FailFirst(usize),
    /// This status to everything.
    Always(u16),
    /// Reads the request, never answers.
    Hang,
}

/// A local webhook receiver: every request body in arrival order, and a hit counter.
struct Receiver {
    url: String,
    bodies: mpsc::UnboundedReceiver<Value>,
    hits: Arc<AtomicUsize>,
}

impl Receiver {
    async fn start(behaviour: Behaviour) -> Self {
        let (tx, bodies) = mpsc::unbounded_channel();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
                let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                let _ = tx.send(body);
                async move {
                    match behaviour {
                        Behaviour::Ok => StatusCode::OK,
                        Behaviour::FailFirst(k) if n <= k => StatusCode::INTERNAL_SERVER_ERROR,
                        Behaviour::FailFirst(_) => StatusCode::NO_CONTENT,
                        Behaviour::Always(code) => StatusCode::from_u16(code).unwrap(),
                        Behaviour::Hang => std::future::pending().await,
                    }
                }
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, bodies, hits }
    }

    /// The next body received; fails the test if none comes within [`PATIENCE`].
    async fn next(&mut self) -> Value {
        tokio::time::timeout(PATIENCE, self.bodies.recv()).await.expect("no delivery").unwrap()
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A URL on which nothing listens.
async fn closed_port_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    drop(listener);
    url
}

fn hook(name: &str, url: &str, format: WebhookFormat, events: &[&str]) -> Webhook {
    Webhook {
        url: url.to_string(),
        url_env: None,
        name: Some(name.to_string()),
        events: events.iter().map(|e| e.to_string()).collect(),
        format,
    }
}

fn config(webhooks: Vec<Webhook>) -> NotifyConfig {
    NotifyConfig {
        webhooks,
        queue_size: 64,
        max_attempts: 4,
        timeout: std::time::Duration::from_secs(120),
        backoff_initial: std::time::Duration::from_millis(10),
        backoff_max: std::time::Duration::from_millis(40),
    }
}

/// Waits until `metrics` counts `n` outcomes of `outcome` for `webhook`.
async fn wait_for(metrics: &Metrics, webhook: &str, outcome: Delivery, n: u64) {
    let done = async {
        while metrics.notifications(webhook, outcome) < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(PATIENCE, done).await.unwrap_or_else(|_| {
        panic!("{webhook}: {} {} of {n}", metrics.notifications(webhook, outcome), outcome.as_str())
    });
}

fn executed() -> Notification {
    Notification::Executed {
        intents: vec![IntentId(3), IntentId(4)],
        policy: "payroll".into(),
        tx_hash: "0xabc".into(),
        block: 1234,
    }
}

fn failed(intent: i64) -> Notification {
    Notification::Failed { intent: IntentId(intent), policy: "grants".into(), reason: "reverted".into() }
}

#[tokio::test]
async fn json_slack_and_discord_payloads() {
    let mut json_rx = Receiver::start(Behaviour::Ok).await;
    let mut slack_rx = Receiver::start(Behaviour::Ok).await;
    let mut discord_rx = Receiver::start(Behaviour::Ok).await;
    let metrics = Arc::new(Metrics::new());
    let notifier = Notifier::spawn(
        &config(vec![
            hook("generic", &json_rx.url, WebhookFormat::Json, &[]),
            hook("slack", &slack_rx.url, WebhookFormat::Slack, &[]),
            hook("discord", &discord_rx.url, WebhookFormat::Discord, &[]),
        ]),
        metrics.clone(),
    )
    .unwrap();
    assert_eq!(notifier.labels(), ["generic", "slack", "discord"]);
    notifier.notify(executed());
    let keeper = Address::repeat_byte(0x33);
    notifier.notify(Notification::KeeperBalanceLow {
        keeper,
        balance_wei: 40_000_000_000_000_000,
        threshold_wei: 50_000_000_000_000_000,
    });

    let mut body = json_rx.next().await;
    assert!(body["at"].as_u64().unwrap() > 1_700_000_000_000, "{body}");
    body.as_object_mut().unwrap().remove("at");
    assert_eq!(
        body,
        json!({ "event": "execution", "intents": [3, 4], "policy": "payroll", "tx_hash": "0xabc", "block": 1234 })
    );
    let low = json_rx.next().await;
    assert_eq!(low["event"], "keeper_low");
    assert_eq!(low["keeper"].as_str().unwrap().parse::<Address>().unwrap(), keeper);
    assert_eq!(
        (low["balance_wei"].as_str(), low["threshold_wei"].as_str()),
        (Some("40000000000000000"), Some("50000000000000000"))
    );

    assert_eq!(
        slack_rx.next().await,
        json!({ "text": "treasury executed intent(s) 3, 4 of policy `payroll` in tx 0xabc (block 1234)" })
    );
    let slack_low = slack_rx.next().await;
    assert_eq!(slack_low.as_object().unwrap().len(), 1, "{slack_low}");
    assert!(slack_low["text"].as_str().unwrap().contains("balance is low: 0.04 ETH (threshold 0.05 ETH)"));

    let discord = discord_rx.next().await;
    assert_eq!(
        discord["content"],
        "treasury executed intent(s) 3, 4 of policy `payroll` in tx 0xabc (block 1234)"
    );
    assert_eq!(discord["allowed_mentions"], json!({ "parse": [] }));
    assert!(discord_rx.next().await["content"].as_str().unwrap().contains("keeper"));

    for label in ["generic", "slack", "discord"] {
        wait_for(&metrics, label, Delivery::Delivered, 2).await;
        assert_eq!(metrics.notifications(label, Delivery::Failed), 0);
    }
}

#[tokio::test]
async fn webhooks_get_only_the_events_they_subscribe_to() {
    let mut all = Receiver::start(Behaviour::Ok).await;
    let mut failures = Receiver::start(Behaviour::Ok).await;
    let notifier = Notifier::spawn(
        &config(vec![
            hook("all", &all.url, WebhookFormat::Json, &[]),
            hook("failures", &failures.url, WebhookFormat::Json, &["failure"]),
        ]),
        Arc::new(Metrics::new()),
    )
    .unwrap();
    notifier.notify(executed());
    notifier.notify(failed(1));
    notifier.notify(Notification::PolicyError { policy: "dca".into(), error: "limit".into() });
    notifier.notify(Notification::Alert { policy: "dca".into(), message: "price stale".into() });
    notifier.notify(Notification::EscalationWaiting {
        intent: IntentId(9),
        policy: "grants".into(),
        root_request: "req-1".into(),
        reasons: vec!["tier 2: above 10000 USDC".into()],
    });
    notifier.notify(failed(2));

    let mut events = Vec::new();
    for _ in 0..6 {
        events.push(all.next().await["event"].as_str().unwrap().to_string());
    }
    assert_eq!(events, ["execution", "failure", "policy_error", "alert", "escalation", "failure"]);
    // One worker per webhook delivers in order: anything filtered wrongly would come before intent 2.
    assert_eq!(failures.next().await["intent"], 1);
    assert_eq!(failures.next().await["intent"], 2);
    assert_eq!(failures.hits(), 2);
}

#[tokio::test]
async fn retries_with_backoff_until_delivered_and_bounded_attempts() {
    let mut flaky = Receiver::start(Behaviour::FailFirst(2)).await;
    let broken = Receiver::start(Behaviour::Always(503)).await;
    let refusing = Receiver::start(Behaviour::Always(404)).await;
    let metrics = Arc::new(Metrics::new());
    let notifier = Notifier::spawn(
        &config(vec![
            hook("flaky", &flaky.url, WebhookFormat::Json, &[]),
            hook("broken", &broken.url, WebhookFormat::Json, &[]),
            hook("refusing", &refusing.url, WebhookFormat::Json, &[]),
        ]),
        metrics.clone(),
    )
    .unwrap();
    notifier.notify(failed(5));

    // The same event three times: two 500s, then accepted.
    for _ in 0..3 {
        assert_eq!(flaky.next().await["intent"], 5);
    }
    wait_for(&metrics, "flaky", Delivery::Delivered, 1).await;
    assert_eq!(flaky.hits(), 3);
    assert_eq!(metrics.notifications("flaky", Delivery::Failed), 0);

    // Always 503: exactly max_attempts tries, then given up.
    wait_for(&metrics, "broken", Delivery::Failed, 1).await;
    assert_eq!(broken.hits(), 4);
    // 404 is not worth retrying.
    wait_for(&metrics, "refusing", Delivery::Failed, 1).await;
    assert_eq!(refusing.hits(), 1);
    assert_eq!(metrics.notifications("broken", Delivery::Delivered), 0);
}

#[tokio::test]
async fn dead_receivers_delay_neither_notify_nor_a_healthy_webhook() {
    let mut hanging = Receiver::start(Behaviour::Hang).await;
    let closed = closed_port_url().await;
    let mut healthy = Receiver::start(Behaviour::Ok).await;
    let metrics = Arc::new(Metrics::new());
    let notifier = Notifier::spawn(
        &config(vec![
            hook("hanging", &hanging.url, WebhookFormat::Json, &[]),
            hook("closed", &closed, WebhookFormat::Slack, &[]),
            hook("healthy", &healthy.url, WebhookFormat::Json, &[]),
        ]),
        metrics.clone(),
    )
    .unwrap();
    for i in 0..20 {
        notifier.notify(failed(i));
    }
    for i in 0..20 {
        assert_eq!(healthy.next().await["intent"], i, "in order, none missing");
    }
    wait_for(&metrics, "healthy", Delivery::Delivered, 20).await;
    // Meanwhile the hanging receiver got (or gets) the first notification's first attempt, and
    // holds it: nothing else reached it.
    assert_eq!(hanging.next().await["intent"], 0);
    assert_eq!(hanging.hits(), 1);
    assert_eq!(metrics.notifications("hanging", Delivery::Delivered), 0);
    assert_eq!(metrics.notifications("hanging", Delivery::Failed), 0);
    assert_eq!(metrics.notifications("healthy", Delivery::Dropped), 0);
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_instead_of_blocking() {
    let hanging = Receiver::start(Behaviour::Hang).await;
    let metrics = Arc::new(Metrics::new());
    let mut cfg = config(vec![hook("hanging", &hanging.url, WebhookFormat::Json, &[])]);
    cfg.queue_size = 2;
    let notifier = Notifier::spawn(&cfg, metrics.clone()).unwrap();
    // Every call returns although the receiver never answers: at most one notification in flight
    // plus two queued; the rest are dropped and counted on the spot.
    for i in 0..10 {
        notifier.notify(failed(i));
    }
    let dropped = metrics.notifications("hanging", Delivery::Dropped);
    assert!((7..=8).contains(&dropped), "dropped {dropped}");
    let text = metrics.render(&Default::default());
    assert!(text.contains(&format!(
        "treasury_notifications_total{{webhook=\"hanging\",outcome=\"dropped\"}} {dropped}"
    )));
    // A notifier without webhooks accepts everything and does nothing.
    Notifier::disabled().notify(failed(0));
}

#[tokio::test]
async fn drain_waits_for_every_delivery_and_a_hanging_receiver_only_costs_the_grace() {
    let flaky = Receiver::start(Behaviour::FailFirst(1)).await;
    let metrics = Arc::new(Metrics::new());
    let notifier =
        Notifier::spawn(&config(vec![hook("flaky", &flaky.url, WebhookFormat::Json, &[])]), metrics.clone())
            .unwrap();
    for i in 0..5 {
        notifier.notify(failed(i));
    }
    assert!(notifier.drain(PATIENCE).await, "everything delivered");
    // Nothing is left in flight once drain returns: one refused attempt, then five deliveries.
    assert_eq!(flaky.hits(), 6);
    assert_eq!(metrics.notifications("flaky", Delivery::Delivered), 5);
    assert!(notifier.drain(Duration::ZERO).await, "nothing pending");

    let hanging = Receiver::start(Behaviour::Hang).await;
    let stuck = Notifier::spawn(
        &config(vec![hook("hanging", &hanging.url, WebhookFormat::Json, &[])]),
        Arc::new(Metrics::new()),
    )
    .unwrap();
    stuck.notify(failed(1));
    assert!(!stuck.drain(Duration::from_millis(200)).await, "a hanging receiver never completes");
    assert!(hanging.hits() <= 1);
}
