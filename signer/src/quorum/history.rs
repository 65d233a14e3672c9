//! The history a replaying node trusts: the payments the decision says its policies counted,
//! each checked against the chain (the module's `Executed` events and the calls they executed,
//! read through the node's own RPC endpoint) or the node's own ledger, and complete: every
//! operation executed in the window is accounted for.
//!
//! What this cannot check alone: which policy, and at which block, a payment this node did not
//! sign was decided. Those rest on the nodes that did sign it, which replayed it; with `2t > n`
//! every signing set holds one of them, whose ledger refuses a misstated entry.
use std::collections::{BTreeMap, BTreeSet};

use alloy::eips::BlockNumberOrTag;
use alloy::primitives::{Address, B256, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::{Filter, Log};
use alloy::sol_types::{SolCall, SolEvent};
use treasury_chain::Call;
use treasury_chain::contracts::{ITreasuryModuleViews, TreasuryModule};
use treasury_chain::operation::{Operation, operation_digest};
use treasury_policies::replay::{Decision, PastIntent, PolicyBundle, transfer_of};

use super::error::{Refusal, RefusalCode};
use super::replay::{IntentLedger, LedgerRecord, refuse};

/// An operation the module executed in the window.
struct Executed {
    block: u64,
    tx: B256,
    tier: u8,
}

/// Checks `decision.history` for the operation `digest` and returns it when every entry is
/// backed by the chain or this node's ledger and no executed or live operation is left out.
pub(crate) async fn trusted_history(
    bundle: &PolicyBundle,
    provider: &DynProvider,
    decision: &Decision,
    digest: B256,
    ledger: &std::sync::Mutex<IntentLedger>,
) -> Result<Vec<PastIntent>, Refusal> {
    // The window's headers, the executed operations and the module nonce in one round of requests.
    let start = decision.history_from.map(|b| b.number).unwrap_or_default();
    let (from, executed, module_nonce) = futures::try_join!(
        check_window(provider, decision),
        executed_since(provider, bundle.module, start),
        async {
            ITreasuryModuleViews::new(bundle.module, provider)
                .nonce()
                .call()
                .await
                .map_err(|e| rpc_refusal("module nonce", e))
        }
    )?;
    let own: Vec<LedgerRecord> = {
        let l = ledger.lock().expect("intent ledger lock");
        l.all().filter(|r| r.timestamp >= from.1 || executed.contains_key(&r.digest)).cloned().collect()
    };
    let mut decoded: BTreeMap<B256, Vec<Call>> = BTreeMap::new();
    for entry in &decision.history {
        let key = &entry.intent.key;
        let Some(d) = entry.digest else {
            return Err(misstated(format!("the history counts intent {key}, which no operation carries")));
        };
        if d == digest {
            if !decision.intents.iter().any(|i| &i.key == key) {
                return Err(misstated(format!(
                    "the history places intent {key} in the operation being signed, which does not carry it"
                )));
            }
        } else if let Some(mine) = own.iter().find(|r| &r.key == key && r.digest == d) {
            if mine.intent.as_ref() != Some(&entry.intent) || mine.timestamp != entry.timestamp {
                return Err(misstated(format!(
                    "the history misstates intent {key}: this node signed it in operation {d} as {}",
                    mine.intent.as_ref().map(|i| i.to_string()).unwrap_or_default()
                )));
            }
            if !executed.contains_key(&d) && mine.module_nonce < module_nonce {
                return Err(misstated(format!(
                    "the history counts intent {key}, whose operation {d} never executed and no longer can"
                )));
            }
        } else if let Some(x) = executed.get(&d) {
            let calls = match decoded.get_mut(&d) {
                Some(c) => c,
                None => {
                    let calls = executed_calls(provider, bundle, d, x).await?;
                    decoded.entry(d).or_insert(calls)
                }
            };
            if let Some(call) = transfer_of(&entry.intent, &bundle.policies) {
                let Some(at) = calls.iter().position(|c| c == &call) else {
                    return Err(misstated(format!(
                        "the history says operation {d} (block {}) paid {}; it executed no such transfer",
                        x.block, entry.intent
                    )));
                };
                calls.remove(at);
            }
        } else {
            return Err(misstated(format!(
                "the history counts intent {key} in operation {d}, which has not executed on this node's chain and which this node did not sign"
            )));
        }
    }
    check_complete(bundle, provider, decision, digest, &executed, &own, module_nonce, &mut decoded).await?;
    Ok(decision.history.clone())
}

/// Every operation executed in the window, and every live one this node signed, appears in
/// the history: all its transfers (one this node did not sign) or all its intents (one it did).
#[allow(clippy::too_many_arguments)]
async fn check_complete(
    bundle: &PolicyBundle,
    provider: &DynProvider,
    decision: &Decision,
    digest: B256,
    executed: &BTreeMap<B256, Executed>,
    own: &[LedgerRecord],
    module_nonce: U256,
    decoded: &mut BTreeMap<B256, Vec<Call>>,
) -> Result<(), Refusal> {
    let listed: BTreeSet<(&str, Option<B256>)> =
        decision.history.iter().map(|e| (e.intent.key.as_str(), e.digest)).collect();
    for r in own {
        let live = executed.contains_key(&r.digest) || r.module_nonce >= module_nonce;
        let carries_funds = r.intent.as_ref().is_some_and(|i| i.action.moves_funds());
        if r.digest != digest && live && carries_funds && !listed.contains(&(r.key.as_str(), Some(r.digest)))
        {
            return Err(misstated(format!(
                "the history leaves out intent {}, which this node signed in operation {}",
                r.key, r.digest
            )));
        }
    }
    for (d, x) in executed {
        if *d == digest || own.iter().any(|r| r.digest == *d) {
            continue;
        }
        let calls = match decoded.get(d) {
            Some(c) => c.clone(),
            None => executed_calls(provider, bundle, *d, x).await?,
        };
        if let Some(call) = calls.iter().find(|c| is_transfer(c)) {
            return Err(misstated(format!(
                "the history leaves out operation {d}, executed at block {}: it sent {} to {}",
                x.block, call.value, call.to
            )));
        }
    }
    Ok(())
}

/// Checks the decision's history window on this node's chain: its block hash, and that it starts
/// no later than the first block of the earliest firing's month or week. Returns its number and
/// timestamp.
async fn check_window(provider: &DynProvider, decision: &Decision) -> Result<(u64, u64), Refusal> {
    let Some(from) = decision.history_from else {
        return Err(misstated("the decision names no history window".into()));
    };
    let (ts, hash) = header(provider, from.number).await?;
    if hash != from.hash {
        return Err(misstated(format!(
            "history window block {} is {hash} on this node's chain, not {} (reorg or lying RPC)",
            from.number, from.hash
        )));
    }
    let earliest = decision.firings.iter().map(|f| f.block.number).min().unwrap_or(from.number);
    if earliest < from.number {
        return Err(misstated(format!(
            "the history window starts at block {}, after the firing at block {earliest}",
            from.number
        )));
    }
    if from.number > 0 {
        let ((firing_ts, _), (before, _)) =
            futures::try_join!(header(provider, earliest), header(provider, from.number - 1))?;
        if treasury_policies::replay::same_window(before, firing_ts) {
            return Err(misstated(format!(
                "the history window starts at block {}, after the month or week of block {earliest} began",
                from.number
            )));
        }
    }
    Ok((from.number, ts))
}

/// The module's `Executed` events from block `from` on, by digest.
async fn executed_since(
    provider: &DynProvider,
    module: Address,
    from: u64,
) -> Result<BTreeMap<B256, Executed>, Refusal> {
    let filter = Filter::new()
        .address(module)
        .event_signature(TreasuryModule::Executed::SIGNATURE_HASH)
        .from_block(from)
        .to_block(BlockNumberOrTag::Latest);
    let logs: Vec<Log> = provider.get_logs(&filter).await.map_err(|e| rpc_refusal("Executed logs", e))?;
    let mut out = BTreeMap::new();
    for log in logs {
        let event = TreasuryModule::Executed::decode_log(&log.inner)
            .map_err(|e| rpc_refusal("an Executed log", e))?;
        let (Some(block), Some(tx)) = (log.block_number, log.transaction_hash) else { continue };
        out.insert(event.digest, Executed { block, tx, tier: event.tier });
    }
    Ok(out)
}

/// The calls of the executed operation `digest`, decoded from the transaction that executed it
/// and checked to hash to that digest.
async fn executed_calls(
    provider: &DynProvider,
    bundle: &PolicyBundle,
    digest: B256,
    x: &Executed,
) -> Result<Vec<Call>, Refusal> {
    let tx = provider
        .get_transaction_by_hash(x.tx)
        .await
        .map_err(|e| rpc_refusal("the executing transaction", e))?
        .ok_or_else(|| rpc_refusal("the executing transaction", "not found"))?;
    let input = alloy::consensus::Transaction::input(&tx);
    let to = alloy::consensus::Transaction::to(&tx);
    let undecodable = || {
        misstated(format!(
            "operation {digest} was executed by transaction {}, which is not a direct call of the module's exec; this node cannot read what it paid",
            x.tx
        ))
    };
    if to != Some(bundle.module) {
        return Err(undecodable());
    }
    let call = TreasuryModule::execCall::abi_decode(input).map_err(|_| undecodable())?;
    let op = Operation {
        calls: call
            .calls
            .iter()
            .map(|c| Call { to: c.to, value: c.value, data: c.data.clone(), operation: c.operation })
            .collect(),
        nonce: call.nonce,
        deadline: call.deadline,
    };
    if operation_digest(&op, x.tier, bundle.chain_id, bundle.module) != digest {
        return Err(undecodable());
    }
    Ok(op.calls)
}

/// A plain ETH transfer or an ERC-20 `transfer`: what a payment compiles to.
fn is_transfer(call: &Call) -> bool {
    let erc20 =
        call.data.len() >= 4 && call.data[..4] == treasury_chain::contracts::IERC20::transferCall::SELECTOR;
    erc20 || (call.data.is_empty() && !call.value.is_zero())
}

async fn header(provider: &DynProvider, number: u64) -> Result<(u64, B256), Refusal> {
    treasury_policies::replay::block_header(provider, number)
        .await
        .map_err(|e| rpc_refusal("a block header", e))
}

fn misstated(reason: String) -> Refusal {
    refuse(RefusalCode::ReplayMismatch, reason)
}

fn rpc_refusal(what: &str, e: impl std::fmt::Display) -> Refusal {
    refuse(RefusalCode::ReplayMismatch, format!("{what} from this node's RPC: {e}"))
}
