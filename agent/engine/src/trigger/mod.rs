//! Triggers: the gap-free watcher that turns blocks, logs and manual requests into [`Firing`]s.
//!
//! # How the pipeline drives it (`pipeline::runner`)
//! ```text
//! let opts = WatchOptions::from_config(&config);
//! let mut watcher = Watcher::new(provider, journal, safe, policies, opts).await?;
//! loop {
//!     for firing in watcher.poll().await? {          // block order; manual requests last
//!         pipeline.handle(&firing).await?;           // Cause::Gap: raise an alert, run nothing
//!         watcher.ack(&firing).await?;               // or ack_with_outcome for a manual request
//!     }
//!     watcher.ack_idle().await?;                     // move over blocks that fired nothing
//!     watcher.wait_for_new_block().await;            // new head (WS) or poll_interval
//! }
//! ```
//!
//! # Guarantees
//! - **At least once, never skipped silently.** One journal cursor (source [`CURSOR_SOURCE`], the
//!   Safe's lowercase address) holds the last block whose firings were all acknowledged, with its
//!   hash. [`Watcher::poll`] examines every block after it up to the head; only [`Watcher::ack`] and
//!   [`Watcher::ack_idle`] move it, and never past a block with an unacknowledged firing. A crash
//!   between `poll` and `ack` delivers the same firing again, with the same [`Firing::label`]: the
//!   pipeline deduplicates by idempotency key. A second `poll` without acks also re-delivers.
//! - **First start** (no cursor): the cursor is set to the current head; history is not replayed.
//! - **Bounded catch-up**: more than `max_catch_up_blocks` behind, the blocks in between are
//!   skipped, logged with `tracing::warn!`, and reported as a [`Cause::Gap`] firing (no policies)
//!   ahead of the others, for the pipeline to turn into an alert; acking it moves the cursor over them.
//! - **Blocks**: `every_blocks` and `schedule` policies are evaluated on every block with
//!   [`treasury_policies::Trigger::fires_at`] and the previous block's timestamp, so a schedule fires
//!   once per cron instant, on the first block at or after it. Headers are read in JSON-RPC batches
//!   and checked to form one chain (each parent hash the previous hash).
//! - **Logs**: `on_log` policies are served by `eth_getLogs` over `log_range_blocks`-block ranges
//!   filtered by address and topic0; a log whose block hash differs from the header read for its
//!   number ends the examined range before that block (the next poll sees the reorg).
//! - **Reorgs**: at each poll the chain's block at the cursor's height must still have the cursor's
//!   hash. If not, the watcher walks back through the hashes it examined (at most
//!   [`MAX_REORG_DEPTH`]) to the last block still on the chain, stores that as the cursor and
//!   re-examines from there. When it does not know those hashes (right after a restart) it rewinds
//!   [`MAX_REORG_DEPTH`] blocks; firings in between are delivered again with their old labels.
//! - **Manual requests** (the journal's `manual_triggers`): each open request is a [`Cause::Manual`]
//!   firing at the head, after the block firings. Acking it marks it handled (with an outcome). A
//!   request for an unknown policy, or one not triggered `manual`, is marked handled at poll time with
//!   an outcome naming the problem (`refused: …`) and never fires.
//! - **Transport**: all reads go through the provider given (HTTP by default). With `ws_url` a
//!   `newHeads` subscription only wakes [`Watcher::wait_for_new_block`] early; if it cannot connect
//!   or drops, that is logged and the watcher polls every `poll_interval`, retrying the WebSocket
//!   every `ws_reconnect` ([`RECONNECT_DELAY`] from config). alloy's WS transport showed 40–45 ms
//!   stalls here, so no read depends on it.
//! - **One Safe per watcher.** The cursor is per Safe; manual requests carry no Safe, so each
//!   watcher whose policies include the named manual policy fires it.
//!
//! # Layout
//! - [`firing`](Firing): what a firing is and its label.
//! - `scan`: blocks and logs to firings, pure.
//! - `rpc`: headers in batches, logs in ranges.
//! - `heads`: the WebSocket wake-up with its HTTP-polling fallback.

mod firing;
mod heads;
mod rpc;
mod scan;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use alloy::primitives::{Address, B256};
use alloy::providers::DynProvider;
use treasury_policies::PolicyEntry;

use crate::config::Config;
use crate::journal::{Cursor, Journal, JournalError};

pub use firing::{BlockRef, Cause, Firing};
pub use heads::{RECONNECT_DELAY, Transport};

/// The journal cursor source the watcher keeps its position under.
pub const CURSOR_SOURCE: &str = "triggers";

/// The deepest reorg the watcher walks back through before rewinding blindly.
pub const MAX_REORG_DEPTH: u64 = 64;

/// Examined block hashes kept in memory for finding where a reorg forked.
const RECENT_HASHES: usize = 256;

/// The outcome stored for a manual request acknowledged with [`Watcher::ack`].
pub const DEFAULT_MANUAL_OUTCOME: &str = "fired";

/// How the watcher reaches the chain and how far it catches up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchOptions {
    /// WebSocket endpoint for `newHeads` wake-ups; HTTP polling only when `None`.
    pub ws_url: Option<String>,
    /// Longest wait between two polls (also how soon a manual request is seen).
    pub poll_interval: Duration,
    /// The most blocks examined after an outage; older ones are reported as a [`Cause::Gap`].
    pub max_catch_up_blocks: u64,
    /// Blocks per `eth_getLogs` request.
    pub log_range_blocks: u64,
    /// Pause between attempts to (re)connect a failed or dropped WebSocket.
    pub ws_reconnect: Duration,
}

impl WatchOptions {
    /// The options of `[chain]` and `[pipeline]` in an agent config.
    pub fn from_config(config: &Config) -> Self {
        let p = &config.pipeline;
        Self {
            ws_url: config.chain.rpc_ws.as_ref().map(ToString::to_string),
            poll_interval: p.poll_interval,
            max_catch_up_blocks: p.max_catch_up_blocks,
            log_range_blocks: p.log_range_blocks,
            ws_reconnect: RECONNECT_DELAY,
        }
    }
}

/// What can go wrong watching the chain.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TriggerError {
    /// A JSON-RPC call failed.
    #[error("RPC {call} failed")]
    Rpc {
        /// The call.
        call: String,
        /// The transport's error.
        #[source]
        source: alloy::transports::TransportError,
    },
    /// The node does not have a block it reported (it is syncing or the chain just got shorter).
    #[error("the node has no block {0}")]
    MissingBlock(u64),
    /// The journal failed.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The stored cursor cannot be read back.
    #[error("the journal's {CURSOR_SOURCE} cursor is unreadable: {0}")]
    BadCursor(String),
}

impl TriggerError {
    /// Whether polling again later may succeed (endpoint or database briefly unavailable).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Rpc { .. } | Self::MissingBlock(_) => true,
            Self::Journal(e) => e.is_retryable(),
            Self::BadCursor(_) => false,
        }
    }
}

/// Result alias for triggers.
pub type Result<T, E = TriggerError> = std::result::Result<T, E>;

/// Watches one Safe's policies' triggers; see the module docs for its guarantees.
#[derive(Debug)]
pub struct Watcher {
    provider: DynProvider,
    journal: Journal,
    safe_key: String,
    policies: Vec<PolicyEntry>,
    opts: WatchOptions,
    heads: heads::Heads,
    /// The durable position: the last block whose firings were all acknowledged.
    cursor: (u64, B256),
    /// Hashes of blocks examined recently, for finding a reorg's fork point.
    recent: BTreeMap<u64, B256>,
    /// Blocks examined by the last poll (the cursor may move to any of them).
    examined: BTreeMap<u64, BlockRef>,
    /// Chain firings of the last poll not acknowledged yet.
    pending: Vec<Firing>,
    /// The last block the last poll examined, if it examined any.
    polled_to: Option<BlockRef>,
}

impl Watcher {
    /// A watcher for `safe`'s `policies`, reading through `provider` and keeping its cursor in
    /// `journal`. With no cursor stored yet it stores the current head (history is not replayed).
    pub async fn new(
        provider: DynProvider,
        journal: Journal,
        safe: Address,
        policies: Vec<PolicyEntry>,
        opts: WatchOptions,
    ) -> Result<Self> {
        let safe_key = format!("{safe:#x}");
        let cursor = match journal.cursor(CURSOR_SOURCE, &safe_key).await? {
            Some(c) => {
                let hash =
                    B256::from_str(&c.block_hash).map_err(|e| TriggerError::BadCursor(e.to_string()))?;
                (c.block_number, hash)
            }
            None => {
                let head = rpc::head_number(&provider).await?;
                let h = rpc::header(&provider, head).await?.ok_or(TriggerError::MissingBlock(head))?;
                store(&journal, &safe_key, h.block.number, h.block.hash).await?;
                tracing::info!(block = head, "trigger watcher starts at the head (no cursor yet)");
                (h.block.number, h.block.hash)
            }
        };
        let heads = match &opts.ws_url {
            Some(url) => heads::Heads::websocket(url.clone(), opts.ws_reconnect).await,
            None => heads::Heads::polling(),
        };
        Ok(Self {
            provider,
            journal,
            safe_key,
            policies,
            opts,
            heads,
            cursor,
            recent: BTreeMap::from([cursor]),
            examined: BTreeMap::new(),
            pending: Vec::new(),
            polled_to: None,
        })
    }

    /// The durable position: the last block (number, hash) whose firings were all acknowledged.
    pub fn cursor(&self) -> (u64, B256) {
        self.cursor
    }

    /// How new blocks are noticed right now (WebSocket, or HTTP polling).
    pub fn transport(&self) -> Transport {
        self.heads.transport()
    }

    /// The firings from the blocks after the cursor up to the head, in block order (within a
    /// block: gap, every_blocks, schedules, logs by index), then the open manual requests at the head.
    ///
    /// Nothing is acknowledged here: until [`Watcher::ack`], a later poll (or a restart) delivers
    /// the same firings again.
    pub async fn poll(&mut self) -> Result<Vec<Firing>> {
        self.pending.clear();
        self.examined.clear();
        self.polled_to = None;
        let head = rpc::head_number(&self.provider).await?;
        let base = self.verify_cursor().await?;
        let mut at_head = base;
        let mut firings = Vec::new();
        if head > base.number {
            let mut prev = base;
            let max = self.opts.max_catch_up_blocks.max(1);
            if head - base.number > max {
                let to = head - max;
                let gap = rpc::header(&self.provider, to).await?.ok_or(TriggerError::MissingBlock(to))?;
                tracing::warn!(
                    from = base.number + 1,
                    to,
                    max_catch_up_blocks = max,
                    "trigger watcher too far behind: skipping blocks"
                );
                firings.push(Firing {
                    block: gap.block,
                    policies: Vec::new(),
                    cause: Cause::Gap { from: base.number + 1, to },
                });
                self.examined.insert(to, gap.block);
                prev = gap.block;
            }
            let examined = self.examine(prev, head).await?;
            firings.extend(examined.firings);
            if let Some(last) = examined.last {
                at_head = last;
            } else if let Some((_, gap)) = self.examined.last_key_value() {
                at_head = *gap;
            }
            firings.sort_by_key(Firing::order_key);
            if at_head.number > base.number {
                self.polled_to = Some(at_head);
            }
        }
        self.pending = firings.clone();
        firings.extend(self.manual_firings(at_head).await?);
        Ok(firings)
    }

    /// Examines the blocks after `prev` up to `head`: their headers (one chain), logs and firings.
    async fn examine(&mut self, prev: BlockRef, head: u64) -> Result<Examined> {
        let from = prev.number + 1;
        let mut headers = rpc::headers(&self.provider, from, head).await?;
        let mut parent = prev.hash;
        let linked = headers
            .iter()
            .take_while(|h| {
                let ok = h.parent_hash == parent;
                parent = h.block.hash;
                ok
            })
            .count();
        if linked < headers.len() {
            tracing::warn!(from, head, linked, "chain changed while reading headers: examining fewer blocks");
            headers.truncate(linked);
        }
        let mut firings = Vec::new();
        let (addresses, topics) = scan::log_filter_parts(&self.policies);
        if let Some(last) = headers.last().map(|h| h.block.number)
            && !addresses.is_empty()
        {
            let logs = rpc::logs(&self.provider, &addresses, &topics, from, last, self.opts.log_range_blocks)
                .await?;
            let index = |n: u64| usize::try_from(n - from).ok();
            let stale = logs
                .iter()
                .filter(|l| {
                    index(l.block_number).and_then(|i| headers.get(i)).map(|h| h.block.hash)
                        != Some(l.block_hash)
                })
                .map(|l| l.block_number)
                .min();
            if let Some(stale) = stale {
                tracing::warn!(
                    block = stale,
                    "a log's block hash differs from its header (reorg): examining fewer blocks"
                );
                headers.truncate(index(stale).unwrap_or(0));
            }
            for log in &logs {
                let Some(h) = index(log.block_number).and_then(|i| headers.get(i)) else { continue };
                let seen = scan::SeenLog {
                    block: h.block,
                    address: log.address,
                    topic0: log.topic0,
                    tx_hash: log.tx_hash,
                    log_index: log.log_index,
                };
                firings.extend(scan::log_firing(&self.policies, &seen));
            }
        }
        let mut prev_timestamp = prev.timestamp;
        for h in &headers {
            firings.extend(scan::block_firings(&self.policies, h.block, prev_timestamp));
            prev_timestamp = h.block.timestamp;
            self.examined.insert(h.block.number, h.block);
            self.recent.insert(h.block.number, h.block.hash);
        }
        while self.recent.len() > RECENT_HASHES {
            self.recent.pop_first();
        }
        Ok(Examined { firings, last: headers.last().map(|h| h.block) })
    }

    /// The open manual requests as firings at `head`; refused ones are marked handled here.
    async fn manual_firings(&self, head: BlockRef) -> Result<Vec<Firing>> {
        let mut out = Vec::new();
        for request in self.journal.open_manual_triggers().await? {
            if let Some(reason) = scan::manual_refusal(&self.policies, &request.policy) {
                tracing::warn!(id = request.id, policy = %request.policy, %reason, "manual trigger refused");
                self.journal.finish_manual_trigger(request.id, &reason).await?;
                continue;
            }
            out.push(Firing {
                block: head,
                policies: vec![request.policy],
                cause: Cause::Manual { request_id: request.id },
            });
        }
        Ok(out)
    }

    /// The cursor's block as the chain has it now, after rewinding over a reorg if needed.
    async fn verify_cursor(&mut self) -> Result<BlockRef> {
        let (number, hash) = self.cursor;
        if let Some(h) = rpc::header(&self.provider, number).await?
            && h.block.hash == hash
        {
            return Ok(h.block);
        }
        tracing::warn!(block = number, %hash, "the cursor's block left the chain (reorg): rewinding");
        let fork = self.find_fork().await?;
        self.recent.retain(|n, _| *n <= fork.number);
        self.recent.insert(fork.number, fork.hash);
        store(&self.journal, &self.safe_key, fork.number, fork.hash).await?;
        self.cursor = (fork.number, fork.hash);
        Ok(fork)
    }

    /// The newest block below the cursor whose examined hash is still on the chain; without one
    /// within [`MAX_REORG_DEPTH`], the chain's block that far back.
    async fn find_fork(&self) -> Result<BlockRef> {
        let number = self.cursor.0;
        let floor = number.saturating_sub(MAX_REORG_DEPTH);
        let mut n = number;
        while n > floor {
            n -= 1;
            let Some(known) = self.recent.get(&n) else { break };
            if let Some(h) = rpc::header(&self.provider, n).await?
                && h.block.hash == *known
            {
                tracing::info!(fork = n, "reorg: re-examining from the fork point");
                return Ok(h.block);
            }
        }
        let target = floor.min(rpc::head_number(&self.provider).await?);
        tracing::warn!(
            block = target,
            "reorg below the hashes known: rewinding {MAX_REORG_DEPTH} blocks (their firings come again)"
        );
        let h = rpc::header(&self.provider, target).await?.ok_or(TriggerError::MissingBlock(target))?;
        Ok(h.block)
    }

    /// Acknowledges a firing once the pipeline has handled it (durably): a chain firing moves the
    /// cursor up to its block, unless an earlier or same-block firing is still unacknowledged; a
    /// manual request is marked handled with the outcome [`DEFAULT_MANUAL_OUTCOME`].
    pub async fn ack(&mut self, firing: &Firing) -> Result<()> {
        self.ack_with_outcome(firing, DEFAULT_MANUAL_OUTCOME).await
    }

    /// [`Watcher::ack`], storing `outcome` on a manual request (what came of it); chain firings
    /// ignore the outcome.
    pub async fn ack_with_outcome(&mut self, firing: &Firing, outcome: &str) -> Result<()> {
        if let Cause::Manual { request_id } = firing.cause {
            self.journal.finish_manual_trigger(request_id, outcome).await?;
            return Ok(());
        }
        if let Some(i) = self.pending.iter().position(|f| f == firing) {
            self.pending.remove(i);
        }
        self.advance(firing.block.number).await
    }

    /// Moves the cursor over the blocks the last poll examined that have no unacknowledged firing.
    pub async fn ack_idle(&mut self) -> Result<()> {
        match self.polled_to {
            Some(last) => self.advance(last.number).await,
            None => Ok(()),
        }
    }

    /// Returns on a new head (WebSocket) or after `poll_interval`, whichever is first.
    pub async fn wait_for_new_block(&self) {
        self.heads.wait(self.opts.poll_interval).await;
    }

    /// Stores the cursor at `upto`, or just below the first unacknowledged firing if that is lower.
    async fn advance(&mut self, upto: u64) -> Result<()> {
        let limit = match self.pending.iter().map(|f| f.block.number).min() {
            Some(first) => upto.min(first.saturating_sub(1)),
            None => upto,
        };
        if limit <= self.cursor.0 {
            return Ok(());
        }
        let Some(block) = self.examined.get(&limit).copied() else { return Ok(()) };
        store(&self.journal, &self.safe_key, block.number, block.hash).await?;
        self.cursor = (block.number, block.hash);
        Ok(())
    }
}

/// What examining a range of blocks found.
struct Examined {
    firings: Vec<Firing>,
    last: Option<BlockRef>,
}

async fn store(journal: &Journal, safe_key: &str, number: u64, hash: B256) -> Result<()> {
    let cursor = Cursor { block_number: number, block_hash: format!("{hash:#x}") };
    journal.set_cursor(CURSOR_SOURCE, safe_key, &cursor).await?;
    Ok(())
}

#[cfg(test)]
mod tests;
