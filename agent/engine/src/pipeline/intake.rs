//! Intake: a firing's policies run on a snapshot pinned at its block; their intents are journaled
//! (idempotent by key) and guarded.
//!
//! The agent's guard only refuses what can never be carried out (unknown token, bad amount, a
//! swap without a fresh price or without a router); limits and tiers are the module's, read in
//! the lane, and every signer checks its own.

use std::sync::Arc;
use std::time::Instant;

use alloy::eips::BlockNumberOrTag;
use alloy::primitives::Address;
use serde::{Deserialize, Serialize};
use treasury_chain::snapshot::{Snapshot, read_snapshot};
use treasury_policies::{Action, Intent, Payment, SnapshotView};

use super::{Pipeline, PipelineError, Result};
use crate::journal::{Alert, IntentId, IntentState, NewIntent};
use crate::metrics::Stage;
use crate::notify::Notification;
use crate::plan::plan_intent;

/// A decided intent made ready for the journal: its row, the guard's verdict, its stored form.
type Prepared = (NewIntent, Option<String>, Arc<StoredIntent>);

/// What fired: the block the snapshot is pinned at, the policies to run, and a label for the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FiringInput {
    /// Block number the snapshot is read at.
    pub block: u64,
    /// Names of the policies that fire.
    pub policies: Vec<String>,
    /// What fired them (e.g. `every_blocks@1200`, `manual#7`), stored with each intent: unique per
    /// firing, since the intents of one firing split across operations are recognised by it.
    pub trigger: String,
}

/// What one firing produced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntakeReport {
    /// Intents journaled by this firing.
    pub created: Vec<IntentId>,
    /// Intents whose key was already journaled (a firing delivered twice, a re-run).
    pub duplicates: usize,
    /// New intents the guard refused.
    pub rejected: usize,
    /// New alerts raised.
    pub alerts: usize,
    /// Policies that failed, with why (the others ran).
    pub policy_errors: Vec<(String, String)>,
    /// Time spent reading the snapshot, microseconds.
    pub snapshot_us: u64,
    /// Time spent running policies, microseconds.
    pub policy_us: u64,
    /// Time spent journaling and guarding, microseconds.
    pub journal_us: u64,
}

/// An intent as the journal stores it: what the policy returned and the block it was decided at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredIntent {
    /// The policy's intent.
    pub intent: Intent,
    /// Block of the snapshot it was decided on.
    pub block: u64,
    /// That block's timestamp.
    pub timestamp: u64,
    /// That block's hash (absent in intents journaled before replaying signers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_hash: Option<alloy::primitives::B256>,
    /// The version of the policy script that produced it (`PolicySet::version`: its SHA-256,
    /// first 16 hex digits); absent in intents journaled before versions were recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<String>,
}

impl StoredIntent {
    /// Reads the payload column back.
    pub fn from_payload(payload: &serde_json::Value) -> Result<Self> {
        serde_json::from_value(payload.clone()).map_err(|e| {
            PipelineError::Config(format!("journal holds an intent this version cannot read: {e}"))
        })
    }
}

impl Pipeline {
    /// Runs `firing`'s policies at its block and journals and guards what they return.
    pub async fn intake(&self, firing: &FiringInput) -> Result<IntakeReport> {
        let mut report = IntakeReport::default();
        let started = Instant::now();
        let what = format!("snapshot at block {}", firing.block);
        let snapshot = async {
            match &self.snapshots {
                Some(shared) => {
                    shared.read(&self.spec, firing.block).await.map_err(|e| PipelineError::chain(&what, e))
                }
                None => read_snapshot(&self.provider, &self.spec, BlockNumberOrTag::Number(firing.block))
                    .await
                    .map_err(|e| PipelineError::chain(&what, e)),
            }
        };
        // The journal's payment history is read while the chain is.
        let (snapshot, history) = tokio::join!(snapshot, self.payment_history());
        let (snapshot, history) = (snapshot?, history?);
        report.snapshot_us = started.elapsed().as_micros() as u64;
        self.metrics.observe_stage(Stage::Snapshot, started.elapsed());
        self.metrics.set_snapshot(&snapshot);
        *self.last_snapshot.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some(snapshot.clone());
        for asset in &snapshot.assets {
            if let Some(budget) = &asset.budget {
                self.metrics.set_budget_used(&asset.symbol, budget.spent, budget.limit);
            }
        }

        let started = Instant::now();
        let view = Arc::new(SnapshotView::new(&snapshot, self.policies.book().clone())?);
        let outcomes = self.policies.evaluate_all(&view, &history, |e| firing.policies.contains(&e.name));
        report.policy_us = started.elapsed().as_micros() as u64;
        self.metrics.observe_stage(Stage::Policy, started.elapsed());

        let started = Instant::now();
        let mut decided = Vec::new();
        for outcome in outcomes {
            match outcome.result {
                Ok(intents) => {
                    for intent in intents {
                        match &intent.action {
                            Action::Alert { message } => {
                                self.record_policy_alert(&intent, message, &firing.trigger, &mut report)
                                    .await?
                            }
                            _ => decided.push(self.prepare(intent, &snapshot, &firing.trigger)),
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(policy = %outcome.policy, error = %treasury_signer::error_chain(&e), "policy failed");
                    let alert = Alert {
                        idempotency_key: format!(
                            "{}:error:{}:{}",
                            outcome.policy, firing.trigger, firing.block
                        ),
                        policy: outcome.policy.clone(),
                        trigger: firing.trigger.clone(),
                        message: format!("policy failed: {e}"),
                    };
                    if self.journal.record_alert(&alert).await? {
                        self.metrics.inc_policy_errors(&outcome.policy);
                        self.notifier.notify(Notification::PolicyError {
                            policy: outcome.policy.clone(),
                            error: e.to_string(),
                        });
                    }
                    report.policy_errors.push((outcome.policy, e.to_string()));
                }
            }
        }
        self.journal_decided(decided, &mut report).await?;
        report.journal_us = started.elapsed().as_micros() as u64;
        self.metrics.observe_stage(Stage::Journal, started.elapsed());
        Ok(report)
    }

    async fn record_policy_alert(
        &self,
        intent: &Intent,
        message: &str,
        trigger: &str,
        report: &mut IntakeReport,
    ) -> Result<()> {
        let alert = Alert {
            idempotency_key: intent.key.clone(),
            policy: intent.policy.clone(),
            trigger: trigger.to_string(),
            message: message.to_string(),
        };
        if self.journal.record_alert(&alert).await? {
            report.alerts += 1;
            self.notifier.notify(Notification::Alert { policy: alert.policy, message: alert.message });
        }
        Ok(())
    }

    /// The journal row of a decided intent, the guard's verdict on it (`None`: passed) and its
    /// stored form.
    fn prepare(&self, intent: Intent, snapshot: &Snapshot, trigger: &str) -> Prepared {
        let policy_version = self.policies.version(&intent.policy);
        let stored = StoredIntent {
            intent,
            block: snapshot.block_number,
            timestamp: snapshot.timestamp,
            block_hash: Some(snapshot.block_hash),
            policy_version,
        };
        let verdict = self.guard_reason(&stored.intent, snapshot);
        let new = NewIntent {
            idempotency_key: stored.intent.key.clone(),
            policy: stored.intent.policy.clone(),
            trigger: trigger.to_string(),
            kind: stored.intent.action.kind().to_string(),
            payload: serde_json::to_value(&stored).expect("intents serialise"),
            policy_version: stored.policy_version.clone(),
        };
        (new, verdict, Arc::new(stored))
    }

    /// Journals a firing's intents with the guard's verdicts, all in one commit: the lane plans
    /// a firing's intents together, so it must never see part of them (a crash or a database
    /// outage between two intents would otherwise split the firing into two operations).
    async fn journal_decided(&self, decided: Vec<Prepared>, report: &mut IntakeReport) -> Result<()> {
        if decided.is_empty() {
            return Ok(());
        }
        let rows: Vec<_> = decided
            .iter()
            .map(|(new, verdict, _)| {
                let then = match verdict {
                    None => (IntentState::Guarded, serde_json::Value::Null),
                    Some(reason) => (IntentState::Rejected, serde_json::json!({ "reason": reason })),
                };
                (new.clone(), Some(then))
            })
            .collect();
        let inserted = self.journal.insert_intents_then(&rows).await?;
        for (inserted, (_, verdict, stored)) in inserted.into_iter().zip(decided) {
            if !inserted.created {
                report.duplicates += 1;
                continue;
            }
            // The lane plans it next: its payload is known already.
            self.stored.insert(inserted.intent.id, stored);
            self.transitioned(IntentState::Proposed);
            report.created.push(inserted.intent.id);
            self.metrics.inc_intents_created(&inserted.intent.policy);
            match verdict {
                None => self.transitioned(IntentState::Guarded),
                Some(reason) => {
                    tracing::warn!(intent = %inserted.intent.id, %reason, "intent refused by the guard");
                    report.rejected += 1;
                    self.transitioned(IntentState::Rejected);
                    self.notifier.notify(Notification::Failed {
                        intent: inserted.intent.id,
                        policy: inserted.intent.policy.clone(),
                        reason,
                    });
                }
            }
        }
        Ok(())
    }

    /// Moves a proposed intent to `guarded`, or to `rejected` with the reason; true when guarded.
    pub(crate) async fn guard(&self, id: IntentId, intent: &Intent, snapshot: &Snapshot) -> Result<bool> {
        match self.guard_reason(intent, snapshot) {
            None => {
                self.journal.transition(id, IntentState::Guarded, serde_json::Value::Null).await?;
                self.transitioned(IntentState::Guarded);
                Ok(true)
            }
            Some(reason) => {
                tracing::warn!(intent = %id, %reason, "intent refused by the guard");
                self.journal
                    .transition(id, IntentState::Rejected, serde_json::json!({ "reason": reason }))
                    .await?;
                self.transitioned(IntentState::Rejected);
                Ok(false)
            }
        }
    }

    fn guard_reason(&self, intent: &Intent, snapshot: &Snapshot) -> Option<String> {
        match &intent.action {
            Action::Pay { to, .. } if *to == Address::ZERO => {
                return Some("payment to the zero address".into());
            }
            Action::Pay { to, .. } if *to == self.spec.safe => {
                return Some("payment to the Safe itself".into());
            }
            Action::Swap { .. } if self.venue.is_none() => {
                return Some("swap asked but no [dex] router is configured".into());
            }
            _ => {}
        }
        let venue = self.venue.unwrap_or(crate::plan::Venue {
            safe: self.spec.safe,
            router: Address::ZERO,
            weth: Address::ZERO,
        });
        plan_intent(intent, snapshot, &venue, u64::MAX).err().map(|e| e.to_string())
    }

    /// The payments the policies count: the decided `pay` intents, newest first (their parsed
    /// payloads kept between firings: they never change).
    async fn payment_history(&self) -> Result<Vec<Payment>> {
        let ids = self.journal.decided_ids(10_000).await?;
        let stored = self.stored.get(&self.journal, &ids).await?;
        Ok(stored
            .iter()
            .filter_map(|s| match &s.intent.action {
                Action::Pay { to, token, amount, .. } => Some(Payment {
                    policy: s.intent.policy.clone(),
                    recipient: *to,
                    token: token.clone(),
                    amount: *amount,
                    timestamp: s.timestamp,
                }),
                _ => None,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::StoredIntent;

    /// Intake hands the lane the stored form it journaled instead of the lane reading the payload
    /// back: the two must be the same, decimals, optional fields and all.
    #[test]
    fn a_stored_intent_reads_back_from_its_payload_unchanged() {
        let intents = [
            serde_json::json!({
                "policy": "payroll", "key": "payroll:2027-01", "memo": "January",
                "kind": "pay", "to": "0x00000000000000000000000000000000000000a1", "recipient": "alice",
                "token": "USDC", "amount": "1234.567890123456789"
            }),
            serde_json::json!({
                "policy": "rebalance", "key": "rebalance:1", "kind": "swap",
                "sell": "WETH", "buy": "USDC", "amount": "0.000000000000000001", "max_slippage": "0.005"
            }),
        ];
        for intent in intents {
            for (block_hash, policy_version) in
                [(None, None), (Some([7u8; 32].into()), Some("0123456789abcdef"))]
            {
                let stored = StoredIntent {
                    intent: serde_json::from_value(intent.clone()).unwrap(),
                    block: 42,
                    timestamp: 1_800_000_000,
                    block_hash,
                    policy_version: policy_version.map(str::to_string),
                };
                let payload = serde_json::to_value(&stored).unwrap();
                assert_eq!(StoredIntent::from_payload(&payload).unwrap(), stored);
            }
        }
    }
}
