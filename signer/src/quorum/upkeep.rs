//! Replay of a keeper job's perform at the node (`execute = "module"`): the job must be pinned in
//! the node's policy bundle; the node runs the job's check itself, at the decision's block,
//! through its own RPC endpoint, derives the perform call, and signs only an operation that is
//! exactly that call at the module's nonce of that block, only at a block where the job's
//! trigger is due (a tick of `every_blocks`, the first block at or after a cron instant, a block
//! holding the matching log), once per (job, block or log, perform hash) — once per period for a
//! job with a period (a tick, a cron instant).

use alloy::eips::BlockId;
use alloy::primitives::B256;
use alloy::providers::DynProvider;
use alloy::providers::Provider;
use alloy::sol_types::SolCall;
use treasury_chain::contracts::{IERC20, ITreasuryModuleViews};
use treasury_chain::operation::Operation;
use treasury_policies::Trigger;
use treasury_policies::replay::{Decision, Replayer, block_header};
use treasury_policies::upkeep::{DueBlock, KeeperDecision, Perform, PinnedJob, derive};

use super::error::{Refusal, RefusalCode};
use super::replay::{IntentLedger, LedgerRecord, Replayed, UpkeepSigned, can_no_longer_execute, refuse};

/// Selectors a keeper job's perform may not carry: a keeper job moves no funds (payments go
/// through the policies, whose history counts them).
const FUND_MOVING: [[u8; 4]; 3] = [
    IERC20::transferCall::SELECTOR,
    IERC20::approveCall::SELECTOR,
    // transferFrom(address,address,uint256)
    [0x23, 0xb8, 0x72, 0xdd],
];

fn mismatch(reason: String) -> Refusal {
    refuse(RefusalCode::ReplayMismatch, reason)
}

/// Checks that `op` is the perform the pinned job `keeper` gives at the decision's block, read
/// through `provider`, and that its exactly-once key was not signed under another operation
/// that can still execute.
pub(crate) async fn check(
    replayer: &Replayer,
    provider: &DynProvider,
    decision: &Decision,
    keeper: &KeeperDecision,
    op: &Operation,
    digest: B256,
    ledger: &std::sync::Mutex<IntentLedger>,
) -> Result<Replayed, Refusal> {
    if decision.policy_hash != replayer.hash() {
        return Err(refuse(
            RefusalCode::PolicyMismatch,
            format!(
                "the decision was taken with policy set {}, this node enforces {}",
                decision.policy_hash,
                replayer.hash()
            ),
        ));
    }
    if !decision.intents.is_empty() || !decision.firings.is_empty() || !decision.history.is_empty() {
        return Err(mismatch("malformed decision: a keeper job's perform carries no intents".into()));
    }
    let bundle = replayer.bundle();
    let job = bundle.keeper_job(&keeper.job).ok_or_else(|| {
        mismatch(format!(
            "keeper job {} is not among the jobs this node's pinned policy set performs through the module",
            keeper.job
        ))
    })?;
    let block = decision.plan_block;
    let (timestamp, actual) = block_header(provider, block.number)
        .await
        .map_err(|e| mismatch(format!("keeper job {}: {e}", keeper.job)))?;
    if actual != block.hash {
        return Err(mismatch(format!(
            "block {} is {actual} on this node's chain, not {} (reorg or lying RPC)",
            block.number, block.hash
        )));
    }
    let period = job.period_at(due_block(provider, job, block, timestamp).await?).map_err(mismatch)?;
    let perform = derive(provider, bundle.multicall3, job, block.hash, timestamp, keeper.log_index)
        .await
        .map_err(|e| mismatch(format!("keeper job {} at block {}: {e}", keeper.job, block.number)))?;
    if perform.perform_data != keeper.perform_data {
        return Err(mismatch(format!(
            "keeper job {}: the check at block {} returns performData {}, the request asks {}",
            keeper.job, block.number, perform.perform_data, keeper.perform_data
        )));
    }
    check_operation(provider, bundle.module, keeper, block, &perform, op).await?;
    let key = keeper.ledger_key(block.hash, &perform, period.as_deref());
    let earlier: Vec<LedgerRecord> = {
        let l = ledger.lock().expect("intent ledger lock");
        l.records(&key).iter().filter(|r| r.digest != digest).cloned().collect()
    };
    let mut dead = std::collections::BTreeSet::new();
    for r in earlier {
        if !can_no_longer_execute(provider, bundle.module, &r).await? {
            let what = match &period {
                Some(p) => format!("a perform in its period {p} (one perform per period)"),
                None => format!("perform {key}"),
            };
            return Err(refuse(
                RefusalCode::AlreadySigned,
                format!(
                    "keeper job {}: {what} was already signed in operation {}, which executed or can still execute",
                    keeper.job, r.digest
                ),
            ));
        }
        dead.insert(r.digest);
    }
    Ok(Replayed {
        intents: Vec::new(),
        dead,
        upkeep: Some(UpkeepSigned { key, job: keeper.job.clone(), timestamp }),
    })
}

/// The block the perform is asked at, for the job's due check: its parent's timestamp read
/// (by the block's parent hash) only for a `schedule` trigger.
async fn due_block(
    provider: &DynProvider,
    job: &PinnedJob,
    block: treasury_policies::replay::PinnedBlock,
    timestamp: u64,
) -> Result<DueBlock, Refusal> {
    let parent_timestamp = match job.trigger {
        Trigger::Schedule { .. } => Some(parent_timestamp(provider, block.hash).await.map_err(|e| {
            mismatch(format!("keeper job {}: the parent of block {}: {e}", job.name, block.number))
        })?),
        _ => None,
    };
    Ok(DueBlock { number: block.number, timestamp, parent_timestamp })
}

/// The timestamp of the parent of block `hash`, through this node's RPC.
async fn parent_timestamp(provider: &DynProvider, hash: B256) -> Result<u64, String> {
    let header = |h: B256| async move {
        provider
            .get_block_by_hash(h)
            .await
            .map_err(|e| format!("eth_getBlockByHash {h}: {e}"))?
            .map(|b| b.header)
            .ok_or_else(|| format!("block {h} not found"))
    };
    let block = header(hash).await?;
    Ok(header(block.parent_hash).await?.timestamp)
}

/// The operation must be the one call of `perform`, moving no funds, at the module's nonce of
/// the decision's block.
async fn check_operation(
    provider: &DynProvider,
    module: alloy::primitives::Address,
    keeper: &KeeperDecision,
    block: treasury_policies::replay::PinnedBlock,
    perform: &Perform,
    op: &Operation,
) -> Result<(), Refusal> {
    let call = perform.module_call();
    if call.selector().is_some_and(|s| FUND_MOVING.contains(&s)) {
        return Err(mismatch(format!(
            "keeper job {}: its perform is a token transfer or approval; keeper jobs move no funds",
            keeper.job
        )));
    }
    if op.calls.len() != 1 || op.calls[0] != call {
        return Err(mismatch(format!(
            "keeper job {}: the check at block {} gives the one call {{to {}, data {}}}, the operation differs",
            keeper.job, block.number, call.to, call.data
        )));
    }
    let nonce = ITreasuryModuleViews::new(module, provider)
        .nonce()
        .call()
        .block(BlockId::hash(block.hash))
        .await
        .map_err(|e| mismatch(format!("module nonce at block {} from this node's RPC: {e}", block.number)))?;
    if op.nonce != nonce {
        return Err(mismatch(format!(
            "operation nonce {} is not the module's nonce {nonce} at block {}",
            op.nonce, block.number
        )));
    }
    Ok(())
}
