//! The state of one Safe at one pinned block, as policies and guards read it.

use alloy::primitives::{Address, B256, I256, U256};
use serde::{Deserialize, Serialize};

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
    /// Maximum net outflow per period, in the smallest unit.
    pub limit: U256,
    /// Period length in seconds.
    pub period_secs: u64,
    /// Net outflow so far in the current period.
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
