//! Replaying a policy over a range of blocks, reading each block's snapshot from a source.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;

use alloy::eips::BlockNumberOrTag;
use alloy::primitives::{Address, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use serde::Serialize;
use treasury_chain::contracts::{AggregatorV3Interface, IERC20};
use treasury_chain::{AssetState, PriceReading, Snapshot};

use crate::budget::{BudgetCharge, BudgetTracker};
use crate::config::{PoliciesConfig, Trigger};
use crate::engine::{CompiledPolicy, PolicyEngine, Run};
use crate::error::{PolicyError, Result};
use crate::intent::{Action, Intent};
use crate::view::{Book, Payment, SnapshotView};

/// Where snapshots at past blocks come from.
pub trait SnapshotSource {
    /// The treasury's state at `block`.
    fn snapshot_at(&self, block: u64) -> impl Future<Output = Result<Snapshot>> + Send;
}

/// What one block of a simulation produced.
#[derive(Debug, Clone, Serialize)]
pub struct SimulatedBlock {
    /// Block number.
    pub block: u64,
    /// Block timestamp.
    pub timestamp: u64,
    /// Whether the policy's trigger fired at this block (always true without trigger filtering).
    pub fired: bool,
    /// Intents with keys not seen earlier in the run (the journal would drop the others).
    pub intents: Vec<Intent>,
    /// Intents dropped because their key was already produced.
    pub duplicates: usize,
    /// What the new intents charge against the module's tier-1 budgets (with a module snapshot
    /// source), and which would have needed the root.
    pub budget: Vec<BudgetCharge>,
    /// The error the script stopped with, if any.
    pub error: Option<String>,
}

/// Options of a simulation.
#[derive(Debug, Clone)]
pub struct Simulation<'a> {
    /// The policy.
    pub policy: &'a CompiledPolicy,
    /// Its trigger; with `only_when_fired`, blocks where it does not fire are skipped.
    pub trigger: &'a Trigger,
    /// Skip blocks at which the trigger would not fire.
    pub only_when_fired: bool,
    /// First block, inclusive.
    pub from: u64,
    /// Last block, inclusive.
    pub to: u64,
}

/// Runs the policy at every block of the range, as if each produced payment had executed.
///
/// Payments produced earlier in the range join the history later blocks see, so a "once per
/// month" policy behaves as it would live. A script error at one block is recorded and the run
/// goes on.
pub async fn simulate<S: SnapshotSource>(
    engine: &PolicyEngine,
    book: &Arc<Book>,
    source: &S,
    sim: Simulation<'_>,
) -> Result<Vec<SimulatedBlock>> {
    let mut history: Vec<Payment> = Vec::new();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut prev_timestamp = None;
    let mut budgets = BudgetTracker::default();
    for block in sim.from..=sim.to {
        let snap = source.snapshot_at(block).await?;
        let fired = match prev_timestamp {
            Some(prev) => sim.trigger.fires_at(block, snap.timestamp, prev),
            None => true,
        };
        prev_timestamp = Some(snap.timestamp);
        let mut row = SimulatedBlock {
            block,
            timestamp: snap.timestamp,
            fired,
            intents: Vec::new(),
            duplicates: 0,
            budget: Vec::new(),
            error: None,
        };
        if sim.only_when_fired && !fired {
            out.push(row);
            continue;
        }
        let view = Arc::new(SnapshotView::new(&snap, Arc::clone(book))?);
        let run = Run { trigger: sim.trigger.kind(), history: &history };
        match engine.evaluate(sim.policy, &view, run) {
            Ok(intents) => {
                for intent in intents {
                    if !seen.insert(intent.key.clone()) {
                        row.duplicates += 1;
                        continue;
                    }
                    if let Action::Pay { to, token, amount, .. } = &intent.action {
                        history.push(Payment {
                            policy: intent.policy.clone(),
                            recipient: *to,
                            token: token.clone(),
                            amount: *amount,
                            timestamp: snap.timestamp,
                        });
                    }
                    row.intents.push(intent);
                }
                row.budget = budgets.charge(&snap, &row.intents);
            }
            Err(e) => row.error = Some(e.to_string()),
        }
        out.push(row);
    }
    Ok(out)
}

/// Reads snapshots over JSON-RPC (any node, or anvil): balances of the config's tokens and their
/// price feeds, at the requested block.
///
/// Module state (nonce, pause, budgets) is not read here: replaying a policy does not need it, and
/// the chain crate's snapshot reader owns it.
#[derive(Debug, Clone)]
pub struct RpcSnapshotSource {
    provider: DynProvider,
    safe: Address,
    cfg: PoliciesConfig,
}

impl RpcSnapshotSource {
    /// Connects to `url` (http, https, ws or wss) to read the Safe at `safe`.
    pub async fn connect(url: &str, safe: Address, cfg: PoliciesConfig) -> Result<Self> {
        let provider = ProviderBuilder::new()
            .connect(url)
            .await
            .map_err(|e| PolicyError::Snapshot { block: 0, message: format!("connect {url}: {e}") })?
            .erased();
        Ok(Self { provider, safe, cfg })
    }

    /// The latest block number.
    pub async fn latest_block(&self) -> Result<u64> {
        self.provider
            .get_block_number()
            .await
            .map_err(|e| PolicyError::Snapshot { block: 0, message: e.to_string() })
    }

    async fn asset(&self, block: u64, symbol: &str, timestamp: u64) -> Result<AssetState> {
        let err = |m: String| PolicyError::Snapshot { block, message: format!("{symbol}: {m}") };
        let entry = &self.cfg.tokens[symbol];
        let balance = if entry.address == Address::ZERO {
            self.provider.get_balance(self.safe).number(block).await.map_err(|e| err(e.to_string()))?
        } else {
            IERC20::new(entry.address, &self.provider)
                .balanceOf(self.safe)
                .block(block.into())
                .call()
                .await
                .map_err(|e| err(e.to_string()))?
        };
        let price = match entry.feed {
            Some(feed) => Some(self.price(block, feed, entry.max_price_age, timestamp).await.map_err(err)?),
            None => None,
        };
        Ok(AssetState {
            symbol: symbol.to_owned(),
            token: entry.address,
            decimals: entry.decimals,
            balance,
            price,
            budget: None,
        })
    }

    async fn price(
        &self,
        block: u64,
        feed: Address,
        max_age: u64,
        timestamp: u64,
    ) -> std::result::Result<PriceReading, String> {
        let agg = AggregatorV3Interface::new(feed, &self.provider);
        let decimals = agg.decimals().block(block.into()).call().await.map_err(|e| e.to_string())?;
        let round = agg.latestRoundData().block(block.into()).call().await.map_err(|e| e.to_string())?;
        let updated_at = u64::try_from(round.updatedAt).unwrap_or(u64::MAX);
        let age_secs = timestamp.saturating_sub(updated_at);
        Ok(PriceReading {
            feed,
            answer: round.answer,
            decimals,
            updated_at,
            age_secs,
            stale: age_secs > max_age || !round.answer.is_positive(),
        })
    }
}

impl SnapshotSource for RpcSnapshotSource {
    async fn snapshot_at(&self, block: u64) -> Result<Snapshot> {
        let header = self
            .provider
            .get_block_by_number(BlockNumberOrTag::Number(block))
            .await
            .map_err(|e| PolicyError::Snapshot { block, message: e.to_string() })?
            .ok_or_else(|| PolicyError::Snapshot { block, message: "no such block".into() })?
            .header;
        let chain_id = self
            .provider
            .get_chain_id()
            .await
            .map_err(|e| PolicyError::Snapshot { block, message: e.to_string() })?;
        let mut assets = Vec::with_capacity(self.cfg.tokens.len());
        for symbol in self.cfg.tokens.keys() {
            assets.push(self.asset(block, symbol, header.timestamp).await?);
        }
        assets.sort_by_key(|a| a.token != Address::ZERO);
        Ok(Snapshot {
            chain_id,
            block_number: block,
            block_hash: header.hash,
            timestamp: header.timestamp,
            safe: self.safe,
            module: Address::ZERO,
            module_nonce: U256::ZERO,
            paused: false,
            assets,
        })
    }
}

/// Snapshots read by `treasury_chain::snapshot::read_snapshot`: balances, prices, and the module's
/// nonce, pause flag and budgets, in one `eth_call` per block.
#[derive(Debug, Clone)]
pub struct ModuleSnapshotSource {
    provider: DynProvider,
    spec: treasury_chain::snapshot::SnapshotSpec,
}

impl ModuleSnapshotSource {
    /// Reads the Safe at `safe` and its module at `module` through Multicall3 at `multicall3`,
    /// for every token of `cfg`.
    pub async fn connect(
        url: &str,
        safe: Address,
        module: Address,
        multicall3: Address,
        cfg: &PoliciesConfig,
    ) -> Result<Self> {
        let provider = ProviderBuilder::new()
            .connect(url)
            .await
            .map_err(|e| PolicyError::Snapshot { block: 0, message: format!("connect {url}: {e}") })?
            .erased();
        let assets = cfg.asset_specs();
        let spec = treasury_chain::snapshot::SnapshotSpec { safe, module, multicall3, assets };
        Ok(Self { provider, spec })
    }
}

impl SnapshotSource for ModuleSnapshotSource {
    async fn snapshot_at(&self, block: u64) -> Result<Snapshot> {
        treasury_chain::snapshot::read_snapshot(&self.provider, &self.spec, BlockNumberOrTag::Number(block))
            .await
            .map_err(|e| PolicyError::Snapshot { block, message: e.to_string() })
    }
}
