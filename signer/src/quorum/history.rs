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

use super::chain_cache::{ChainCache, Executed, FinalEvents, HeaderFacts};
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
    /// The module's nonce at the head.
    module_nonce: U256,
}

/// Reads, all at once: the window's first block by number (still on this chain?) and the one
/// before it (by hash, kept once read), the module's `Executed` events from the window's start
/// (only those after the last finalized block kept, see [`ChainCache`]), the module nonce, and
/// the finalized block for the next request (once per new decision block).
pub(crate) async fn read_chain(
    bundle: &PolicyBundle,
    provider: &DynProvider,
    cache: &ChainCache,
    decision: &Decision,
) -> Result<ChainReads, Refusal> {
    let Some(from) = decision.history_from else {
        return Err(misstated("the decision names no history window".into()));
    };
    let (window, executed, module_nonce, finalized) = futures::try_join!(
        window_headers(provider, cache, from),
        executed_since(provider, cache, bundle.module, from.number),
        async {
            ITreasuryModuleViews::new(bundle.module, provider)
                .nonce()
                .call()
                .await
                .map_err(|e| rpc_refusal("module nonce", e))
        },
        async {
            let due = cache.finalized_due(decision.plan_block.number);
            Ok(if due { finalized_block(provider).await } else { None })
        },
    )?;
    if let Some(f) = finalized {
        cache.saw_finalized(f);
    }
    Ok(ChainReads { from: (from, window.0), before: window.1, executed, module_nonce })
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
    let (executed, module_nonce) = (reads.executed, reads.module_nonce);
    let own: Vec<LedgerRecord> = {
        let l = ledger.lock().expect("intent ledger lock");
        l.all().filter(|r| r.timestamp >= from.1 || executed.contains_key(&r.digest)).cloned().collect()
    };
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
            if !executed.contains_key(&d) && mine.module_nonce < module_nonce {
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
/// in the window, and the module nonce at the head.
#[derive(Clone, Copy)]
struct Seen<'a> {
    executed: &'a BTreeMap<B256, Executed>,
    own: &'a [LedgerRecord],
    module_nonce: U256,
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

/// The window's first block `from` read by number (checked to have the hash the decision
/// names) and the timestamp of its parent, read by hash once and kept.
async fn window_headers(
    provider: &DynProvider,
    cache: &ChainCache,
    from: PinnedBlock,
) -> Result<(u64, Option<u64>), Refusal> {
    let parent_known = cache.header(&from.hash).and_then(|h| cache.header(&h.parent)).is_some();
    let read_parent = from.number > 0 && !parent_known;
    let (block, parent) = futures::try_join!(header(provider, from.number), async {
        if read_parent { header(provider, from.number - 1).await.map(Some) } else { Ok(None) }
    })?;
    if block.0 != from.hash {
        return Err(misstated(format!(
            "history window block {} is {} on this node's chain, not {} (reorg or lying RPC)",
            from.number, block.0, from.hash
        )));
    }
    cache.put_header(block.0, block.1);
    if let Some((hash, facts)) = parent {
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

/// The module's `Executed` events from block `start` on, by digest: those up to the kept
/// finalized block from the cache once that block's hash is read again unchanged, the rest read
/// now. When the block is gone or changed, everything is read again.
async fn executed_since(
    provider: &DynProvider,
    cache: &ChainCache,
    module: Address,
    start: u64,
) -> Result<BTreeMap<B256, Executed>, Refusal> {
    // Finalized before this read begins: the events up to it read now cannot change.
    let finalized = cache.finalized();
    if let Some(kept) = cache.final_events(module, start) {
        let (anchor, tail) =
            futures::join!(header(provider, kept.upto.0), executed_logs(provider, module, kept.upto.0 + 1));
        if anchor.is_ok_and(|(hash, _)| hash == kept.upto.1) {
            let tail = tail?;
            let mut events = kept.events.clone();
            events.retain(|_, x| x.block >= start);
            events.extend(tail.iter().map(|(d, x)| (*d, x.clone())));
            if let Some(f) = finalized.filter(|f| f.0 > kept.upto.0) {
                keep_final(cache, module, kept.from.max(start), f, &events);
            }
            return Ok(events);
        }
        cache.drop_events();
    }
    let events = executed_logs(provider, module, start).await?;
    if let Some(f) = cache.finalized().filter(|f| f.0 >= start) {
        keep_final(cache, module, start, f, &events);
    }
    Ok(events)
}

/// Keeps the events of `events` up to the finalized block `upto`.
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

/// The finalized block's number and hash, when the endpoint names one.
async fn finalized_block(provider: &DynProvider) -> Option<(u64, B256)> {
    let block = provider.get_block_by_number(BlockNumberOrTag::Finalized).await.ok()??;
    Some((block.header.number, block.header.hash))
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

/// Block `number`'s hash and the facts the node checks, as this node's endpoint reports them.
async fn header(provider: &DynProvider, number: u64) -> Result<(B256, HeaderFacts), Refusal> {
    let block = provider
        .get_block_by_number(BlockNumberOrTag::Number(number))
        .await
        .map_err(|e| rpc_refusal(&format!("block {number}"), e))?
        .ok_or_else(|| rpc_refusal(&format!("block {number}"), "no such block"))?;
    let h = block.header;
    Ok((h.hash, HeaderFacts { number: h.number, timestamp: h.timestamp, parent: h.parent_hash }))
}

fn misstated(reason: String) -> Refusal {
    refuse(RefusalCode::ReplayMismatch, reason)
}

fn rpc_refusal(what: &str, e: impl std::fmt::Display) -> Refusal {
    refuse(RefusalCode::ReplayMismatch, format!("{what} from this node's RPC: {e}"))
}
