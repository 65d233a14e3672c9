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
use treasury_policies::replay::{Decision, PastIntent, PinnedBlock, PolicyBundle, transfer_of};

use super::batch::{Answers, Asked};
use super::chain_cache::{ChainCache, Executed, FinalEvents};
use super::error::{Refusal, RefusalCode};
use super::replay::{IntentLedger, LedgerRecord, refuse};

/// What the node reads from its own endpoint for a decision's history, in one round of
/// requests (sent while the snapshots are read).
pub(crate) struct ChainReads {
    /// The window's first block, checked to be on this node's chain, and its timestamp.
    from: (PinnedBlock, u64),
    /// Timestamp of the block before the window (none when the window starts at genesis).
    before: Option<u64>,
    /// The operations the module executed from the window's start on, by digest.
    executed: BTreeMap<B256, Executed>,
}

/// Reads, in one JSON-RPC batch ([`super::batch`]): the window's first block by number (still on
/// this chain?) and the one before it (by hash, kept once read), the module's `Executed` events
/// from the window's start (only those after the last block kept, see [`ChainCache`], whose
/// hash is read again), the finalized block for the next request (once per new decision
/// block), and the headers of blocks `also` (each number read once). Returns the answers too.
pub(crate) async fn read_chain(
    bundle: &PolicyBundle,
    provider: &DynProvider,
    cache: &ChainCache,
    decision: &Decision,
    also: &[u64],
) -> Result<(ChainReads, Answers), Refusal> {
    let Some(from) = decision.history_from else {
        return Err(misstated("the decision names no history window".into()));
    };
    // On the chain before this round is sent: the events up to it read now are complete (a
    // reorg under it changes its hash, read again at each use).
    let seen = cache.seen_block();
    let kept = cache.final_events(bundle.module, from.number);
    let parent_known = cache.header(&from.hash).and_then(|h| cache.header(&h.parent)).is_some();
    let read_parent = from.number > 0 && !parent_known;
    let mut asked =
        Asked { finalized: cache.finalized_due(decision.plan_block.number), ..Default::default() };
    asked.headers.insert(from.number);
    if read_parent {
        asked.headers.insert(from.number - 1);
    }
    if let Some(k) = &kept {
        asked.headers.insert(k.upto.0);
    }
    asked.headers.extend(also);
    // From the kept block itself, not the one after: it may be the head, and an endpoint refuses
    // a range starting past the head (its events are read again, the same by digest).
    let logs_from = kept.as_ref().map_or(from.number, |k| k.upto.0);
    asked.logs = Some(executed_filter(bundle.module, logs_from));
    let answers = super::batch::send(provider, &asked).await;
    let window = window_headers(cache, from, read_parent, &answers)?;
    let logs = || match &answers.logs {
        Some(Ok(logs)) => decode_logs(logs),
        Some(Err(e)) => Err(rpc_refusal("Executed logs", e)),
        None => Err(rpc_refusal("Executed logs", "not read")),
    };
    let executed = match kept {
        Some(k) if answers.header(k.upto.0).is_ok_and(|(hash, _)| hash == k.upto.1) => {
            let mut events = k.events.clone();
            events.retain(|_, x| x.block >= from.number);
            events.extend(logs()?);
            if let Some(f) = seen.filter(|f| f.0 > k.upto.0) {
                keep_final(cache, bundle.module, k.from.max(from.number), f, &events);
            }
            events
        }
        Some(_) => {
            // The block they were kept up to is gone or changed: everything is read again.
            cache.drop_events();
            executed_logs(provider, bundle.module, from.number).await?
        }
        None => {
            let events = logs()?;
            if let Some(f) = seen.filter(|f| f.0 >= from.number) {
                keep_final(cache, bundle.module, from.number, f, &events);
            }
            events
        }
    };
    if let Some(f) = answers.finalized {
        cache.saw_block(f);
    }
    Ok((ChainReads { from: (from, window.0), before: window.1, executed }, answers))
}

/// Checks `decision.history` for the operation `digest` and returns it when every entry is
/// backed by the chain (`reads`) or this node's ledger and no executed or live operation is left
/// out. `earliest` is the earliest firing's block timestamp, from its snapshot (hash checked).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn trusted_history(
    bundle: &PolicyBundle,
    provider: &DynProvider,
    cache: &ChainCache,
    decision: &Decision,
    digest: B256,
    ledger: &std::sync::Mutex<IntentLedger>,
    reads: ChainReads,
    earliest: Option<u64>,
) -> Result<Vec<PastIntent>, Refusal> {
    let from = check_window(decision, &reads, earliest)?;
    let mut executed = reads.executed;
    let mut own = own_records(ledger, from.1, &executed);
    // The module nonce tells whether an operation of this node's that has not executed can
    // still: read only when there is one. The nonce first, then the events again, so that one
    // executed between the two reads is among the events.
    let mut module_nonce = None;
    if own.iter().any(|r| r.digest != digest && !executed.contains_key(&r.digest)) {
        module_nonce = Some(read_module_nonce(provider, bundle.module).await?);
        executed = executed_logs(provider, bundle.module, from.0).await?;
        own = own_records(ledger, from.1, &executed);
    }
    let own_by_key = own_by_key(&own);
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
        } else if let Some(mine) = own_by_key.get(&(key.as_str(), d)).copied() {
            if mine.intent.as_ref() != Some(&entry.intent) || mine.timestamp != entry.timestamp {
                return Err(misstated(format!(
                    "the history misstates intent {key}: this node signed it in operation {d} as {}",
                    mine.intent.as_ref().map(|i| i.to_string()).unwrap_or_default()
                )));
            }
            if !executed.contains_key(&d) && !may_still_execute(mine, module_nonce) {
                return Err(misstated(format!(
                    "the history counts intent {key}, whose operation {d} never executed and no longer can"
                )));
            }
        } else if let Some(x) = executed.get(&d) {
            let calls = match decoded.get_mut(&d) {
                Some(c) => c,
                None => {
                    let calls = executed_calls(provider, cache, bundle, d, x).await?;
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
    let seen = Seen { executed: &executed, own: &own, module_nonce };
    check_complete(bundle, provider, cache, decision, digest, &seen, &mut decoded).await?;
    Ok(decision.history.clone())
}

/// This node's records by (key, digest), the first of each as a scan in order would find it
/// (the history can list thousands of intents: looking each up by scanning was quadratic).
fn own_by_key(own: &[LedgerRecord]) -> std::collections::HashMap<(&str, B256), &LedgerRecord> {
    let mut by = std::collections::HashMap::with_capacity(own.len());
    for r in own {
        by.entry((r.key.as_str(), r.digest)).or_insert(r);
    }
    by
}

/// Every operation executed in the window, and every live one this node signed, appears in
/// the history: all its transfers (one this node did not sign) or all its intents (one it did).
async fn check_complete(
    bundle: &PolicyBundle,
    provider: &DynProvider,
    cache: &ChainCache,
    decision: &Decision,
    digest: B256,
    seen: &Seen<'_>,
    decoded: &mut BTreeMap<B256, Vec<Call>>,
) -> Result<(), Refusal> {
    let Seen { executed, own, module_nonce } = *seen;
    let listed: BTreeSet<(&str, Option<B256>)> =
        decision.history.iter().map(|e| (e.intent.key.as_str(), e.digest)).collect();
    for r in own {
        let live = executed.contains_key(&r.digest) || may_still_execute(r, module_nonce);
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
            None => executed_calls(provider, cache, bundle, *d, x).await?,
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

/// What the completeness check compares: the executed operations, this node's own records
/// in the window, and the module nonce at the head (read only when a record needs it).
#[derive(Clone, Copy)]
struct Seen<'a> {
    executed: &'a BTreeMap<B256, Executed>,
    own: &'a [LedgerRecord],
    module_nonce: Option<U256>,
}

/// This node's records in the window (decided at or after `since`) or executed.
fn own_records(
    ledger: &std::sync::Mutex<IntentLedger>,
    since: u64,
    executed: &BTreeMap<B256, Executed>,
) -> Vec<LedgerRecord> {
    let l = ledger.lock().expect("intent ledger lock");
    l.all().filter(|r| r.timestamp >= since || executed.contains_key(&r.digest)).cloned().collect()
}

/// Whether the operation of `r` can still execute as far as the module nonce `nonce` tells
/// (not read: it is taken to, the safe side for both checks that ask).
fn may_still_execute(r: &LedgerRecord, nonce: Option<U256>) -> bool {
    nonce.is_none_or(|n| r.module_nonce >= n)
}

/// The module's nonce at the head, from this node's endpoint.
async fn read_module_nonce(provider: &DynProvider, module: Address) -> Result<U256, Refusal> {
    ITreasuryModuleViews::new(module, provider)
        .nonce()
        .call()
        .await
        .map_err(|e| rpc_refusal("module nonce", e))
}

/// Checks the decision's history window (read in `reads`): it starts no later than the earliest
/// firing (at timestamp `earliest`), at the first block of that firing's month or week. Returns
/// the window's first block number and timestamp.
fn check_window(
    decision: &Decision,
    reads: &ChainReads,
    earliest: Option<u64>,
) -> Result<(u64, u64), Refusal> {
    let (from, from_ts) = reads.from;
    let first = decision.firings.iter().map(|f| f.block.number).min().unwrap_or(from.number);
    if first < from.number {
        return Err(misstated(format!(
            "the history window starts at block {}, after the firing at block {first}",
            from.number
        )));
    }
    if let Some(before) = reads.before
        && treasury_policies::replay::same_window(before, earliest.unwrap_or(from_ts))
    {
        return Err(misstated(format!(
            "the history window starts at block {}, after the month or week of block {first} began",
            from.number
        )));
    }
    Ok((from.number, from_ts))
}

/// The window's first block `from` as read by number in `answers` (checked to have the hash the
/// decision names) and the timestamp of its parent, read by number when `read_parent` (checked
/// to be that parent) and kept.
fn window_headers(
    cache: &ChainCache,
    from: PinnedBlock,
    read_parent: bool,
    answers: &Answers,
) -> Result<(u64, Option<u64>), Refusal> {
    let block = answers.header(from.number).map_err(|e| rpc_refusal(&format!("block {}", from.number), e))?;
    if block.0 != from.hash {
        return Err(misstated(format!(
            "history window block {} is {} on this node's chain, not {} (reorg or lying RPC)",
            from.number, block.0, from.hash
        )));
    }
    cache.put_header(block.0, block.1);
    if read_parent {
        let number = from.number - 1;
        let (hash, facts) = answers.header(number).map_err(|e| rpc_refusal(&format!("block {number}"), e))?;
        if hash != block.1.parent {
            return Err(rpc_refusal(
                "the block before the history window",
                format!(
                    "{hash} is not the parent {} of block {} (reorg while reading)",
                    block.1.parent, from.number
                ),
            ));
        }
        cache.put_header(hash, facts);
    }
    if from.number == 0 {
        return Ok((block.1.timestamp, None));
    }
    let before = cache.header(&block.1.parent).map(|h| h.timestamp);
    Ok((block.1.timestamp, before))
}

/// Keeps the events of `events` up to block `upto` (seen on the chain before they were read).
fn keep_final(
    cache: &ChainCache,
    module: Address,
    from: u64,
    upto: (u64, B256),
    events: &BTreeMap<B256, Executed>,
) {
    let events = events.iter().filter(|(_, x)| x.block <= upto.0).map(|(d, x)| (*d, x.clone())).collect();
    cache.keep_events(FinalEvents { module, from, upto, events });
}

/// The module's `Executed` events from block `from` to the head, by digest.
async fn executed_logs(
    provider: &DynProvider,
    module: Address,
    from: u64,
) -> Result<BTreeMap<B256, Executed>, Refusal> {
    let logs: Vec<Log> = provider
        .get_logs(&executed_filter(module, from))
        .await
        .map_err(|e| rpc_refusal("Executed logs", e))?;
    decode_logs(&logs)
}

/// The filter of the module's `Executed` events from block `from` to the head.
fn executed_filter(module: Address, from: u64) -> Filter {
    Filter::new()
        .address(module)
        .event_signature(TreasuryModule::Executed::SIGNATURE_HASH)
        .from_block(from)
        .to_block(BlockNumberOrTag::Latest)
}

/// `Executed` logs by digest.
fn decode_logs(logs: &[Log]) -> Result<BTreeMap<B256, Executed>, Refusal> {
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
/// and checked to hash to that digest (kept by digest: whatever hashes to it is the same).
async fn executed_calls(
    provider: &DynProvider,
    cache: &ChainCache,
    bundle: &PolicyBundle,
    digest: B256,
    x: &Executed,
) -> Result<Vec<Call>, Refusal> {
    if let Some(calls) = cache.calls(&digest) {
        return Ok(calls);
    }
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
    cache.put_calls(digest, op.calls.clone());
    Ok(op.calls)
}

/// A plain ETH transfer or an ERC-20 `transfer`: what a payment compiles to.
fn is_transfer(call: &Call) -> bool {
    let erc20 =
        call.data.len() >= 4 && call.data[..4] == treasury_chain::contracts::IERC20::transferCall::SELECTOR;
    erc20 || (call.data.is_empty() && !call.value.is_zero())
}

fn misstated(reason: String) -> Refusal {
    refuse(RefusalCode::ReplayMismatch, reason)
}

fn rpc_refusal(what: &str, e: impl std::fmt::Display) -> Refusal {
    refuse(RefusalCode::ReplayMismatch, format!("{what} from this node's RPC: {e}"))
}
