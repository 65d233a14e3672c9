//! The root service's configuration file (TOML) and its clients' credentials.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use alloy::primitives::Address;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::error::{Result, RootError};
use super::guard::GuardConfig;
use super::hsm::HsmConfig;
use super::pin::{PIN_ENV, Pin};

/// Where the root key lives (`[hsm]`); the PIN comes from `pin_file` or `TREASURY_HSM_PIN`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HsmSection {
    /// PKCS#11 module path.
    pub module: PathBuf,
    /// Token label.
    pub token: String,
    /// Key label.
    pub key: String,
    /// File holding the user PIN (else the `TREASURY_HSM_PIN` environment variable).
    #[serde(default)]
    pub pin_file: Option<PathBuf>,
    /// The root address the key must have (lets the service start while the HSM is away).
    #[serde(default)]
    pub address: Option<Address>,
}

impl HsmSection {
    /// The HSM configuration with the PIN read now.
    pub fn resolve(&self) -> Result<HsmConfig> {
        Ok(HsmConfig {
            module: self.module.clone(),
            token_label: self.token.clone(),
            key_label: self.key.clone(),
            pin: Pin::resolve(self.pin_file.as_deref(), PIN_ENV)?,
        })
    }
}

/// What a client may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Submit requests and fetch their own results (the agent).
    Requester,
    /// List, approve and reject requests (a human approver).
    Approver,
}

/// A client of the HTTP API, authenticated by a bearer token whose SHA-256 is stored here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientEntry {
    /// Name recorded with every decision the client makes.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Hex SHA-256 of the bearer token (for the API and the CLI); empty: no token.
    #[serde(default)]
    pub token_sha256: String,
    /// Argon2id hash (PHC string) of the approver's password for the approvals page, made by
    /// `treasury root hash-password`; absent: this client cannot sign in to the page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
}

impl ClientEntry {
    /// Whether `token` is this client's token (constant-time comparison of the hashes).
    pub fn matches(&self, token: &str) -> bool {
        let given = Sha256::digest(token.as_bytes());
        hex::decode(&self.token_sha256)
            .is_ok_and(|want| want.len() == 32 && bool::from(given.ct_eq(&want[..])))
    }
}

/// A fresh random bearer token and its hash for the config file.
///
/// # Security
/// The token MUST be shown once to its holder and MUST NOT be stored; only the hash is.
pub fn new_token() -> (Zeroizing<String>, String) {
    use rand_core::RngCore;
    let mut raw = Zeroizing::new([0u8; 32]);
    rand_core::OsRng.fill_bytes(raw.as_mut());
    let token = Zeroizing::new(hex::encode(raw.as_ref()));
    let hash = hex::encode(Sha256::digest(token.as_bytes()));
    (token, hash)
}

/// The root service's default port: distinct from a signer node's (7400), so both may run on
/// one host with their defaults.
pub const DEFAULT_PORT: u16 = 7410;

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT))
}
fn default_ttl() -> u64 {
    3600
}
fn default_retry() -> u64 {
    250
}

/// The root service's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceConfig {
    /// Listen address (loopback by default).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// SQLite file of the approval queue (relative: to the config file's folder).
    pub db: PathBuf,
    /// Seconds a pending request waits for approval before it expires.
    #[serde(default = "default_ttl")]
    pub approval_ttl_secs: u64,
    /// Milliseconds between attempts to sign approved requests while the HSM is away.
    #[serde(default = "default_retry")]
    pub retry_interval_ms: u64,
    /// The HSM.
    pub hsm: HsmSection,
    /// The guard.
    #[serde(default)]
    pub guard: GuardConfig,
    /// API clients.
    #[serde(default)]
    pub clients: Vec<ClientEntry>,
    /// How many approvers a request needs, and the approvals page's sessions.
    #[serde(default)]
    pub approvals: ApprovalsConfig,
    /// Names the approvals page shows for tokens and addresses.
    #[serde(default)]
    pub book: super::approvals::Book,
}

fn default_session_ttl() -> u64 {
    3600
}
fn one() -> u32 {
    1
}

/// `[approvals]`: the k-of-m rules and the page's sessions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsConfig {
    /// Distinct approvers an admin operation needs. Default 1.
    #[serde(default = "one")]
    pub admin_approvers: u32,
    /// Rules by amount: a request needs the largest `approvers` of the rules it exceeds, at least 1.
    #[serde(default)]
    pub rules: Vec<ApprovalRule>,
    /// Seconds a page session lasts after sign-in. Default 3600.
    #[serde(default = "default_session_ttl")]
    pub session_ttl_secs: u64,
    /// Mark the session cookie `Secure` (set it when TLS terminates in front of the service).
    #[serde(default)]
    pub secure_cookie: bool,
}

impl Default for ApprovalsConfig {
    fn default() -> Self {
        Self {
            admin_approvers: 1,
            rules: Vec::new(),
            session_ttl_secs: default_session_ttl(),
            secure_cookie: false,
        }
    }
}

/// A k-of-m rule: a request moving more than `above` of `token` needs `approvers` distinct approvers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalRule {
    /// Asset (the zero address for ETH).
    pub token: Address,
    /// Amount in the asset's smallest unit above which the rule applies.
    pub above: alloy::primitives::U256,
    /// Distinct approvers needed.
    pub approvers: u32,
}

impl ApprovalsConfig {
    /// Distinct approvers a request with these per-asset `totals` needs (admin operations:
    /// `admin_approvers`); never less than 1.
    pub fn required(&self, admin: bool, totals: &[(Address, alloy::primitives::U256)]) -> u32 {
        let by_amount = self
            .rules
            .iter()
            .filter(|r| totals.iter().any(|(t, a)| *t == r.token && *a > r.above))
            .map(|r| r.approvers)
            .max()
            .unwrap_or(1);
        let base = if admin { self.admin_approvers } else { 1 };
        by_amount.max(base).max(1)
    }
}

impl ServiceConfig {
    /// Reads the configuration file; relative `db` and `hsm.pin_file` paths are resolved against
    /// the file's folder (a service's working directory is often `/`).
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| RootError::ConfigFile { path: path.to_owned(), source })?;
        let mut cfg: Self = toml::from_str(&text)
            .map_err(|source| RootError::ConfigSyntax { path: path.to_owned(), source })?;
        let folder = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        cfg.db = folder.join(&cfg.db);
        cfg.hsm.pin_file = cfg.hsm.pin_file.map(|f| folder.join(f));
        let mut seen = std::collections::BTreeSet::new();
        if let Some(dup) = cfg.guard.assets.iter().find(|a| !seen.insert(a.token)) {
            return Err(RootError::Config(format!(
                "{}: [[guard.assets]] names {} twice; give each asset one entry",
                path.display(),
                dup.token
            )));
        }
        cfg.check_approvals().map_err(|e| RootError::Config(format!("{}: {e}", path.display())))?;
        Ok(cfg)
    }

    /// Refuses rules no set of configured approvers can meet, and duplicate client names (an
    /// approval counts once per name).
    fn check_approvals(&self) -> std::result::Result<(), String> {
        let mut names = std::collections::BTreeSet::new();
        if let Some(dup) = self.clients.iter().find(|c| !names.insert(c.name.as_str())) {
            return Err(format!("[[clients]] names {:?} twice; each client needs its own name", dup.name));
        }
        let approvers = self.approvers().count() as u32;
        let most =
            self.approvals.rules.iter().map(|r| r.approvers).chain([self.approvals.admin_approvers]).max();
        if let Some(most) = most.filter(|m| *m > approvers.max(1)) {
            return Err(format!(
                "[approvals] asks for {most} approvers but only {approvers} [[clients]] have role \"approver\""
            ));
        }
        if self.approvals.rules.iter().any(|r| r.approvers == 0) || self.approvals.admin_approvers == 0 {
            return Err("[approvals]: a rule needs at least 1 approver".into());
        }
        Ok(())
    }

    /// The clients with role approver.
    pub fn approvers(&self) -> impl Iterator<Item = &ClientEntry> {
        self.clients.iter().filter(|c| c.role == Role::Approver)
    }

    /// Whether `name` is a configured approver.
    pub fn is_approver(&self, name: &str) -> bool {
        self.approvers().any(|c| c.name == name)
    }

    /// The client whose token this is.
    pub fn client(&self, token: &str) -> Option<&ClientEntry> {
        self.clients.iter().find(|c| c.matches(token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 17: `root.toml` was documented nowhere. The shipped, commented example loads, its
    /// relative queue file lands beside it, and its default port is not a signer node's.
    #[test]
    fn the_documented_example_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.toml");
        std::fs::write(&path, include_str!("../../../config/root.example.toml")).unwrap();
        let cfg = ServiceConfig::load(&path).expect("config/root.example.toml loads");
        assert_eq!(cfg.db, dir.path().join("root-queue.sqlite"));
        assert_eq!(cfg.listen.port(), DEFAULT_PORT);
        assert_ne!(DEFAULT_PORT, 7400, "a signer node listens on 7400 by default");
        assert!(!cfg.guard.modules.is_empty() && !cfg.guard.assets.is_empty());
        assert_eq!(cfg.clients.len(), 3);
        assert_eq!(
            cfg.approvals.required(
                false,
                &[(cfg.book.tokens["USDC"].address, alloy::primitives::U256::from(60_000_000_000u64))]
            ),
            2
        );
        assert_eq!(cfg.approvals.required(true, &[]), 2);
        assert!(cfg.guard.assets.iter().any(|a| a.auto_approve_max.is_some()));
        assert!(!cfg.guard.allowed_calls.is_empty());
    }

    #[test]
    fn an_absolute_queue_path_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.toml");
        std::fs::write(
            &path,
            "db = \"/var/lib/q.sqlite\"\n[hsm]\nmodule = \"m.so\"\ntoken = \"t\"\nkey = \"k\"\n",
        )
        .unwrap();
        let cfg = ServiceConfig::load(&path).unwrap();
        assert_eq!(cfg.db, PathBuf::from("/var/lib/q.sqlite"));
        assert_eq!(cfg.listen, SocketAddr::from(([127, 0, 0, 1], 7410)));
    }

    /// Attack (issue 13 item 11): a second `[[guard.assets]]` entry for a token was silently
    /// ignored (the guard used the first), so an operator tightening a cap in a later entry got
    /// the looser one. Refused, naming the token.
    #[test]
    fn a_duplicate_asset_entry_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.toml");
        let asset = |cap: u32| {
            format!(
                "[[guard.assets]]\ntoken = \"0x{}\"\nmax_single = \"{cap}\"\nperiod_cap = \"{cap}\"\nperiod_secs = 86400\n",
                "aa".repeat(20)
            )
        };
        let head = "db = \"q.sqlite\"\n[hsm]\nmodule = \"m.so\"\ntoken = \"t\"\nkey = \"k\"\n";
        std::fs::write(&path, format!("{head}{}", asset(1000))).unwrap();
        ServiceConfig::load(&path).expect("one entry per asset loads");
        std::fs::write(&path, format!("{head}{}{}", asset(1000), asset(10))).unwrap();
        let err = ServiceConfig::load(&path).expect_err("two entries for one asset are refused");
        assert!(err.to_string().to_lowercase().contains(&"aa".repeat(20)), "{err}");
    }
}
