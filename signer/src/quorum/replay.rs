//! Replay at the node: the pinned policy set, the signed-intent ledger, and the check that a
//! tier-1 operation is what the pinned policies produce at the pinned blocks, read through the
//! node's own RPC endpoint.
//!
//! ```text
//! D/policy.json    the pinned PolicyBundle (policies section, scripts, Safe, module, venue)
//! D/policy.pin     its hash, signed by the node's identity key (`treasury signer pin-policy`)
//! D/intents.jsonl  the signed-intent ledger (one JSON line per intent signed, fsync'd)
//! ```
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
use treasury_policies::replay::{Decision, PolicyBundle, Replayer};

use super::error::{QuorumError, Refusal, RefusalCode};
use super::identity::{IdentityKey, IdentityPublic};

const BUNDLE_FILE: &str = "policy.json";
const PIN_FILE: &str = "policy.pin";
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayConfig {
    /// `required` or `off`.
    #[serde(default)]
    pub mode: ReplayMode,
    /// The node's own JSON-RPC endpoint (HTTP), never the agent's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpc: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct SignedPin {
    hash: B256,
    signature: String,
}

fn pin_message(hash: &B256) -> [u8; 32] {
    super::identity::hash_parts(&[PIN_DOMAIN, hash.as_slice()])
}

/// Pins `bundle` in the node directory `dir`: writes it and its hash signed with the node's
/// identity key (the operator's act: it needs the passphrase). Returns the hash.
pub fn pin_policy(dir: &Path, identity: &IdentityKey, bundle: &PolicyBundle) -> Result<B256, QuorumError> {
    Replayer::new(bundle.clone()).map_err(|e| QuorumError::Config(format!("policy bundle: {e}")))?;
    let text = serde_json::to_vec_pretty(bundle).map_err(|e| QuorumError::Corrupt(e.to_string()))?;
    super::store::write_durable(&dir.join(BUNDLE_FILE), &text)?;
    let hash = bundle.hash();
    let signature = hex::encode(identity.sign(&pin_message(&hash)));
    let pin = serde_json::to_vec_pretty(&SignedPin { hash, signature })
        .map_err(|e| QuorumError::Corrupt(e.to_string()))?;
    super::store::write_durable(&dir.join(PIN_FILE), &pin)?;
    Ok(hash)
}

/// The pinned bundle of `dir`, compiled, after checking it hashes to the pin the node signed;
/// `None` when nothing is pinned.
pub fn load_pinned(dir: &Path, identity: &IdentityPublic) -> Result<Option<Replayer>, QuorumError> {
    let pin_path = dir.join(PIN_FILE);
    let pin = match std::fs::read(&pin_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(QuorumError::io(&pin_path, e)),
    };
    let pin: SignedPin = serde_json::from_slice(&pin)
        .map_err(|e| QuorumError::Corrupt(format!("{}: {e}", pin_path.display())))?;
    let sig = hex::decode(&pin.signature).map_err(|e| QuorumError::Corrupt(format!("policy pin: {e}")))?;
    if !identity.verify(&pin_message(&pin.hash), &sig) {
        return Err(QuorumError::Corrupt(format!(
            "{} is not signed by this node's identity key",
            pin_path.display()
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
    Replayer::new(bundle).map(Some).map_err(|e| QuorumError::Config(format!("{}: {e}", path.display())))
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

/// The signed-intent ledger: every idempotency key signed, durably, before the share leaves.
#[derive(Debug)]
pub struct IntentLedger {
    file: std::fs::File,
    by_key: BTreeMap<String, Vec<LedgerRecord>>,
}

impl IntentLedger {
    /// Opens (or creates) `D/intents.jsonl`; a malformed line is refused unless it is a torn last line.
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
        for r in records {
            ledger.by_key.entry(r.key.clone()).or_default().push(r);
        }
        Ok(ledger)
    }

    /// Appends `records` and syncs the file before returning.
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
        for r in records {
            self.by_key.entry(r.key.clone()).or_default().push(r.clone());
        }
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
}

/// Checks again, under the ledger lock, that no key of `r` was signed meanwhile under another
/// digest that the replay did not find dead.
pub(crate) fn recheck(ledger: &IntentLedger, r: &Replayed, digest: B256) -> Result<(), Refusal> {
    for (intent, _) in &r.intents {
        if let Some(other) =
            ledger.records(&intent.key).iter().find(|o| o.digest != digest && !r.dead.contains(&o.digest))
        {
            return Err(refuse(
                RefusalCode::AlreadySigned,
                format!("intent {} was signed meanwhile in operation {}", intent.key, other.digest),
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
pub async fn check(
    replayer: &Replayer,
    provider: &DynProvider,
    decision: &Decision,
    op: &Operation,
    digest: B256,
    ledger: &std::sync::Mutex<IntentLedger>,
) -> Result<Replayed, Refusal> {
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
    let history =
        super::history::trusted_history(replayer.bundle(), provider, decision, digest, ledger).await?;
    let intents = replayer.replay(provider, decision, op, &history).await.map_err(|e| {
        let code = match e {
            treasury_policies::replay::ReplayError::PolicyHash { .. } => RefusalCode::PolicyMismatch,
            _ => RefusalCode::ReplayMismatch,
        };
        refuse(code, crate::error_chain(&e))
    })?;
    Ok(Replayed { intents, dead })
}

/// Whether the signed operation of `r` can never execute: its deadline passed, its module nonce
/// is used, and not by it.
async fn can_no_longer_execute(
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
}
