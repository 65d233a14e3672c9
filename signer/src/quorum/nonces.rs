//! Pre-generated signing nonces (FROST round 1), sealed at rest, and the durable ledger of used ones.
//!
//! ```text
//! nonces/batch-<n>.enc   a sealed batch of (commitment id, SigningNonces), written + fsynced
//!                        before its commitments are handed to the coordinator
//! nonces/ledger.jsonl    one line per consumed nonce (signed or discarded), fdatasynced
//!                        before the signature share leaves the node; a signed line also
//!                        carries the signed-intent ledger's records of that signature
//!                        (`intents`), so one write and one sync make both durable
//! ```
//! On open, the directory is locked and every batch on disk is discarded durably: only nonces made
//! by this process are ever handed out, so a restart, a restored backup or a cloned directory
//! revives no nonce (the coordinator fetches fresh commitments).
use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use frost_secp256k1::keys::SigningShare;
use frost_secp256k1::round1::{SigningCommitments, SigningNonces};
use rand_core::OsRng;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::error::{QuorumError, Refusal, RefusalCode};
use super::identity::{hash_parts, open, seal};
use super::store::{StoreKey, sync_dir, write_durable};

/// Most unused nonces a node keeps; older ones are discarded (durably) beyond this.
pub const MAX_UNUSED: usize = 20_000;
const BATCH_AAD: &[u8] = b"treasury-signer-nonce-batch-v1";

/// The id of a commitment: SHA-256 of its serialization, as hex.
pub fn commitment_id(c: &SigningCommitments) -> Result<String, QuorumError> {
    Ok(hex::encode(hash_parts(&[&c.serialize().map_err(QuorumError::frost)?])))
}

/// One ledger line: a nonce consumed, and what it signed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// The commitment id consumed.
    pub commitment: String,
    /// `signed` or `discarded`.
    pub kind: String,
    /// Digest signed (hex), for `signed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Tier and outflows as JSON (for rebuilding budgets after restart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
    /// Unix time.
    pub at: u64,
    /// The signed-intent ledger's records of this signature ([`super::replay::IntentLedger`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub intents: Vec<super::replay::LedgerRecord>,
}

#[derive(Serialize, Deserialize)]
struct BatchEntry {
    id: String,
    nonces: String,
}

/// The node's nonce store.
///
/// # Security
/// RFC 9591 §5.1: SigningNonces MUST NOT be used twice. [`NonceStore::take`] hands a nonce out by
/// value exactly once, and the caller MUST call [`NonceStore::mark_used`] (which fsyncs) before
/// the signature share made with it leaves the node.
pub struct NonceStore {
    dir: PathBuf,
    key: StoreKey,
    live: HashMap<String, (u64, SigningNonces)>,
    order: std::collections::VecDeque<String>,
    batch_left: HashMap<u64, usize>,
    used: HashSet<String>,
    next_batch: u64,
    ledger: File,
    _lock: File,
}

impl std::fmt::Debug for NonceStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NonceStore")
            .field("unused", &self.live.len())
            .field("used", &self.used.len())
            .finish()
    }
}

impl NonceStore {
    /// Opens (or creates) the store under `dir`, replaying the ledger.
    ///
    /// # Security
    /// Locks the directory (a second process on it is refused) and durably discards every nonce
    /// made before this start: a restored backup, a rolled-back VM disk or a cloned directory
    /// holds no nonce this node may hand out again. Refuses a ledger with a malformed line other
    /// than a torn last one (which it truncates: a crash mid-append released no share).
    pub fn open(dir: &Path, key: StoreKey) -> Result<(Self, Vec<LedgerEntry>), QuorumError> {
        super::store::private_dir(dir)?;
        let lock = lock_dir(dir)?;
        let ledger_path = dir.join("ledger.jsonl");
        let entries = read_ledger(&ledger_path)?;
        let mut used: HashSet<String> = entries.iter().map(|e| e.commitment.clone()).collect();
        let mut next_batch = 0;
        for (n, path) in batch_files(dir)? {
            next_batch = next_batch.max(n + 1);
            used.extend(batch_ids(&path, &key)?);
            std::fs::remove_file(&path).map_err(|e| QuorumError::io(&path, e))?;
        }
        sync_dir(dir)?;
        let ledger = super::store::private_file(&ledger_path, false)?;
        sync_dir(dir)?;
        let store = Self {
            dir: dir.to_path_buf(),
            key,
            live: HashMap::new(),
            order: std::collections::VecDeque::new(),
            batch_left: HashMap::new(),
            used,
            next_batch,
            ledger,
            _lock: lock,
        };
        Ok((store, entries))
    }

    /// Number of unused nonces.
    pub fn unused(&self) -> usize {
        self.live.len()
    }

    /// Generates `count` nonces for `share`, seals them durably, and returns their public commitments.
    ///
    /// # Security
    /// The batch MUST be durable before the commitments are handed out, so that a restart cannot
    /// lose a nonce the coordinator may name. Nonces come from the OS RNG (RFC 9591 §4.1 `nonce_generate`).
    pub fn generate(
        &mut self,
        count: usize,
        share: &SigningShare,
    ) -> Result<Vec<(String, SigningCommitments)>, QuorumError> {
        let batch = self.next_batch;
        self.next_batch += 1;
        let mut out = Vec::with_capacity(count);
        let mut file_entries = Vec::with_capacity(count);
        let mut fresh = Vec::with_capacity(count);
        for _ in 0..count {
            let (nonces, commitments) = frost_secp256k1::round1::commit(share, &mut OsRng);
            let id = commitment_id(&commitments)?;
            let bytes = Zeroizing::new(nonces.serialize().map_err(QuorumError::frost)?);
            file_entries.push(BatchEntry { id: id.clone(), nonces: hex::encode(&*bytes) });
            out.push((id.clone(), commitments));
            fresh.push((id, nonces));
        }
        let plain = Zeroizing::new(
            serde_json::to_vec(&file_entries).map_err(|e| QuorumError::Corrupt(e.to_string()))?,
        );
        for e in &mut file_entries {
            zeroize::Zeroize::zeroize(&mut e.nonces);
        }
        write_durable(
            &self.dir.join(format!("batch-{batch}.enc")),
            &seal(self.key.bytes(), BATCH_AAD, &plain),
        )?;
        self.batch_left.insert(batch, count);
        for (id, nonces) in fresh {
            self.order.push_back(id.clone());
            self.live.insert(id, (batch, nonces));
        }
        while self.live.len() > MAX_UNUSED {
            let Some(old) = self.order.pop_front() else { break };
            if self.live.contains_key(&old) {
                let n = self.take(&old).map_err(|r| QuorumError::Corrupt(r.reason))?;
                drop(n);
                self.mark_used(&LedgerEntry {
                    commitment: old,
                    kind: "discarded".into(),
                    digest: None,
                    detail: None,
                    at: now(),
                    intents: Vec::new(),
                })?;
            }
        }
        Ok(out)
    }

    /// Removes the nonce for commitment `id` and hands it out by value, exactly once.
    ///
    /// Refuses an id it never issued (unknown, or another node's) and an id already used.
    pub fn take(&mut self, id: &str) -> Result<SigningNonces, Refusal> {
        match self.live.remove(id) {
            Some((batch, nonces)) => {
                self.used.insert(id.to_string());
                if let Some(left) = self.batch_left.get_mut(&batch) {
                    *left -= 1;
                    if *left == 0 {
                        self.batch_left.remove(&batch);
                        // Every nonce of this batch is consumed; its ledger lines keep it dead even
                        // if this unlink is lost in a crash.
                        let _ = std::fs::remove_file(self.dir.join(format!("batch-{batch}.enc")));
                    }
                }
                Ok(nonces)
            }
            None if self.used.contains(id) => Err(Refusal::new(
                RefusalCode::UsedCommitment,
                format!(
                    "commitment {id} was already used or made before this node's last start; a nonce is never used twice"
                ),
            )),
            None => Err(Refusal::new(
                RefusalCode::UnknownCommitment,
                format!("commitment {id} was not issued by this node"),
            )),
        }
    }

    /// Appends `entry` to the ledger and fsyncs it.
    ///
    /// # Security
    /// MUST return before the signature share made with the nonce leaves the node.
    pub fn mark_used(&mut self, entry: &LedgerEntry) -> Result<(), QuorumError> {
        let mut line = serde_json::to_vec(entry).map_err(|e| QuorumError::Corrupt(e.to_string()))?;
        line.push(b'\n');
        let path = self.dir.join("ledger.jsonl");
        self.ledger.write_all(&line).map_err(|e| QuorumError::io(&path, e))?;
        self.ledger.sync_data().map_err(|e| QuorumError::io(&path, e))
    }

    /// A handle to append to the ledger outside the store's lock.
    pub fn ledger_handle(&self) -> Result<File, QuorumError> {
        self.ledger.try_clone().map_err(|e| QuorumError::io(&self.dir, e))
    }
}

/// Takes an exclusive lock on `dir` (held while the returned file is open).
fn lock_dir(dir: &Path) -> Result<File, QuorumError> {
    let path = dir.join("lock");
    let f = super::store::private_file(&path, false)?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(QuorumError::Config(format!("{} is in use by another signer process", dir.display())))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(QuorumError::io(&path, e)),
    }
}

/// Reads the ledger; a malformed line is refused unless it is a torn last line, which is cut off.
fn read_ledger(path: &Path) -> Result<Vec<LedgerEntry>, QuorumError> {
    let (entries, whole) = parse_ledger(path)?;
    if let Some(whole) = whole {
        // A torn last line (a crash mid-append, before the fsync returned): its share never
        // left. Cut it off so that the next append starts on a line of its own.
        let f = OpenOptions::new().write(true).open(path).map_err(|e| QuorumError::io(path, e))?;
        f.set_len(whole).and_then(|()| f.sync_all()).map_err(|e| QuorumError::io(path, e))?;
        tracing::warn!(path = %path.display(), "cut off a torn last ledger line");
    }
    Ok(entries)
}

/// The ledger's entries, without a torn last line, and the length of its whole lines when it
/// has one; a malformed line before the end is refused.
fn parse_ledger(path: &Path) -> Result<(Vec<LedgerEntry>, Option<u64>), QuorumError> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), None)),
        Err(e) => return Err(QuorumError::io(path, e)),
    };
    let mut entries = Vec::new();
    let mut start = 0;
    for (i, line) in text.split_inclusive(|b| *b == b'\n').enumerate() {
        if !line.ends_with(b"\n") {
            return Ok((entries, Some(start as u64)));
        }
        start += line.len();
        if line.trim_ascii().is_empty() {
            continue;
        }
        let entry = serde_json::from_slice::<LedgerEntry>(line).map_err(|e| {
            QuorumError::Corrupt(format!(
                "{} line {}: {e}; refusing to guess which nonces it consumed",
                path.display(),
                i + 1
            ))
        })?;
        entries.push(entry);
    }
    Ok((entries, None))
}

/// The signed-intent records carried by the nonce ledger in the nonce directory `dir` (read
/// only: a torn last line is skipped, not cut off, so a running node's ledger can be read).
pub(crate) fn signed_intents(dir: &Path) -> Result<Vec<super::replay::LedgerRecord>, QuorumError> {
    let (entries, _) = parse_ledger(&dir.join("ledger.jsonl"))?;
    Ok(entries.into_iter().flat_map(|e| e.intents).collect())
}

/// The sealed nonce batches in `dir`, by number.
fn batch_files(dir: &Path) -> Result<Vec<(u64, PathBuf)>, QuorumError> {
    let mut batches = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| QuorumError::io(dir, e))? {
        let e = e.map_err(|e| QuorumError::io(dir, e))?;
        let name = e.file_name().to_string_lossy().to_string();
        if let Some(n) = name.strip_prefix("batch-").and_then(|s| s.strip_suffix(".enc"))
            && let Ok(n) = n.parse::<u64>()
        {
            batches.push((n, e.path()));
        }
    }
    batches.sort();
    Ok(batches)
}

/// The commitment ids of a sealed batch (its nonces are not decoded).
fn batch_ids(path: &Path, key: &StoreKey) -> Result<Vec<String>, QuorumError> {
    let sealed = std::fs::read(path).map_err(|e| QuorumError::io(path, e))?;
    let plain = Zeroizing::new(open(key.bytes(), BATCH_AAD, &sealed).ok_or_else(|| {
        QuorumError::Corrupt(format!("{} does not open with the store key", path.display()))
    })?);
    let list: Vec<BatchEntry> =
        serde_json::from_slice(&plain).map_err(|e| QuorumError::Corrupt(format!("nonce batch: {e}")))?;
    Ok(list
        .into_iter()
        .map(|mut b| {
            zeroize::Zeroize::zeroize(&mut b.nonces);
            b.id.clone()
        })
        .collect())
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share() -> SigningShare {
        let (shares, _) = frost_secp256k1::keys::generate_with_dealer(
            3,
            2,
            frost_secp256k1::keys::IdentifierList::Default,
            OsRng,
        )
        .unwrap();
        *shares.into_values().next().unwrap().signing_share()
    }

    fn key() -> StoreKey {
        StoreKey::for_tests([5u8; 32])
    }

    #[test]
    fn restart_revives_no_nonce_used_or_unused() {
        let dir = tempfile::tempdir().unwrap();
        let s = share();
        let (mut store, _) = NonceStore::open(dir.path(), key()).unwrap();
        let issued = store.generate(4, &s).unwrap();
        let used_id = issued[0].0.clone();
        store.take(&used_id).unwrap();
        mark(&mut store, &used_id);
        drop(store);
        let (mut store, ledger) = NonceStore::open(dir.path(), key()).unwrap();
        assert_eq!(ledger.len(), 1);
        assert_eq!(store.unused(), 0);
        assert_eq!(store.take("00").unwrap_err().code, RefusalCode::UnknownCommitment);
        for (id, _) in &issued {
            assert_eq!(store.take(id).unwrap_err().code, RefusalCode::UsedCommitment);
        }
    }

    #[test]
    fn batches_are_sealed_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = NonceStore::open(dir.path(), key()).unwrap();
        store.generate(2, &share()).unwrap();
        drop(store);
        assert!(NonceStore::open(dir.path(), StoreKey::for_tests([6u8; 32])).is_err());
    }

    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }

    fn mark(store: &mut NonceStore, id: &str) {
        store
            .mark_used(&LedgerEntry {
                commitment: id.to_string(),
                kind: "signed".into(),
                digest: None,
                detail: None,
                at: 0,
                intents: Vec::new(),
            })
            .unwrap();
    }

    /// Attack (issue 13 item 3): a backup (or VM snapshot, or cloned directory) taken while a nonce
    /// was unused is restored after the nonce signed; the restored node must not sign with it again.
    #[test]
    fn a_restored_backup_revives_no_nonce() {
        let dir = tempfile::tempdir().unwrap();
        let backup = tempfile::tempdir().unwrap();
        let s = share();
        let (mut store, _) = NonceStore::open(dir.path(), key()).unwrap();
        let issued = store.generate(2, &s).unwrap();
        copy_dir(dir.path(), backup.path());
        store.take(&issued[0].0).unwrap();
        mark(&mut store, &issued[0].0);
        drop(store);
        let (mut restored, _) = NonceStore::open(backup.path(), key()).unwrap();
        for (id, _) in &issued {
            let err = restored.take(id).expect_err("a nonce made before this start is never handed out");
            assert_eq!(err.code, RefusalCode::UsedCommitment, "{}", err.reason);
        }
        // nothing of the old batch is left on disk to revive at a later start
        drop(restored);
        let (mut again, _) = NonceStore::open(backup.path(), key()).unwrap();
        assert_eq!(again.unused(), 0);
        assert!(again.take(&issued[1].0).is_err());
        let fresh = again.generate(1, &s).unwrap();
        again.take(&fresh[0].0).expect("nonces made after this start sign");
    }

    /// Attack (issue 13 item 3): two node processes started on one directory would hand out the
    /// same nonces; the second open is refused.
    #[test]
    fn a_second_open_of_the_same_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (first, _) = NonceStore::open(dir.path(), key()).unwrap();
        let err = NonceStore::open(dir.path(), key()).expect_err("the directory is in use");
        assert!(err.to_string().contains("in use"), "{err}");
        drop(first);
        NonceStore::open(dir.path(), key()).expect("free again once the first store is closed");
    }

    /// Attack (issue 13 item 3): a ledger line that cannot be parsed in the middle of the ledger
    /// (tampering, corruption) must not silently revive the nonce it named; only a torn last line
    /// (a crash mid-append, before any share left) is tolerated.
    #[test]
    fn a_malformed_ledger_line_that_is_not_the_last_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = NonceStore::open(dir.path(), key()).unwrap();
        drop(store);
        let ledger = dir.path().join("ledger.jsonl");
        let good = r#"{"commitment":"aa","kind":"signed","at":1}"#;
        std::fs::write(&ledger, format!("{good}\n{{\"commitment\":\"bb\",\"ki\n{good}\n")).unwrap();
        let err = NonceStore::open(dir.path(), key()).expect_err("a corrupt ledger is refused");
        assert!(err.to_string().contains("ledger.jsonl line 2"), "{err}");
        std::fs::write(&ledger, format!("{good}\n{{\"commitment\":\"bb\",\"ki")).unwrap();
        let (_, entries) = NonceStore::open(dir.path(), key()).expect("a torn last line is tolerated");
        assert_eq!(entries.len(), 1);
    }
}
