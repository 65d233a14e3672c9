//! The operation lane: guarded intents → one planned operation → authorised → submitted → confirmed.
//!
//! The module's nonces are sequential, so one operation is in flight at a time; each call of
//! [`Pipeline::step`] moves it one state forward (or reports what it waits for) and writes the
//! new state to the journal before acting on it. A crash anywhere resumes from the journal:
//! a planned operation is never replaced by another, a signature is never asked twice once
//! stored, and a stored keeper transaction is rebroadcast rather than signed anew.

use std::time::Instant;

use alloy::eips::BlockNumberOrTag;
use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::providers::Provider;
use alloy::rpc::types::TransactionReceipt;
use alloy::rpc::types::state::StateOverridesBuilder;
use alloy::sol_types::SolCall;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::{Instrument, debug_span};
use treasury_chain::contracts::MODULE_GROUP_KEY_X_SLOT;
use treasury_chain::contracts::TreasuryModule;
use treasury_chain::sender::{SenderError, Sent, TxRequest};
use treasury_chain::snapshot::{Snapshot, read_snapshot};
use treasury_chain::tiers::{Tier, classify, read_facts};
use treasury_chain::{Operation, operation_digest};
use treasury_policies::Intent;
use treasury_signer::quorum::coordinator::SignOutcome;
use treasury_signer::quorum::signature::stand_in_signature;
use treasury_signer::quorum::{NodeFault, QuorumError};
use treasury_signer::root::store::RequestState;
use treasury_signer::root::{EscalationRequest, RootError};

mod context;

use super::intake::StoredIntent;
use super::observer::JournalObserver;
use super::simulate::{Simulation, reason_of_rpc_error, simulate};
use super::{Pipeline, PipelineError, Result};
use crate::journal::{
    IntentId, IntentState, JournalError, NewSigningRequest, OperationRecord, PendingIntent, QuorumSignature,
    RootSignature, SigningAnswer, TransactionRecord, TxState, Write,
};
use crate::metrics::Stage;
use crate::notify::Notification;
use crate::plan::{Venue, plan_batch};
use treasury_policies::replay::{DecidedFiring, Decision, HistoryWindow, PastIntent, PinnedBlock};

/// Signer name of the quorum's signing request in the journal.
const QUORUM: &str = "quorum";
/// Signer name of the root's signing request in the journal.
const ROOT: &str = "root";

/// What one [`Pipeline::step`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaneStep {
    /// Nothing to do.
    Idle,
    /// Something is pending outside the agent (root approval, paused module); try again later.
    Waiting(String),
    /// An operation moved forward; call again.
    Progressed,
}

/// A planned operation as the journal stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedOperation {
    /// What the signers sign and `exec` runs.
    pub operation: Operation,
    /// 1 (FROST alone) or 2 (FROST and root).
    pub tier: u8,
    /// Why tier 1 does not suffice (empty for tier 1).
    #[serde(default)]
    pub reasons: Vec<String>,
    /// The block whose snapshot it was planned on (absent in operations planned before
    /// replaying signers), sent to the nodes in the decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_block: Option<PinnedBlock>,
    /// Where the history sent with a tier-1 decision starts (found while the chain was read
    /// for planning, so authorising needs no chain read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_window: Option<HistoryWindow>,
}

/// The operation in flight: its record, intents and where they stand.
struct InFlight {
    record: OperationRecord,
    planned: PlannedOperation,
    intents: Vec<IntentId>,
    state: IntentState,
    transaction: Option<TransactionRecord>,
    /// When its intents last changed state, unix milliseconds.
    last_change_ms: i64,
    /// The trigger all its intents share, when known without reading them (just planned).
    trigger: Option<String>,
}

/// A quorum signature obtained but not journaled yet.
struct Signed {
    /// The quorum's answer.
    signature: QuorumSignature,
    /// The `signed` event's detail.
    detail: serde_json::Value,
}

/// What the keeper's send of a tier-1 `exec` can be given before the signature exists.
#[derive(Debug, Default)]
struct PreparedSend {
    /// The gas limit (estimate with a stand-in signature, bound and margin included).
    gas_limit: Option<u64>,
    /// The first attempt's `(maxFeePerGas, maxPriorityFeePerGas)`.
    fees: Option<(u128, u128)>,
}

/// The gas limit last worked out for a tier-1 `exec` of each shape of operation (its calls'
/// targets, selectors and whether they carry value), to be checked again with one execution.
#[derive(Default)]
pub(crate) struct GasLimits(std::sync::Mutex<std::collections::HashMap<Shape, u64>>);

/// An operation's calls as [`GasLimits`] tells them apart: target, selector, carries value,
/// call or delegatecall.
type Shape = Vec<(Address, [u8; 4], bool, u8)>;

impl GasLimits {
    /// Shapes remembered at most (a lane plans few kinds of operation).
    const KEPT: usize = 64;

    /// The shape of `op`.
    fn shape(op: &Operation) -> Shape {
        op.calls
            .iter()
            .map(|c| {
                let selector = c.data.get(..4).and_then(|s| <[u8; 4]>::try_from(s).ok()).unwrap_or_default();
                (c.to, selector, !c.value.is_zero(), c.operation)
            })
            .collect()
    }

    fn get(&self, shape: &Shape) -> Option<u64> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(shape).copied()
    }

    fn remember(&self, shape: Shape, limit: u64) {
        let mut kept = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if kept.len() >= Self::KEPT && !kept.contains_key(&shape) {
            kept.clear();
        }
        kept.insert(shape, limit);
    }
}

/// The most the quorum's signature can cost in calldata more than a stand-in of the same length:
/// `FrostSig` is 96 bytes, and no byte costs more than 40 gas (EIP-7623's floor price of a
/// non-zero byte; 16 gas at the standard price), so 96 × 40 covers any difference.
const SIGNATURE_CALLDATA_BOUND: u64 = 96 * 40;

/// An operation in flight for longer than this is checked against the chain (deadline, nonce).
const STALE_CHECK_AFTER_MS: i64 = 2_000;

/// How long before its history window an intent may have been decided and still be listed,
/// when its operation was mined in the window (an escalation approved late, a stuck send).
const STRAGGLER_LOOKBACK_SECS: u64 = 45 * 86_400;

/// The quorum's signing request for an operation.
fn quorum_request(operation_id: &str, tier: u8) -> NewSigningRequest {
    NewSigningRequest {
        operation_id: operation_id.to_string(),
        signer: QUORUM.into(),
        digest: operation_id.to_string(),
        request: json!({ "tier": tier }),
    }
}

impl Pipeline {
    /// Moves the lane one step: resumes the operation in flight, or plans the next one.
    pub async fn step(&self) -> Result<LaneStep> {
        // Without payloads: a step needs them only for the intents it plans (read there).
        let work =
            self.journal.lane_work(self.settings.max_batch).instrument(debug_span!("lane.pending")).await?;
        if let Some(flight) = in_flight(&work.in_flight)? {
            return self.advance(flight).await;
        }
        if work.next.is_empty() {
            return Ok(LaneStep::Idle);
        }
        self.plan_next(&work.next).await
    }

    /// Steps until the lane is idle or waiting.
    pub async fn drain(&self) -> Result<LaneStep> {
        loop {
            match self.step().await? {
                LaneStep::Progressed => continue,
                other => return Ok(other),
            }
        }
    }

    async fn latest_snapshot(&self) -> Result<Snapshot> {
        read_snapshot(&self.provider, &self.spec, BlockNumberOrTag::Latest)
            .await
            .map_err(|e| PipelineError::chain("snapshot at the latest block", e))
    }

    /// The snapshot at the chain's head: the one intake read last when the head is still its block
    /// (same number and hash: the state at a block never changes), else read anew at the head.
    async fn head_snapshot(&self) -> Result<Snapshot> {
        let cached = self.last_snapshot.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let Some(cached) = cached else { return self.latest_snapshot().await };
        let head = self
            .provider
            .get_block_by_number(BlockNumberOrTag::Latest)
            .await
            .map_err(|e| PipelineError::chain("the latest block", e))?
            .ok_or_else(|| PipelineError::chain("the latest block", "the node has no latest block"))?;
        if head.header.number == cached.block_number && head.header.hash == cached.block_hash {
            return Ok(cached);
        }
        read_snapshot(&self.provider, &self.spec, BlockNumberOrTag::Number(head.header.number))
            .await
            .map_err(|e| PipelineError::chain("snapshot at the latest block", e))
    }

    /// Guards the intents a crash left `proposed` (journaled, not yet guarded). Call once at
    /// start, before intake runs: afterwards intake guards what it journals itself.
    pub async fn recover(&self) -> Result<usize> {
        let pending = self.journal.pending().await?;
        let proposed: Vec<&PendingIntent> =
            pending.iter().filter(|p| p.intent.state == IntentState::Proposed).collect();
        if proposed.is_empty() {
            return Ok(0);
        }
        let snapshot = self.latest_snapshot().await?;
        for p in &proposed {
            let stored = StoredIntent::from_payload(&p.intent.payload)?;
            self.guard(p.intent.id, &stored.intent, &snapshot).await?;
        }
        Ok(proposed.len())
    }

    async fn move_all(&self, ids: &[IntentId], to: IntentState, detail: serde_json::Value) -> Result<()> {
        let moved = self.journal.transition_all(ids, to, detail.clone()).await?;
        self.transitioned(to);
        self.announce(&moved, to, &detail);
        Ok(())
    }

    /// Tells the webhooks and metrics about a transition worth telling.
    fn announce(&self, moved: &[crate::journal::Intent], to: IntentState, detail: &serde_json::Value) {
        let Some(first) = moved.first() else { return };
        let text =
            |key: &str| detail[key].as_str().map(str::to_string).unwrap_or_else(|| detail[key].to_string());
        let ids: Vec<i64> = moved.iter().map(|i| i.id.0).collect();
        match to {
            IntentState::Confirmed => {
                tracing::info!(intents = ?ids, policy = %first.policy, tx_hash = %text("tx_hash"), block = %detail["block"], "confirmed")
            }
            IntentState::AwaitingRoot => {
                tracing::info!(intents = ?ids, policy = %first.policy, root_request = %text("root_request"), "escalated: awaiting the root's approval")
            }
            IntentState::Failed | IntentState::Rejected | IntentState::Expired => {
                tracing::warn!(intents = ?ids, policy = %first.policy, reason = %text("reason"), "{to}")
            }
            _ => {}
        }
        match to {
            IntentState::Confirmed => {
                let now = crate::journal::now_ms();
                for intent in moved {
                    let total = std::time::Duration::from_millis((now - intent.created_at).max(0) as u64);
                    self.metrics.observe_stage(Stage::Total, total);
                }
                self.notifier.notify(Notification::Executed {
                    intents: moved.iter().map(|i| i.id).collect(),
                    policy: first.policy.clone(),
                    tx_hash: text("tx_hash"),
                    block: detail["block"].as_u64().unwrap_or_default(),
                });
            }
            IntentState::Failed | IntentState::Rejected | IntentState::Expired => {
                for intent in moved {
                    self.notifier.notify(Notification::Failed {
                        intent: intent.id,
                        policy: intent.policy.clone(),
                        reason: format!("{to}: {}", text("reason")),
                    });
                }
            }
            IntentState::AwaitingRoot => {
                for intent in moved {
                    self.notifier.notify(Notification::EscalationWaiting {
                        intent: intent.id,
                        policy: intent.policy.clone(),
                        root_request: text("root_request"),
                        reasons: serde_json::from_value(detail["reasons"].clone()).unwrap_or_default(),
                    });
                }
            }
            _ => {}
        }
    }

    // ----- planning -------------------------------------------------------------------------

    /// Plans `next` (the oldest trigger's guarded intents) into one operation (batched when the
    /// batch stays tier 1; otherwise the first intent alone), simulates it, and journals it as
    /// planned.
    async fn plan_next(&self, next: &[crate::journal::Intent]) -> Result<LaneStep> {
        let Ok(nonce_guard) = self.module_nonce_lock.try_lock() else {
            return Ok(LaneStep::Waiting(
                "a keeper job's perform through the module holds the module nonce".into(),
            ));
        };
        let started = Instant::now();
        let snapshot = self.head_snapshot().instrument(debug_span!("plan.snapshot")).await?;
        if snapshot.paused {
            return Ok(LaneStep::Waiting("the module is paused; intents wait until it is unpaused".into()));
        }
        let trigger = &next[0].trigger;
        let ids: Vec<IntentId> = next.iter().map(|i| i.id).collect();
        let stored = self.stored.get(&self.journal, &ids).instrument(debug_span!("plan.intents")).await?;
        let mut group: Vec<(IntentId, Intent)> =
            ids.iter().zip(&stored).map(|(id, s)| (*id, s.intent.clone())).collect();
        // The history a tier-1 decision is drawn from is read while the chain is asked about the
        // candidate: nothing else writes planned intents between here and the plan's commit.
        let (mut candidate, planned_history) = tokio::join!(
            self.candidate(&group, &snapshot),
            self.planned_history(&ids).instrument(debug_span!("plan.history"))
        );
        if group.len() > 1 && !matches!(&candidate, Ok((_, Tier::One))) {
            group.truncate(1);
            candidate = self.candidate(&group, &snapshot).await;
        }
        let ids: Vec<IntentId> = group.iter().map(|(id, _)| *id).collect();
        let (operation, tier) = match candidate {
            Ok(c) => c,
            Err(Refusal::Reject(reason)) => {
                self.move_all(&ids, IntentState::Rejected, json!({ "reason": reason })).await?;
                return Ok(LaneStep::Progressed);
            }
            Err(Refusal::Fail(reason)) => {
                self.move_all(&ids, IntentState::Failed, json!({ "reason": reason })).await?;
                return Ok(LaneStep::Progressed);
            }
            Err(Refusal::Error(e)) => return Err(e),
        };
        let (tier_no, reasons) = match tier {
            Tier::One => (1, Vec::new()),
            Tier::Two(reasons) => (2, reasons),
        };
        if tier_no == 2 && self.root.is_none() {
            let reason =
                format!("needs the root signer ({}) but no root service is configured", reasons.join("; "));
            self.move_all(&ids, IntentState::Rejected, json!({ "reason": reason })).await?;
            return Ok(LaneStep::Progressed);
        }
        let digest = operation_digest(&operation, tier_no, self.chain_id, self.spec.module);
        let plan_block = Some(PinnedBlock { number: snapshot.block_number, hash: snapshot.block_hash });
        let history_window = match tier_no {
            1 => Some(
                self.history_window_of(&stored[..group.len()]).instrument(debug_span!("plan.window")).await?,
            ),
            _ => None,
        };
        let planned = PlannedOperation { operation, tier: tier_no, reasons, plan_block, history_window };
        let record = OperationRecord {
            operation_id: digest.to_string(),
            module_nonce: u64::try_from(planned.operation.nonce).unwrap_or(u64::MAX),
            operation: serde_json::to_value(&planned).expect("operations serialise"),
            intents: ids,
        };
        let detail = json!({
            "operation_id": record.operation_id,
            "module_nonce": record.module_nonce,
            "tier": planned.tier,
            "reasons": planned.reasons,
            "plan_us": started.elapsed().as_micros() as u64,
        });
        // Planned and authorising in one commit: nothing happens between them.
        let mut writes = vec![
            Write::Operation(record.clone()),
            Write::Transition { intents: record.intents.clone(), to: IntentState::Planned, detail },
            Write::Transition {
                intents: record.intents.clone(),
                to: IntentState::Authorising,
                detail: json!({ "tier": planned.tier, "reasons": planned.reasons }),
            },
        ];
        if planned.tier == 1 {
            writes.push(Write::SigningRequest(quorum_request(&record.operation_id, 1)));
        }
        let flight = InFlight {
            intents: record.intents.clone(),
            record,
            planned,
            state: IntentState::Authorising,
            transaction: None,
            last_change_ms: crate::journal::now_ms(),
            trigger: Some(trigger.clone()),
        };
        // A tier-1 decision's history is the intents planned before this operation (the nodes
        // leave out the operation's own intents anyway).
        let decision = match flight.planned.tier {
            1 => {
                self.decision(&flight, Some(planned_history?))
                    .instrument(debug_span!("authorise.decision"))
                    .await?
            }
            _ => None,
        };
        self.journal.apply(&writes).instrument(debug_span!("plan.commit")).await?;
        self.transitioned(IntentState::Planned);
        self.transitioned(IntentState::Authorising);
        tracing::info!(
            operation = %flight.record.operation_id,
            module_nonce = flight.record.module_nonce,
            tier = flight.planned.tier,
            intents = ?flight.intents.iter().map(|i| i.0).collect::<Vec<_>>(),
            "planned: authorising"
        );
        self.metrics.observe_stage(Stage::Plan, started.elapsed());
        if flight.planned.tier != 1 {
            return Ok(LaneStep::Progressed);
        }
        // The signing request is journaled: ask the quorum now rather than in the next step (the
        // journal holds exactly what that step would read back). The module's nonce is free
        // again, as between two steps: a keeper job sees this operation in flight.
        drop(nonce_guard);
        self.sign_decided(&flight, None, Some(decision)).await
    }

    /// The operation carrying `group` and its tier, simulated; or why it cannot be.
    async fn candidate(
        &self,
        group: &[(IntentId, Intent)],
        snapshot: &Snapshot,
    ) -> std::result::Result<(Operation, Tier), Refusal> {
        let intents: Vec<Intent> = group.iter().map(|(_, i)| i.clone()).collect();
        let venue =
            self.venue.unwrap_or(Venue { safe: self.spec.safe, router: Address::ZERO, weth: Address::ZERO });
        let build = |ttl: u64| -> std::result::Result<Operation, Refusal> {
            let deadline = snapshot.timestamp + ttl;
            let calls = plan_batch(&intents, snapshot, &venue, deadline)
                .map_err(|e| Refusal::Reject(e.to_string()))?;
            Ok(Operation { calls, nonce: snapshot.module_nonce, deadline: U256::from(deadline) })
        };
        let mut operation = build(self.settings.operation_ttl.as_secs())?;
        // The tier facts and the simulation at once: a tier-1 operation (the usual case) is
        // simulated as it will be signed; a tier-2 one is rebuilt with its longer deadline (which
        // a swap's calls carry) and simulated again.
        let facts =
            read_facts(&self.provider, self.spec.module, &operation).instrument(debug_span!("plan.facts"));
        let simulation = simulate(&self.provider, self.spec.safe, self.spec.module, &operation)
            .instrument(debug_span!("plan.simulate"));
        let (facts, mut simulated) = tokio::join!(facts, simulation);
        let facts = facts.map_err(|e| Refusal::Error(PipelineError::chain("module tiers", e)))?;
        let tier = classify(&operation, &facts);
        if matches!(tier, Tier::Two(_)) {
            operation = build(self.settings.escalation_ttl.as_secs())?;
            simulated = simulate(&self.provider, self.spec.safe, self.spec.module, &operation)
                .instrument(debug_span!("plan.simulate"))
                .await;
        }
        match simulated {
            Ok(Simulation::Ok) => Ok((operation, tier)),
            Ok(Simulation::Reverts(reason)) => Err(Refusal::Fail(format!("simulation reverts: {reason}"))),
            Err(e) => Err(Refusal::Error(PipelineError::Chain(e))),
        }
    }

    // ----- the operation in flight ------------------------------------------------------------

    async fn advance(&self, flight: InFlight) -> Result<LaneStep> {
        // Deadlines are hours away and only this lane uses the module's nonce: checking the
        // chain is needed only for an operation that has waited (root approval, a restart).
        let waited = crate::journal::now_ms() - flight.last_change_ms > STALE_CHECK_AFTER_MS;
        if flight.state != IntentState::Submitted
            && waited
            && let Some(step) = self.settle_if_stale(&flight).await?
        {
            return Ok(step);
        }
        match flight.state {
            IntentState::Planned => {
                let detail = json!({ "tier": flight.planned.tier, "reasons": flight.planned.reasons });
                self.move_all(&flight.intents, IntentState::Authorising, detail).await?;
                Ok(LaneStep::Progressed)
            }
            IntentState::Authorising if flight.planned.tier == 2 => self.escalate(&flight).await,
            IntentState::Authorising => self.sign_with_quorum(&flight, None).await,
            IntentState::AwaitingRoot => self.await_root(&flight).await,
            IntentState::Signed => self.submit(&flight, None, PreparedSend::default()).await,
            IntentState::Submitted => self.resume_submission(&flight).await,
            other => Err(PipelineError::Config(format!("operation in flight in state {other}"))),
        }
    }

    /// Before anything is sent: an operation past its deadline expires, and one whose nonce the
    /// module has moved past (another operation executed there) can never run and fails.
    async fn settle_if_stale(&self, flight: &InFlight) -> Result<Option<LaneStep>> {
        let snapshot = self.latest_snapshot().await?;
        if U256::from(snapshot.timestamp) > flight.planned.operation.deadline {
            let detail = json!({ "reason": "the operation's deadline passed before it was executed" });
            self.move_all(&flight.intents, IntentState::Expired, detail).await?;
            return Ok(Some(LaneStep::Progressed));
        }
        if snapshot.module_nonce != flight.planned.operation.nonce {
            let reason = format!(
                "the module's nonce is {} but the operation was planned for {}: another operation used it",
                snapshot.module_nonce, flight.planned.operation.nonce
            );
            self.move_all(&flight.intents, IntentState::Failed, json!({ "reason": reason })).await?;
            return Ok(Some(LaneStep::Progressed));
        }
        Ok(None)
    }

    /// Tier 2: queue the operation with the root service (idempotent), then wait for its approval.
    async fn escalate(&self, flight: &InFlight) -> Result<LaneStep> {
        let root =
            self.root.as_ref().ok_or_else(|| PipelineError::Config("no root service configured".into()))?;
        let request =
            EscalationRequest::operation(flight.planned.operation.clone(), self.chain_id, self.spec.module)
                .with_context(self.escalation_context(flight).await);
        let record = match root.submit(&request).await {
            Ok(record) => record,
            Err(e) if e.is_policy_denial() => {
                self.move_all(&flight.intents, IntentState::Rejected, json!({ "reason": e.to_string() }))
                    .await?;
                return Ok(LaneStep::Progressed);
            }
            Err(e) => return Err(e.into()),
        };
        self.journal
            .record_signing_request(&NewSigningRequest {
                operation_id: flight.record.operation_id.clone(),
                signer: ROOT.into(),
                digest: record.digest.to_string(),
                request: json!({ "root_request": record.id }),
            })
            .await?;
        let detail = json!({ "root_request": record.id, "reasons": flight.planned.reasons });
        self.move_all(&flight.intents, IntentState::AwaitingRoot, detail).await?;
        Ok(LaneStep::Progressed)
    }

    async fn await_root(&self, flight: &InFlight) -> Result<LaneStep> {
        let root =
            self.root.as_ref().ok_or_else(|| PipelineError::Config("no root service configured".into()))?;
        let request = self
            .journal
            .signing_request(&flight.record.operation_id, ROOT)
            .await
            .map_err(|e| flight.unreadable_answer(e))?
            .ok_or_else(|| {
                PipelineError::Config("awaiting the root but no root request is journaled".into())
            })?;
        let id = request.request.request["root_request"].as_str().unwrap_or_default().to_string();
        let record = match root.get(&id).await {
            Ok(record) => record,
            Err(RootError::UnknownRequest(_)) => {
                let reason = format!("the root service no longer knows request {id}");
                self.move_all(&flight.intents, IntentState::Failed, json!({ "reason": reason })).await?;
                return Ok(LaneStep::Progressed);
            }
            Err(e) => return Err(e.into()),
        };
        match record.state {
            RequestState::Pending | RequestState::Approved => {
                Ok(LaneStep::Waiting(format!("root request {id} waits for approval")))
            }
            RequestState::Rejected => {
                let reason = format!(
                    "rejected by the root approver {}: {}",
                    record.decided_by.unwrap_or_default(),
                    record.reason.unwrap_or_default()
                );
                self.journal
                    .answer_signing_request(
                        &flight.record.operation_id,
                        ROOT,
                        &SigningAnswer::Refused(reason.clone()),
                    )
                    .await?;
                self.move_all(&flight.intents, IntentState::Rejected, json!({ "reason": reason })).await?;
                Ok(LaneStep::Progressed)
            }
            RequestState::Expired => {
                let detail = json!({ "reason": format!("root request {id} expired unapproved") });
                self.move_all(&flight.intents, IntentState::Expired, detail).await?;
                Ok(LaneStep::Progressed)
            }
            RequestState::Signed => {
                let sig = record.signature.ok_or_else(|| {
                    PipelineError::Root(RootError::SignedWithoutSignature { id: id.clone() })
                })?;
                let answer = SigningAnswer::Root(RootSignature { signature: sig.clone() });
                self.journal.answer_signing_request(&flight.record.operation_id, ROOT, &answer).await?;
                self.sign_with_quorum(flight, Some(sig)).await
            }
        }
    }

    /// The decision that produced `flight`, for signer nodes that replay it: the firing of each
    /// intent (policy, trigger, block number and hash), the intents, the plan block, and the
    /// history drawn from `planned` (read now if not given). `None` for an operation planned
    /// before decisions were recorded.
    async fn decision(&self, flight: &InFlight, planned: Option<PlannedHistory>) -> Result<Option<Decision>> {
        let (Some(plan_block), Some(window)) = (flight.planned.plan_block, flight.planned.history_window)
        else {
            return Ok(None);
        };
        let mut intents = Vec::new();
        let mut firings: Vec<DecidedFiring> = Vec::new();
        let mut latest = 0;
        let triggers: std::collections::HashMap<IntentId, String> = match &flight.trigger {
            Some(trigger) => flight.intents.iter().map(|id| (*id, trigger.clone())).collect(),
            None => {
                self.journal.intents(&flight.intents).await?.into_iter().map(|i| (i.id, i.trigger)).collect()
            }
        };
        if triggers.len() != flight.intents.len() {
            return Ok(None);
        }
        let stored = self.stored.get(&self.journal, &flight.intents).await?;
        for (id, stored) in flight.intents.iter().zip(stored) {
            let trigger = &triggers[id];
            let Some(hash) = stored.block_hash else { return Ok(None) };
            let block = PinnedBlock { number: stored.block, hash };
            match firings.iter_mut().find(|f| &f.trigger == trigger && f.block == block) {
                Some(f) if f.policies.contains(&stored.intent.policy) => {}
                Some(f) => f.policies.push(stored.intent.policy.clone()),
                None => firings.push(DecidedFiring {
                    policies: vec![stored.intent.policy.clone()],
                    trigger: trigger.clone(),
                    block,
                }),
            }
            intents.push(stored.intent.clone());
            latest = latest.max(stored.timestamp);
        }
        let planned = match planned {
            Some(planned) => planned,
            None => self.planned_history(&flight.intents).await?,
        };
        let history = decided_history(planned, window, latest, &firings);
        Ok(Some(Decision {
            policy_hash: self.policy_hash,
            firings,
            intents,
            plan_block,
            history_from: Some(window.from),
            history,
            keeper: None,
        }))
    }

    /// The history window of an operation carrying `group`: the first block of the month of its
    /// earliest firing, remembered for the month.
    async fn history_window_of(&self, group: &[std::sync::Arc<StoredIntent>]) -> Result<HistoryWindow> {
        let earliest = group.iter().min_by_key(|s| s.block).map(|s| (s.block, s.timestamp));
        let (block, timestamp) = earliest.unwrap_or_default();
        let cached = *self.window_cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(w) = cached
            && w.from.number <= block
            && treasury_policies::replay::same_window(w.since, timestamp)
        {
            return Ok(w);
        }
        let window = treasury_policies::replay::history_window(&self.provider, block)
            .await
            .map_err(|e| PipelineError::chain("history window", e))?;
        *self.window_cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(window);
        Ok(window)
    }

    /// The intents planned so far, each with its stored form; the payload cache forgets those
    /// older than all of them and than `own` (the operation's own intents, not among them while
    /// its plan has not committed).
    async fn planned_history(&self, own: &[IntentId]) -> Result<PlannedHistory> {
        let rows = self.journal.planned_intents_without_payloads(10_000).await?;
        let ids: Vec<IntentId> = rows.iter().map(|r| r.intent.id).collect();
        let stored = self.stored.get(&self.journal, &ids).await?;
        if let Some(oldest) = ids.iter().chain(own).min() {
            self.stored.forget_older_than(*oldest);
        }
        Ok(PlannedHistory { rows, stored })
    }

    /// Asks the quorum (with the root's signature for tier 2), then submits at once: the
    /// signature is journaled in the same commit as the keeper transaction that carries it (a
    /// crash before that commit only costs a new signature of the same operation).
    async fn sign_with_quorum(&self, flight: &InFlight, root_sig: Option<Bytes>) -> Result<LaneStep> {
        self.sign_decided(flight, root_sig, None).await
    }

    /// [`Pipeline::sign_with_quorum`] with the decision, when it is already `known`.
    async fn sign_decided(
        &self,
        flight: &InFlight,
        root_sig: Option<Bytes>,
        known: Option<Option<Decision>>,
    ) -> Result<LaneStep> {
        let started = Instant::now();
        // While the quorum signs a tier-1 operation: the keeper transaction's gas limit and fees.
        let tier_1 = root_sig.is_none() && flight.planned.tier == 1;
        let (signed, prepared) = tokio::join!(
            self.ask_quorum(flight, root_sig.as_ref(), known),
            self.prepare_send(tier_1.then_some(&flight.planned.operation))
                .instrument(debug_span!("authorise.prepare_send"))
        );
        self.signed_by_quorum(flight, root_sig, started, signed?, prepared).await
    }

    /// The quorum's answer for `flight` (its decision put together first unless `known`).
    async fn ask_quorum(
        &self,
        flight: &InFlight,
        root_sig: Option<&Bytes>,
        known: Option<Option<Decision>>,
    ) -> Result<std::result::Result<SignOutcome, QuorumError>> {
        if flight.planned.tier == 2 {
            self.journal.record_signing_request(&quorum_request(&flight.record.operation_id, 2)).await?;
        }
        let decision = match (known, flight.planned.tier) {
            (Some(known), _) => known,
            (None, 1) => self.decision(flight, None).instrument(debug_span!("authorise.decision")).await?,
            (None, _) => None,
        };
        Ok(self
            .coordinator
            .sign_decided(
                &flight.planned.operation,
                self.chain_id,
                self.spec.module,
                root_sig.map(|b| b.as_ref()),
                decision.as_ref(),
            )
            .instrument(debug_span!("authorise.quorum"))
            .await)
    }

    /// Journals a refusal by the quorum, or submits its signature (asked for since `started`)
    /// with what was `prepared` for the send meanwhile.
    async fn signed_by_quorum(
        &self,
        flight: &InFlight,
        root_sig: Option<Bytes>,
        started: Instant,
        signed: std::result::Result<SignOutcome, QuorumError>,
        prepared: PreparedSend,
    ) -> Result<LaneStep> {
        let outcome = match signed {
            Ok(outcome) => outcome,
            Err(QuorumError::NotEnoughSigners { faults, .. })
                if !faults.is_empty() && faults.iter().all(|(_, f)| matches!(f, NodeFault::Refused(_))) =>
            {
                let reason = format!(
                    "refused by the signer nodes: {}",
                    faults.iter().map(|(n, f)| format!("{n}: {f}")).collect::<Vec<_>>().join("; ")
                );
                self.journal
                    .answer_signing_request(
                        &flight.record.operation_id,
                        QUORUM,
                        &SigningAnswer::Refused(reason.clone()),
                    )
                    .await?;
                self.move_all(&flight.intents, IntentState::Rejected, json!({ "reason": reason })).await?;
                return Ok(LaneStep::Progressed);
            }
            Err(e) => return Err(e.into()),
        };
        self.metrics.observe_stage(Stage::Sign, started.elapsed());
        for node in &outcome.signers {
            self.metrics.set_signer_up(node, true);
        }
        for (node, _) in &outcome.excluded {
            self.metrics.set_signer_up(node, false);
        }
        let excluded: Vec<String> = outcome.excluded.iter().map(|(n, f)| format!("{n}: {f}")).collect();
        tracing::info!(
            operation = %flight.record.operation_id,
            signers = ?outcome.signers,
            excluded = ?excluded,
            "signed by the quorum"
        );
        let signature = Signed {
            signature: QuorumSignature { signature: outcome.signature, root_signature: root_sig },
            detail: json!({ "excluded_nodes": excluded, "sign_us": started.elapsed().as_micros() as u64 }),
        };
        self.submit(flight, Some(signature), prepared).await
    }

    /// The keeper transaction of a tier-1 operation `op`, worked out before the quorum's
    /// signature exists (docs/ARCHITECTURE.md, "The exec's gas limit"): its gas limit is the
    /// estimate of the exact `exec` with a stand-in signature under a throwaway key written over
    /// the module's key for the estimate only, plus [`SIGNATURE_CALLDATA_BOUND`] and the sender's
    /// margin — or the limit kept for an operation of its shape, when that stand-in `exec`
    /// succeeds with it ([`GasLimits`]); its fees are read meanwhile. A part that cannot be had is `None`, and the sender
    /// then works it out after the signature, as for any other operation (a revert, in
    /// particular, is reported by the estimate of the signed `exec`). Nothing for no `op`.
    async fn prepare_send(&self, op: Option<&Operation>) -> PreparedSend {
        let Some(op) = op else { return PreparedSend::default() };
        let gas = async {
            let digest = operation_digest(op, 1, self.chain_id, self.spec.module);
            let parity = self.coordinator.group_key().parity;
            let (key_x, signature) = stand_in_signature(digest.as_slice(), parity)?;
            let request = self.exec_call(op, &QuorumSignature { signature, root_signature: None });
            let slot = B256::from(U256::from(MODULE_GROUP_KEY_X_SLOT));
            let overrides = StateOverridesBuilder::default()
                .with_state_diff(self.spec.module, [(slot, B256::from(key_x))])
                .build();
            // The limit an operation of the same shape was given, if the stand-in `exec` still
            // succeeds with it less the signature's bound: one execution instead of a search.
            let shape = GasLimits::shape(op);
            if let Some(limit) = self.gas_limits.get(&shape)
                && self
                    .sender
                    .succeeds_with_gas(
                        &request,
                        Some(overrides.clone()),
                        limit.saturating_sub(SIGNATURE_CALLDATA_BOUND),
                    )
                    .instrument(debug_span!("authorise.gas_check"))
                    .await
            {
                return Some(limit);
            }
            let estimate = self.sender.estimate_gas_with(&request, Some(overrides), SIGNATURE_CALLDATA_BOUND);
            match estimate.await {
                Ok(gas) => {
                    self.gas_limits.remember(shape, gas);
                    Some(gas)
                }
                Err(e) => {
                    tracing::debug!(error = %e, "exec not estimated before its signature: estimated after it");
                    None
                }
            }
        };
        let fees = async {
            let request = TxRequest { to: self.spec.module, ..TxRequest::default() };
            self.sender.fees_for(&request).await.ok()
        };
        let (gas_limit, fees) = tokio::join!(gas, fees);
        PreparedSend { gas_limit, fees }
    }

    /// The quorum's journaled signature of the operation in flight; an error naming the intents
    /// if it is missing or unreadable.
    async fn journaled_signature(&self, flight: &InFlight) -> Result<QuorumSignature> {
        let request = self
            .journal
            .signing_request(&flight.record.operation_id, QUORUM)
            .await
            .map_err(|e| flight.unreadable_answer(e))?;
        let reason = match request.and_then(|r| r.answer) {
            Some(SigningAnswer::Quorum(signature)) => return Ok(signature),
            None => "no quorum signature is journaled".to_string(),
            Some(SigningAnswer::Refused(why)) => format!("the quorum refused: {why}"),
            Some(other) => format!("the quorum's row holds {other:?}"),
        };
        Err(flight.unusable_signature(reason))
    }

    /// The `exec` calldata of the signed operation, from the quorum's answer; refuses a tier-2
    /// operation whose answer lacks the root's signature (`exec` would revert).
    fn exec_request(
        &self,
        flight: &InFlight,
        signature: &QuorumSignature,
    ) -> Result<(TxRequest, serde_json::Value)> {
        let QuorumSignature { signature: frost, root_signature: root_sig } = signature;
        if flight.planned.tier == 2 && root_sig.as_ref().is_none_or(|s| s.is_empty()) {
            return Err(flight.unusable_signature("tier 2, but no root signature is journaled".into()));
        }
        let op = &flight.planned.operation;
        let signed = json!({ "operation": op, "frost": frost, "root_signature": root_sig });
        Ok((self.exec_call(op, signature), signed))
    }

    /// The keeper transaction calling the module's `exec` with `op` and `signature`.
    fn exec_call(&self, op: &Operation, signature: &QuorumSignature) -> TxRequest {
        let QuorumSignature { signature: frost, root_signature: root_sig } = signature;
        let call = TreasuryModule::execCall {
            calls: treasury_chain::contracts::exec_calls(op),
            nonce: op.nonce,
            deadline: op.deadline,
            sig: TreasuryModule::FrostSig { rX: frost.r_x, rY: frost.r_y, z: frost.z },
            rootSig: root_sig.clone().unwrap_or_default(),
        };
        TxRequest { to: self.spec.module, data: call.abi_encode().into(), ..Default::default() }
    }

    /// Sends the signed operation; `fresh` is a signature not journaled yet (it is written with
    /// the first keeper transaction, or before handling a failure to send); `prepared` is what
    /// was worked out while the quorum signed (tier 1).
    async fn submit(
        &self,
        flight: &InFlight,
        fresh: Option<Signed>,
        prepared: PreparedSend,
    ) -> Result<LaneStep> {
        let signature = match &fresh {
            Some(s) => s.signature.clone(),
            None => self.journaled_signature(flight).await?,
        };
        let (mut request, signed) = self.exec_request(flight, &signature)?;
        if signature.root_signature.is_none() {
            request.gas_limit = prepared.gas_limit;
        }
        let mut observer = JournalObserver::new(self, flight.operation(), signed, false);
        if let Some(fresh) = &fresh {
            observer = observer.with_fresh_signature(fresh.signature.clone(), fresh.detail.clone());
        }
        let started = Instant::now();
        let sent = self.sender.send_with_fees(&request, prepared.fees, &mut observer).await;
        if sent.is_err() {
            held_observations(&mut observer).await;
        }
        if let Some(writes) = observer.unwritten_signature() {
            // Sending failed before a transaction was signed: keep the signature anyway.
            self.journal.apply(&writes).await?;
            self.transitioned(IntentState::Signed);
        }
        if let Some(broadcast) = observer.broadcast_after() {
            self.metrics.observe_stage(Stage::Submit, broadcast);
            self.metrics.observe_stage(Stage::Confirm, started.elapsed().saturating_sub(broadcast));
        }
        self.settle_send(flight, sent, observer.submitted()).await
    }

    /// After a crash with a keeper transaction journaled: rebroadcast it and see it through.
    async fn resume_submission(&self, flight: &InFlight) -> Result<LaneStep> {
        let Some(tx) = &flight.transaction else {
            return Err(PipelineError::Config("submitted, but no keeper transaction is journaled".into()));
        };
        let raw = hex::decode(tx.tx.raw_tx.trim_start_matches("0x"))
            .map_err(|e| PipelineError::Config(format!("journaled raw transaction unreadable: {e}")))?;
        let mut observer =
            JournalObserver::new(self, flight.operation(), tx.tx.signed_operation.clone(), true);
        // A rebroadcast writes nothing first: check the lease (a replica that lost it sends nothing).
        self.journal.check_fence().await?;
        let resumed = self.sender.resume(&raw, &mut observer).await;
        if resumed.is_err() {
            held_observations(&mut observer).await;
        }
        match resumed {
            Err(SenderError::InvalidRaw(why)) => {
                tracing::warn!(%why, "journaled keeper transaction can no longer be mined");
                if let Some(step) = self.executed_elsewhere(flight).await? {
                    return Ok(step);
                }
                let signature = self.journaled_signature(flight).await?;
                let (request, _) = self.exec_request(flight, &signature)?;
                let sent = self.sender.send(&request, &mut observer).await;
                if sent.is_err() {
                    held_observations(&mut observer).await;
                }
                self.settle_send(flight, sent, true).await
            }
            sent => self.settle_send(flight, sent, true).await,
        }
    }

    /// When the module's nonce moved past the operation: confirmed if it was this operation that
    /// executed there, failed otherwise.
    async fn executed_elsewhere(&self, flight: &InFlight) -> Result<Option<LaneStep>> {
        let module = TreasuryModule::new(self.spec.module, &self.provider);
        let nonce = module.nonce().call().await.map_err(|e| PipelineError::chain("module nonce", e))?;
        if nonce <= flight.planned.operation.nonce {
            return Ok(None);
        }
        let filter = module.Executed_filter().topic1(flight.planned.operation.nonce).from_block(0u64);
        let logs = filter.query().await.map_err(|e| PipelineError::chain("Executed logs", e))?;
        let ours = logs.iter().find(|(ev, _)| ev.digest.to_string() == flight.record.operation_id);
        match ours {
            Some((_, log)) => {
                let detail = json!({ "tx_hash": log.transaction_hash, "block": log.block_number });
                self.move_all(&flight.intents, IntentState::Confirmed, detail).await?;
            }
            None => {
                let reason = "another operation executed at this operation's nonce";
                self.move_all(&flight.intents, IntentState::Failed, json!({ "reason": reason })).await?;
            }
        }
        Ok(Some(LaneStep::Progressed))
    }

    async fn settle_send(
        &self,
        flight: &InFlight,
        sent: std::result::Result<Sent, SenderError>,
        submitted: bool,
    ) -> Result<LaneStep> {
        match sent {
            Ok(sent) => {
                let receipt = &sent.receipt;
                let (tx_state, to, detail) = if receipt.status() {
                    let detail = json!({
                        "tx_hash": receipt.transaction_hash,
                        "block": receipt.block_number,
                        "gas_used": receipt.gas_used,
                        "attempts": sent.attempts,
                    });
                    (TxState::Confirmed, IntentState::Confirmed, detail)
                } else {
                    let reason = self.reason_of_receipt(receipt).await;
                    (
                        TxState::Failed,
                        IntentState::Failed,
                        json!({ "reason": reason, "tx_hash": receipt.transaction_hash }),
                    )
                };
                let writes = [
                    Write::TransactionState {
                        tx_hash: receipt.transaction_hash.to_string(),
                        state: tx_state,
                        block: receipt.block_number,
                    },
                    Write::Transition { intents: flight.intents.clone(), to, detail: detail.clone() },
                ];
                // The receipt's outcome: a crash before it is on disk leaves the intents
                // `submitted`, and resuming finds the same receipt again.
                let moved = self.journal.apply_relaxed(&writes).await?;
                self.transitioned(to);
                self.announce(&moved, to, &detail);
                Ok(LaneStep::Progressed)
            }
            Err(SenderError::WouldRevert { source, .. }) => {
                if submitted && let Some(step) = self.executed_elsewhere(flight).await? {
                    return Ok(step);
                }
                let reason = reason_of_rpc_error(&source);
                tracing::warn!(%reason, "exec would revert; the intents fail");
                self.move_all(&flight.intents, IntentState::Failed, json!({ "reason": reason })).await?;
                Ok(LaneStep::Progressed)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Why a mined transaction reverted: the same call replayed on the state before its block.
    async fn reason_of_receipt(&self, receipt: &TransactionReceipt) -> String {
        let Some(block) = receipt.block_number else { return "reverted".into() };
        let Ok(Some(tx)) = self.provider.get_transaction_by_hash(receipt.transaction_hash).await else {
            return format!("reverted in block {block}");
        };
        let request = alloy::rpc::types::TransactionRequest::from_transaction(tx.inner.into_inner());
        match self
            .provider
            .call(request)
            .block(BlockNumberOrTag::Number(block.saturating_sub(1)).into())
            .await
        {
            Err(e) => reason_of_rpc_error(&e),
            Ok(_) => format!("reverted in block {block}"),
        }
    }
}

impl InFlight {
    fn operation(&self) -> (&str, u64, &[IntentId]) {
        (&self.record.operation_id, self.record.module_nonce, &self.intents)
    }

    /// A journal error reading a signer's answer, naming this operation's intents when the
    /// answer is unreadable.
    fn unreadable_answer(&self, e: JournalError) -> PipelineError {
        match e {
            JournalError::CorruptAnswer { signer, reason, .. } => {
                self.unusable_signature(format!("the journaled {signer} answer is unreadable: {reason}"))
            }
            other => other.into(),
        }
    }

    /// This operation's journaled signature cannot be used, for `reason`.
    fn unusable_signature(&self, reason: String) -> PipelineError {
        PipelineError::UnusableSignature {
            intents: self.intents.clone(),
            operation_id: self.record.operation_id.clone(),
            reason,
        }
    }
}

/// The intents planned so far ([`Journal::planned_intents_without_payloads`]) with their stored
/// forms, in the same order.
struct PlannedHistory {
    rows: Vec<crate::journal::DecidedIntent>,
    stored: Vec<std::sync::Arc<StoredIntent>>,
}

/// The fund-moving intents the policies' history counted, for replaying nodes, each with the
/// operation that carries it: those `planned` and decided in `window` up to timestamp `latest`,
/// and those decided before it (up to [`STRAGGLER_LOOKBACK_SECS`]) whose operation was mined
/// in it, so every operation a node finds executed in the window is accounted for.
fn decided_history(
    planned: PlannedHistory,
    window: HistoryWindow,
    latest: u64,
    firings: &[DecidedFiring],
) -> Vec<PastIntent> {
    let mut history = Vec::new();
    for (row, stored) in planned.rows.into_iter().zip(planned.stored) {
        if !stored.intent.action.moves_funds()
            || stored.timestamp > latest
            || stored.timestamp + STRAGGLER_LOOKBACK_SECS < window.since
        {
            continue;
        }
        if stored.timestamp < window.since
            && (row.operation_id.is_none() || row.mined_block.is_none_or(|b| b < window.from.number))
        {
            continue;
        }
        // An intent not yet planned was decided alongside or after this operation's firings
        // (a firing of the same round): it is not in their history.
        let Some(digest) = row.operation_id.and_then(|o| o.parse().ok()) else { continue };
        // Decided by one of this operation's firings (carried by it, or by another when the
        // planner split the firing): not in that firing's history, which the node must know.
        let decided_by = firings
            .iter()
            .find(|f| {
                f.trigger == row.intent.trigger
                    && stored.block_hash == Some(f.block.hash)
                    && f.policies.contains(&stored.intent.policy)
            })
            .map(|f| f.trigger.clone());
        history.push(PastIntent {
            intent: stored.intent.clone(),
            timestamp: stored.timestamp,
            digest: Some(digest),
            decided_by,
        });
    }
    history
}

/// After a send that failed: journals what the observer still holds (a broadcast, an inclusion)
/// at best effort, since the send's own error is what the caller reports.
async fn held_observations(observer: &mut JournalObserver<'_>) {
    if let Err(e) = observer.write_held().await {
        tracing::warn!(error = %e, "could not journal the keeper transaction's last observations");
    }
}

/// Why a group of intents cannot become an operation.
enum Refusal {
    /// Never possible (bad intent): the intents are rejected.
    Reject(String),
    /// Would revert: the intents fail with the reason.
    Fail(String),
    /// A fault (RPC down): try again later.
    Error(PipelineError),
}

/// The operation in flight, if any: the one with the lowest module nonce among pending intents.
fn in_flight(pending: &[PendingIntent]) -> Result<Option<InFlight>> {
    use IntentState::*;
    let flying = pending
        .iter()
        .filter(|p| matches!(p.intent.state, Planned | Authorising | AwaitingRoot | Signed | Submitted))
        .filter_map(|p| p.operation.as_ref().map(|op| (p, op)))
        .min_by_key(|(_, op)| op.module_nonce);
    let Some((p, record)) = flying else { return Ok(None) };
    let planned: PlannedOperation = serde_json::from_value(record.operation.clone())
        .map_err(|e| PipelineError::Config(format!("journaled operation unreadable: {e}")))?;
    let intents = pending
        .iter()
        .filter(|q| q.intent.state == p.intent.state && record.intents.contains(&q.intent.id))
        .map(|q| q.intent.id)
        .collect();
    Ok(Some(InFlight {
        record: record.clone(),
        planned,
        intents,
        state: p.intent.state,
        transaction: p.transaction.clone(),
        last_change_ms: p.intent.updated_at,
        trigger: None,
    }))
}

#[cfg(test)]
mod tests {
    use alloy::primitives::{Address, U256};
    use treasury_chain::{Call, Operation};

    use super::GasLimits;

    fn transfer(token: u8, to: u8, amount: u64) -> Call {
        let mut data = vec![0xa9, 0x05, 0x9c, 0xbb];
        data.extend_from_slice(&[to; 32]);
        data.extend_from_slice(&U256::from(amount).to_be_bytes::<32>());
        Call::new(Address::with_last_byte(token), U256::ZERO, data)
    }

    fn op(calls: Vec<Call>) -> Operation {
        Operation { calls, nonce: U256::from(7), deadline: U256::MAX }
    }

    #[test]
    fn a_kept_gas_limit_is_offered_only_to_operations_of_its_shape() {
        let limits = GasLimits::default();
        limits.remember(GasLimits::shape(&op(vec![transfer(1, 0xaa, 5)])), 90_000);
        // Another recipient, amount or nonce: the same shape (the check decides whether it fits).
        assert_eq!(limits.get(&GasLimits::shape(&op(vec![transfer(1, 0xbb, 9)]))), Some(90_000));
        // Another token, a second call, or value: another shape, estimated.
        assert_eq!(limits.get(&GasLimits::shape(&op(vec![transfer(2, 0xaa, 5)]))), None);
        assert_eq!(
            limits.get(&GasLimits::shape(&op(vec![transfer(1, 0xaa, 5), transfer(1, 0xbb, 5)]))),
            None
        );
        let mut paid = transfer(1, 0xaa, 5);
        paid.value = U256::from(1);
        assert_eq!(limits.get(&GasLimits::shape(&op(vec![paid]))), None);
        // Bounded: past its size it starts again rather than grow.
        for token in 0..=GasLimits::KEPT as u8 {
            limits.remember(GasLimits::shape(&op(vec![transfer(token.wrapping_add(10), 0xaa, 5)])), 1);
        }
        assert!(limits.0.lock().unwrap().len() <= GasLimits::KEPT);
    }
}
