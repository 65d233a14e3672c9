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

/// Reads the snapshot at `block` (e.g. `BlockNumberOrTag::Latest`) with one `eth_getBlockByNumber`
/// and one `eth_call` to Multicall3, pinned to that block's hash.
pub async fn read_snapshot(
    provider: &DynProvider,
    spec: &SnapshotSpec,
    block: BlockNumberOrTag,
) -> Result<Snapshot> {
    let header = provider
        .get_block_by_number(block)
        .await
        .map_err(|e| ChainError::rpc("eth_getBlockByNumber", None, e))?
        .ok_or_else(|| ChainError::InvalidAnswer {
            call: "eth_getBlockByNumber".into(),
            reason: format!("no block {block}"),
        })?
        .header;
    let chain_id = crate::provider::chain_id(provider).await?;
    let probes = probes(spec);
    let results = aggregate(provider, spec.multicall3, &probes, BlockId::hash(header.hash)).await?;
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
    probes: &[Probe],
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
