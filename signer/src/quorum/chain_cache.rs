//! What a replaying node keeps between requests from reading its own RPC endpoint, so a signature
//! re-reads only what can have changed. Everything kept is either content-addressed (a block
//! header by its hash, the calls of an executed operation by the operation's digest, which they
//! are checked to hash to, a snapshot by its block's hash and the pinned bundle's hash; its
//! block's number is read again at each use to check it still has that hash) or re-checked on
//! each use: the module's `Executed` events are kept
//! only up to a block that was on the chain before they were read (the finalized block, or a
//! decision's block, seen by an earlier request), and that block's hash is read again with every
//! request; when it differs (or the block is gone) everything is read again.
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use alloy::primitives::{Address, B256};
use treasury_chain::Call;
use treasury_chain::snapshot::Snapshot;

/// Entries kept per map before it is emptied (a node's window holds far fewer).
const MAX_ENTRIES: usize = 4096;

/// An operation the module executed.
#[derive(Debug, Clone)]
pub(crate) struct Executed {
    /// Block it executed in.
    pub block: u64,
    /// The transaction that executed it.
    pub tx: B256,
    /// Its tier.
    pub tier: u8,
}

/// A block header's fields the node checks, kept by the block's hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeaderFacts {
    /// Block number.
    pub number: u64,
    /// Timestamp.
    pub timestamp: u64,
    /// Parent block's hash.
    pub parent: B256,
}

/// The module's `Executed` events read from `from` up to block `upto`, seen on the chain before
/// they were read.
#[derive(Debug, Clone)]
pub(crate) struct FinalEvents {
    /// The module they were read for.
    pub module: Address,
    /// First block read.
    pub from: u64,
    /// Last block kept, on the chain before the read began: its number and hash.
    pub upto: (u64, B256),
    /// The events, by operation digest.
    pub events: BTreeMap<B256, Executed>,
}

/// A node's cache of its own RPC endpoint's answers (see the module doc for why each is safe).
#[derive(Debug, Default)]
pub struct ChainCache {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    headers: HashMap<B256, HeaderFacts>,
    calls: HashMap<B256, Vec<Call>>,
    snapshots: HashMap<B256, Snapshot>,
    events: Option<FinalEvents>,
    /// The highest block seen on the chain (the finalized block, or a decision's block read
    /// with its hash checked): the next read of the events starts after it existed, so the
    /// events up to it may then be kept (its hash read again at each use).
    seen: Option<(u64, B256)>,
    /// The highest decision block for which the finalized block was read: it moves only when
    /// the chain does, so it is read again only for a later block.
    finalized_read_at: u64,
}

impl ChainCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("chain cache lock")
    }

    /// The header facts of the block with this hash, if read before.
    pub(crate) fn header(&self, hash: &B256) -> Option<HeaderFacts> {
        self.lock().headers.get(hash).copied()
    }

    /// Keeps the facts of the block with hash `hash`.
    pub(crate) fn put_header(&self, hash: B256, facts: HeaderFacts) {
        put(&mut self.lock().headers, hash, facts);
    }

    /// The calls of the executed operation `digest`, if decoded before.
    pub(crate) fn calls(&self, digest: &B256) -> Option<Vec<Call>> {
        self.lock().calls.get(digest).cloned()
    }

    /// Keeps the calls of `digest` (checked by the caller to hash to it).
    pub(crate) fn put_calls(&self, digest: B256, calls: Vec<Call>) {
        put(&mut self.lock().calls, digest, calls);
    }

    /// The snapshot of the block with hash `block` for the bundle hashing to `bundle`, if read before.
    pub(crate) fn snapshot(&self, block: B256, bundle: B256) -> Option<Snapshot> {
        self.lock().snapshots.get(&snapshot_key(block, bundle)).cloned()
    }

    /// Keeps `snapshot` (of the block with hash `block`) for the bundle hashing to `bundle`.
    pub(crate) fn put_snapshot(&self, block: B256, bundle: B256, snapshot: Snapshot) {
        put(&mut self.lock().snapshots, snapshot_key(block, bundle), snapshot);
    }

    /// The kept final events of `module`, when they cover block `start` on.
    pub(crate) fn final_events(&self, module: Address, start: u64) -> Option<FinalEvents> {
        self.lock().events.clone().filter(|e| e.module == module && e.from <= start && e.upto.0 >= start)
    }

    /// Forgets the kept events (the block they were read up to is no longer on the chain).
    pub(crate) fn drop_events(&self) {
        let mut inner = self.lock();
        inner.events = None;
        inner.seen = None;
        inner.finalized_read_at = 0;
    }

    /// The highest block seen on the chain by an earlier request, if any.
    pub(crate) fn seen_block(&self) -> Option<(u64, B256)> {
        self.lock().seen
    }

    /// Notes `block` (number, hash), read now from this node's endpoint (the finalized block, or
    /// a decision's block whose hash was checked), for the next read.
    pub(crate) fn saw_block(&self, block: (u64, B256)) {
        let mut inner = self.lock();
        if inner.seen.is_none_or(|f| f.0 < block.0) {
            inner.seen = Some(block);
        }
    }

    /// Whether to read the finalized block for a decision at block `block` (once per new block).
    pub(crate) fn finalized_due(&self, block: u64) -> bool {
        let mut inner = self.lock();
        let due = block > inner.finalized_read_at;
        inner.finalized_read_at = inner.finalized_read_at.max(block);
        due
    }

    /// Keeps `events`, replacing what was kept.
    pub(crate) fn keep_events(&self, events: FinalEvents) {
        self.lock().events = Some(events);
    }
}

fn snapshot_key(block: B256, bundle: B256) -> B256 {
    alloy::primitives::keccak256([block.as_slice(), bundle.as_slice()].concat())
}

fn put<V>(map: &mut HashMap<B256, V>, key: B256, value: V) {
    if map.len() >= MAX_ENTRIES {
        map.clear();
    }
    map.insert(key, value);
}
