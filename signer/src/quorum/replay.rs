//! Replay at the node: the pinned policy set, the signed-intent ledger, and the check that a
//! tier-1 operation is what the pinned policies produce at the pinned blocks, read through the
//! node's own RPC endpoint.
//!
//! ```text
//! D/policy.json    the pinned PolicyBundle (policies section, scripts, Safe, module, venue)
//! D/policy.pin     its hash and the operators' approvals (`treasury signer pin-policy`)
//! D/policy.pending.json  a widening change, staged until its delay has passed
//! D/intents.jsonl  records imported into the signed-intent ledger (one JSON line each, fsync'd)
//! D/nonces/ledger.jsonl  the records of each signature, in the line that marks its nonce
//!                  used (`intents`): one write and one fsync before the share leaves
//! ```
//! The ledger a node holds is both files' records (written before: in `intents.jsonl` too).
//!
//! Ledger interchange format (`treasury signer ledger export|import`): the same JSON lines, one
//! [`LedgerRecord`] each: `{"v":1,"key","policy","intent"?,"timestamp","digest","module_nonce",
//! "deadline","tier","at"}` (U256 values as 0x hex, `intent` the policy's intent as the agent
//! journals it). Import appends the records whose (key, digest) the node does not hold.
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;

use alloy::primitives::{B256, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::Filter;
use alloy::sol_types::SolEvent;
use serde::{Deserialize, Serialize};
use treasury_chain::contracts::{ITreasuryModuleViews, TreasuryModule};
use treasury_chain::operation::Operation;
use treasury_policies::Intent;
use treasury_policies::replay::{Decision, PinnedBlock, PolicyBundle, ReplayError, Replayer};

use super::chain_cache::ChainCache;
use super::error::{QuorumError, Refusal, RefusalCode};
use super::identity::{IdentityKey, IdentityPublic};

const BUNDLE_FILE: &str = "policy.json";
const PIN_FILE: &str = "policy.pin";
const PENDING_FILE: &str = "policy.pending.json";
const LEDGER_FILE: &str = "intents.jsonl";
const PIN_DOMAIN: &[u8] = b"treasury-signer-policy-pin-v1";

/// Whether a node replays tier-1 decisions before signing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplayMode {
    /// Every tier-1 request must carry a decision the node re-derives (`treasury signer init`'s default).
    Required,
    /// Static rules only (the guard); a node.toml without `[replay]` keeps this.
    #[default]
    Off,
}

/// `[replay]` in `node.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayConfig {
    /// `required` or `off`.
    #[serde(default)]
    pub mode: ReplayMode,
    /// The node's own JSON-RPC endpoint (HTTP), never the agent's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpc: Option<String>,
    /// Identity keys (hex) of the other node operators whose approvals of a policy set count.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pin_approvers: Vec<String>,
    /// Approvals a policy set needs before this node enforces it (its own operator's counts).
    #[serde(default = "default_pin_threshold")]
    pub pin_threshold: u16,
    /// Seconds a widening change of the policy set waits, staged and visible, before it is enforced.
    #[serde(default = "default_widening_delay")]
    pub widening_delay_secs: u64,
}

impl Default for ReplayConfig {
    fn default() -> Self {
        Self {
            mode: ReplayMode::default(),
            rpc: None,
            pin_approvers: Vec::new(),
            pin_threshold: default_pin_threshold(),
            widening_delay_secs: default_widening_delay(),
        }
    }
}

fn default_pin_threshold() -> u16 {
    1
}

fn default_widening_delay() -> u64 {
    86_400
}

/// One node operator's approval of a policy set: their identity key and signature over its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinApproval {
    /// The bundle hash approved.
    pub policy_hash: B256,
    /// The operator's node identity key (hex).
    pub signer: String,
    /// Signature over the pin message of `policy_hash` (hex).
    pub signature: String,
}

/// `D/policy.pin`: the hash of the enforced bundle and the approvals that pinned it.
#[derive(Debug, Serialize, Deserialize)]
struct SignedPin {
    hash: B256,
    #[serde(default)]
    approvals: Vec<PinApproval>,
    /// Pins written before approvals: signed by the node's own identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signature: Option<String>,
}

/// `D/policy.pending.json`: a widening change, staged until `active_from`.
#[derive(Debug, Serialize, Deserialize)]
struct PendingPin {
    bundle: PolicyBundle,
    approvals: Vec<PinApproval>,
    staged_at: u64,
    active_from: u64,
}

/// What pinning a policy set did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PinOutcome {
    /// The bundle's hash.
    pub policy_hash: B256,
    /// Whether it may widen what the node signs (then it waits out the delay).
    pub widening: bool,
    /// Unix time from which the node enforces it.
    pub active_from: u64,
    /// Approvals counted.
    pub approvals: usize,
}

/// A staged change, for the node's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StagedPin {
    /// The staged bundle's hash.
    pub policy_hash: B256,
    /// Unix time from which it is enforced.
    pub active_from: u64,
}

fn pin_message(hash: &B256) -> [u8; 32] {
    super::identity::hash_parts(&[PIN_DOMAIN, hash.as_slice()])
}

/// This operator's approval of `bundle`, signed with the node's identity key.
pub fn approve_policy(identity: &IdentityKey, bundle: &PolicyBundle) -> PinApproval {
    let policy_hash = bundle.hash();
    PinApproval {
        policy_hash,
        signer: identity.public().to_hex(),
        signature: hex::encode(identity.sign(&pin_message(&policy_hash))),
    }
}

/// Distinct approvers of `hash` among `approvals` whose key this node accepts and whose
/// signature checks; an approval that fails is an error naming it.
fn counted_approvals(
    hash: B256,
    approvals: &[PinApproval],
    own: &IdentityPublic,
    config: &ReplayConfig,
) -> Result<usize, QuorumError> {
    let mut seen = BTreeSet::new();
    for a in approvals {
        if a.policy_hash != hash {
            return Err(QuorumError::Config(format!(
                "an approval by {} is for policy set {}, not {hash}",
                a.signer, a.policy_hash
            )));
        }
        let allowed = a.signer == own.to_hex() || config.pin_approvers.contains(&a.signer);
        if !allowed {
            return Err(QuorumError::Config(format!(
                "{} is not a policy approver of this node ([replay] pin_approvers)",
                a.signer
            )));
        }
        let key = IdentityPublic::from_hex(&a.signer)?;
        let sig =
            hex::decode(&a.signature).map_err(|e| QuorumError::Config(format!("approval signature: {e}")))?;
        if !key.verify(&pin_message(&hash), &sig) {
            return Err(QuorumError::Config(format!("the approval by {} does not verify", a.signer)));
        }
        seen.insert(a.signer.clone());
    }
    Ok(seen.len())
}

/// Pins `bundle` in the node directory `dir` with this operator's approval and `others`': at
/// once when it is the first or only narrows the enforced one, else staged for the widening
/// delay. Needs `pin_threshold` approvals.
pub fn pin_policy(
    dir: &Path,
    identity: &IdentityKey,
    config: &ReplayConfig,
    bundle: &PolicyBundle,
    others: &[PinApproval],
    now: u64,
) -> Result<PinOutcome, QuorumError> {
    Replayer::new(bundle.clone()).map_err(|e| QuorumError::Config(format!("policy bundle: {e}")))?;
    let hash = bundle.hash();
    let mut approvals = vec![approve_policy(identity, bundle)];
    approvals.extend(others.iter().filter(|a| a.signer != identity.public().to_hex()).cloned());
    let count = counted_approvals(hash, &approvals, &identity.public(), config)?;
    if count < usize::from(config.pin_threshold) {
        return Err(QuorumError::Config(format!(
            "policy set {hash} has {count} of the {} approvals it needs (treasury signer approve-policy on the other operators' nodes, then --approval FILE)",
            config.pin_threshold
        )));
    }
    let current = load_bundle(dir, &identity.public(), config)?;
    let widening = current.as_ref().is_some_and(|c| !bundle.narrows(c));
    let active_from = if widening { now + config.widening_delay_secs } else { now };
    if widening {
        let pending = PendingPin { bundle: bundle.clone(), approvals, staged_at: now, active_from };
        super::store::write_durable(&dir.join(PENDING_FILE), &to_json(&pending)?)?;
    } else {
        enforce(dir, bundle, approvals)?;
    }
    Ok(PinOutcome { policy_hash: hash, widening, active_from, approvals: count })
}

fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>, QuorumError> {
    serde_json::to_vec_pretty(value).map_err(|e| QuorumError::Corrupt(e.to_string()))
}

/// Writes `bundle` and its pin as the enforced set, and drops a staged change.
fn enforce(dir: &Path, bundle: &PolicyBundle, approvals: Vec<PinApproval>) -> Result<(), QuorumError> {
    super::store::write_durable(&dir.join(BUNDLE_FILE), &to_json(bundle)?)?;
    let pin = SignedPin { hash: bundle.hash(), approvals, signature: None };
    super::store::write_durable(&dir.join(PIN_FILE), &to_json(&pin)?)?;
    match std::fs::remove_file(dir.join(PENDING_FILE)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(QuorumError::io(&dir.join(PENDING_FILE), e)),
    }
}

/// The staged change of `dir`, if any.
pub fn staged_pin(dir: &Path) -> Result<Option<StagedPin>, QuorumError> {
    Ok(read_pending(dir)?.map(|p| StagedPin { policy_hash: p.bundle.hash(), active_from: p.active_from }))
}

fn read_pending(dir: &Path) -> Result<Option<PendingPin>, QuorumError> {
    let path = dir.join(PENDING_FILE);
    match std::fs::read(&path) {
        Ok(t) => serde_json::from_slice(&t)
            .map(Some)
            .map_err(|e| QuorumError::Corrupt(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(QuorumError::io(&path, e)),
    }
}

/// The enforced bundle of `dir` after checking its pin's approvals; `None` when nothing is pinned.
fn load_bundle(
    dir: &Path,
    identity: &IdentityPublic,
    config: &ReplayConfig,
) -> Result<Option<PolicyBundle>, QuorumError> {
    let pin_path = dir.join(PIN_FILE);
    let pin = match std::fs::read(&pin_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(QuorumError::io(&pin_path, e)),
    };
    let mut pin: SignedPin = serde_json::from_slice(&pin)
        .map_err(|e| QuorumError::Corrupt(format!("{}: {e}", pin_path.display())))?;
    if let Some(signature) = pin.signature.take() {
        pin.approvals.push(PinApproval { policy_hash: pin.hash, signer: identity.to_hex(), signature });
    }
    let count = counted_approvals(pin.hash, &pin.approvals, identity, config)
        .map_err(|e| QuorumError::Corrupt(format!("{}: {e}", pin_path.display())))?;
    if count < usize::from(config.pin_threshold) {
        return Err(QuorumError::Corrupt(format!(
            "{} carries {count} of the {} approvals [replay] pin_threshold asks",
            pin_path.display(),
            config.pin_threshold
        )));
    }
    let path = dir.join(BUNDLE_FILE);
    let text = std::fs::read(&path).map_err(|e| QuorumError::io(&path, e))?;
    let bundle: PolicyBundle = serde_json::from_slice(&text)
        .map_err(|e| QuorumError::Corrupt(format!("{}: {e}", path.display())))?;
    if bundle.hash() != pin.hash {
        return Err(QuorumError::Corrupt(format!(
            "{} hashes to {}, the pin names {}",
            path.display(),
            bundle.hash(),
            pin.hash
        )));
    }
    Ok(Some(bundle))
}

/// The bundle `dir` enforces at `now`, compiled: a staged change whose delay has passed is
/// enforced first. `None` when nothing is pinned.
pub fn load_pinned(
    dir: &Path,
    identity: &IdentityPublic,
    config: &ReplayConfig,
    now: u64,
) -> Result<Option<Replayer>, QuorumError> {
    if let Some(p) = read_pending(dir)?
        && now >= p.active_from
    {
        let count = counted_approvals(p.bundle.hash(), &p.approvals, identity, config)?;
        if count < usize::from(config.pin_threshold) {
            return Err(QuorumError::Corrupt(format!(
                "the staged policy set {} carries {count} of the {} approvals it needs",
                p.bundle.hash(),
                config.pin_threshold
            )));
        }
        enforce(dir, &p.bundle, p.approvals)?;
    }
    match load_bundle(dir, identity, config)? {
        Some(bundle) => Replayer::new(bundle)
            .map(Some)
            .map_err(|e| QuorumError::Config(format!("{}: {e}", dir.join(BUNDLE_FILE).display()))),
        None => Ok(None),
    }
}

/// One signed intent in the ledger (the interchange format's line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerRecord {
    /// Format version, 1.
    pub v: u32,
    /// Idempotency key (for a tier-2 operation without a decision: `tier2:<digest>`).
    pub key: String,
    /// The policy that produced it (empty when unknown).
    pub policy: String,
    /// The intent, when the request carried one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<Intent>,
    /// Timestamp of the block the intent was decided at.
    pub timestamp: u64,
    /// The operation's digest signed.
    pub digest: B256,
    /// The operation's module nonce.
    pub module_nonce: U256,
    /// The operation's deadline.
    pub deadline: U256,
    /// 1 or 2.
    pub tier: u8,
    /// When the node signed (unix seconds).
    pub at: u64,
}

/// The signed-intent ledger: every idempotency key signed, durably, before the share leaves
/// (the signatures' records ride in the nonce ledger's lines, imported ones in `intents.jsonl`).
#[derive(Debug)]
pub struct IntentLedger {
    file: std::fs::File,
    by_key: BTreeMap<String, Vec<LedgerRecord>>,
}

impl IntentLedger {
    /// Opens (or creates) `D/intents.jsonl` and reads the records the nonce ledger in `D/nonces`
    /// carries; a malformed line is refused unless it is a torn last line.
    pub fn open(dir: &Path) -> Result<Self, QuorumError> {
        let path = dir.join(LEDGER_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(QuorumError::io(&path, e)),
        };
        // A last line without its newline was never synced whole, so never acknowledged: it is
        // cut off before appending (else the next record would be glued to it).
        let whole = match text.rfind('\n') {
            Some(i) => &text[..=i],
            None => "",
        };
        let records = parse_lines(whole, &path)?;
        if whole.len() != text.len() {
            let f =
                std::fs::OpenOptions::new().write(true).open(&path).map_err(|e| QuorumError::io(&path, e))?;
            f.set_len(whole.len() as u64)
                .and_then(|()| f.sync_all())
                .map_err(|e| QuorumError::io(&path, e))?;
        }
        let file = super::store::private_file(&path, false)?;
        let mut ledger = Self { file, by_key: BTreeMap::new() };
        let signed = super::nonces::signed_intents(&dir.join("nonces"))?;
        ledger.remember(&records);
        ledger.remember(&signed);
        Ok(ledger)
    }

    /// Adds `records`, already durable (in the nonce ledger's line of their signature), to
    /// what the ledger holds; a (key, digest) held already is not added twice.
    pub(crate) fn remember(&mut self, records: &[LedgerRecord]) {
        for r in records {
            let held = self.by_key.entry(r.key.clone()).or_default();
            if !held.iter().any(|o| o.digest == r.digest) {
                held.push(r.clone());
            }
        }
    }

    /// Appends `records` to `D/intents.jsonl` and syncs the file before returning.
    pub fn append(&mut self, records: &[LedgerRecord]) -> Result<(), String> {
        let mut bytes = Vec::new();
        for r in records {
            bytes.extend(serde_json::to_vec(r).map_err(|e| e.to_string())?);
            bytes.push(b'\n');
        }
        self.file
            .write_all(&bytes)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| format!("cannot record the signed intents: {e}"))?;
        self.remember(records);
        Ok(())
    }

    /// Records of `key`.
    pub fn records(&self, key: &str) -> &[LedgerRecord] {
        self.by_key.get(key).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Every record.
    pub fn all(&self) -> impl Iterator<Item = &LedgerRecord> {
        self.by_key.values().flatten()
    }

    /// Every record, in the interchange format.
    pub fn export(&self) -> String {
        let mut all: Vec<&LedgerRecord> = self.by_key.values().flatten().collect();
        all.sort_by_key(|r| (r.at, r.key.clone()));
        all.iter().map(|r| serde_json::to_string(r).expect("records serialise") + "\n").collect()
    }

    /// Appends the records of `text` (interchange format) whose (key, digest) is new; returns how many.
    pub fn import(&mut self, text: &str) -> Result<usize, QuorumError> {
        let records = parse_lines(text, Path::new("import"))?;
        let new: Vec<LedgerRecord> = records
            .into_iter()
            .filter(|r| !self.records(&r.key).iter().any(|o| o.digest == r.digest))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        self.append(&new).map_err(QuorumError::Corrupt)?;
        Ok(new.len())
    }
}

impl PartialOrd for LedgerRecord {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for LedgerRecord {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, &self.key, self.digest).cmp(&(other.at, &other.key, other.digest))
    }
}

fn parse_lines(text: &str, path: &Path) -> Result<Vec<LedgerRecord>, QuorumError> {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut out = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_str::<LedgerRecord>(line) {
            Ok(r) if r.v == 1 => out.push(r),
            Ok(r) => {
                return Err(QuorumError::Corrupt(format!(
                    "{} line {}: version {}",
                    path.display(),
                    i + 1,
                    r.v
                )));
            }
            Err(e) => return Err(QuorumError::Corrupt(format!("{} line {}: {e}", path.display(), i + 1))),
        }
    }
    Ok(out)
}

/// What the replay established for one request, checked again under the ledger lock.
#[derive(Debug, Default)]
pub struct Replayed {
    /// The intents to record, with the timestamp of their decision block.
    pub intents: Vec<(Intent, u64)>,
    /// Earlier digests found unable to execute any more (re-signing their keys is allowed).
    pub dead: BTreeSet<B256>,
    /// For a keeper job's perform: its exactly-once key.
    pub upkeep: Option<UpkeepSigned>,
}

/// A keeper job's perform a node signs: its ledger key, job and block time.
#[derive(Debug, Clone)]
pub struct UpkeepSigned {
    /// `keeper:JOB:block:HASH:PERFORM` or `keeper:JOB:log:HASH:INDEX:PERFORM`.
    pub key: String,
    /// The job.
    pub job: String,
    /// Timestamp of the check's block.
    pub timestamp: u64,
}

/// Checks again, under the ledger lock, that no key of `r` was signed meanwhile under another
/// digest that the replay did not find dead.
pub(crate) fn recheck(ledger: &IntentLedger, r: &Replayed, digest: B256) -> Result<(), Refusal> {
    let keys = r.intents.iter().map(|(i, _)| &i.key).chain(r.upkeep.iter().map(|u| &u.key));
    for key in keys {
        if let Some(other) =
            ledger.records(key).iter().find(|o| o.digest != digest && !r.dead.contains(&o.digest))
        {
            return Err(refuse(
                RefusalCode::AlreadySigned,
                format!("{key} was signed meanwhile in operation {}", other.digest),
            ));
        }
    }
    Ok(())
}

/// A refusal of a replay.
pub(crate) fn refuse(code: RefusalCode, reason: impl Into<String>) -> Refusal {
    Refusal::new(code, reason)
}

/// Runs the replay of `decision` for `op` through `provider`, and checks the node's ledger:
/// a key signed before under another digest passes only if that operation can no longer execute.
/// The history's chain reads and the headers of kept snapshots go out as one JSON-RPC batch,
/// while snapshots not kept are read; `cache` keeps what cannot change between requests
/// ([`ChainCache`]).
pub async fn check(
    replayer: &Replayer,
    provider: &DynProvider,
    cache: &ChainCache,
    decision: &Decision,
    op: &Operation,
    digest: B256,
    ledger: &std::sync::Mutex<IntentLedger>,
) -> Result<Replayed, Refusal> {
    replayer.check_decision(decision).map_err(replay_refusal)?;
    let earlier: Vec<LedgerRecord> = {
        let l = ledger.lock().expect("intent ledger lock");
        decision
            .intents
            .iter()
            .flat_map(|i| l.records(&i.key).to_vec())
            .filter(|r| r.digest != digest)
            .collect()
    };
    let mut dead = BTreeSet::new();
    for r in earlier {
        if dead.contains(&r.digest) {
            continue;
        }
        if !can_no_longer_execute(provider, replayer.bundle().module, &r).await? {
            return Err(refuse(
                RefusalCode::AlreadySigned,
                format!(
                    "intent {} was already signed in operation {} (module nonce {}), which executed or can still execute",
                    r.key, r.digest, r.module_nonce
                ),
            ));
        }
        dead.insert(r.digest);
    }
    let bundle = replayer.bundle();
    let mut blocks: Vec<PinnedBlock> = decision.firings.iter().map(|f| f.block).collect();
    blocks.push(decision.plan_block);
    blocks.sort_by_key(|b| (b.number, b.hash));
    blocks.dedup();
    let (kept, missing): (Vec<_>, Vec<_>) = blocks
        .into_iter()
        .map(|b| (b, cache.snapshot(b.hash, replayer.hash())))
        .partition(|(_, s)| s.is_some());
    let kept_numbers: Vec<u64> = kept.iter().map(|(b, _)| b.number).collect();
    let missing: Vec<PinnedBlock> = missing.into_iter().map(|(b, _)| b).collect();
    let (round, fresh) = futures::join!(
        super::history::read_chain(bundle, provider, cache, decision, &kept_numbers),
        fresh_snapshots(replayer, provider, cache, &missing)
    );
    let (reads, answers) = round?;
    let mut snapshots = fresh.map_err(replay_refusal)?;
    for (b, snapshot) in kept {
        // Kept from an earlier request: used once the block's number still has that hash.
        let actual = answers
            .header(b.number)
            .map_err(|message| replay_refusal(ReplayError::Header { number: b.number, message }))?
            .0;
        if actual != b.hash {
            return Err(replay_refusal(ReplayError::BlockHash { number: b.number, claimed: b.hash, actual }));
        }
        cache.saw_block((b.number, b.hash));
        snapshots.extend(snapshot.map(|s| (b.number, s)));
    }
    for b in &missing {
        // Read whole with its hash checked: on the chain before the next request's reads.
        cache.saw_block((b.number, b.hash));
    }
    let earliest = decision.firings.iter().map(|f| f.block.number).min();
    let earliest = earliest.and_then(|n| snapshots.get(&n)).map(|s| s.timestamp);
    let history =
        super::history::trusted_history(bundle, provider, cache, decision, digest, ledger, reads, earliest)
            .await?;
    let intents = replayer.replay_on(&snapshots, decision, op, &history).map_err(replay_refusal)?;
    Ok(Replayed { intents, dead, upkeep: None })
}

/// The snapshots of `blocks`, none kept from an earlier request: each read whole
/// ([`Replayer::snapshot_at`]), all at the same time, and kept (by block hash and pinned bundle).
async fn fresh_snapshots(
    replayer: &Replayer,
    provider: &DynProvider,
    cache: &ChainCache,
    blocks: &[PinnedBlock],
) -> Result<BTreeMap<u64, treasury_chain::Snapshot>, ReplayError> {
    let read = blocks.iter().map(|b| async move {
        let snapshot = replayer.snapshot_at(provider, *b).await?;
        cache.put_snapshot(b.hash, replayer.hash(), snapshot.clone());
        Ok(snapshot)
    });
    let snapshots = futures::future::try_join_all(read).await?;
    Ok(snapshots.into_iter().map(|s| (s.block_number, s)).collect())
}

/// A replay error as the refusal the coordinator sees.
fn replay_refusal(e: treasury_policies::replay::ReplayError) -> Refusal {
    let code = match e {
        treasury_policies::replay::ReplayError::PolicyHash { .. } => RefusalCode::PolicyMismatch,
        _ => RefusalCode::ReplayMismatch,
    };
    refuse(code, crate::error_chain(&e))
}

/// Whether the signed operation of `r` can never execute: its deadline passed, its module nonce
/// is used, and not by it.
pub(crate) async fn can_no_longer_execute(
    provider: &DynProvider,
    module: alloy::primitives::Address,
    r: &LedgerRecord,
) -> Result<bool, Refusal> {
    let rpc = |what: &str, e: String| {
        refuse(RefusalCode::ReplayMismatch, format!("{what} from this node's RPC: {e}"))
    };
    let head = provider
        .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
        .await
        .map_err(|e| rpc("latest block", e.to_string()))?
        .ok_or_else(|| rpc("latest block", "none".into()))?;
    if U256::from(head.header.timestamp) <= r.deadline {
        return Ok(false);
    }
    let nonce = ITreasuryModuleViews::new(module, provider)
        .nonce()
        .call()
        .await
        .map_err(|e| rpc("module nonce", e.to_string()))?;
    if nonce <= r.module_nonce {
        return Ok(false);
    }
    let filter = Filter::new()
        .address(module)
        .event_signature(TreasuryModule::Executed::SIGNATURE_HASH)
        .topic2(r.digest)
        .from_block(0);
    let logs = provider.get_logs(&filter).await.map_err(|e| rpc("Executed logs", e.to_string()))?;
    Ok(logs.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str, digest: u8, at: u64) -> LedgerRecord {
        LedgerRecord {
            v: 1,
            key: key.into(),
            policy: "grants".into(),
            intent: None,
            timestamp: at,
            digest: B256::repeat_byte(digest),
            module_nonce: U256::from(digest),
            deadline: U256::from(at + 600),
            tier: 1,
            at,
        }
    }

    /// A node moving hosts exports its ledger and imports it on the new host: every key signed
    /// there is known afterwards, a repeated import adds nothing, and a torn last line (a crash
    /// mid-append, never acknowledged) is dropped while a malformed earlier line is refused.
    #[test]
    fn the_ledger_survives_export_import_and_a_torn_last_line() {
        let old = tempfile::tempdir().unwrap();
        let mut ledger = IntentLedger::open(old.path()).unwrap();
        ledger.append(&[record("grants:a", 1, 10), record("grants:b", 2, 11)]).unwrap();
        let exported = ledger.export();

        let new = tempfile::tempdir().unwrap();
        let mut moved = IntentLedger::open(new.path()).unwrap();
        assert_eq!(moved.import(&exported).unwrap(), 2);
        assert_eq!(moved.import(&exported).unwrap(), 0, "a repeated import adds nothing");
        drop(moved);
        let reopened = IntentLedger::open(new.path()).unwrap();
        assert_eq!(reopened.records("grants:a")[0].digest, B256::repeat_byte(1));
        assert_eq!(reopened.records("grants:b").len(), 1);

        let path = new.path().join(LEDGER_FILE);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"v\":1,\"key\":\"grants:c\"");
        std::fs::write(&path, &text).unwrap();
        let mut after_crash = IntentLedger::open(new.path()).unwrap();
        assert!(after_crash.records("grants:c").is_empty());
        after_crash.append(&[record("grants:d", 4, 12)]).unwrap();
        drop(after_crash);
        assert_eq!(IntentLedger::open(new.path()).unwrap().records("grants:d").len(), 1);
        std::fs::write(&path, format!("garbage\n{}", ledger.export())).unwrap();
        assert!(IntentLedger::open(new.path()).is_err(), "a malformed line before the end is refused");
    }

    fn bundle(scripts: &[(&str, &str)]) -> PolicyBundle {
        let mut text = String::from(
            "[tokens.USDC]\naddress = \"0x00000000000000000000000000000000000000c1\"\ndecimals = 6\n\
             [addresses]\nalice = \"0x00000000000000000000000000000000000000a1\"\n",
        );
        for (name, _) in scripts {
            text += &format!(
                "[[policy]]\nname = \"{name}\"\nfile = \"{name}.rhai\"\ntrigger = {{ kind = \"manual\" }}\n"
            );
        }
        let policies: treasury_policies::PoliciesConfig = toml::from_str(&text).unwrap();
        let spec = treasury_chain::snapshot::SnapshotSpec {
            safe: alloy::primitives::Address::repeat_byte(0x5a),
            module: alloy::primitives::Address::repeat_byte(0x4d),
            multicall3: alloy::primitives::Address::repeat_byte(0x3c),
            assets: policies.asset_specs(),
        };
        let scripts = scripts.iter().map(|(n, s)| (n.to_string(), s.to_string())).collect();
        PolicyBundle::new(31337, &spec, None, policies, scripts)
    }

    fn enforced(dir: &Path, own: &IdentityKey, config: &ReplayConfig, now: u64) -> B256 {
        load_pinned(dir, &own.public(), config, now).unwrap().expect("a pinned set").hash()
    }

    /// Attack: one operator (or an agent host that feeds one operator a config) changes what a
    /// node signs. With `pin_threshold = 2`, its approval alone, or with a stranger's, pins
    /// nothing; with a second listed operator's it pins. A change that may widen (a script
    /// changed, a keeper job added) is staged and enforced only once the delay has passed; one that
    /// only narrows (a policy or a keeper job removed) is enforced at once.
    #[test]
    fn a_policy_change_needs_the_approvals_and_a_widening_one_waits_its_delay() {
        let dir = tempfile::tempdir().unwrap();
        let (own, other, stranger) =
            (IdentityKey::generate(), IdentityKey::generate(), IdentityKey::generate());
        let config = ReplayConfig {
            pin_approvers: vec![other.public().to_hex()],
            pin_threshold: 2,
            widening_delay_secs: 3600,
            ..Default::default()
        };
        let first =
            bundle(&[("grants", r#"pay("alice", "USDC", 1);"#), ("tithe", r#"pay("alice", "USDC", 2);"#)]);
        let err = pin_policy(dir.path(), &own, &config, &first, &[], 1000).unwrap_err();
        assert!(err.to_string().contains("1 of the 2 approvals"), "{err}");
        let err = pin_policy(dir.path(), &own, &config, &first, &[approve_policy(&stranger, &first)], 1000)
            .unwrap_err();
        assert!(err.to_string().contains("is not a policy approver"), "{err}");
        assert!(load_pinned(dir.path(), &own.public(), &config, 1000).unwrap().is_none(), "nothing pinned");

        let out =
            pin_policy(dir.path(), &own, &config, &first, &[approve_policy(&other, &first)], 1000).unwrap();
        assert_eq!((out.widening, out.active_from), (false, 1000), "a first pin is enforced at once");
        assert_eq!(enforced(dir.path(), &own, &config, 1000), first.hash());

        // widening: the grant raised a thousandfold
        let raised =
            bundle(&[("grants", r#"pay("alice", "USDC", 1000);"#), ("tithe", r#"pay("alice", "USDC", 2);"#)]);
        let out =
            pin_policy(dir.path(), &own, &config, &raised, &[approve_policy(&other, &raised)], 2000).unwrap();
        assert_eq!((out.widening, out.active_from), (true, 5600));
        let staged = staged_pin(dir.path()).unwrap().unwrap();
        assert_eq!((staged.policy_hash, staged.active_from), (raised.hash(), 5600), "visible while staged");
        assert_eq!(
            enforced(dir.path(), &own, &config, 5599),
            first.hash(),
            "the old set until the delay ends"
        );
        assert_eq!(enforced(dir.path(), &own, &config, 5600), raised.hash(), "the new one after");
        assert!(staged_pin(dir.path()).unwrap().is_none());

        // narrowing: the tithe removed
        let fewer = bundle(&[("grants", r#"pay("alice", "USDC", 1000);"#)]);
        let out =
            pin_policy(dir.path(), &own, &config, &fewer, &[approve_policy(&other, &fewer)], 6000).unwrap();
        assert!(!out.widening);
        assert_eq!(enforced(dir.path(), &own, &config, 6000), fewer.hash(), "a narrowing change at once");

        // a keeper job performed through the module widens what the nodes sign; dropping it narrows
        let job = treasury_policies::upkeep::PinnedJob {
            name: "counter".into(),
            job: treasury_policies::upkeep::JobKind::ChainlinkUpkeep {
                target: alloy::primitives::Address::repeat_byte(0xc0),
                check_data: Default::default(),
            },
            log: None,
            trigger: treasury_policies::Trigger::EveryBlocks { blocks: 1 },
        };
        let with_job = fewer.clone().with_keeper_jobs(vec![job]);
        let out =
            pin_policy(dir.path(), &own, &config, &with_job, &[approve_policy(&other, &with_job)], 7000)
                .unwrap();
        assert!(out.widening, "a new keeper job waits out the delay");
        assert_eq!(enforced(dir.path(), &own, &config, 7000), fewer.hash());
        assert_eq!(enforced(dir.path(), &own, &config, 10_600), with_job.hash());
        let out =
            pin_policy(dir.path(), &own, &config, &fewer, &[approve_policy(&other, &fewer)], 11_000).unwrap();
        assert!(!out.widening, "removing a keeper job narrows");

        // a pin file whose approvals fall short of the threshold (e.g. edited by hand) stops the node
        let pin = dir.path().join(PIN_FILE);
        let mut signed: SignedPin = serde_json::from_slice(&std::fs::read(&pin).unwrap()).unwrap();
        signed.approvals.retain(|a| a.signer == own.public().to_hex());
        std::fs::write(&pin, serde_json::to_vec(&signed).unwrap()).unwrap();
        let err = load_pinned(dir.path(), &own.public(), &config, 6000).unwrap_err();
        assert!(err.to_string().contains("1 of the 2 approvals"), "{err}");
    }
}
