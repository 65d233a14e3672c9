//! Keeper jobs with `execute = "module"`: the perform is a tier-1 operation of the treasury
//! module (one call, no value), signed by the quorum and sent by the keeper as `exec`.
//!
//! The run is claimed before anything is signed, exactly as for the keeper's own performs. The
//! sign request carries a keeper decision (job, the check's block, its `performData`): each
//! replaying node runs the check again at that block through its own RPC and signs only that
//! call, once per (job, block or log, perform hash). A perform that is not tier 1 (its target
//! and selector not allow-listed) is skipped with its reason before the nodes are asked. The
//! module's nonce is shared with the policies' operations: the pipeline's module-nonce lock is
//! held from the moment the nonce is read until the perform is confirmed, and no perform starts
//! while a planned operation is in flight.

use alloy::eips::{BlockId, BlockNumberOrTag};
use alloy::primitives::{Address, Bytes, U256};
use alloy::sol_types::SolCall;
use tokio::sync::OwnedMutexGuard;
use treasury_chain::contracts::{ITreasuryModuleViews, TreasuryModule};
use treasury_chain::sender::TxRequest;
use treasury_chain::tiers::{Tier, classify, read_facts};
use treasury_chain::{Call, Operation};
use treasury_policies::replay::{Decision, PinnedBlock};
use treasury_policies::upkeep::KeeperDecision;
use treasury_signer::quorum::{NodeFault, QuorumError};

use super::check::{self, BlockRef, Work};
use super::{Dispatch, JobRunner, KeeperError, Result, SendTask, chain};
use crate::config::jobs::{Execute, KeeperJob};
use crate::journal::IntentState;
use crate::journal::keeper::RunState;
use crate::notify::Notification;

/// A perform through the module, to be signed by the quorum then sent.
pub(super) struct ModuleSend {
    /// The operation: the perform's one call at the module's nonce of the check's block.
    pub(super) op: Operation,
    /// What the nodes replay.
    pub(super) decision: Decision,
}

impl JobRunner {
    /// Checks the perform against the module's rules, claims the run and hands it to a send
    /// task that has it signed and sent; waits (for the next round) while the module's nonce is
    /// taken by an operation in flight.
    pub(super) async fn perform_through_module(
        &mut self,
        job: &KeeperJob,
        work: Work,
        target: Address,
        calldata: Bytes,
        head: BlockRef,
    ) -> Result<()> {
        let Ok(lock) = self.pipeline.module_nonce_lock().clone().try_lock_owned() else {
            self.wait_for_module(job, work);
            return Ok(());
        };
        if self.operation_in_flight().await? {
            drop(lock);
            self.wait_for_module(job, work);
            return Ok(());
        }
        let hash = check::perform_hash(target, &calldata);
        let op = self.module_operation(&work, target, &calldata).await?;
        let provider = self.pipeline.provider();
        let facts =
            read_facts(provider, self.pipeline.module(), &op).await.map_err(|e| chain("module tiers", e))?;
        if let Tier::Two(reasons) = classify(&op, &facts) {
            let reason = format!(
                "through the module this perform is not a tier-1 call ({}); allow-list its target and selector in the module and the signer nodes' guard",
                reasons.join("; ")
            );
            return self.skip(job, &work, target, calldata, hash, &reason, head).await;
        }
        let safe = self.pipeline.safe();
        let simulated = check::perform_would_succeed(provider, safe, job, work.block.hash, target, &calldata)
            .await
            .map_err(KeeperError::Chain)?;
        if let Err(reason) = simulated {
            return self.skip(job, &work, target, calldata, hash, &reason, head).await;
        }
        let Some(id) = self.claim_run(job, &work, target, &calldata, hash, head).await? else {
            return Ok(());
        };
        let perform_data = perform_data_of(job, &calldata);
        let decision = Decision {
            policy_hash: self.pipeline.policy_hash(),
            firings: Vec::new(),
            intents: Vec::new(),
            plan_block: PinnedBlock { number: work.block.number, hash: work.block.hash },
            history_from: None,
            history: Vec::new(),
            keeper: Some(KeeperDecision {
                job: job.name.clone(),
                log_index: work.log.as_ref().and_then(|l| l.log_index),
                perform_data,
            }),
        };
        let anchor = work.log.as_ref().and_then(|l| l.block_hash.zip(l.block_number));
        self.spawn_send_locked(
            job.clone(),
            id,
            Dispatch::Module(Box::new(ModuleSend { op, decision })),
            anchor,
            Some(lock),
        );
        Ok(())
    }

    /// Pins each tick of a module job (`every@N`, `schedule@T`) to the block where the signer
    /// nodes find it due — the tick's own block, the first block at or after the cron instant —
    /// rather than the head a catch-up (or a wait) reached it at.
    pub(super) async fn pin_module_ticks(&self, work: &mut [Work], head: BlockRef) -> Result<()> {
        for w in work.iter_mut() {
            if self.jobs[w.job].execute != Execute::Module {
                continue;
            }
            if let Some(n) = w.key.strip_prefix("every@").and_then(|n| n.parse::<u64>().ok()) {
                if n != head.number {
                    w.block = self.block_at(BlockNumberOrTag::Number(n)).await?;
                }
            } else if let Some(t) = w.key.strip_prefix("schedule@").and_then(|t| t.parse::<u64>().ok()) {
                w.block = self.first_block_at_or_after(t, head).await?;
            }
        }
        Ok(())
    }

    /// The first block whose timestamp is at least `t` (`head`'s is), by bisection back from the
    /// head over at most `max_catch_up_blocks`.
    async fn first_block_at_or_after(&self, t: u64, head: BlockRef) -> Result<BlockRef> {
        let (mut lo, mut hi) = (head.number.saturating_sub(self.settings.max_catch_up_blocks), head);
        if lo >= hi.number {
            return Ok(hi);
        }
        let parent = self.block_at(BlockNumberOrTag::Number(head.number - 1)).await?;
        if parent.timestamp < t {
            return Ok(head);
        }
        hi = parent;
        // the block at `lo` is before `t` (or the search's floor); `hi` is at or after it
        while hi.number - lo > 1 {
            let mid = self.block_at(BlockNumberOrTag::Number(lo + (hi.number - lo) / 2)).await?;
            if mid.timestamp >= t {
                hi = mid;
            } else {
                lo = mid.number;
            }
        }
        Ok(hi)
    }

    /// Keeps `work` for the next round: the module's nonce is taken.
    fn wait_for_module(&mut self, job: &KeeperJob, work: Work) {
        tracing::debug!(job = %job.name, work = %work.key, "the module's nonce is taken by an operation in flight: waiting");
        if work.log.is_some() {
            self.fee_deferred.push(work);
        } else {
            self.states.entry(job.name.clone()).or_default().pending = Some(work.key);
        }
    }

    /// Whether a planned operation of the policies holds the module's next nonce.
    async fn operation_in_flight(&self) -> Result<bool> {
        use IntentState::*;
        let pending = self.journal().pending().await?;
        Ok(pending.iter().any(|p| {
            p.operation.is_some()
                && matches!(p.intent.state, Planned | Authorising | AwaitingRoot | Signed | Submitted)
        }))
    }

    /// The perform as an operation: its one call, the module's nonce at the check's block, a
    /// deadline the pipeline's operation TTL after that block.
    async fn module_operation(&self, work: &Work, target: Address, calldata: &Bytes) -> Result<Operation> {
        let nonce = ITreasuryModuleViews::new(self.pipeline.module(), self.pipeline.provider())
            .nonce()
            .call()
            .block(BlockId::hash(work.block.hash))
            .await
            .map_err(|e| chain("module nonce", e))?;
        let ttl = self.pipeline.settings().operation_ttl.as_secs();
        Ok(Operation {
            calls: vec![Call::new(target, U256::ZERO, calldata.to_vec())],
            nonce,
            deadline: U256::from(work.block.timestamp + ttl),
        })
    }

    /// Rests the jobs whose performs the nodes refused since the last round (a refusal is final
    /// for its work, and asking again at every block would be a retry storm).
    pub(super) fn rest_refused(&mut self, head: u64) {
        let refused: Vec<String> = std::mem::take(&mut *self.refused.lock().expect("refused lock"));
        for name in refused {
            self.rest(&name, head);
        }
    }
}

/// The `performData` (Chainlink) or payload (Gelato) a perform's calldata carries.
fn perform_data_of(job: &KeeperJob, calldata: &Bytes) -> Bytes {
    match &job.kind {
        crate::config::jobs::JobKind::ChainlinkUpkeep { .. } => {
            treasury_chain::contracts::automation::AutomationCompatibleInterface::performUpkeepCall::abi_decode(
                calldata,
            )
            .map(|c| c.performData)
            .unwrap_or_default()
        }
        _ => calldata.clone(),
    }
}

/// Why a perform through the module was not signed.
pub(super) enum Unsigned {
    /// The nodes refused it (final for this work): the reason.
    Refused(String),
    /// The quorum could not be reached: checked again later.
    Failed(String),
}

impl SendTask {
    /// Has the quorum sign the perform; the `exec` transaction carrying it.
    pub(super) async fn sign_module(&self, m: &ModuleSend) -> std::result::Result<TxRequest, Unsigned> {
        let p = &self.pipeline;
        let signed =
            p.coordinator().sign_decided(&m.op, p.chain_id(), p.module(), None, Some(&m.decision)).await;
        let outcome = match signed {
            Ok(outcome) => outcome,
            Err(QuorumError::NotEnoughSigners { faults, .. })
                if !faults.is_empty() && faults.iter().all(|(_, f)| matches!(f, NodeFault::Refused(_))) =>
            {
                let why: Vec<String> = faults.iter().map(|(n, f)| format!("{n}: {f}")).collect();
                return Err(Unsigned::Refused(format!("refused by the signer nodes: {}", why.join("; "))));
            }
            Err(e) => return Err(Unsigned::Failed(treasury_signer::error_chain(&e))),
        };
        let frost = outcome.signature;
        let call = TreasuryModule::execCall {
            calls: treasury_chain::contracts::exec_calls(&m.op),
            nonce: m.op.nonce,
            deadline: m.op.deadline,
            sig: TreasuryModule::FrostSig { rX: frost.r_x, rY: frost.r_y, z: frost.z },
            rootSig: Bytes::new(),
        };
        Ok(TxRequest {
            to: p.module(),
            data: call.abi_encode().into(),
            max_fee_per_gas: Some(self.job.max_fee_per_gas),
            ..TxRequest::default()
        })
    }

    /// Journals a perform the quorum did not sign: refused ones are skipped (and the job rests),
    /// others dropped to be checked again.
    pub(super) async fn end_unsigned(&self, why: Unsigned) -> Result<()> {
        let journal = self.pipeline.journal();
        match why {
            Unsigned::Refused(reason) => {
                journal.finish_keeper_run(self.id, RunState::Skipped, Some(&reason), None, 0).await?;
                tracing::warn!(job = %self.job.name, %reason, "keeper job's perform through the module refused");
                self.pipeline.metrics().jobs.inc_skipped(&self.job.name);
                self.pipeline
                    .notifier()
                    .notify(Notification::JobSkipped { job: self.job.name.clone(), reason });
                self.refused.lock().expect("refused lock").push(self.job.name.clone());
            }
            Unsigned::Failed(reason) => {
                let reason = format!("the quorum did not sign ({reason}); checked again");
                tracing::warn!(job = %self.job.name, %reason, "keeper job's perform through the module not signed");
                journal.finish_keeper_run(self.id, RunState::Dropped, Some(&reason), None, 0).await?;
            }
        }
        Ok(())
    }
}

/// Holds the module's nonce for a send task (released when the task ends).
pub(super) type NonceLock = Option<OwnedMutexGuard<()>>;
