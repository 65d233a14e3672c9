//! A signer node's directory: its configuration, and its secrets encrypted at rest.
//!
//! ```text
//! D/node.toml      configuration (coordinator keys, guard) — public, operator-edited
//! D/identity.pub   the node's public identity key and fingerprint — public
//! D/secrets.enc    identity key + key share, sealed with a key derived from the passphrase
//! D/nonces/        pre-generated signing nonces (sealed) and the ledger of used ones
//! D/refusals.jsonl every refusal, with its reason
//! ```
//! The passphrase comes from `TREASURY_SIGNER_PASSPHRASE`, or from the file named by
//! `TREASURY_SIGNER_PASSPHRASE_FILE` (a key file).
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use argon2::{Algorithm, Argon2, Params, Version};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::error::QuorumError;
use super::guard::GuardConfig;
use super::identity::{IdentityKey, open, seal};

/// Environment variable holding a signer node's passphrase.
pub const PASSPHRASE_ENV: &str = "TREASURY_SIGNER_PASSPHRASE";
/// Environment variable holding the coordinator key's passphrase.
pub const COORDINATOR_PASSPHRASE_ENV: &str = "TREASURY_COORDINATOR_PASSPHRASE";

const SECRETS_FILE: &str = "secrets.enc";
const CONFIG_FILE: &str = "node.toml";
const PUBLIC_FILE: &str = "identity.pub";
const ROSTER_PIN_FILE: &str = "roster.pin";
const ROSTER_PIN_DOMAIN: &[u8] = b"treasury-signer-roster-pin-v1";

/// The quorum a node's operator agreed to take part in: (t, n) and every member's fingerprint
/// (this node's included), pinned out of band with `treasury signer pin`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosterPin {
    /// Threshold t.
    pub threshold: u16,
    /// Fingerprints of all n members, sorted.
    pub fingerprints: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct SignedRosterPin {
    pin: RosterPin,
    /// The node's identity signature over the pin, hex.
    signature: String,
}

fn pin_message(pin: &RosterPin) -> Result<[u8; 32], QuorumError> {
    let body = serde_json::to_vec(pin).map_err(|e| QuorumError::Corrupt(e.to_string()))?;
    Ok(super::identity::hash_parts(&[ROSTER_PIN_DOMAIN, &body]))
}

/// Pins the roster of the node in `dir`: threshold `t` and the fingerprints of its `peers`
/// (this node's own is added), signed with the node's identity key (so it needs the passphrase).
pub fn pin_roster(
    dir: &Path,
    pass: &Passphrase,
    threshold: u16,
    peers: &[String],
) -> Result<RosterPin, QuorumError> {
    let store = NodeStore::open(dir, pass)?;
    let identity = store.secrets.identity()?;
    let mut fingerprints = vec![identity.public().fingerprint()];
    for p in peers {
        let p = p.to_ascii_lowercase();
        if p.len() != 32 || hex::decode(&p).is_err() {
            return Err(QuorumError::Config(format!("peer fingerprint {p}: expected 32 hex digits")));
        }
        fingerprints.push(p);
    }
    fingerprints.sort();
    fingerprints.dedup();
    let n = fingerprints.len();
    if threshold < 2 || usize::from(threshold) > n {
        return Err(QuorumError::Config(format!("threshold {threshold} does not fit {n} distinct members")));
    }
    let pin = RosterPin { threshold, fingerprints };
    let signature = hex::encode(identity.sign(&pin_message(&pin)?));
    let text = serde_json::to_vec_pretty(&SignedRosterPin { pin: pin.clone(), signature })
        .map_err(|e| QuorumError::Corrupt(e.to_string()))?;
    write_durable(&dir.join(ROSTER_PIN_FILE), &text)?;
    Ok(pin)
}

/// The roster pinned in `dir`, checked against the node's own identity signature; `None` when
/// no roster was pinned.
pub fn read_roster_pin(
    dir: &Path,
    identity: &super::identity::IdentityPublic,
) -> Result<Option<RosterPin>, QuorumError> {
    let path = dir.join(ROSTER_PIN_FILE);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(QuorumError::io(&path, e)),
    };
    let signed: SignedRosterPin = serde_json::from_slice(&text)
        .map_err(|e| QuorumError::Corrupt(format!("{}: {e}", path.display())))?;
    let sig =
        hex::decode(&signed.signature).map_err(|e| QuorumError::Corrupt(format!("pin signature: {e}")))?;
    if !identity.verify(&pin_message(&signed.pin)?, &sig) {
        return Err(QuorumError::Corrupt(format!(
            "{} is not signed by this node's identity key",
            path.display()
        )));
    }
    Ok(Some(signed.pin))
}
const STORE_AAD: &[u8] = b"treasury-signer-store-v1";

/// A passphrase read from the environment.
///
/// # Security
/// MUST NOT be logged; `Debug` hides it and it zeroizes on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct Passphrase(Vec<u8>);

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase(..)")
    }
}

impl Passphrase {
    /// A passphrase from bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }

    /// Refuses a passphrase too weak to protect a stolen disk: shorter than
    /// [`MIN_PASSPHRASE_CHARS`] characters, one character repeated, or a common password.
    pub fn check_strength(&self) -> Result<(), QuorumError> {
        let text = String::from_utf8_lossy(&self.0);
        let chars = text.chars().count();
        if chars < MIN_PASSPHRASE_CHARS {
            return Err(QuorumError::WeakPassphrase(format!(
                "{chars} characters; at least {MIN_PASSPHRASE_CHARS} are needed"
            )));
        }
        let mut distinct: Vec<char> = text.chars().collect();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() < 4 {
            return Err(QuorumError::WeakPassphrase("fewer than four different characters".into()));
        }
        // Compared without case, spaces or punctuation, and without digits tacked on either end.
        let plain: Zeroizing<String> = Zeroizing::new(
            text.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect(),
        );
        let digit = |c: char| c.is_ascii_digit();
        let forms = [plain.as_str(), plain.trim_end_matches(digit), plain.trim_start_matches(digit)];
        if COMMON_PASSWORDS.lines().any(|w| forms.contains(&w)) {
            return Err(QuorumError::WeakPassphrase("it is a common password".into()));
        }
        Ok(())
    }

    /// Reads `var`, or the key file named by `{var}_FILE`.
    pub fn from_env(var: &'static str) -> Result<Self, QuorumError> {
        if let Some(v) = std::env::var_os(var) {
            return Ok(Self(v.into_encoded_bytes()));
        }
        if let Some(path) = std::env::var_os(format!("{var}_FILE")) {
            let path = PathBuf::from(path);
            let mut bytes = std::fs::read(&path).map_err(|e| QuorumError::io(&path, e))?;
            while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                bytes.pop();
            }
            return Ok(Self(bytes));
        }
        Err(QuorumError::NoPassphrase { var })
    }
}

/// Fewest characters a new passphrase may have.
pub const MIN_PASSPHRASE_CHARS: usize = 12;

/// Common passwords (lower case), refused inside any new passphrase.
const COMMON_PASSWORDS: &str = include_str!("common-passwords.txt");

/// Argon2id memory of new files, KiB (64 MiB).
const KDF_M_COST: u32 = 64 * 1024;
/// Argon2id passes of new files.
const KDF_T_COST: u32 = 3;
/// Bounds a sealed file's KDF parameters must lie within (memory in KiB: 8 MiB to 1 GiB, the
/// lower end for the cheap parameters of tests and benches only); checked before any work.
const KDF_M_BOUNDS: (u32, u32) = (8 * 1024, 1024 * 1024);
const KDF_T_BOUNDS: (u32, u32) = (1, 10);
const KDF_P_BOUNDS: (u32, u32) = (1, 8);

/// Key-derivation parameters stored beside the ciphertext.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct KdfParams {
    salt: String,
    m_cost: u32,
    t_cost: u32,
    p_cost: u32,
}

#[derive(Serialize, Deserialize)]
struct SealedFile {
    version: u32,
    kdf: KdfParams,
    sealed: String,
}

/// A symmetric key derived from the passphrase (Argon2id), used to seal the store and nonces.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct StoreKey([u8; 32]);

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreKey(..)")
    }
}

impl StoreKey {
    /// The raw key bytes.
    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

fn derive(pass: &Passphrase, kdf: &KdfParams) -> Result<StoreKey, QuorumError> {
    for (name, v, (lo, hi)) in [
        ("m_cost", kdf.m_cost, KDF_M_BOUNDS),
        ("t_cost", kdf.t_cost, KDF_T_BOUNDS),
        ("p_cost", kdf.p_cost, KDF_P_BOUNDS),
    ] {
        if !(lo..=hi).contains(&v) {
            return Err(QuorumError::Corrupt(format!("kdf {name} {v} is outside {lo}..={hi}")));
        }
    }
    let salt = hex::decode(&kdf.salt).map_err(|e| QuorumError::Corrupt(format!("salt: {e}")))?;
    let params = Params::new(kdf.m_cost, kdf.t_cost, kdf.p_cost, Some(32))
        .map_err(|e| QuorumError::Corrupt(format!("kdf params: {e}")))?;
    let mut out = [0u8; 32];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(&pass.0, &salt, &mut out)
        .map_err(|e| QuorumError::Corrupt(format!("kdf: {e}")))?;
    Ok(StoreKey(out))
}

/// The secrets a node keeps: identity key and (after DKG) its FROST key package.
///
/// # Security
/// Sealed at rest with ChaCha20-Poly1305 under an Argon2id key from the passphrase; MUST NOT be
/// logged (`Debug` prints no secret) and zeroizes on drop.
#[derive(Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop, Default)]
pub struct NodeSecrets {
    /// Identity key, hex.
    identity: String,
    /// Serialized FROST `KeyPackage` (the share), hex; empty before DKG.
    #[serde(default)]
    pub(crate) key_package: String,
    /// Serialized FROST `PublicKeyPackage`, hex; empty before DKG.
    #[serde(default)]
    pub(crate) public_key_package: String,
    /// A refresh's new share, staged until the coordinator activates it (every node staged).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) staged_session: String,
    /// Staged `KeyPackage`, hex.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) staged_key_package: String,
    /// Staged `PublicKeyPackage`, hex.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) staged_public_key_package: String,
    /// The refresh session whose share was activated last, so that a repeated activation succeeds.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) activated_session: String,
}

impl std::fmt::Debug for NodeSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeSecrets").field("has_share", &!self.key_package.is_empty()).finish()
    }
}

impl NodeSecrets {
    /// The identity key.
    pub fn identity(&self) -> Result<IdentityKey, QuorumError> {
        let bytes = Zeroizing::new(
            hex::decode(&self.identity).map_err(|_| QuorumError::Corrupt("identity hex".into()))?,
        );
        IdentityKey::from_bytes(&bytes)
    }

    /// The FROST key package and public key package, when DKG has run.
    pub fn share(
        &self,
    ) -> Result<
        Option<(frost_secp256k1::keys::KeyPackage, frost_secp256k1::keys::PublicKeyPackage)>,
        QuorumError,
    > {
        if self.key_package.is_empty() {
            return Ok(None);
        }
        let kp = Zeroizing::new(
            hex::decode(&self.key_package).map_err(|_| QuorumError::Corrupt("key package hex".into()))?,
        );
        let pkp = hex::decode(&self.public_key_package)
            .map_err(|_| QuorumError::Corrupt("public key package hex".into()))?;
        Ok(Some((
            frost_secp256k1::keys::KeyPackage::deserialize(&kp).map_err(QuorumError::frost)?,
            frost_secp256k1::keys::PublicKeyPackage::deserialize(&pkp).map_err(QuorumError::frost)?,
        )))
    }

    /// Stages a refresh's new share for `session`; the current share stays in use.
    pub fn stage_share(
        &mut self,
        session: &str,
        kp: &frost_secp256k1::keys::KeyPackage,
        pkp: &frost_secp256k1::keys::PublicKeyPackage,
    ) -> Result<(), QuorumError> {
        let kp_bytes = Zeroizing::new(kp.serialize().map_err(QuorumError::frost)?);
        self.staged_key_package.zeroize();
        self.staged_key_package = hex::encode(&*kp_bytes);
        self.staged_public_key_package = hex::encode(pkp.serialize().map_err(QuorumError::frost)?);
        self.staged_session = session.to_string();
        Ok(())
    }

    /// Drops the share staged for `session`; true when there was one.
    pub fn drop_staged(&mut self, session: &str) -> bool {
        if self.staged_session.is_empty() || self.staged_session != session {
            return false;
        }
        self.staged_key_package.zeroize();
        self.staged_key_package.clear();
        self.staged_public_key_package.clear();
        self.staged_session.clear();
        true
    }

    /// Makes the share staged for `session` the current one; false when none is staged for it.
    pub fn activate_staged(&mut self, session: &str) -> Result<bool, QuorumError> {
        if self.staged_session.is_empty() || self.staged_session != session {
            return Ok(false);
        }
        self.key_package.zeroize();
        self.key_package = std::mem::take(&mut self.staged_key_package);
        self.public_key_package = std::mem::take(&mut self.staged_public_key_package);
        self.activated_session = std::mem::take(&mut self.staged_session);
        Ok(true)
    }

    /// Replaces the share.
    pub fn set_share(
        &mut self,
        kp: &frost_secp256k1::keys::KeyPackage,
        pkp: &frost_secp256k1::keys::PublicKeyPackage,
    ) -> Result<(), QuorumError> {
        let kp_bytes = Zeroizing::new(kp.serialize().map_err(QuorumError::frost)?);
        self.key_package.zeroize();
        self.key_package = hex::encode(&*kp_bytes);
        self.public_key_package = hex::encode(pkp.serialize().map_err(QuorumError::frost)?);
        Ok(())
    }
}

/// The node's configuration file (`node.toml`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeConfig {
    /// Public keys (hex, compressed) of the coordinators whose signed requests this node accepts.
    pub coordinators: Vec<String>,
    /// The guard checked before every signature.
    pub guard: GuardConfig,
    /// Whether tier-1 decisions are replayed, and through which RPC endpoint.
    #[serde(default)]
    pub replay: super::replay::ReplayConfig,
}

/// Writes `bytes` to `path` atomically and durably (temp file, fsync, rename, fsync of the dir),
/// readable and writable by the owner only (0600).
pub(crate) fn write_durable(path: &Path, bytes: &[u8]) -> Result<(), QuorumError> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = private_file(&tmp, true)?;
        // An old temp file keeps its mode: make sure it is the owner's alone.
        f.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(|e| QuorumError::io(&tmp, e))?;
        f.write_all(bytes).map_err(|e| QuorumError::io(&tmp, e))?;
        f.sync_all().map_err(|e| QuorumError::io(&tmp, e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| QuorumError::io(path, e))?;
    sync_dir(parent_dir(path))
}

/// Opens (creating it 0600 when absent) `path` for writing: truncated, or for appending.
pub(crate) fn private_file(path: &Path, truncate: bool) -> Result<std::fs::File, QuorumError> {
    std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(truncate)
        .append(!truncate)
        .mode(0o600)
        .open(path)
        .map_err(|e| QuorumError::io(path, e))
}

/// Creates `dir` and missing parents, each it creates with mode 0700.
pub(crate) fn private_dir(dir: &Path) -> Result<(), QuorumError> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| QuorumError::io(dir, e))
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Fsyncs a directory so that renames and unlinks in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), QuorumError> {
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| QuorumError::io(dir, e))
}

/// Seals `plain` into a file at `path` under a fresh salt; returns the derived key.
fn seal_file(path: &Path, pass: &Passphrase, plain: &[u8], fast_kdf: bool) -> Result<StoreKey, QuorumError> {
    let mut salt = [0u8; 16];
    OsRng.fill_bytes(&mut salt);
    let kdf = if fast_kdf {
        KdfParams { salt: hex::encode(salt), m_cost: 8 * 1024, t_cost: 1, p_cost: 1 }
    } else {
        KdfParams { salt: hex::encode(salt), m_cost: KDF_M_COST, t_cost: KDF_T_COST, p_cost: 1 }
    };
    let key = derive(pass, &kdf)?;
    write_sealed(path, &key, &kdf, plain)?;
    Ok(key)
}

fn write_sealed(path: &Path, key: &StoreKey, kdf: &KdfParams, plain: &[u8]) -> Result<(), QuorumError> {
    let file =
        SealedFile { version: 1, kdf: kdf.clone(), sealed: hex::encode(seal(key.bytes(), STORE_AAD, plain)) };
    let text = serde_json::to_vec_pretty(&file).map_err(|e| QuorumError::Corrupt(e.to_string()))?;
    write_durable(path, &text)
}

/// Opens a sealed file: the plaintext, the key and the KDF parameters (to re-seal later).
fn open_file(
    path: &Path,
    pass: &Passphrase,
) -> Result<(Zeroizing<Vec<u8>>, StoreKey, KdfParams), QuorumError> {
    let text = std::fs::read(path).map_err(|e| QuorumError::io(path, e))?;
    let file: SealedFile = serde_json::from_slice(&text)
        .map_err(|e| QuorumError::Corrupt(format!("{}: {e}", path.display())))?;
    let key = derive(pass, &file.kdf)?;
    let sealed = hex::decode(&file.sealed).map_err(|e| QuorumError::Corrupt(format!("sealed hex: {e}")))?;
    let plain = open(key.bytes(), STORE_AAD, &sealed)
        .ok_or_else(|| QuorumError::WrongPassphrase { path: path.display().to_string() })?;
    Ok((plain, key, file.kdf))
}

/// An opened node store: configuration, secrets and the key that seals them.
#[derive(Debug)]
pub struct NodeStore {
    dir: PathBuf,
    key: StoreKey,
    kdf: KdfParams,
    /// The node's configuration.
    pub config: NodeConfig,
    /// The node's secrets, decrypted in memory.
    pub secrets: NodeSecrets,
}

/// What `treasury signer init` reports.
#[derive(Debug, Clone, Serialize)]
pub struct InitReport {
    /// The node directory.
    pub dir: String,
    /// Public identity key, hex.
    pub identity_key: String,
    /// Fingerprint to pin in the quorum (`URL#FINGERPRINT`).
    pub fingerprint: String,
}

impl NodeStore {
    /// Creates a node directory with a fresh identity key, sealed under `pass`.
    ///
    /// # Security
    /// The identity key is generated from the OS RNG and MUST only reach disk sealed; the
    /// passphrase MUST NOT be stored. Refuses to overwrite an existing store.
    pub fn init(dir: &Path, pass: &Passphrase, config: NodeConfig) -> Result<InitReport, QuorumError> {
        Self::init_with(dir, pass, config, false)
    }

    /// Like [`NodeStore::init`], with cheaper KDF parameters when `fast_kdf` (tests and benches).
    pub fn init_with(
        dir: &Path,
        pass: &Passphrase,
        config: NodeConfig,
        fast_kdf: bool,
    ) -> Result<InitReport, QuorumError> {
        let secrets_path = dir.join(SECRETS_FILE);
        if secrets_path.exists() {
            return Err(QuorumError::AlreadyInitialised(dir.display().to_string()));
        }
        pass.check_strength()?;
        private_dir(&dir.join("nonces"))?;
        let identity = IdentityKey::generate();
        let mut secrets = NodeSecrets::default();
        secrets.identity = hex::encode(&*identity.to_bytes());
        let plain =
            Zeroizing::new(serde_json::to_vec(&secrets).map_err(|e| QuorumError::Corrupt(e.to_string()))?);
        seal_file(&secrets_path, pass, &plain, fast_kdf)?;
        let cfg = toml::to_string_pretty(&config).map_err(|e| QuorumError::Config(e.to_string()))?;
        write_durable(&dir.join(CONFIG_FILE), cfg.as_bytes())?;
        let public = identity.public();
        let report = InitReport {
            dir: dir.display().to_string(),
            identity_key: public.to_hex(),
            fingerprint: public.fingerprint(),
        };
        write_durable(
            &dir.join(PUBLIC_FILE),
            format!("{}\n{}\n", report.identity_key, report.fingerprint).as_bytes(),
        )?;
        Ok(report)
    }

    /// Opens the node directory with `pass`.
    ///
    /// A wrong passphrase fails with [`QuorumError::WrongPassphrase`] and modifies nothing.
    pub fn open(dir: &Path, pass: &Passphrase) -> Result<Self, QuorumError> {
        let cfg_path = dir.join(CONFIG_FILE);
        let cfg_text = std::fs::read_to_string(&cfg_path).map_err(|e| QuorumError::io(&cfg_path, e))?;
        let config: NodeConfig = toml::from_str(&cfg_text)
            .map_err(|e| QuorumError::Config(format!("{}: {e}", cfg_path.display())))?;
        let (plain, key, kdf) = open_file(&dir.join(SECRETS_FILE), pass)?;
        let secrets: NodeSecrets =
            serde_json::from_slice(&plain).map_err(|e| QuorumError::Corrupt(format!("secrets: {e}")))?;
        Ok(Self { dir: dir.to_path_buf(), key, kdf, config, secrets })
    }

    /// Seals the current secrets back to disk (after DKG or refresh), durably.
    pub fn save_secrets(&self) -> Result<(), QuorumError> {
        let plain = Zeroizing::new(
            serde_json::to_vec(&self.secrets).map_err(|e| QuorumError::Corrupt(e.to_string()))?,
        );
        write_sealed(&self.dir.join(SECRETS_FILE), &self.key, &self.kdf, &plain)
    }

    /// The node directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The key sealing the store (also seals nonces).
    pub fn key(&self) -> &StoreKey {
        &self.key
    }
}

/// Creates a coordinator key file sealed under `pass`; returns the public key.
pub fn create_coordinator_key(
    path: &Path,
    pass: &Passphrase,
) -> Result<super::identity::IdentityPublic, QuorumError> {
    create_coordinator_key_with(path, pass, false)
}

/// Like [`create_coordinator_key`], with cheaper KDF parameters when `fast_kdf`.
pub fn create_coordinator_key_with(
    path: &Path,
    pass: &Passphrase,
    fast_kdf: bool,
) -> Result<super::identity::IdentityPublic, QuorumError> {
    if path.exists() {
        return Err(QuorumError::AlreadyInitialised(path.display().to_string()));
    }
    pass.check_strength()?;
    let key = IdentityKey::generate();
    seal_file(path, pass, &key.to_bytes(), fast_kdf)?;
    Ok(key.public())
}

/// Opens a coordinator key file.
pub fn open_coordinator_key(path: &Path, pass: &Passphrase) -> Result<IdentityKey, QuorumError> {
    let (plain, _, _) = open_file(path, pass)?;
    IdentityKey::from_bytes(&plain)
}

#[cfg(test)]
impl StoreKey {
    pub(crate) fn for_tests(bytes: [u8; 32]) -> Self {
        StoreKey(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> NodeConfig {
        NodeConfig { coordinators: vec![], guard: GuardConfig::default(), replay: Default::default() }
    }

    #[test]
    fn wrong_passphrase_is_clear_and_leaves_store_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let report = NodeStore::init_with(dir.path(), &Passphrase::new(STRONG), cfg(), true).unwrap();
        let before = std::fs::read(dir.path().join(SECRETS_FILE)).unwrap();
        let err = NodeStore::open(dir.path(), &Passphrase::new("wrong")).unwrap_err();
        assert!(matches!(err, QuorumError::WrongPassphrase { .. }), "{err}");
        assert!(err.to_string().contains("wrong passphrase"));
        assert_eq!(before, std::fs::read(dir.path().join(SECRETS_FILE)).unwrap());
        let store = NodeStore::open(dir.path(), &Passphrase::new(STRONG)).unwrap();
        assert_eq!(store.secrets.identity().unwrap().public().fingerprint(), report.fingerprint);
    }

    #[test]
    fn secrets_are_not_in_clear_on_disk_and_init_refuses_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        NodeStore::init_with(dir.path(), &Passphrase::new(STRONG), cfg(), true).unwrap();
        let store = NodeStore::open(dir.path(), &Passphrase::new(STRONG)).unwrap();
        let on_disk = std::fs::read_to_string(dir.path().join(SECRETS_FILE)).unwrap();
        assert!(!on_disk.contains(&store.secrets.identity));
        assert!(matches!(
            NodeStore::init_with(dir.path(), &Passphrase::new(STRONG), cfg(), true),
            Err(QuorumError::AlreadyInitialised(_))
        ));
    }

    const STRONG: &str = "tidal ember quartz meadow";

    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    /// Attack (issue 13 item 8): another local user (or a backup readable by others) reads the
    /// node's sealed secrets and configuration; everything the node writes is the owner's alone.
    #[test]
    fn node_and_coordinator_files_are_the_owners_alone() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("node");
        NodeStore::init_with(&dir, &Passphrase::new(STRONG), cfg(), true).unwrap();
        assert_eq!(mode(&dir), 0o700, "node directory");
        assert_eq!(mode(&dir.join("nonces")), 0o700, "nonce directory");
        for f in [SECRETS_FILE, CONFIG_FILE, PUBLIC_FILE] {
            assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
        }
        let key = root.path().join("coord.key");
        create_coordinator_key_with(&key, &Passphrase::new(STRONG), true).unwrap();
        assert_eq!(mode(&key), 0o600, "coordinator key");
    }

    /// Attack (issue 13 item 8): a stolen disk is only as strong as the passphrase; empty, short
    /// and common passphrases are refused when a store or key is created.
    #[test]
    fn weak_passphrases_are_refused_at_creation() {
        for weak in ["", "a", "hunter2", "password", "password1234", "qwertyuiopasdf", "aaaaaaaaaaaaaaaa"] {
            let dir = tempfile::tempdir().unwrap();
            let err = NodeStore::init_with(dir.path(), &Passphrase::new(weak), cfg(), true)
                .expect_err("a weak passphrase is refused");
            assert!(err.to_string().contains("passphrase"), "{weak:?}: {err}");
            let key = dir.path().join("coord.key");
            assert!(create_coordinator_key_with(&key, &Passphrase::new(weak), true).is_err(), "{weak:?}");
            assert!(!key.exists());
        }
    }

    /// Attack (issue 13 item 8): a file asking for absurd Argon2 parameters must be refused before
    /// any work is done, and new files ask for at least 64 MiB.
    #[test]
    fn kdf_parameters_are_bounded_and_strong_by_default() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("coord.key");
        create_coordinator_key(&key, &Passphrase::new(STRONG)).unwrap();
        let mut file: serde_json::Value = serde_json::from_slice(&std::fs::read(&key).unwrap()).unwrap();
        assert!(file["kdf"]["m_cost"].as_u64().unwrap() >= 64 * 1024, "{file}");
        file["kdf"]["t_cost"] = 100.into();
        std::fs::write(&key, serde_json::to_vec(&file).unwrap()).unwrap();
        let err = open_coordinator_key(&key, &Passphrase::new(STRONG)).unwrap_err();
        assert!(err.to_string().contains("t_cost 100 is outside"), "{err}");
    }
}
