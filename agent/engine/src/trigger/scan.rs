//! Pure functions from blocks and logs to firings: no I/O, so they are tested without a chain.

use std::collections::BTreeMap;

use alloy::primitives::{Address, B256};
use treasury_policies::{PolicyEntry, Trigger};

use super::firing::{BlockRef, Cause, Firing};

/// The firings of block-driven policies (`every_blocks`, `schedule`) at `block`, whose parent has
/// timestamp `prev_timestamp`.
pub(crate) fn block_firings(policies: &[PolicyEntry], block: BlockRef, prev_timestamp: u64) -> Vec<Firing> {
    let mut every = Vec::new();
    let mut schedules: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for p in policies {
        if !p.trigger.fires_at(block.number, block.timestamp, prev_timestamp) {
            continue;
        }
        match &p.trigger {
            Trigger::EveryBlocks { .. } => every.push(p.name.clone()),
            Trigger::Schedule { .. } => {
                let instant = first_instant_after(&p.trigger, prev_timestamp, block.timestamp);
                schedules.entry(instant).or_default().push(p.name.clone());
            }
            Trigger::OnLog { .. } | Trigger::Manual => {}
        }
    }
    let mut out = Vec::new();
    if !every.is_empty() {
        out.push(Firing { block, policies: every, cause: Cause::EveryBlocks });
    }
    for (instant, policies) in schedules {
        out.push(Firing { block, policies, cause: Cause::Schedule { instant } });
    }
    out
}

/// The cron instant a firing schedule reached: the first instant after `prev`, found by bisection
/// over `(prev, now]` with [`Trigger::fires_at`] (the first instant after `prev` is `<= t` exactly
/// when the trigger fires at `t`), so it agrees with the policies crate by construction.
fn first_instant_after(trigger: &Trigger, prev: u64, now: u64) -> u64 {
    let (mut lo, mut hi) = (prev, now); // fires_at(lo) is false (or lo == prev), fires_at(hi) is true
    while hi.saturating_sub(lo) > 1 {
        let mid = lo + (hi - lo) / 2;
        if trigger.fires_at(0, mid, prev) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi
}

/// A log the watcher fetched, reduced to what matching needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SeenLog {
    /// The block holding it.
    pub block: BlockRef,
    /// Emitting contract.
    pub address: Address,
    /// First topic (the event signature's hash).
    pub topic0: B256,
    /// Emitting transaction.
    pub tx_hash: B256,
    /// Index in the block.
    pub log_index: u64,
}

/// The firing of the `on_log` policies matching `log`, if any match.
pub(crate) fn log_firing(policies: &[PolicyEntry], log: &SeenLog) -> Option<Firing> {
    let names: Vec<String> = policies
        .iter()
        .filter(|p| match &p.trigger {
            Trigger::OnLog { address, .. } => {
                *address == log.address && p.trigger.topic0() == Some(log.topic0)
            }
            _ => false,
        })
        .map(|p| p.name.clone())
        .collect();
    if names.is_empty() {
        return None;
    }
    Some(Firing {
        block: log.block,
        policies: names,
        cause: Cause::Log { tx_hash: log.tx_hash, log_index: log.log_index, address: log.address },
    })
}

/// The addresses and topics an `eth_getLogs` filter needs for the `on_log` policies (empty: none).
pub(crate) fn log_filter_parts(policies: &[PolicyEntry]) -> (Vec<Address>, Vec<B256>) {
    let mut addresses = Vec::new();
    let mut topics = Vec::new();
    for p in policies {
        if let (Trigger::OnLog { address, .. }, Some(topic)) = (&p.trigger, p.trigger.topic0()) {
            if !addresses.contains(address) {
                addresses.push(*address);
            }
            if !topics.contains(&topic) {
                topics.push(topic);
            }
        }
    }
    (addresses, topics)
}

/// Why a manual request cannot fire, or `None` when `name` is a manual policy.
pub(crate) fn manual_refusal(policies: &[PolicyEntry], name: &str) -> Option<String> {
    match policies.iter().find(|p| p.name == name) {
        None => Some(format!("refused: no policy named `{name}` in the config")),
        Some(p) if p.trigger != Trigger::Manual => {
            Some(format!("refused: policy `{name}` is triggered by {}, not manual", p.trigger.kind()))
        }
        Some(_) => None,
    }
}
