//! What the watcher hands the pipeline: a firing (which policies, at which block, and why).

use alloy::primitives::{Address, B256};
use serde::{Deserialize, Serialize};

/// A block as the watcher saw it: the pipeline pins its snapshot to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BlockRef {
    /// Block number.
    pub number: u64,
    /// Block hash.
    pub hash: B256,
    /// Block timestamp, Unix seconds.
    pub timestamp: u64,
}

/// Why policies fire.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Cause {
    /// Blocks `from..=to` were skipped because catch-up is bounded: no policy runs, but the pipeline
    /// should raise an alert. The firing's block is `to`, the last block skipped.
    Gap {
        /// First block skipped.
        from: u64,
        /// Last block skipped.
        to: u64,
    },
    /// `every_blocks` policies whose interval divides the block number.
    EveryBlocks,
    /// `schedule` policies whose cron instant `instant` (Unix seconds) the block is the first to reach.
    Schedule {
        /// The cron instant reached, Unix seconds (the same tick has the same instant).
        instant: u64,
    },
    /// `on_log` policies matching a log.
    Log {
        /// The transaction that emitted the log.
        tx_hash: B256,
        /// The log's index in its block.
        log_index: u64,
        /// The emitting contract.
        address: Address,
    },
    /// A manual request from the journal's `manual_triggers` table, fired at the current head.
    Manual {
        /// The request's journal id.
        request_id: i64,
    },
}

/// Policies to run at one block for one cause.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Firing {
    /// The block the policies see (their snapshot's block).
    pub block: BlockRef,
    /// The names of the policies to run, in config order (empty for [`Cause::Gap`]).
    pub policies: Vec<String>,
    /// Why they run.
    pub cause: Cause,
}

impl Firing {
    /// The trigger label stored in the journal: the same tick, log or request always has the same
    /// label, so it can be part of an idempotency key (`every_blocks@1200`, `schedule@1709251200`,
    /// `log@0x…:3`, `manual#7`, `gap@100-199`).
    pub fn label(&self) -> String {
        match &self.cause {
            Cause::Gap { from, to } => format!("gap@{from}-{to}"),
            Cause::EveryBlocks => format!("every_blocks@{}", self.block.number),
            Cause::Schedule { instant } => format!("schedule@{instant}"),
            Cause::Log { tx_hash, log_index, .. } => format!("log@{tx_hash}:{log_index}"),
            Cause::Manual { request_id } => format!("manual#{request_id}"),
        }
    }

    /// Whether the firing comes from the chain (moves the block cursor when acked), not a manual request.
    pub fn is_from_blocks(&self) -> bool {
        !matches!(self.cause, Cause::Manual { .. })
    }

    /// Order of firings within one block: gap, every_blocks, schedules, then logs by index.
    pub(crate) fn order_key(&self) -> (u64, u8, u64) {
        let (rank, sub) = match &self.cause {
            Cause::Gap { .. } => (0, 0),
            Cause::EveryBlocks => (1, 0),
            Cause::Schedule { instant } => (2, *instant),
            Cause::Log { log_index, .. } => (3, *log_index),
            Cause::Manual { request_id } => (4, u64::try_from(*request_id).unwrap_or(0)),
        };
        (self.block.number, rank, sub)
    }
}
