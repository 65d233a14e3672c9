//! Counters of the keeper jobs, registered in the agent's [`crate::metrics::Metrics`] registry.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Labels naming one job.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabel {
    job: String,
}

/// Labels of the performs counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PerformLabels {
    job: String,
    outcome: &'static str,
}

/// The keeper jobs' counters: checks, performs by outcome, skips and gas used.
#[derive(Debug, Default)]
pub struct JobMetrics {
    checks: Family<JobLabel, Counter>,
    performs: Family<PerformLabels, Counter>,
    skipped: Family<JobLabel, Counter>,
    gas_used: Family<JobLabel, Counter>,
    fee_waits: Family<JobLabel, Counter>,
}

impl JobMetrics {
    /// Counters registered in `registry` (prefix `treasury_keeper_job_…`).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register("keeper_job_checks", "Keeper job checks run since start, by job", m.checks.clone());
        registry.register(
            "keeper_job_performs",
            "Keeper job performs confirmed since start, by job and outcome (success, reverted)",
            m.performs.clone(),
        );
        registry.register(
            "keeper_job_skipped",
            "Keeper job runs skipped since start (check or perform would revert, gas, fee or spending cap)",
            m.skipped.clone(),
        );
        registry.register(
            "keeper_job_gas_used",
            "Gas used by keeper job performs since start",
            m.gas_used.clone(),
        );
        registry.register(
            "keeper_job_fee_waits",
            "Rounds a due keeper job waited because the base fee was above its fee ceiling",
            m.fee_waits.clone(),
        );
        m
    }

    /// Counts `n` checks of `job`.
    pub fn inc_checks(&self, job: &str, n: u64) {
        self.checks.get_or_create(&JobLabel { job: job.into() }).inc_by(n);
    }

    /// Counts a confirmed perform of `job` and the gas it used.
    pub fn inc_performs(&self, job: &str, success: bool, gas_used: u64) {
        let outcome = if success { "success" } else { "reverted" };
        self.performs.get_or_create(&PerformLabels { job: job.into(), outcome }).inc();
        self.gas_used.get_or_create(&JobLabel { job: job.into() }).inc_by(gas_used);
    }

    /// Counts a skipped run of `job`.
    pub fn inc_skipped(&self, job: &str) {
        self.skipped.get_or_create(&JobLabel { job: job.into() }).inc();
    }

    /// Counts a round in which `job` was due but the base fee was above its ceiling.
    pub fn inc_fee_waits(&self, job: &str) {
        self.fee_waits.get_or_create(&JobLabel { job: job.into() }).inc();
    }
}
