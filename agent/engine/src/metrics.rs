//! Prometheus metrics of the agent: stage latencies, chain head, keeper balance, signer
//! availability, intents created, policy errors and webhook deliveries.
//!
//! The pipeline updates one shared [`Metrics`] (`Arc<Metrics>`), a `prometheus-client` registry;
//! the HTTP API renders it in the OpenMetrics text format at `/metrics`, together with the number
//! of intents in each state, which is read from the journal at scrape time (so it is never stale
//! and survives restarts).

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use alloy::primitives::Address;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

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

/// Labels of the stage histogram.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabel {
    stage: &'static str,
}

/// Labels of the intents-by-state gauge.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

/// Labels of the keeper balance gauge.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeeperLabel {
    keeper: String,
}

/// Labels of the signer availability gauge.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabel {
    node: String,
}

/// Labels of the budget gauge.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AssetLabel {
    asset: String,
}

/// Labels of the per-policy counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabel {
    policy: String,
}

/// Labels of the notification counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NotificationLabels {
    webhook: String,
    outcome: &'static str,
}

fn stage_histogram() -> Histogram {
    Histogram::new(STAGE_BUCKETS)
}

/// What the status endpoint reads back (the registry's families cannot be iterated).
#[derive(Debug, Default)]
struct Status {
    last_block: Option<u64>,
    keeper: Option<(Address, u128)>,
    signers: BTreeMap<String, bool>,
    snapshots: BTreeMap<Address, treasury_chain::snapshot::Snapshot>,
}

/// The agent's metrics; thread-safe, shared as `Arc<Metrics>`.
pub struct Metrics {
    registry: Registry,
    stages: Family<StageLabel, Histogram, fn() -> Histogram>,
    intents: Family<StateLabel, Gauge>,
    last_block: Gauge,
    keeper_balance: Family<KeeperLabel, Gauge<f64, AtomicU64>>,
    signer_up: Family<NodeLabel, Gauge>,
    budget_used: Family<AssetLabel, Gauge<f64, AtomicU64>>,
    intents_created: Family<PolicyLabel, Counter>,
    policy_errors: Family<PolicyLabel, Counter>,
    notifications: Family<NotificationLabels, Counter>,
    /// The keeper jobs' counters.
    pub jobs: crate::keeper::metrics::JobMetrics,
    status: Mutex<Status>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").field("status", &self.status()).finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
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
    /// Every family registered, stages and intent states exposed at zero until they happen.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("treasury");
        let stages =
            Family::<StageLabel, Histogram, fn() -> Histogram>::new_with_constructor(stage_histogram as _);
        let intents = Family::<StateLabel, Gauge>::default();
        let last_block = Gauge::default();
        let keeper_balance = Family::<KeeperLabel, Gauge<f64, AtomicU64>>::default();
        let signer_up = Family::<NodeLabel, Gauge>::default();
        let budget_used = Family::<AssetLabel, Gauge<f64, AtomicU64>>::default();
        let intents_created = Family::<PolicyLabel, Counter>::default();
        let policy_errors = Family::<PolicyLabel, Counter>::default();
        let notifications = Family::<NotificationLabels, Counter>::default();
        registry.register("intents", "Intents in the journal, by state", intents.clone());
        registry.register_with_unit(
            "stage_duration",
            "Latency of each pipeline stage",
            Unit::Seconds,
            stages.clone(),
        );
        registry.register("last_block", "The newest block the agent has seen", last_block.clone());
        registry.register(
            "keeper_balance_wei",
            "Balance of the keeper account, in wei",
            keeper_balance.clone(),
        );
        registry.register("signer_up", "Whether each signer node answered (1) or not (0)", signer_up.clone());
        registry.register(
            "budget_used_ratio",
            "Share of each tracked asset's module budget spent in the current window (0 to 1), at the last snapshot",
            budget_used.clone(),
        );
        registry.register(
            "intents_created",
            "Intents newly journaled since start, by policy",
            intents_created.clone(),
        );
        registry.register(
            "policy_errors",
            "Policy runs that failed since start, by policy",
            policy_errors.clone(),
        );
        registry.register(
            "notifications",
            "Webhook notifications since start, by webhook and outcome",
            notifications.clone(),
        );
        for stage in Stage::ALL {
            drop(stages.get_or_create(&StageLabel { stage: stage.as_str() }));
        }
        let jobs = crate::keeper::metrics::JobMetrics::register(&mut registry);
        Self {
            registry,
            stages,
            intents,
            last_block,
            keeper_balance,
            signer_up,
            budget_used,
            intents_created,
            policy_errors,
            notifications,
            jobs,
            status: Mutex::default(),
        }
    }

    fn status(&self) -> MutexGuard<'_, Status> {
        // Every update leaves `Status` consistent, so a panic elsewhere does not poison the data.
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records how long one run of `stage` took.
    pub fn observe_stage(&self, stage: Stage, elapsed: Duration) {
        self.stages.get_or_create(&StageLabel { stage: stage.as_str() }).observe(elapsed.as_secs_f64());
    }

    /// Records the newest block seen.
    pub fn set_last_block(&self, block: u64) {
        self.last_block.set(i64::try_from(block).unwrap_or(i64::MAX));
        self.status().last_block = Some(block);
    }

    /// Records the keeper's balance in wei.
    pub fn set_keeper_balance(&self, keeper: Address, wei: u128) {
        let mut status = self.status();
        if let Some((previous, _)) = status.keeper.filter(|(k, _)| *k != keeper) {
            self.keeper_balance.remove(&KeeperLabel { keeper: previous.to_checksum(None) });
        }
        // Prometheus samples are f64: a balance above 2^53 wei keeps its 15–16 leading digits.
        self.keeper_balance.get_or_create(&KeeperLabel { keeper: keeper.to_checksum(None) }).set(wei as f64);
        status.keeper = Some((keeper, wei));
    }

    /// Records the share of `asset`'s budget spent in the current window (`spent / limit`).
    pub fn set_budget_used(
        &self,
        asset: &str,
        spent: alloy::primitives::U256,
        limit: alloy::primitives::U256,
    ) {
        let float = |v: alloy::primitives::U256| v.to_string().parse::<f64>().unwrap_or(f64::MAX);
        let ratio = if limit.is_zero() { 1.0 } else { float(spent) / float(limit) };
        self.budget_used.get_or_create(&AssetLabel { asset: asset.to_string() }).set(ratio.clamp(0.0, 1.0));
    }

    /// Keeps the newest snapshot of its Safe's treasury, for the dashboard.
    pub fn set_snapshot(&self, snapshot: &treasury_chain::snapshot::Snapshot) {
        let mut status = self.status();
        let newer =
            status.snapshots.get(&snapshot.safe).is_none_or(|s| s.block_number <= snapshot.block_number);
        if newer {
            status.snapshots.insert(snapshot.safe, snapshot.clone());
        }
    }

    /// The newest snapshot of each treasury (by Safe) the pipeline read.
    pub fn snapshots(&self) -> Vec<treasury_chain::snapshot::Snapshot> {
        self.status().snapshots.values().cloned().collect()
    }

    /// Records whether signer node `node` answered at the last look.
    pub fn set_signer_up(&self, node: &str, up: bool) {
        self.signer_up.get_or_create(&NodeLabel { node: node.to_string() }).set(i64::from(up));
        self.status().signers.insert(node.to_string(), up);
    }

    /// Counts one intent newly journaled for `policy`.
    pub fn inc_intents_created(&self, policy: &str) {
        self.intents_created.get_or_create(&PolicyLabel { policy: policy.to_string() }).inc();
    }

    /// Counts one failed run (error, limit, timeout) of `policy`.
    pub fn inc_policy_errors(&self, policy: &str) {
        self.policy_errors.get_or_create(&PolicyLabel { policy: policy.to_string() }).inc();
    }

    /// Counts what became of one notification for the webhook labelled `webhook`.
    pub fn inc_notification(&self, webhook: &str, outcome: Delivery) {
        self.notifications.get_or_create(&notification(webhook, outcome)).inc();
    }

    /// How many notifications for `webhook` ended as `outcome`.
    pub fn notifications(&self, webhook: &str, outcome: Delivery) -> u64 {
        self.notifications.get(&notification(webhook, outcome)).map_or(0, |c| c.get())
    }

    /// The current gauges.
    pub fn gauges(&self) -> Gauges {
        let status = self.status();
        Gauges { last_block: status.last_block, keeper: status.keeper, signers: status.signers.clone() }
    }

    /// Renders every metric in the OpenMetrics text format (which Prometheus scrapes), with
    /// `intents_by_state` (from [`crate::journal::Journal::count_by_state`]) as the
    /// `treasury_intents` gauge.
    pub fn render(&self, intents_by_state: &BTreeMap<IntentState, u64>) -> String {
        for state in IntentState::ALL {
            let n = intents_by_state.get(&state).copied().unwrap_or(0);
            self.intents
                .get_or_create(&StateLabel { state: state.as_str() })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

fn notification(webhook: &str, outcome: Delivery) -> NotificationLabels {
    NotificationLabels { webhook: webhook.to_string(), outcome: outcome.as_str() }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The samples of a rendering, as a Prometheus server parses them.
    fn scrape(text: &str) -> prometheus_parse::Scrape {
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap()
    }

    /// The value of the one sample of `metric` whose labels include `labels`.
    fn value(text: &str, metric: &str, labels: &[(&str, &str)]) -> prometheus_parse::Value {
        let scrape = scrape(text);
        let mut found = scrape
            .samples
            .into_iter()
            .filter(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)));
        let sample = found.next().unwrap_or_else(|| panic!("{metric} {labels:?} missing from\n{text}"));
        assert!(found.next().is_none(), "{metric} {labels:?} is not one sample");
        sample.value
    }

    fn number(v: prometheus_parse::Value) -> f64 {
        use prometheus_parse::Value::*;
        match v {
            Counter(n) | Gauge(n) | Untyped(n) => n,
            other => panic!("{other:?} is not a number"),
        }
    }

    #[test]
    fn histograms_are_cumulative_with_sum_and_count() {
        let m = Metrics::new();
        m.observe_stage(Stage::Sign, Duration::from_millis(3));
        m.observe_stage(Stage::Sign, Duration::from_millis(40));
        m.observe_stage(Stage::Sign, Duration::from_secs(7200));
        let text = m.render(&BTreeMap::new());
        let prometheus_parse::Value::Histogram(buckets) =
            value(&text, "treasury_stage_duration_seconds", &[("stage", "sign")])
        else {
            panic!("not a histogram:\n{text}")
        };
        let at = |le: f64| buckets.iter().find(|b| b.less_than == le).unwrap().count;
        assert_eq!(
            (at(0.005), at(0.025), at(0.05), at(3600.0), at(f64::INFINITY)),
            (1.0, 1.0, 2.0, 2.0, 3.0)
        );
        assert_eq!(number(value(&text, "treasury_stage_duration_seconds_count", &[("stage", "sign")])), 3.0);
        let sum = number(value(&text, "treasury_stage_duration_seconds_sum", &[("stage", "sign")]));
        assert!((sum - 7200.043).abs() < 1e-6, "{sum}");
        // Stages never observed are still exposed, at zero.
        assert_eq!(number(value(&text, "treasury_stage_duration_seconds_count", &[("stage", "root")])), 0.0);
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
        assert_eq!(number(value(&text, "treasury_last_block", &[])), 1240.0);
        let checksum = keeper.to_checksum(None);
        assert_eq!(number(value(&text, "treasury_keeper_balance_wei", &[("keeper", &checksum)])), 5e16);
        assert_eq!(number(value(&text, "treasury_signer_up", &[("node", "node-1")])), 1.0);
        assert_eq!(number(value(&text, "treasury_signer_up", &[("node", "node-2")])), 0.0);
        assert_eq!(number(value(&text, "treasury_intents_created_total", &[("policy", "payroll")])), 2.0);
        assert_eq!(number(value(&text, "treasury_policy_errors_total", &[("policy", "dca")])), 1.0);
        let ops_dropped = [("webhook", "ops"), ("outcome", "dropped")];
        assert_eq!(number(value(&text, "treasury_notifications_total", &ops_dropped)), 1.0);
        assert_eq!(number(value(&text, "treasury_intents", &[("state", "confirmed")])), 4.0);
        assert_eq!(number(value(&text, "treasury_intents", &[("state", "awaiting_root")])), 1.0);
        for state in IntentState::ALL {
            value(&text, "treasury_intents", &[("state", state.as_str())]);
        }
        assert_eq!(m.notifications("ops", Delivery::Dropped), 1);
        assert_eq!(m.gauges().last_block, Some(1240));
    }

    #[test]
    fn a_new_keeper_replaces_the_old_one_and_label_values_are_escaped() {
        let m = Metrics::new();
        m.set_keeper_balance(Address::ZERO, 1);
        m.set_keeper_balance(Address::repeat_byte(0x11), u128::MAX);
        m.inc_policy_errors("we\"ird\\name");
        let text = m.render(&BTreeMap::new());
        let keepers: Vec<_> =
            scrape(&text).samples.into_iter().filter(|s| s.metric == "treasury_keeper_balance_wei").collect();
        assert_eq!(keepers.len(), 1, "{text}");
        assert!(number(keepers[0].value.clone()) > 3.4e38);
        assert!(text.contains(r#"treasury_policy_errors_total{policy="we\"ird\\name"} 1"#), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
