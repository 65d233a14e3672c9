//! Prometheus metrics of the agent: stage latencies, chain head, keeper balance, signer
//! availability, intents created, policy errors and webhook deliveries.
//!
//! The pipeline updates one shared [`Metrics`] (`Arc<Metrics>`); the HTTP API renders it in the
//! Prometheus text exposition format (version 0.0.4) at `/metrics`, together with the number of
//! intents in each state, which is read from the journal at scrape time (so it is never stale
//! and survives restarts). The format is written by hand: a dozen families do not justify a
//! registry crate, and the output is checked by a real parser in the API test.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use alloy::primitives::Address;

use crate::journal::IntentState;

/// Upper bounds (seconds) of the stage latency histogram buckets; `+Inf` is implied.
///
/// From 5 ms (a snapshot on a local node) to an hour (a confirmation, or a tier-2 total that
/// waits for a human approval).
pub const STAGE_BUCKETS: [f64; 16] =
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];

/// A pipeline stage whose latency is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    /// Reading the chain state at a pinned block.
    Snapshot,
    /// Running a policy script.
    Policy,
    /// Journaling intents (guard included).
    Journal,
    /// Turning intents into a module operation.
    Plan,
    /// FROST quorum signing.
    Sign,
    /// Root signer (tier 2), approval wait included.
    Root,
    /// Signing and broadcasting the keeper transaction.
    Submit,
    /// From broadcast to the configured confirmation depth.
    Confirm,
    /// From trigger to confirmation.
    Total,
}

impl Stage {
    /// Every stage, in flow order.
    pub const ALL: [Stage; 9] = [
        Self::Snapshot,
        Self::Policy,
        Self::Journal,
        Self::Plan,
        Self::Sign,
        Self::Root,
        Self::Submit,
        Self::Confirm,
        Self::Total,
    ];

    /// The `stage` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Snapshot => "snapshot",
            Self::Policy => "policy",
            Self::Journal => "journal",
            Self::Plan => "plan",
            Self::Sign => "sign",
            Self::Root => "root",
            Self::Submit => "submit",
            Self::Confirm => "confirm",
            Self::Total => "total",
        }
    }
}

/// What became of one notification for one webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Delivery {
    /// The receiver answered 2xx.
    Delivered,
    /// Every attempt failed, or the receiver refused it for good (4xx).
    Failed,
    /// The webhook's queue was full (or its worker gone): never sent.
    Dropped,
}

impl Delivery {
    /// The `outcome` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Failed => "failed",
            Self::Dropped => "dropped",
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Histogram {
    /// Per bucket (not cumulative), plus the `+Inf` overflow at the end.
    buckets: [u64; STAGE_BUCKETS.len() + 1],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        let i = STAGE_BUCKETS.iter().position(|&le| secs <= le).unwrap_or(STAGE_BUCKETS.len());
        self.buckets[i] += 1;
        self.sum += secs;
        self.count += 1;
    }
}

#[derive(Debug, Default)]
struct Inner {
    stages: BTreeMap<Stage, Histogram>,
    last_block: Option<u64>,
    keeper: Option<(Address, u128)>,
    signers: BTreeMap<String, bool>,
    intents_created: BTreeMap<String, u64>,
    policy_errors: BTreeMap<String, u64>,
    notifications: BTreeMap<(String, Delivery), u64>,
}

/// The agent's metrics; thread-safe, shared as `Arc<Metrics>`.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

/// A copy of the gauges, for the status endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gauges {
    /// The last block the pipeline saw, if any yet.
    pub last_block: Option<u64>,
    /// The keeper address and its balance in wei, once read.
    pub keeper: Option<(Address, u128)>,
    /// Each signer node's availability at the last look.
    pub signers: BTreeMap<String, bool>,
}

impl Metrics {
    /// Empty metrics.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update leaves `Inner` consistent, so a panic elsewhere does not poison the data.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records how long one run of `stage` took.
    pub fn observe_stage(&self, stage: Stage, elapsed: Duration) {
        self.lock().stages.entry(stage).or_default().observe(elapsed.as_secs_f64());
    }

    /// Records the newest block seen.
    pub fn set_last_block(&self, block: u64) {
        self.lock().last_block = Some(block);
    }

    /// Records the keeper's balance in wei.
    pub fn set_keeper_balance(&self, keeper: Address, wei: u128) {
        self.lock().keeper = Some((keeper, wei));
    }

    /// Records whether signer node `node` answered at the last look.
    pub fn set_signer_up(&self, node: &str, up: bool) {
        self.lock().signers.insert(node.to_string(), up);
    }

    /// Counts one intent newly journaled for `policy`.
    pub fn inc_intents_created(&self, policy: &str) {
        *self.lock().intents_created.entry(policy.to_string()).or_default() += 1;
    }

    /// Counts one failed run (error, limit, timeout) of `policy`.
    pub fn inc_policy_errors(&self, policy: &str) {
        *self.lock().policy_errors.entry(policy.to_string()).or_default() += 1;
    }

    /// Counts what became of one notification for the webhook labelled `webhook`.
    pub fn inc_notification(&self, webhook: &str, outcome: Delivery) {
        *self.lock().notifications.entry((webhook.to_string(), outcome)).or_default() += 1;
    }

    /// How many notifications for `webhook` ended as `outcome`.
    pub fn notifications(&self, webhook: &str, outcome: Delivery) -> u64 {
        self.lock().notifications.get(&(webhook.to_string(), outcome)).copied().unwrap_or(0)
    }

    /// How many observations `stage` has.
    pub fn stage_count(&self, stage: Stage) -> u64 {
        self.lock().stages.get(&stage).map_or(0, |h| h.count)
    }

    /// The current gauges.
    pub fn gauges(&self) -> Gauges {
        let inner = self.lock();
        Gauges { last_block: inner.last_block, keeper: inner.keeper, signers: inner.signers.clone() }
    }

    /// Renders every metric in the Prometheus text format, with `intents_by_state` (from
    /// [`crate::journal::Journal::count_by_state`]) as the `treasury_intents` gauge.
    pub fn render(&self, intents_by_state: &BTreeMap<IntentState, u64>) -> String {
        let inner = self.lock();
        let mut out = String::with_capacity(4096);

        family(&mut out, "treasury_intents", "gauge", "Intents in the journal, by state.");
        for state in IntentState::ALL {
            let n = intents_by_state.get(&state).copied().unwrap_or(0);
            sample(&mut out, "treasury_intents", &[("state", state.as_str())], n as f64);
        }

        let name = "treasury_stage_duration_seconds";
        family(&mut out, name, "histogram", "Latency of each pipeline stage, in seconds.");
        let empty = Histogram::default();
        for stage in Stage::ALL {
            let h = inner.stages.get(&stage).unwrap_or(&empty);
            let mut cumulative = 0;
            for (i, le) in STAGE_BUCKETS.iter().enumerate() {
                cumulative += h.buckets[i];
                let le = fmt_f64(*le);
                sample(
                    &mut out,
                    &format!("{name}_bucket"),
                    &[("stage", stage.as_str()), ("le", &le)],
                    cumulative as f64,
                );
            }
            let labels = [("stage", stage.as_str())];
            let bucket = format!("{name}_bucket");
            sample(&mut out, &bucket, &[labels[0], ("le", "+Inf")], h.count as f64);
            sample(&mut out, &format!("{name}_sum"), &labels, h.sum);
            sample(&mut out, &format!("{name}_count"), &labels, h.count as f64);
        }

        family(&mut out, "treasury_last_block", "gauge", "The newest block the agent has seen.");
        if let Some(block) = inner.last_block {
            sample(&mut out, "treasury_last_block", &[], block as f64);
        }

        let name = "treasury_keeper_balance_wei";
        family(&mut out, name, "gauge", "Balance of the keeper account, in wei.");
        if let Some((keeper, wei)) = inner.keeper {
            sample(&mut out, name, &[("keeper", &keeper.to_checksum(None))], wei as f64);
        }

        family(&mut out, "treasury_signer_up", "gauge", "Whether each signer node answered (1) or not (0).");
        for (node, up) in &inner.signers {
            sample(&mut out, "treasury_signer_up", &[("node", node)], f64::from(u8::from(*up)));
        }

        let name = "treasury_intents_created_total";
        family(&mut out, name, "counter", "Intents newly journaled since start, by policy.");
        for (policy, n) in &inner.intents_created {
            sample(&mut out, name, &[("policy", policy)], *n as f64);
        }

        let name = "treasury_policy_errors_total";
        family(&mut out, name, "counter", "Policy runs that failed since start, by policy.");
        for (policy, n) in &inner.policy_errors {
            sample(&mut out, name, &[("policy", policy)], *n as f64);
        }

        let name = "treasury_notifications_total";
        family(&mut out, name, "counter", "Webhook notifications since start, by webhook and outcome.");
        for ((webhook, outcome), n) in &inner.notifications {
            sample(&mut out, name, &[("webhook", webhook), ("outcome", outcome.as_str())], *n as f64);
        }
        out
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (key, value)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{key}=\"{}\"", escape_label(value));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {}", fmt_f64(value));
}

/// Label values escape `\`, `"` and line feeds.
fn escape_label(value: &str) -> String {
    let mut s = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// A sample value as Prometheus reads it (Rust never prints exponents for `f64`).
fn fmt_f64(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    fn value(text: &str, series: &str) -> f64 {
        let line = lines(text)
            .into_iter()
            .find(|l| l.rsplit_once(' ').is_some_and(|(s, _)| s == series))
            .unwrap_or_else(|| panic!("{series} missing from\n{text}"));
        line.rsplit_once(' ').unwrap().1.parse().unwrap()
    }

    #[test]
    fn histograms_are_cumulative_with_sum_and_count() {
        let m = Metrics::new();
        m.observe_stage(Stage::Sign, Duration::from_millis(3));
        m.observe_stage(Stage::Sign, Duration::from_millis(40));
        m.observe_stage(Stage::Sign, Duration::from_secs(7200));
        let text = m.render(&BTreeMap::new());
        let b = |le: &str| {
            value(&text, &format!("treasury_stage_duration_seconds_bucket{{stage=\"sign\",le=\"{le}\"}}"))
        };
        assert_eq!(b("0.005"), 1.0);
        assert_eq!(b("0.025"), 1.0);
        assert_eq!(b("0.05"), 2.0);
        assert_eq!(b("3600"), 2.0);
        assert_eq!(b("+Inf"), 3.0);
        assert_eq!(value(&text, "treasury_stage_duration_seconds_count{stage=\"sign\"}"), 3.0);
        let sum = value(&text, "treasury_stage_duration_seconds_sum{stage=\"sign\"}");
        assert!((sum - 7200.043).abs() < 1e-6, "{sum}");
        // Stages never observed are still exposed, at zero.
        assert_eq!(value(&text, "treasury_stage_duration_seconds_count{stage=\"root\"}"), 0.0);
        assert_eq!(m.stage_count(Stage::Sign), 3);
    }

    #[test]
    fn gauges_counters_and_every_intent_state() {
        let m = Metrics::new();
        m.set_last_block(1234);
        m.set_last_block(1240);
        let keeper: Address = "0x00000000000000000000000000000000000000a1".parse().unwrap();
        m.set_keeper_balance(keeper, 50_000_000_000_000_000);
        m.set_signer_up("node-1", true);
        m.set_signer_up("node-2", false);
        m.inc_intents_created("payroll");
        m.inc_intents_created("payroll");
        m.inc_policy_errors("dca");
        m.inc_notification("ops", Delivery::Dropped);
        let counts = BTreeMap::from([(IntentState::Confirmed, 4), (IntentState::AwaitingRoot, 1)]);
        let text = m.render(&counts);
        assert_eq!(value(&text, "treasury_last_block"), 1240.0);
        let series = format!("treasury_keeper_balance_wei{{keeper=\"{}\"}}", keeper.to_checksum(None));
        assert_eq!(value(&text, &series), 5e16);
        assert_eq!(value(&text, "treasury_signer_up{node=\"node-1\"}"), 1.0);
        assert_eq!(value(&text, "treasury_signer_up{node=\"node-2\"}"), 0.0);
        assert_eq!(value(&text, "treasury_intents_created_total{policy=\"payroll\"}"), 2.0);
        assert_eq!(value(&text, "treasury_policy_errors_total{policy=\"dca\"}"), 1.0);
        assert_eq!(value(&text, "treasury_notifications_total{webhook=\"ops\",outcome=\"dropped\"}"), 1.0);
        assert_eq!(value(&text, "treasury_intents{state=\"confirmed\"}"), 4.0);
        assert_eq!(value(&text, "treasury_intents{state=\"awaiting_root\"}"), 1.0);
        for state in IntentState::ALL {
            value(&text, &format!("treasury_intents{{state=\"{state}\"}}"));
        }
        assert_eq!(m.notifications("ops", Delivery::Dropped), 1);
        assert_eq!(m.gauges().last_block, Some(1240));
    }

    #[test]
    fn every_family_is_declared_once_before_its_samples() {
        let m = Metrics::new();
        m.inc_policy_errors("x");
        let text = m.render(&BTreeMap::new());
        let mut declared = std::collections::BTreeSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap();
                assert!(declared.insert(name.to_string()), "{name} declared twice");
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s).filter(|f| declared.contains(*f)))
                    .unwrap_or(name);
                assert!(declared.contains(family), "sample {name} before its TYPE line");
            }
        }
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn label_values_are_escaped_and_values_have_no_exponent() {
        let m = Metrics::new();
        m.inc_policy_errors("we\"ird\\name\nx");
        m.set_keeper_balance(Address::ZERO, u128::MAX);
        let text = m.render(&BTreeMap::new());
        assert!(text.contains(r#"treasury_policy_errors_total{policy="we\"ird\\name\nx"} 1"#), "{text}");
        let balance = text.lines().find(|l| l.starts_with("treasury_keeper_balance_wei{")).unwrap();
        let v = balance.rsplit_once(' ').unwrap().1;
        assert!(!v.contains('e') && v.parse::<f64>().unwrap() > 3.4e38, "{v}");
        assert_eq!(fmt_f64(f64::INFINITY), "+Inf");
        assert_eq!(fmt_f64(0.25), "0.25");
    }
}
