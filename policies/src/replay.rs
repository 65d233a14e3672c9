//! Replaying a decision: what a signer node runs to check that an operation is exactly what the
//! pinned policies produce at the pinned blocks, through its own RPC endpoint.
//!
//! The agent and the node run the same code for each step: [`treasury_chain::snapshot::read_snapshot`] at a block,
//! [`PolicySet::evaluate_all`] in the sandbox, [`plan_batch`]. What the node does not take from
//! the agent: the snapshot (it reads its own, and checks the block hash), the policy set (its
//! pinned [`PolicyBundle`], named by hash) and the history on trust: the decision lists the
//! payments its history counted ([`Decision::history`]) and the node checks them against the
//! chain and its own ledger before replaying with them.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use alloy::eips::BlockNumberOrTag;
use alloy::primitives::{Address, B256, U256, keccak256};
use alloy::providers::{DynProvider, Provider};
use serde::{Deserialize, Serialize};
use treasury_chain::operation::Operation;
use treasury_chain::snapshot::{Snapshot, SnapshotSpec, read_snapshot_expecting};

use crate::config::PoliciesConfig;
use crate::intent::{Action, Intent};
use crate::loader::PolicySet;
use crate::plan::{PlanError, Venue, plan_batch};
use crate::view::{Payment, SnapshotView};

/// A block as a decision names it: number and hash, so a reorg is noticed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinnedBlock {
    /// Block number.
    pub number: u64,
    /// Its hash on the chain the decision was taken on.
    pub hash: B256,
}

/// One firing of a decision: which policies ran, why, and at which block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecidedFiring {
    /// Policies run (those whose intents the operation carries).
    pub policies: Vec<String>,
    /// What fired them (the firing's label, e.g. `manual#3`).
    pub trigger: String,
    /// The block whose snapshot they read.
    pub block: PinnedBlock,
}

/// What a tier-1 sign request carries besides the operation: the decision that produced it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Hash of the policy bundle the agent ran ([`PolicyBundle::hash`]).
    pub policy_hash: B256,
    /// The firings the intents come from.
    pub firings: Vec<DecidedFiring>,
    /// The intents, in the order the operation carries them.
    pub intents: Vec<Intent>,
    /// The block whose snapshot the operation was planned on (nonce, oracle prices).
    pub plan_block: PinnedBlock,
    /// The first block of the history window: the first block of the calendar month or ISO week
    /// (UTC) of the earliest firing, whichever began first, so every payment a policy's `paid`
    /// can count was decided in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_from: Option<PinnedBlock>,
    /// Every fund-moving intent decided in the window that the policies' history counted, with
    /// the operation that carries it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<PastIntent>,
    /// For a keeper job's perform through the module (no intents): the job and what its check
    /// answered at `plan_block`, which the node checks again ([`crate::upkeep::derive`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keeper: Option<crate::upkeep::KeeperDecision>,
}

/// One intent of a decision's history: what the agent counted, and the operation carrying it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PastIntent {
    /// The intent (policy, key, action).
    pub intent: Intent,
    /// Timestamp of the block it was decided at.
    pub timestamp: u64,
    /// EIP-712 digest of the operation that carries it, once planned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<B256>,
    /// Set only for an intent decided by one of the decision's own firings (same trigger, same
    /// block): that firing's trigger. Such an intent is this operation's or, when the planner
    /// split the firing, another operation's; the firing did not count it (it decided it), so its
    /// replay must derive it instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
}

/// Why a replay refuses the operation; each names the first thing that differs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// The decision names another policy bundle than the one pinned.
    #[error("the decision was taken with policy set {got}, this node enforces {expected}")]
    PolicyHash {
        /// The pinned bundle's hash.
        expected: B256,
        /// The hash the request named.
        got: B256,
    },
    /// A pinned block is not on this node's chain.
    #[error("block {number} is {actual} on this node's chain, not {claimed} (reorg or lying RPC)")]
    BlockHash {
        /// Block number.
        number: u64,
        /// The hash the request named.
        claimed: B256,
        /// The hash this node's endpoint reports.
        actual: B256,
    },
    /// Reading a snapshot from this node's endpoint failed.
    #[error("snapshot at block {block} from this node's RPC endpoint")]
    Snapshot {
        /// Block number.
        block: u64,
        /// The chain error.
        #[source]
        source: treasury_chain::ChainError,
    },
    /// A block header could not be read from the RPC endpoint.
    #[error("block {number} from the RPC endpoint: {message}")]
    Header {
        /// Block number.
        number: u64,
        /// What went wrong.
        message: String,
    },
    /// The decision is malformed (no intents, an intent of no firing, an unknown policy).
    #[error("malformed decision: {0}")]
    Malformed(String),
    /// An intent the policies do not produce at its firing's block.
    #[error("intent {key}: not produced by policy `{policy}` at block {block} ({why})")]
    NotDerived {
        /// Idempotency key.
        key: String,
        /// The policy the intent names.
        policy: String,
        /// The firing's block.
        block: u64,
        /// What the replay produced instead.
        why: String,
    },
    /// The replayed intent with this key differs from the one asked.
    #[error("intent {key}: the policy produces `{derived}`, the request asks `{asked}`")]
    IntentDiffers {
        /// Idempotency key.
        key: String,
        /// What the node derived.
        derived: String,
        /// What the request carried.
        asked: String,
    },
    /// Planning the intents failed.
    #[error("planning the intents at block {block}")]
    Plan {
        /// The plan block.
        block: u64,
        /// Why.
        #[source]
        source: PlanError,
    },
    /// The operation's nonce is not the module's at the plan block.
    #[error("operation nonce {got} is not the module's nonce {expected} at block {block}")]
    Nonce {
        /// The plan block.
        block: u64,
        /// The module's nonce there.
        expected: U256,
        /// The operation's.
        got: U256,
    },
    /// A call differs from the planned one (or one side has more calls).
    #[error("call {index}: the plan gives {derived}, the operation has {asked}")]
    CallDiffers {
        /// Index of the first differing call.
        index: usize,
        /// The planned call (or `nothing`).
        derived: String,
        /// The operation's call (or `nothing`).
        asked: String,
    },
}

/// The policy set a node enforces, as one value with one hash: chain, Safe, module, venue, the
/// policies section (token table, address book, feeds, limits, triggers) and every script.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyBundle {
    /// Chain id.
    pub chain_id: u64,
    /// The Safe.
    pub safe: Address,
    /// The treasury module.
    pub module: Address,
    /// Multicall3 on this chain.
    pub multicall3: Address,
    /// Uniswap V2 router and its WETH, when swaps are planned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub venue: Option<(Address, Address)>,
    /// The policies section; each entry's `file` is normalised to `<name>.rhai`.
    pub policies: PoliciesConfig,
    /// Script source by policy name.
    pub scripts: BTreeMap<String, String>,
    /// The keeper jobs whose performs the nodes sign through the module (`execute = "module"`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keeper_jobs: Vec<crate::upkeep::PinnedJob>,
}

impl PolicyBundle {
    /// A bundle of `policies` with `scripts` (policy name → source); file names are normalised so
    /// the hash does not depend on where the scripts live.
    pub fn new(
        chain_id: u64,
        spec: &SnapshotSpec,
        venue: Option<Venue>,
        mut policies: PoliciesConfig,
        scripts: BTreeMap<String, String>,
    ) -> Self {
        for p in &mut policies.policies {
            p.file = PathBuf::from(format!("{}.rhai", p.name));
        }
        Self {
            chain_id,
            safe: spec.safe,
            module: spec.module,
            multicall3: spec.multicall3,
            venue: venue.map(|v| (v.router, v.weth)),
            policies,
            scripts,
            keeper_jobs: Vec::new(),
        }
    }

    /// This bundle with `jobs` as the keeper jobs the nodes sign performs of.
    pub fn with_keeper_jobs(mut self, jobs: Vec<crate::upkeep::PinnedJob>) -> Self {
        self.keeper_jobs = jobs;
        self
    }

    /// The pinned keeper job named `name`.
    pub fn keeper_job(&self, name: &str) -> Option<&crate::upkeep::PinnedJob> {
        self.keeper_jobs.iter().find(|j| j.name == name)
    }

    /// A bundle whose scripts are read from `policies`' files, resolved against `base_dir`.
    pub fn from_files(
        chain_id: u64,
        spec: &SnapshotSpec,
        venue: Option<Venue>,
        policies: PoliciesConfig,
        base_dir: &Path,
    ) -> crate::Result<Self> {
        let mut scripts = BTreeMap::new();
        for p in &policies.policies {
            let path = base_dir.join(&p.file);
            let source = std::fs::read_to_string(&path)
                .map_err(|source| crate::PolicyError::Io { path: path.clone(), source })?;
            scripts.insert(p.name.clone(), source);
        }
        Ok(Self::new(chain_id, spec, venue, policies, scripts))
    }

    /// keccak256 of the bundle's canonical JSON (maps sorted, fields in declaration order).
    pub fn hash(&self) -> B256 {
        keccak256(serde_json::to_vec(self).expect("a bundle serialises"))
    }

    /// Whether this bundle only narrows `old`: same chain, Safe, module and venue; every policy
    /// kept unchanged (entry and script) or removed; keeper jobs kept unchanged or removed; tokens and
    /// addresses kept or removed; the same limits. Anything else may widen what the nodes sign, and
    /// waits out the delay.
    pub fn narrows(&self, old: &PolicyBundle) -> bool {
        let same_place = self.chain_id == old.chain_id
            && self.safe == old.safe
            && self.module == old.module
            && self.multicall3 == old.multicall3
            && self.venue == old.venue;
        let policies_kept = self.policies.policies.iter().all(|p| {
            old.policies.policies.iter().any(|o| json(o) == json(p))
                && self.scripts.get(&p.name) == old.scripts.get(&p.name)
        });
        let tokens_kept = self.policies.tokens.iter().all(|(k, t)| old.policies.tokens.get(k) == Some(t));
        let names_kept =
            self.policies.addresses.iter().all(|(k, a)| old.policies.addresses.get(k) == Some(a));
        let jobs_kept = self.keeper_jobs.iter().all(|j| old.keeper_jobs.contains(j));
        same_place
            && jobs_kept
            && policies_kept
            && tokens_kept
            && names_kept
            && json(&self.policies.limits) == json(&old.policies.limits)
    }

    /// What a snapshot reads for this bundle.
    pub fn snapshot_spec(&self) -> SnapshotSpec {
        SnapshotSpec {
            safe: self.safe,
            module: self.module,
            multicall3: self.multicall3,
            assets: self.policies.asset_specs(),
        }
    }

    /// Where swaps go (router zero when no venue is configured: swaps then fail to plan).
    pub fn venue(&self) -> Venue {
        let (router, weth) = self.venue.unwrap_or_default();
        Venue { safe: self.safe, router, weth }
    }
}

/// A pinned bundle, compiled once, ready to replay decisions.
#[derive(Debug)]
pub struct Replayer {
    bundle: PolicyBundle,
    hash: B256,
    set: PolicySet,
    spec: SnapshotSpec,
    /// The latest evaluations, kept for the later operations of a firing the planner split.
    kept: Mutex<VecDeque<Arc<Evaluation>>>,
    /// Evaluations run (not those reused from `kept`).
    evaluations_run: AtomicU64,
}

/// How many evaluations a replayer keeps: one per firing being paid out is enough, a few allow
/// for firings whose operations interleave.
const KEPT_EVALUATIONS: usize = 4;

/// One firing's evaluation: everything it depends on, and the fund-moving intents it produced.
///
/// The policies are pure functions of these inputs (the sandbox has no clock, randomness or
/// I/O, and its limits count operations, not time), so an evaluation whose inputs are all equal
/// produces the same intents: reusing it is the same as running it again.
#[derive(Debug)]
struct Evaluation {
    snapshot: Snapshot,
    policies: Vec<String>,
    seen: Vec<Payment>,
    produced: BTreeMap<String, Intent>,
}

impl Replayer {
    /// Compiles every policy of `bundle` (all must compile).
    pub fn new(bundle: PolicyBundle) -> crate::Result<Self> {
        let set = PolicySet::from_sources(&bundle.policies, &bundle.scripts)?;
        Ok(Self {
            hash: bundle.hash(),
            spec: bundle.snapshot_spec(),
            set,
            bundle,
            kept: Mutex::new(VecDeque::new()),
            evaluations_run: AtomicU64::new(0),
        })
    }

    /// How many policy evaluations this replayer has run; a firing split across operations is
    /// evaluated once while its inputs stay the same.
    pub fn evaluations_run(&self) -> u64 {
        self.evaluations_run.load(Ordering::Relaxed)
    }

    /// The fund-moving intents `firing`'s policies produce on `snapshot` counting the payments
    /// `seen`: a kept evaluation of exactly these inputs, else a new one (then kept).
    fn produced(
        &self,
        snapshot: &Snapshot,
        firing: &DecidedFiring,
        seen: Vec<Payment>,
    ) -> Result<Arc<Evaluation>, ReplayError> {
        let same =
            |e: &Evaluation| e.policies == firing.policies && e.snapshot == *snapshot && e.seen == seen;
        if let Some(kept) = self.kept.lock().unwrap_or_else(PoisonError::into_inner).iter().find(|e| same(e))
        {
            return Ok(kept.clone());
        }
        let view = Arc::new(SnapshotView::new(snapshot, self.set.book().clone()).map_err(|e| {
            ReplayError::Malformed(format!("snapshot at block {}: {e}", snapshot.block_number))
        })?);
        self.evaluations_run.fetch_add(1, Ordering::Relaxed);
        let mut produced = BTreeMap::new();
        for outcome in self.set.evaluate_all(&view, &seen, |e| firing.policies.contains(&e.name)) {
            // A policy that fails produces nothing: its intents are then "not derived".
            for intent in outcome.result.unwrap_or_default() {
                if intent.action.moves_funds() {
                    produced.insert(intent.key.clone(), intent);
                }
            }
        }
        let evaluation = Arc::new(Evaluation {
            snapshot: snapshot.clone(),
            policies: firing.policies.clone(),
            seen,
            produced,
        });
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        if kept.len() == KEPT_EVALUATIONS {
            kept.pop_front();
        }
        kept.push_back(evaluation.clone());
        Ok(evaluation)
    }

    /// The pinned bundle's hash.
    pub fn hash(&self) -> B256 {
        self.hash
    }

    /// The pinned bundle.
    pub fn bundle(&self) -> &PolicyBundle {
        &self.bundle
    }

    /// Checks that `op` is exactly what the pinned policies produce for `decision`, reading every
    /// snapshot from `provider` and the history from `history` (checked by the caller). Each
    /// firing sees the payments decided before its block, and those at its block except the
    /// decision's own intents and the firing's own carried by other operations
    /// ([`PastIntent::decided_by`]).
    /// Returns the intents checked, with the timestamp of the block each was decided at.
    pub async fn replay(
        &self,
        provider: &DynProvider,
        decision: &Decision,
        op: &Operation,
        history: &[PastIntent],
    ) -> Result<Vec<(Intent, u64)>, ReplayError> {
        self.check_decision(decision)?;
        let snapshots = self.snapshots(provider, decision).await?;
        self.replay_on(&snapshots, decision, op, history)
    }

    /// Refuses a decision under another policy set, or one with no intents.
    pub fn check_decision(&self, decision: &Decision) -> Result<(), ReplayError> {
        if decision.policy_hash != self.hash {
            return Err(ReplayError::PolicyHash { expected: self.hash, got: decision.policy_hash });
        }
        if decision.keeper.is_some() {
            return Err(ReplayError::Malformed("a keeper job's decision is not a policy decision".into()));
        }
        if decision.intents.is_empty() {
            return Err(ReplayError::Malformed("no intents".into()));
        }
        Ok(())
    }

    /// [`Replayer::replay`] on `snapshots` already read ([`Replayer::snapshots`]), so a caller can
    /// read them at the same time as other things.
    pub fn replay_on(
        &self,
        snapshots: &BTreeMap<u64, Snapshot>,
        decision: &Decision,
        op: &Operation,
        history: &[PastIntent],
    ) -> Result<Vec<(Intent, u64)>, ReplayError> {
        self.check_decision(decision)?;
        let mut derived: BTreeMap<String, (Intent, u64, u64)> = BTreeMap::new();
        for firing in &decision.firings {
            let snapshot = snapshot_of(snapshots, firing.block.number)?;
            for name in &firing.policies {
                if !self.set.entries().any(|e| &e.name == name) {
                    return Err(ReplayError::Malformed(format!(
                        "no policy named `{name}` in the pinned set"
                    )));
                }
            }
            let seen = history_at(history, decision, firing, snapshot.timestamp);
            let evaluation = self.produced(snapshot, firing, seen)?;
            check_siblings(history, decision, firing, snapshot.timestamp, &evaluation.produced)?;
            for (key, intent) in &evaluation.produced {
                derived.insert(key.clone(), (intent.clone(), firing.block.number, snapshot.timestamp));
            }
        }
        check_sibling_firings(history, decision, snapshots)?;
        let mut checked = Vec::with_capacity(decision.intents.len());
        for asked in &decision.intents {
            let block = decision
                .firings
                .iter()
                .find(|f| f.policies.contains(&asked.policy))
                .map(|f| f.block.number)
                .ok_or_else(|| {
                    ReplayError::Malformed(format!(
                        "intent {} names no firing of `{}`",
                        asked.key, asked.policy
                    ))
                })?;
            let Some((mine, _, timestamp)) = derived.get(&asked.key) else {
                let produced: Vec<String> = derived
                    .values()
                    .filter(|(i, ..)| i.policy == asked.policy)
                    .map(|(i, ..)| i.to_string())
                    .collect();
                let why = if produced.is_empty() {
                    "it produces nothing there".to_string()
                } else {
                    format!("it produces {}", produced.join(", "))
                };
                return Err(ReplayError::NotDerived {
                    key: asked.key.clone(),
                    policy: asked.policy.clone(),
                    block,
                    why,
                });
            };
            if mine != asked {
                return Err(ReplayError::IntentDiffers {
                    key: asked.key.clone(),
                    derived: mine.to_string(),
                    asked: asked.to_string(),
                });
            }
            checked.push((asked.clone(), *timestamp));
        }
        self.check_plan(snapshot_of(snapshots, decision.plan_block.number)?, decision, op)?;
        Ok(checked)
    }

    /// The snapshot of every block the decision names (its firings' and the plan block), each
    /// read once, all at the same time, each checked against the block hash the decision names.
    pub async fn snapshots(
        &self,
        provider: &DynProvider,
        decision: &Decision,
    ) -> Result<BTreeMap<u64, Snapshot>, ReplayError> {
        let mut blocks: Vec<PinnedBlock> = decision.firings.iter().map(|f| f.block).collect();
        blocks.push(decision.plan_block);
        blocks.sort_by_key(|b| (b.number, b.hash));
        blocks.dedup();
        let read = blocks.iter().map(|b| self.snapshot_at(provider, *b));
        let snapshots = futures::future::try_join_all(read).await?;
        Ok(snapshots.into_iter().map(|s| (s.block_number, s)).collect())
    }

    /// Plans the decision's intents on the plan block's `snapshot` and compares with `op`, call by call.
    fn check_plan(
        &self,
        snapshot: &Snapshot,
        decision: &Decision,
        op: &Operation,
    ) -> Result<(), ReplayError> {
        if op.nonce != snapshot.module_nonce {
            return Err(ReplayError::Nonce {
                block: snapshot.block_number,
                expected: snapshot.module_nonce,
                got: op.nonce,
            });
        }
        let deadline = u64::try_from(op.deadline).unwrap_or(u64::MAX);
        let calls = plan_batch(&decision.intents, snapshot, &self.bundle.venue(), deadline)
            .map_err(|source| ReplayError::Plan { block: snapshot.block_number, source })?;
        let show = |c: Option<&treasury_chain::Call>| match c {
            None => "nothing".to_string(),
            Some(c) => format!(
                "{{to {}, value {}, data 0x{}, operation {}}}",
                c.to,
                c.value,
                alloy::primitives::hex::encode(&c.data),
                c.operation
            ),
        };
        for index in 0..calls.len().max(op.calls.len()) {
            let (mine, asked) = (calls.get(index), op.calls.get(index));
            if mine != asked {
                return Err(ReplayError::CallDiffers { index, derived: show(mine), asked: show(asked) });
            }
        }
        Ok(())
    }

    /// The snapshot at `block`, read in one round: its header by number (whose hash must be the
    /// one the decision names) and the Multicall3 read pinned to that hash, sent together.
    pub async fn snapshot_at(
        &self,
        provider: &DynProvider,
        block: PinnedBlock,
    ) -> Result<Snapshot, ReplayError> {
        let chain_id = self.bundle.chain_id;
        read_snapshot_expecting(provider, &self.spec, block.number, block.hash, chain_id)
            .await
            .map_err(|source| ReplayError::Snapshot { block: block.number, source })?
            .map_err(|actual| ReplayError::BlockHash { number: block.number, claimed: block.hash, actual })
    }
}

/// The snapshot of block `number` among `snapshots`.
fn snapshot_of(snapshots: &BTreeMap<u64, Snapshot>, number: u64) -> Result<&Snapshot, ReplayError> {
    snapshots
        .get(&number)
        .ok_or_else(|| ReplayError::Malformed(format!("no snapshot of block {number} read")))
}

/// The payments `firing` (at `timestamp`) counts: those of `history` decided before it, or at
/// its block but neither among the decision's own intents nor decided by this firing itself and
/// carried by another operation ([`PastIntent::decided_by`]).
fn history_at(
    history: &[PastIntent],
    decision: &Decision,
    firing: &DecidedFiring,
    timestamp: u64,
) -> Vec<Payment> {
    let own = |key: &str| decision.intents.iter().any(|i| i.key == key);
    history
        .iter()
        .filter(|p| {
            p.timestamp < timestamp
                || (p.timestamp == timestamp && !own(&p.intent.key) && !sibling_of(p, firing, timestamp))
        })
        .filter_map(|p| payment_of(&p.intent, p.timestamp))
        .collect()
}

/// Whether `p` says it was decided by `firing` (at `timestamp`): same trigger, same block, one
/// of the firing's policies.
fn sibling_of(p: &PastIntent, firing: &DecidedFiring, timestamp: u64) -> bool {
    p.timestamp == timestamp
        && p.decided_by.as_deref() == Some(firing.trigger.as_str())
        && firing.policies.contains(&p.intent.policy)
}

/// Every history entry that says `firing` decided it (left out of the firing's history) is
/// what the firing's replay `produced`, exactly: an earlier payment cannot be dropped from the
/// history by calling it the firing's own. And a policy with such entries has no other intent
/// decided at the firing's block: otherwise one firing's payment could be dropped while a later
/// firing's, decided counting it, is still counted — a history no honest order of firings had.
fn check_siblings(
    history: &[PastIntent],
    decision: &Decision,
    firing: &DecidedFiring,
    timestamp: u64,
    produced: &BTreeMap<String, Intent>,
) -> Result<(), ReplayError> {
    let own = |key: &str| decision.intents.iter().any(|i| i.key == key);
    // Split: the firing's intents carried by another operation (its own ones are this one's).
    let split: std::collections::BTreeSet<&str> = history
        .iter()
        .filter(|p| sibling_of(p, firing, timestamp) && !own(&p.intent.key))
        .map(|p| p.intent.policy.as_str())
        .collect();
    if let Some(other) = history.iter().find(|p| {
        p.timestamp == timestamp
            && split.contains(p.intent.policy.as_str())
            && !own(&p.intent.key)
            && !sibling_of(p, firing, timestamp)
    }) {
        return Err(ReplayError::Malformed(format!(
            "the history counts intent {} of another firing at block {} beside intents it says firing {} decided there: a firing split across operations must be its policy's only one at its block",
            other.intent.key, firing.block.number, firing.trigger
        )));
    }
    for p in history.iter().filter(|p| sibling_of(p, firing, timestamp)) {
        match produced.get(&p.intent.key) {
            None => {
                return Err(ReplayError::NotDerived {
                    key: p.intent.key.clone(),
                    policy: p.intent.policy.clone(),
                    block: firing.block.number,
                    why: format!(
                        "the history says firing {} decided it there, in another operation",
                        firing.trigger
                    ),
                });
            }
            Some(mine) if mine != &p.intent => {
                return Err(ReplayError::IntentDiffers {
                    key: p.intent.key.clone(),
                    derived: mine.to_string(),
                    asked: p.intent.to_string(),
                });
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Every history entry marked as decided by a firing names one of the decision's firings, at
/// that firing's block.
fn check_sibling_firings(
    history: &[PastIntent],
    decision: &Decision,
    snapshots: &BTreeMap<u64, Snapshot>,
) -> Result<(), ReplayError> {
    for p in history.iter().filter(|p| p.decided_by.is_some()) {
        let matched = decision
            .firings
            .iter()
            .any(|f| snapshots.get(&f.block.number).is_some_and(|s| sibling_of(p, f, s.timestamp)));
        if !matched {
            return Err(ReplayError::Malformed(format!(
                "the history says intent {} was decided by firing {}, which is not a firing of this decision at its block",
                p.intent.key,
                p.decided_by.as_deref().unwrap_or_default()
            )));
        }
    }
    Ok(())
}

/// The timestamp and hash of block `number` as `provider` reports them.
pub async fn block_header(provider: &DynProvider, number: u64) -> Result<(u64, B256), ReplayError> {
    match provider.get_block_by_number(BlockNumberOrTag::Number(number)).await {
        Ok(Some(b)) => Ok((b.header.timestamp, b.header.hash)),
        Ok(None) => Err(ReplayError::Header { number, message: "no such block".into() }),
        Err(e) => Err(ReplayError::Header { number, message: e.to_string() }),
    }
}

/// Where a decision's history starts: the first block of a calendar month, and its timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryWindow {
    /// The window's first block.
    pub from: PinnedBlock,
    /// Its timestamp: intents decided before it are outside the window.
    pub since: u64,
}

/// Whether timestamps `a` and `b` share a calendar month or an ISO week: every period a script's
/// `paid` can ask for (block, day, week, month) starting at or after `b`'s window.
pub fn same_window(a: u64, b: u64) -> bool {
    crate::period::Period::Month.same(a, b) || crate::period::Period::Week.same(a, b)
}

/// The first block of the calendar month or ISO week (UTC), whichever began first, of the block
/// `to`: the history window of a decision whose earliest firing is `to` (binary search over
/// block timestamps).
pub async fn history_window(provider: &DynProvider, to: u64) -> Result<HistoryWindow, ReplayError> {
    let header = |n: u64| block_header(provider, n);
    let (end, _) = header(to).await?;
    let (mut lo, mut hi) = (0u64, to);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if same_window(header(mid).await?.0, end) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let (since, hash) = header(lo).await?;
    Ok(HistoryWindow { from: PinnedBlock { number: lo, hash }, since })
}

/// The transfer call that carries a payment of `intent` under `policies`' token table (`None` for
/// a swap, an alert, or an amount the token cannot represent).
pub fn transfer_of(intent: &Intent, policies: &PoliciesConfig) -> Option<treasury_chain::Call> {
    let Action::Pay { to, token, amount, .. } = &intent.action else { return None };
    let t = policies.tokens.get(token)?;
    let raw = crate::money::to_units(*amount, t.decimals)?;
    Some(if t.address.is_zero() {
        treasury_chain::Call::new(*to, raw, Vec::new())
    } else {
        let data = treasury_chain::contracts::IERC20::transferCall { to: *to, amount: raw };
        treasury_chain::Call::new(t.address, U256::ZERO, alloy::sol_types::SolCall::abi_encode(&data))
    })
}

/// The payment a signed intent adds to the history (none for a swap).
pub fn payment_of(intent: &Intent, timestamp: u64) -> Option<Payment> {
    match &intent.action {
        Action::Pay { to, token, amount, .. } => Some(Payment {
            policy: intent.policy.clone(),
            recipient: *to,
            token: token.clone(),
            amount: *amount,
            timestamp,
        }),
        _ => None,
    }
}

/// A config value as JSON, to compare values whose types are not all `PartialEq`.
fn json<T: Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use treasury_chain::AssetState;
    use treasury_chain::snapshot::AssetSpec;

    /// Pays alice once a day: what it produces depends on the history it counts.
    const GRANTS: &str = r#"if paid("alice", "USDC", "day") == 0 { pay("alice", "USDC", 100); }"#;
    const TIMESTAMP: u64 = 1_800_000_000;

    fn usdc() -> Address {
        Address::repeat_byte(0x05)
    }

    fn bundle() -> PolicyBundle {
        let text = format!(
            "[tokens.USDC]\naddress = \"{}\"\ndecimals = 6\n[addresses]\nalice = \"{}\"\n\
             [[policy]]\nname = \"grants\"\nfile = \"grants.rhai\"\ntrigger = {{ kind = \"manual\" }}\n",
            usdc(),
            Address::repeat_byte(0xa1)
        );
        let policies: PoliciesConfig = toml::from_str(&text).unwrap();
        let asset = AssetSpec {
            symbol: "USDC".into(),
            token: usdc(),
            decimals: 6,
            feed: None,
            max_price_age_secs: 3600,
        };
        let spec = SnapshotSpec {
            safe: Address::repeat_byte(0x5a),
            module: Address::repeat_byte(0x0d),
            multicall3: Address::ZERO,
            assets: vec![asset],
        };
        let scripts = [("grants".to_string(), GRANTS.to_string())].into_iter().collect();
        PolicyBundle::new(1, &spec, None, policies, scripts)
    }

    /// The state at block 10, whose hash is `hash`'s byte repeated.
    fn snapshot(bundle: &PolicyBundle, hash: u8) -> Snapshot {
        let usdc = AssetState {
            symbol: "USDC".into(),
            token: usdc(),
            decimals: 6,
            balance: U256::from(10u64.pow(12)),
            price: None,
            budget: None,
        };
        Snapshot {
            chain_id: 1,
            block_number: 10,
            block_hash: B256::repeat_byte(hash),
            timestamp: TIMESTAMP,
            safe: bundle.safe,
            module: bundle.module,
            module_nonce: U256::ZERO,
            paused: false,
            assets: vec![usdc],
        }
    }

    /// The honest decision and operation of one firing of `grants` on `snapshot`, with no history.
    fn decide(bundle: &PolicyBundle, snapshot: &Snapshot) -> (Decision, Operation) {
        let set = PolicySet::from_sources(&bundle.policies, &bundle.scripts).unwrap();
        let view = Arc::new(SnapshotView::new(snapshot, set.book().clone()).unwrap());
        let intents = set.evaluate("grants", &view, &[]).unwrap();
        assert_eq!(intents.len(), 1, "grants pays alice once");
        let deadline = snapshot.timestamp + 3600;
        let calls = plan_batch(&intents, snapshot, &bundle.venue(), deadline).unwrap();
        let block = PinnedBlock { number: snapshot.block_number, hash: snapshot.block_hash };
        let decision = Decision {
            policy_hash: bundle.hash(),
            firings: vec![DecidedFiring {
                policies: vec!["grants".into()],
                trigger: "manual#1".into(),
                block,
            }],
            intents,
            plan_block: block,
            history_from: None,
            history: Vec::new(),
            keeper: None,
        };
        (decision, Operation { calls, nonce: snapshot.module_nonce, deadline: U256::from(deadline) })
    }

    #[test]
    fn a_firing_is_evaluated_again_whenever_a_replay_input_differs() {
        let bundle = bundle();
        let replayer = Replayer::new(bundle.clone()).unwrap();
        let at = snapshot(&bundle, 1);
        let (decision, op) = decide(&bundle, &at);
        let snapshots: BTreeMap<u64, Snapshot> = [(10, at.clone())].into_iter().collect();

        replayer.replay_on(&snapshots, &decision, &op, &[]).unwrap();
        assert_eq!(replayer.evaluations_run(), 1);
        // The same inputs (a split firing's next operation): the kept evaluation is used.
        replayer.replay_on(&snapshots, &decision, &op, &[]).unwrap();
        assert_eq!(replayer.evaluations_run(), 1);

        // A history that counts alice's payment earlier today: the policy pays nothing now, and
        // the kept evaluation (which paid her) must not stand in for it.
        let earlier = PastIntent {
            intent: decision.intents[0].clone(),
            timestamp: TIMESTAMP - 100,
            digest: Some(B256::repeat_byte(0xee)),
            decided_by: None,
        };
        let refused = replayer.replay_on(&snapshots, &decision, &op, &[earlier]).unwrap_err();
        assert!(matches!(refused, ReplayError::NotDerived { .. }), "{refused}");
        assert_eq!(replayer.evaluations_run(), 2);

        // The same block number with other state (a reorg, or a balance that changed): run again.
        let mut poorer = snapshot(&bundle, 2);
        poorer.assets[0].balance = U256::from(500_000_000u64);
        let (other, other_op) = decide(&bundle, &poorer);
        let snapshots: BTreeMap<u64, Snapshot> = [(10, poorer)].into_iter().collect();
        replayer.replay_on(&snapshots, &other, &other_op, &[]).unwrap();
        assert_eq!(replayer.evaluations_run(), 3);
    }
}
