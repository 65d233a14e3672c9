//! The agent configuration (TOML): loading, defaults and validation, parsed once into typed values.
//!
//! The file ([`file::ConfigFile`]) rejects unknown keys; its check then returns *every* problem it
//! finds, each naming its key path (`safe.module: not a valid address: …`), so one run of
//! `treasury config check` shows all there is to fix. A [`Config`] holds only checked values:
//! addresses, URLs, socket addresses, durations, wei amounts, and paths resolved against the
//! config file's folder. The policy section (tokens, named addresses, policies and triggers) is
//! `treasury_policies::PoliciesConfig`, embedded under `[policies]`. The file holds no secret: the
//! keystore password and the API and root tokens are named by the environment variable that
//! carries them.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use alloy::primitives::Address;
use reqwest::Url;
use serde::{Deserialize, Serialize};
use treasury_policies::PoliciesConfig;

pub mod file;
pub mod jobs;
pub mod units;

pub use file::ConfigFile;

/// The environment variable holding the keeper token's PIN when `keeper.pin_env` is absent.
pub const KEEPER_PIN_ENV: &str = "TREASURY_KEEPER_PIN";

/// The name of the treasury a file without `[[treasury]]` sections describes.
pub const DEFAULT_NAME: &str = "default";

/// The whole agent configuration of one treasury, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The treasury's name (`[[treasury]] name`; [`DEFAULT_NAME`] in the single-treasury form).
    pub name: String,
    /// The chain and how to reach it.
    pub chain: ChainConfig,
    /// The Safe and its treasury module.
    pub safe: SafeConfig,
    /// The Uniswap V2-compatible router used for swaps.
    pub dex: Option<DexConfig>,
    /// The FROST quorum and the root service.
    pub signing: SigningConfig,
    /// Where intents and their history are kept.
    pub journal: JournalConfig,
    /// The account that pays gas for `exec` transactions.
    pub keeper: KeeperConfig,
    /// The HTTP API for keepers and dashboards.
    pub api: Option<ApiConfig>,
    /// Webhooks told about escalations, failures and executions.
    pub notify: NotifyConfig,
    /// How the pipeline watches the chain, batches and times out operations.
    pub pipeline: PipelineConfig,
    /// Tokens, named addresses, policies and their triggers.
    pub policies: PoliciesConfig,
    /// The folder relative paths were resolved against (the config file's folder).
    pub base_dir: PathBuf,
}

/// `[chain]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainConfig {
    /// HTTP(S) JSON-RPC endpoint: reads and transaction submission (the first of `rpc_http`).
    pub rpc_http: Url,
    /// Further endpoints of the same chain, used in turn when one fails (`rpc_http = [A, B, …]`).
    pub rpc_fallbacks: Vec<Url>,
    /// WebSocket endpoint for new blocks and logs; polling over HTTP when absent.
    pub rpc_ws: Option<Url>,
    /// The chain id the endpoints must report.
    pub chain_id: u64,
    /// Blocks a transaction must be buried under (its own included) to count as confirmed.
    pub confirmations: u64,
    /// Multicall3 used for snapshots (the canonical `0xcA11…CA11` unless configured).
    pub multicall3: Address,
}

impl ChainConfig {
    /// Every HTTP endpoint, the preferred first.
    pub fn endpoints(&self) -> Vec<Url> {
        std::iter::once(self.rpc_http.clone()).chain(self.rpc_fallbacks.iter().cloned()).collect()
    }
}

/// `[safe]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SafeConfig {
    /// The Safe holding the funds.
    pub address: Address,
    /// The treasury module enabled on it.
    pub module: Address,
}

/// `[dex]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DexConfig {
    /// Uniswap V2 router address.
    pub router: Address,
}

/// `[signing]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningConfig {
    /// The quorum file (signer nodes, their pinned keys, the threshold).
    pub quorum_file: PathBuf,
    /// The root signing service (tier 2), if configured.
    pub root: Option<RootAccess>,
}

/// How the agent reaches the root service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootAccess {
    /// Its base URL (`signing.root_url`).
    pub url: Url,
    /// The environment variable holding the agent's bearer token (`signing.root_token_env`).
    pub token_env: String,
}

/// `[journal]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalConfig {
    /// `sqlite://PATH` (a relative PATH resolved against the config file's folder), or
    /// `postgres://…`: then `treasury run` is a replica and acts only while it holds the lease.
    pub url: String,
    /// How long a replica's lease lasts unless renewed (`lease_ttl`, default 10 s; renewed every
    /// third of it). PostgreSQL only.
    pub lease_ttl: std::time::Duration,
    /// This replica's name in the lease table (`replica`, default `HOSTNAME:PID`).
    pub replica: String,
}

impl JournalConfig {
    /// Whether the journal is shared by replicas that take turns by lease (PostgreSQL).
    pub fn is_replicated(&self) -> bool {
        self.url.starts_with("postgres://") || self.url.starts_with("postgresql://")
    }
}

/// `[keeper]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeeperConfig {
    /// Where the keeper's key is.
    pub key: KeeperKeyConfig,
    /// The highest max fee per gas ever offered, in wei (`max_fee_gwei` in the file).
    pub max_fee_per_gas: u128,
    /// Priority fee per gas in wei (`priority_fee_gwei`); the node's suggestion when absent.
    pub priority_fee_per_gas: Option<u128>,
    /// Blocks without inclusion after which a transaction is replaced with fees bumped ≥ 10%.
    pub bump_after_blocks: u64,
    /// The upkeeps the keeper runs (`[[keeper.job]]`).
    pub jobs: Vec<jobs::KeeperJob>,
    /// Settings shared by the jobs (`[keeper.automation]`).
    pub automation: jobs::AutomationConfig,
}

/// The keeper's key: exactly one of a keystore and a PKCS#11 key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeeperKeyConfig {
    /// An encrypted JSON keystore (Web3 Secret Storage).
    Keystore {
        /// The keystore file.
        path: PathBuf,
        /// Environment variable holding its password.
        password_env: String,
    },
    /// A key in a PKCS#11 token.
    Pkcs11 {
        /// The key's label.
        label: String,
        /// The token's label.
        token: String,
        /// The PKCS#11 module (shared library).
        module: PathBuf,
        /// Environment variable holding the token's user PIN.
        pin_env: String,
    },
}

/// `[api]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// Address and port to listen on, e.g. `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Environment variable holding the bearer token clients must present.
    pub token_env: String,
}

/// `[pipeline]`: every key has a default; durations are written `"1s"`, `"250ms"`, `"1h"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Between two looks at the chain head when polling over HTTP.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// The most blocks caught up after an outage; older blocks are skipped with an alert.
    pub max_catch_up_blocks: u64,
    /// Blocks per `eth_getLogs` request while catching up.
    pub log_range_blocks: u64,
    /// How long a tier-1 operation stays valid (its on-chain deadline).
    #[serde(with = "humantime_serde")]
    pub operation_ttl: Duration,
    /// How long a tier-2 operation stays valid, including the wait for the root's approval.
    #[serde(with = "humantime_serde")]
    pub escalation_ttl: Duration,
    /// The most intents carried by one `exec`.
    pub max_batch: usize,
    /// Keeper balance in wei (`keeper_low_balance_eth`, in ether, in the file) under which a
    /// `keeper_low` notification is sent.
    #[serde(rename = "keeper_low_balance_eth", with = "units::ether")]
    pub keeper_low_balance_wei: u128,
    /// Between two probes of every configured signer node (`/v1/status`, `treasury_signer_up`).
    #[serde(with = "humantime_serde")]
    pub signer_probe_interval: Duration,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(1),
            max_catch_up_blocks: 10_000,
            log_range_blocks: 1000,
            operation_ttl: Duration::from_secs(3600),
            escalation_ttl: Duration::from_secs(86_400),
            max_batch: 16,
            keeper_low_balance_wei: 50_000_000_000_000_000,
            signer_probe_interval: Duration::from_secs(30),
        }
    }
}

/// `[notify]`: webhooks, and how hard each delivery is tried (every key but `webhook` has a default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// Each webhook and the events it wants.
    #[serde(rename = "webhook")]
    pub webhooks: Vec<Webhook>,
    /// Notifications waiting per webhook; past that new ones are dropped (and counted).
    pub queue_size: usize,
    /// Attempts per notification, the first included.
    pub max_attempts: u32,
    /// How long one attempt may take (connect, send, answer).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// The wait before the first retry; doubled after each failed attempt.
    #[serde(with = "humantime_serde")]
    pub backoff_initial: Duration,
    /// The longest wait between two attempts.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            webhooks: Vec::new(),
            queue_size: 256,
            max_attempts: 5,
            timeout: Duration::from_secs(10),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
        }
    }
}

/// `[[notify.webhook]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// Where events are POSTed (never logged: chat webhook URLs carry their secret); empty when
    /// `url_env` is set.
    #[serde(default)]
    pub url: String,
    /// Environment variable holding the URL instead, to keep a chat webhook's secret out of the file.
    #[serde(default)]
    pub url_env: Option<String>,
    /// A label for logs and metrics; `webhook[INDEX]` when absent.
    #[serde(default)]
    pub name: Option<String>,
    /// Which events, from [`WEBHOOK_EVENTS`] (all when empty).
    #[serde(default)]
    pub events: Vec<String>,
    /// The payload shape the receiver expects.
    #[serde(default)]
    pub format: WebhookFormat,
}

/// The payload shape of a webhook.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// The notification as JSON, tagged by `event`.
    #[default]
    Json,
    /// Slack incoming webhook: `{"text": ...}`.
    Slack,
    /// Discord webhook: `{"content": ...}`.
    Discord,
}

/// The events a webhook can subscribe to.
pub const WEBHOOK_EVENTS: [&str; 8] = [
    "escalation",
    "failure",
    "execution",
    "policy_error",
    "keeper_low",
    "alert",
    "job_performed",
    "job_skipped",
];

/// One thing wrong with a configuration, at one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// Key path, e.g. `policies.tokens.USDC.feed`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl Problem {
    /// A problem at `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self { key: key.into(), message: message.into() }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (unknown key, wrong type); the message names the key and line.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// The file parsed, but these values are wrong.
    #[error("{} problem(s):\n{}", .0.len(), .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
}

impl ConfigError {
    /// Every problem found (a read or parse error counts as one).
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            Self::Read { path, source } => vec![Problem::new("", format!("{}: {source}", path.display()))],
            Self::Parse { message, .. } => vec![Problem::new("", message.clone())],
            Self::Invalid(problems) => problems.clone(),
        }
    }
}

impl Config {
    /// Reads, parses and checks the file at `path`; relative paths resolve against its folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        ConfigFile::read(path)?.check(&base).map_err(ConfigError::Invalid)
    }

    /// Every treasury the file at `path` declares (one in the single-treasury form), checked.
    pub fn load_all(path: &Path) -> Result<Vec<Self>, ConfigError> {
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        ConfigFile::read(path)?.check_all(&base).map_err(ConfigError::Invalid)
    }

    /// Only the checked `[api]` section of the file at `path`: what a client of the running agent
    /// needs, on a machine that may not hold the agent's keystore, quorum file or policies.
    pub fn load_api(path: &Path) -> Result<Option<ApiConfig>, ConfigError> {
        ConfigFile::read(path)?.check_api().map_err(ConfigError::Invalid)
    }

    /// Parses and checks TOML text; relative paths resolve against `base_dir`.
    pub fn from_toml(text: &str, base_dir: &Path) -> Result<Self, ConfigError> {
        let file = ConfigFile::parse(text)
            .map_err(|message| ConfigError::Parse { path: PathBuf::new(), message })?;
        file.check(base_dir).map_err(ConfigError::Invalid)
    }
}

#[cfg(test)]
pub(crate) mod tests;
