//! The state of one Safe at one pinned block, as policies and guards read it.

use alloy::eips::{BlockId, BlockNumberOrTag};
use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, B256, Bytes, I256, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::TransactionRequest;
use alloy::sol_types::SolCall;
use serde::{Deserialize, Serialize};

use crate::contracts::{AggregatorV3Interface, IERC20, IMulticall3, ITreasuryModuleViews};
use crate::error::{ChainError, Result};

/// Everything a policy may read about a treasury, all taken at one block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Chain the snapshot was read from.
    pub chain_id: u64,
    /// Block the snapshot is pinned to.
    pub block_number: u64,
    /// Hash of that block, so a reorg is noticed.
    pub block_hash: B256,
    /// Timestamp of that block (seconds since the Unix epoch, UTC).
    pub timestamp: u64,
    /// The Safe holding the funds.
    pub safe: Address,
    /// The treasury module enabled on the Safe.
    pub module: Address,
    /// The module's next execution nonce.
    pub module_nonce: U256,
    /// Whether the module is paused.
    pub paused: bool,
    /// One entry per configured asset, native ETH first.
    pub assets: Vec<AssetState>,
}

/// One asset held by the Safe: its balance, price and budget at the snapshot's block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetState {
    /// Symbol from the config (e.g. `ETH`, `USDC`).
    pub symbol: String,
    /// Token contract, or `Address::ZERO` for native ETH.
    pub token: Address,
    /// Decimals of the token's smallest unit.
    pub decimals: u8,
    /// The Safe's balance in the smallest unit.
    pub balance: U256,
    /// Latest price from the asset's feed, if it has one.
    pub price: Option<PriceReading>,
    /// The module's budget for this asset, if it tracks it.
    pub budget: Option<BudgetState>,
}

/// A Chainlink-style price reading.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceReading {
    /// The `AggregatorV3Interface` feed read.
    pub feed: Address,
    /// The raw answer, scaled by `10^decimals`.
    pub answer: I256,
    /// Decimals of `answer`.
    pub decimals: u8,
    /// When the feed last updated (seconds since the Unix epoch).
    pub updated_at: u64,
    /// Seconds between `updated_at` and the snapshot's block timestamp.
    pub age_secs: u64,
    /// Whether the age exceeds the configured staleness bound (or the answer is not positive).
    pub stale: bool,
}

/// A tracked asset's per-period outflow budget in the module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetState {
    /// Maximum gross outflow per budget window (one period long), in the smallest unit.
    pub limit: U256,
    /// Period length in seconds.
    pub period_secs: u64,
    /// Outflow charged so far in the current window.
    pub spent: U256,
    /// What tier 1 may still move this period.
    pub remaining: U256,
}

impl Snapshot {
    /// The asset with this symbol, if configured.
    pub fn asset(&self, symbol: &str) -> Option<&AssetState> {
        self.assets.iter().find(|a| a.symbol == symbol)
    }
}
/// What to read: the Safe, its module, Multicall3 and the configured assets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotSpec {
    /// The Safe.
    pub safe: Address,
    /// The treasury module.
    pub module: Address,
    /// Multicall3 on this chain.
    pub multicall3: Address,
    /// Assets to read, native ETH (token `Address::ZERO`) included if wanted.
    pub assets: Vec<AssetSpec>,
}

/// One configured asset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetSpec {
    /// Symbol.
    pub symbol: String,
    /// Token contract, `Address::ZERO` for ETH.
    pub token: Address,
    /// Decimals.
    pub decimals: u8,
    /// USD price feed, if any.
    pub feed: Option<Address>,
    /// A price older than this many seconds is stale.
    pub max_price_age_secs: u64,
}

/// One call in the batch and how to name it in an error.
struct Probe {
    call: &'static str,
    target: Address,
    data: Vec<u8>,
}

impl Probe {
    fn new(call: &'static str, target: Address, data: Vec<u8>) -> Self {
        Self { call, target, data }
    }
}

/// The most calls one `aggregate3` carries when [`read_snapshots`] reads many treasuries: about
/// 10k gas each, well inside the 30M gas nodes allow an `eth_call` by default.
pub const MAX_CALLS_PER_AGGREGATE: usize = 1_500;

/// Reads the snapshot at `block` (e.g. `BlockNumberOrTag::Latest`) with one `eth_getBlockByNumber`
/// and one `eth_call` to Multicall3, pinned to that block's hash.
pub async fn read_snapshot(
    provider: &DynProvider,
    spec: &SnapshotSpec,
    block: BlockNumberOrTag,
) -> Result<Snapshot> {
    let mut all = read_snapshots(provider, std::slice::from_ref(spec), block).await?;
    all.pop().ok_or_else(|| ChainError::InvalidAnswer {
        call: "snapshot".into(),
        reason: "no snapshot read".into(),
    })
}

/// Reads the snapshots of many treasuries of one chain at one `block`: one `eth_getBlockByNumber`
/// and as few `aggregate3` calls as fit ([`MAX_CALLS_PER_AGGREGATE`] calls each, a treasury's
/// calls never split, sent concurrently), all pinned to that block's hash. Each snapshot is the
/// one [`read_snapshot`] would read.
pub async fn read_snapshots(
    provider: &DynProvider,
    specs: &[SnapshotSpec],
    block: BlockNumberOrTag,
) -> Result<Vec<Snapshot>> {
    // The header and the chain id at the same time: neither depends on the other.
    let (header, chain_id) =
        futures::try_join!(header_at(provider, block), crate::provider::chain_id(provider))?;
    let probes: Vec<Vec<Probe>> = specs.iter().map(probes).collect();
    let pinned = BlockId::hash(header.hash);
    let reads = chunks(specs, &probes).into_iter().map(|range| {
        let multicall3 = specs[range.start].multicall3;
        let batch: Vec<&Probe> = probes[range.clone()].iter().flatten().collect();
        async move { aggregate(provider, multicall3, &batch, pinned).await }
    });
    // Sent together: each aggregate is one HTTP request, so they overlap on the wire.
    let results = futures::future::try_join_all(reads).await?;
    let mut results = results.into_iter().flatten();
    let mut snapshots = Vec::with_capacity(specs.len());
    for (spec, probes) in specs.iter().zip(&probes) {
        let mine: Vec<_> = results.by_ref().take(probes.len()).collect();
        snapshots.push(decode_snapshot(spec, probes, mine, chain_id, &header)?);
    }
    Ok(snapshots)
}

/// The header of `block`; a block the endpoint does not have is an invalid answer naming it.
async fn header_at(provider: &DynProvider, block: BlockNumberOrTag) -> Result<alloy::rpc::types::Header> {
    provider
        .get_block_by_number(block)
        .await
        .map_err(|e| ChainError::rpc("eth_getBlockByNumber", None, e))?
        .ok_or_else(|| ChainError::InvalidAnswer {
            call: "eth_getBlockByNumber".into(),
            reason: format!("no block {block}"),
        })
        .map(|b| b.header)
}

/// [`read_snapshot`] at block `number`, which the caller expects to have hash `hash` on chain
/// `chain_id`: the header by number and the `aggregate3` pinned to `hash` are sent together (one
/// round of requests instead of two). `Ok(Err(actual))` when block `number` has hash `actual`
/// on this endpoint.
pub async fn read_snapshot_expecting(
    provider: &DynProvider,
    spec: &SnapshotSpec,
    number: u64,
    hash: B256,
    chain_id: u64,
) -> Result<std::result::Result<Snapshot, B256>> {
    let header = header_at(provider, BlockNumberOrTag::Number(number));
    let probes = probes(spec);
    let batch: Vec<&Probe> = probes.iter().collect();
    let (header, results) =
        futures::join!(header, aggregate(provider, spec.multicall3, &batch, BlockId::hash(hash)));
    let header = header?;
    if header.hash != hash {
        return Ok(Err(header.hash));
    }
    decode_snapshot(spec, &probes, results?, chain_id, &header).map(Ok)
}

/// Consecutive ranges of `specs` sharing a Multicall3, each of at most
/// [`MAX_CALLS_PER_AGGREGATE`] calls (or one treasury, if it alone has more).
fn chunks(specs: &[SnapshotSpec], probes: &[Vec<Probe>]) -> Vec<std::ops::Range<usize>> {
    let mut ranges = Vec::new();
    let (mut start, mut calls) = (0, 0);
    for (i, p) in probes.iter().enumerate() {
        let other_multicall = i > start && specs[i].multicall3 != specs[start].multicall3;
        if i > start && (other_multicall || calls + p.len() > MAX_CALLS_PER_AGGREGATE) {
            ranges.push(start..i);
            (start, calls) = (i, 0);
        }
        calls += p.len();
    }
    if start < probes.len() {
        ranges.push(start..probes.len());
    }
    ranges
}

/// One treasury's snapshot from the results of its probes.
fn decode_snapshot(
    spec: &SnapshotSpec,
    probes: &[Probe],
    results: Vec<std::result::Result<Bytes, ()>>,
    chain_id: u64,
    header: &alloy::rpc::types::Header,
) -> Result<Snapshot> {
    let mut results = probes.iter().zip(results);
    let mut next = || results.next().expect("one result per probe");

    let module_nonce = decode::<ITreasuryModuleViews::nonceCall>(next())?;
    let paused = decode::<ITreasuryModuleViews::pausedCall>(next())?;
    let mut assets = Vec::with_capacity(spec.assets.len());
    for asset in &spec.assets {
        let balance = if asset.token.is_zero() {
            decode::<IMulticall3::getEthBalanceCall>(next())?
        } else {
            decode::<IERC20::balanceOfCall>(next())?
        };
        let price = match asset.feed {
            Some(feed) => {
                let round = decode::<AggregatorV3Interface::latestRoundDataCall>(next())?;
                let decimals = decode::<AggregatorV3Interface::decimalsCall>(next())?;
                Some(price_reading(
                    feed,
                    round.answer,
                    decimals,
                    round.updatedAt,
                    header.timestamp,
                    asset.max_price_age_secs,
                ))
            }
            None => None,
        };
        let budget = decode::<ITreasuryModuleViews::budgetCall>(next())?;
        let budget = (budget.period != 0).then_some(BudgetState {
            limit: budget.limit,
            period_secs: budget.period,
            spent: budget.spent,
            remaining: budget.remaining,
        });
        assets.push(AssetState {
            symbol: asset.symbol.clone(),
            token: asset.token,
            decimals: asset.decimals,
            balance,
            price,
            budget,
        });
    }
    Ok(Snapshot {
        chain_id,
        block_number: header.number,
        block_hash: header.hash,
        timestamp: header.timestamp,
        safe: spec.safe,
        module: spec.module,
        module_nonce,
        paused,
        assets,
    })
}

fn probes(spec: &SnapshotSpec) -> Vec<Probe> {
    let mut probes = vec![
        Probe::new("TreasuryModule.nonce", spec.module, ITreasuryModuleViews::nonceCall {}.abi_encode()),
        Probe::new("TreasuryModule.paused", spec.module, ITreasuryModuleViews::pausedCall {}.abi_encode()),
    ];
    for asset in &spec.assets {
        probes.push(if asset.token.is_zero() {
            Probe::new(
                "Multicall3.getEthBalance",
                spec.multicall3,
                IMulticall3::getEthBalanceCall { addr: spec.safe }.abi_encode(),
            )
        } else {
            Probe::new(
                "ERC20.balanceOf",
                asset.token,
                IERC20::balanceOfCall { owner: spec.safe }.abi_encode(),
            )
        });
        if let Some(feed) = asset.feed {
            probes.push(Probe::new(
                "AggregatorV3.latestRoundData",
                feed,
                AggregatorV3Interface::latestRoundDataCall {}.abi_encode(),
            ));
            probes.push(Probe::new(
                "AggregatorV3.decimals",
                feed,
                AggregatorV3Interface::decimalsCall {}.abi_encode(),
            ));
        }
        probes.push(Probe::new(
            "TreasuryModule.budget",
            spec.module,
            ITreasuryModuleViews::budgetCall { token: asset.token }.abi_encode(),
        ));
    }
    probes
}

/// Runs all probes in one `aggregate3` call; each result is `Ok(returndata)` or the failed probe.
async fn aggregate(
    provider: &DynProvider,
    multicall3: Address,
    probes: &[&Probe],
    block: BlockId,
) -> Result<Vec<std::result::Result<Bytes, ()>>> {
    let calls = probes
        .iter()
        .map(|p| IMulticall3::Call3 { target: p.target, allowFailure: true, callData: p.data.clone().into() })
        .collect();
    let input = IMulticall3::aggregate3Call { calls }.abi_encode();
    let tx = TransactionRequest::default().with_to(multicall3).with_input(input);
    let raw = provider
        .call(tx)
        .block(block)
        .await
        .map_err(|e| ChainError::rpc("Multicall3.aggregate3", Some(multicall3), e))?;
    let results =
        IMulticall3::aggregate3Call::abi_decode_returns(&raw).map_err(|e| ChainError::InvalidAnswer {
            call: format!("Multicall3.aggregate3 at {multicall3}"),
            reason: format!("undecodable answer: {e}"),
        })?;
    if results.len() != probes.len() {
        return Err(ChainError::InvalidAnswer {
            call: format!("Multicall3.aggregate3 at {multicall3}"),
            reason: format!("{} results for {} calls", results.len(), probes.len()),
        });
    }
    Ok(results.into_iter().map(|r| if r.success { Ok(r.returnData) } else { Err(()) }).collect())
}

fn decode<C: SolCall>((probe, result): (&Probe, std::result::Result<Bytes, ()>)) -> Result<C::Return> {
    let data = result.map_err(|()| ChainError::InvalidAnswer {
        call: format!("{} at {}", probe.call, probe.target),
        reason: "the call reverted (wrong address or not that contract?)".into(),
    })?;
    C::abi_decode_returns(&data).map_err(|e| ChainError::InvalidAnswer {
        call: format!("{} at {}", probe.call, probe.target),
        reason: format!("undecodable answer: {e}"),
    })
}

fn price_reading(
    feed: Address,
    answer: I256,
    decimals: u8,
    updated_at: U256,
    now: u64,
    max_age: u64,
) -> PriceReading {
    let updated_at = u64::try_from(updated_at).unwrap_or(u64::MAX);
    let age_secs = now.saturating_sub(updated_at);
    let stale = age_secs > max_age || updated_at > now || answer <= I256::ZERO;
    PriceReading { feed, answer, decimals, updated_at, age_secs, stale }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(tokens: usize, multicall3: u8) -> SnapshotSpec {
        let asset = |i: usize| AssetSpec {
            symbol: format!("T{i}"),
            token: Address::with_last_byte((i % 100) as u8 + 1),
            decimals: 18,
            feed: Some(Address::with_last_byte((i % 100) as u8 + 101)),
            max_price_age_secs: 60,
        };
        SnapshotSpec {
            safe: Address::with_last_byte(200),
            module: Address::with_last_byte(201),
            multicall3: Address::with_last_byte(multicall3),
            assets: (0..tokens).map(asset).collect(),
        }
    }

    #[test]
    fn many_treasuries_fill_each_aggregate_without_splitting_one() {
        // 1,000 Safes × 10 tokens: 42 calls each, 35 treasuries (1,470 calls) per aggregate.
        let specs: Vec<_> = (0..1000).map(|_| spec(10, 1)).collect();
        let calls: Vec<_> = specs.iter().map(probes).collect();
        assert_eq!(calls[0].len(), 42);
        let ranges = chunks(&specs, &calls);
        assert_eq!(ranges.len(), 1000usize.div_ceil(MAX_CALLS_PER_AGGREGATE / 42));
        assert!(ranges.windows(2).all(|w| w[0].end == w[1].start) && ranges[0].start == 0);
        assert_eq!(ranges.last().unwrap().end, 1000);
        for r in &ranges {
            let n: usize = calls[r.clone()].iter().map(Vec::len).sum();
            assert!(n <= MAX_CALLS_PER_AGGREGATE, "{r:?}: {n}");
        }
        // Another Multicall3 starts another call; one treasury over the cap still goes alone.
        let mixed = vec![spec(1, 1), spec(1, 2), spec(400, 2), spec(1, 2)];
        let calls: Vec<_> = mixed.iter().map(probes).collect();
        assert_eq!(chunks(&mixed, &calls), vec![0..1, 1..2, 2..3, 3..4]);
    }
}
