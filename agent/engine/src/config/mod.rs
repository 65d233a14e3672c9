//! The agent configuration (TOML): loading, defaults and validation.
//!
//! Parsing rejects unknown keys; [`Config::validate`] then returns *every* problem it finds, each
//! naming its key path (`safe.module: not a valid address: …`), so one run of
//! `treasury config check` shows all there is to fix. The policy section (tokens, named addresses,
//! policies and triggers) is `treasury_policies::PoliciesConfig`, embedded under `[policies]`.
//! The file holds no secret: the keystore password and the API and root tokens are named by the
//! environment variable that carries them.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use alloy::primitives::Address;
use serde::{Deserialize, Serialize};
use treasury_policies::PoliciesConfig;

/// The whole agent configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The chain and how to reach it.
    pub chain: ChainConfig,
    /// The Safe and its treasury module.
    pub safe: SafeConfig,
    /// The Uniswap V2-compatible router used for swaps.
    #[serde(default)]
    pub dex: Option<DexConfig>,
    /// The FROST quorum and the root service.
    pub signing: SigningConfig,
    /// Where intents and their history are kept.
    #[serde(default)]
    pub journal: JournalConfig,
    /// The account that pays gas for `exec` transactions.
    pub keeper: KeeperConfig,
    /// The HTTP API for keepers and dashboards.
    #[serde(default)]
    pub api: Option<ApiConfig>,
    /// Webhooks told about escalations, failures and executions.
    #[serde(default)]
    pub notify: NotifyConfig,
    /// How the pipeline watches the chain, batches and times out operations.
    #[serde(default)]
    pub pipeline: PipelineConfig,
    /// Tokens, named addresses, policies and their triggers.
    #[serde(default)]
    pub policies: PoliciesConfig,
    /// The folder relative paths are resolved against (the config file's folder).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// `[chain]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainConfig {
    /// HTTP(S) JSON-RPC endpoint: reads and transaction submission.
    pub rpc_http: String,
    /// WebSocket endpoint for new blocks and logs; polling over HTTP when absent.
    #[serde(default)]
    pub rpc_ws: Option<String>,
    /// The chain id the endpoints must report.
    pub chain_id: u64,
    /// Blocks a transaction must be buried under (its own included) to count as confirmed.
    #[serde(default = "default_confirmations")]
    pub confirmations: u64,
    /// Multicall3 used for snapshots; the canonical `0xcA11…CA11` when absent.
    #[serde(default)]
    pub multicall3: Option<String>,
}

fn default_confirmations() -> u64 {
    2
}

/// `[safe]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SafeConfig {
    /// The Safe holding the funds.
    pub address: String,
    /// The treasury module enabled on it.
    pub module: String,
}

/// `[dex]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DexConfig {
    /// Uniswap V2 router address.
    pub router: String,
}

/// `[signing]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningConfig {
    /// The quorum file (signer nodes, their pinned keys, the threshold).
    pub quorum_file: PathBuf,
    /// Base URL of the root signing service (tier 2).
    #[serde(default)]
    pub root_url: Option<String>,
    /// Environment variable holding the bearer token for the root service.
    #[serde(default)]
    pub root_token_env: Option<String>,
}

/// `[journal]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalConfig {
    /// `sqlite://PATH` (relative to the working directory).
    #[serde(default = "default_journal_url")]
    pub url: String,
}

fn default_journal_url() -> String {
    crate::journal::DEFAULT_URL.to_string()
}

impl Default for JournalConfig {
    fn default() -> Self {
        Self { url: default_journal_url() }
    }
}

/// `[keeper]`: exactly one of `keystore` and `pkcs11_label`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeeperConfig {
    /// Encrypted JSON keystore (Web3 Secret Storage).
    #[serde(default)]
    pub keystore: Option<PathBuf>,
    /// Environment variable holding the keystore password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// Label of the key in a PKCS#11 token, instead of a keystore.
    #[serde(default)]
    pub pkcs11_label: Option<String>,
    /// Label of the token holding that key (required with `pkcs11_label`).
    #[serde(default)]
    pub pkcs11_token: Option<String>,
    /// The PKCS#11 module (shared library); `TREASURY_HSM_MODULE` or SoftHSM2's when absent.
    #[serde(default)]
    pub pkcs11_module: Option<PathBuf>,
    /// Environment variable holding the token's user PIN (default `TREASURY_KEEPER_PIN`).
    #[serde(default)]
    pub pin_env: Option<String>,
    /// The highest max fee per gas ever offered, in wei (`max_fee_gwei` in the file).
    #[serde(rename = "max_fee_gwei", with = "units::gwei", default = "default_max_fee_per_gas")]
    pub max_fee_per_gas: u128,
    /// Priority fee per gas in wei (`priority_fee_gwei`); the node's suggestion when absent.
    #[serde(rename = "priority_fee_gwei", with = "units::gwei_opt", default)]
    pub priority_fee_per_gas: Option<u128>,
    /// Blocks without inclusion after which a transaction is replaced with fees bumped ≥ 10%.
    #[serde(default = "default_bump_after_blocks")]
    pub bump_after_blocks: u64,
}

fn default_max_fee_per_gas() -> u128 {
    200_000_000_000
}

fn default_bump_after_blocks() -> u64 {
    3
}

/// `[api]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address and port to listen on, e.g. `127.0.0.1:8080`.
    pub listen: String,
    /// Environment variable holding the bearer token clients must present.
    pub token_env: String,
}

/// `[pipeline]`: every key has a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Milliseconds between two looks at the chain head when polling over HTTP.
    pub poll_interval_ms: u64,
    /// The most blocks caught up after an outage; older blocks are skipped with an alert.
    pub max_catch_up_blocks: u64,
    /// Blocks per `eth_getLogs` request while catching up.
    pub log_range_blocks: u64,
    /// Seconds a tier-1 operation stays valid (its on-chain deadline).
    pub operation_ttl_secs: u64,
    /// Seconds a tier-2 operation stays valid, including the wait for the root's approval.
    pub escalation_ttl_secs: u64,
    /// The most intents carried by one `exec`.
    pub max_batch: usize,
    /// Keeper balance in wei (`keeper_low_balance_eth`, in ether, in the file) under which a
    /// `keeper_low` notification is sent.
    #[serde(rename = "keeper_low_balance_eth", with = "units::ether")]
    pub keeper_low_balance_wei: u128,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            poll_interval_ms: 1000,
            max_catch_up_blocks: 10_000,
            log_range_blocks: 1000,
            operation_ttl_secs: 3600,
            escalation_ttl_secs: 86_400,
            max_batch: 16,
            keeper_low_balance_wei: 50_000_000_000_000_000,
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
    /// Milliseconds one attempt may take (connect, send, answer).
    pub timeout_ms: u64,
    /// Milliseconds before the first retry; doubled after each failed attempt.
    pub backoff_initial_ms: u64,
    /// The longest wait between two attempts, in milliseconds.
    pub backoff_max_ms: u64,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            webhooks: Vec::new(),
            queue_size: 256,
            max_attempts: 5,
            timeout_ms: 10_000,
            backoff_initial_ms: 1_000,
            backoff_max_ms: 60_000,
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
pub const WEBHOOK_EVENTS: [&str; 6] =
    ["escalation", "failure", "execution", "policy_error", "keeper_low", "alert"];

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
    #[error("cannot read {path}: {source}")]
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
    /// Reads, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.into(), source })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let config =
            Self::parse(&text, &base).map_err(|message| ConfigError::Parse { path: path.into(), message })?;
        let problems = config.validate();
        if problems.is_empty() { Ok(config) } else { Err(ConfigError::Invalid(problems)) }
    }

    /// Parses TOML text (no validation); relative paths will resolve against `base_dir`.
    pub fn parse(text: &str, base_dir: &Path) -> Result<Self, String> {
        let mut config: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        config.base_dir = base_dir.to_path_buf();
        Ok(config)
    }

    /// Resolves a path from the config against the config file's folder.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() { path.to_path_buf() } else { self.base_dir.join(path) }
    }

    /// Every problem in the configuration, each naming its key; empty when it is usable.
    pub fn validate(&self) -> Vec<Problem> {
        let mut p = Vec::new();
        self.check_chain(&mut p);
        address(&mut p, "safe.address", &self.safe.address);
        address(&mut p, "safe.module", &self.safe.module);
        if let Some(dex) = &self.dex {
            address(&mut p, "dex.router", &dex.router);
        }
        self.check_signing(&mut p);
        if !self.journal.url.starts_with("sqlite:") {
            p.push(Problem::new("journal.url", "only sqlite://PATH is supported by this build"));
        }
        self.check_keeper(&mut p);
        if let Some(api) = &self.api {
            if api.listen.parse::<SocketAddr>().is_err() {
                p.push(Problem::new("api.listen", "expected IP:PORT, e.g. 127.0.0.1:8080"));
            }
            env_name(&mut p, "api.token_env", &api.token_env);
        }
        self.check_notify(&mut p);
        self.check_pipeline(&mut p);
        self.check_policies(&mut p);
        p
    }

    fn check_notify(&self, p: &mut Vec<Problem>) {
        let n = &self.notify;
        let mut names = std::collections::BTreeSet::new();
        for (i, hook) in n.webhooks.iter().enumerate() {
            match (hook.url.is_empty(), &hook.url_env) {
                (false, None) => url(p, &format!("notify.webhook[{i}].url"), &hook.url, &["http", "https"]),
                (true, Some(env)) => env_name(p, &format!("notify.webhook[{i}].url_env"), env),
                _ => {
                    p.push(Problem::new(format!("notify.webhook[{i}]"), "set exactly one of url and url_env"))
                }
            }
            for event in &hook.events {
                if !WEBHOOK_EVENTS.contains(&event.as_str()) {
                    p.push(Problem::new(
                        format!("notify.webhook[{i}].events"),
                        format!("unknown event `{event}` (expected one of {WEBHOOK_EVENTS:?})"),
                    ));
                }
            }
            if let Some(name) = &hook.name
                && (name.is_empty() || !names.insert(name.as_str()))
            {
                p.push(Problem::new(format!("notify.webhook[{i}].name"), "must be non-empty and unique"));
            }
        }
        let positive = [
            ("notify.queue_size", n.queue_size as u64),
            ("notify.max_attempts", u64::from(n.max_attempts)),
            ("notify.timeout_ms", n.timeout_ms),
        ];
        for (key, value) in positive {
            if value == 0 {
                p.push(Problem::new(key, "must be at least 1"));
            }
        }
        if n.backoff_max_ms < n.backoff_initial_ms {
            p.push(Problem::new("notify.backoff_max_ms", "must be at least backoff_initial_ms"));
        }
    }

    fn check_pipeline(&self, p: &mut Vec<Problem>) {
        let c = &self.pipeline;
        let positive = [
            ("pipeline.poll_interval_ms", c.poll_interval_ms),
            ("pipeline.max_catch_up_blocks", c.max_catch_up_blocks),
            ("pipeline.log_range_blocks", c.log_range_blocks),
            ("pipeline.operation_ttl_secs", c.operation_ttl_secs),
            ("pipeline.escalation_ttl_secs", c.escalation_ttl_secs),
            ("pipeline.max_batch", c.max_batch as u64),
        ];
        for (key, value) in positive {
            if value == 0 {
                p.push(Problem::new(key, "must be at least 1"));
            }
        }
    }

    fn check_chain(&self, p: &mut Vec<Problem>) {
        url(p, "chain.rpc_http", &self.chain.rpc_http, &["http", "https"]);
        if let Some(ws) = &self.chain.rpc_ws {
            url(p, "chain.rpc_ws", ws, &["ws", "wss"]);
        }
        if self.chain.chain_id == 0 {
            p.push(Problem::new("chain.chain_id", "must not be 0"));
        }
        if let Some(m) = &self.chain.multicall3 {
            address(p, "chain.multicall3", m);
        }
        if self.chain.confirmations == 0 {
            p.push(Problem::new("chain.confirmations", "must be at least 1"));
        }
    }

    fn check_signing(&self, p: &mut Vec<Problem>) {
        file(p, "signing.quorum_file", &self.resolve(&self.signing.quorum_file));
        match (&self.signing.root_url, &self.signing.root_token_env) {
            (Some(u), token) => {
                url(p, "signing.root_url", u, &["http", "https"]);
                match token {
                    Some(t) => env_name(p, "signing.root_token_env", t),
                    None => p.push(Problem::new("signing.root_token_env", "required with root_url")),
                }
            }
            (None, Some(_)) => p.push(Problem::new("signing.root_token_env", "set but root_url is not")),
            (None, None) => {}
        }
    }

    fn check_keeper(&self, p: &mut Vec<Problem>) {
        let k = &self.keeper;
        match (&k.keystore, &k.pkcs11_label) {
            (Some(keystore), None) => {
                file(p, "keeper.keystore", &self.resolve(keystore));
                match &k.password_env {
                    Some(env) => env_name(p, "keeper.password_env", env),
                    None => p.push(Problem::new("keeper.password_env", "required with keystore")),
                }
            }
            (None, Some(label)) if label.is_empty() => {
                p.push(Problem::new("keeper.pkcs11_label", "must not be empty"));
            }
            (None, Some(_)) => {
                if k.pkcs11_token.as_deref().is_none_or(str::is_empty) {
                    p.push(Problem::new("keeper.pkcs11_token", "required with pkcs11_label"));
                }
                if let Some(env) = &k.pin_env {
                    env_name(p, "keeper.pin_env", env);
                }
            }
            _ => p.push(Problem::new("keeper", "set exactly one of keystore and pkcs11_label")),
        }
        if k.max_fee_per_gas == 0 {
            p.push(Problem::new("keeper.max_fee_gwei", "must be more than 0"));
        }
        if let Some(tip) = k.priority_fee_per_gas
            && tip > k.max_fee_per_gas
        {
            p.push(Problem::new("keeper.priority_fee_gwei", "must be between 0 and max_fee_gwei"));
        }
        if k.bump_after_blocks == 0 {
            p.push(Problem::new("keeper.bump_after_blocks", "must be at least 1"));
        }
    }

    fn check_policies(&self, p: &mut Vec<Problem>) {
        let pol = &self.policies;
        for (symbol, token) in &pol.tokens {
            let key = format!("policies.tokens.{symbol}");
            if token.decimals > treasury_policies::money::MAX_DECIMALS {
                p.push(Problem::new(
                    format!("{key}.decimals"),
                    format!("at most {} supported", treasury_policies::money::MAX_DECIMALS),
                ));
            }
            if token.feed == Some(Address::ZERO) {
                p.push(Problem::new(format!("{key}.feed"), "the zero address is not a price feed"));
            }
            if token.max_price_age == 0 {
                p.push(Problem::new(format!("{key}.max_price_age"), "must be at least 1 second"));
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, policy) in pol.policies.iter().enumerate() {
            let key = format!("policies.policy[{i}]");
            if !names.insert(policy.name.as_str()) {
                p.push(Problem::new(format!("{key}.name"), format!("`{}` is defined twice", policy.name)));
            }
            file(p, &format!("{key}.file"), &self.resolve(&policy.file));
            if let Err(e) = policy.trigger.validate() {
                p.push(Problem::new(format!("{key}.trigger"), e.to_string()));
            }
        }
    }
}

fn address(p: &mut Vec<Problem>, key: &str, value: &str) {
    match value.parse::<Address>() {
        Ok(a) if a == Address::ZERO => p.push(Problem::new(key, "must not be the zero address")),
        Ok(_) => {}
        Err(e) => p.push(Problem::new(key, format!("not a valid address: {e}"))),
    }
}

fn url(p: &mut Vec<Problem>, key: &str, value: &str, schemes: &[&str]) {
    match value.parse::<alloy::transports::http::reqwest::Url>() {
        Ok(u) if schemes.contains(&u.scheme()) => {}
        Ok(u) => p.push(Problem::new(
            key,
            format!("scheme `{}` not allowed (expected {})", u.scheme(), schemes.join(" or ")),
        )),
        Err(e) => p.push(Problem::new(key, format!("not a valid URL: {e}"))),
    }
}

fn file(p: &mut Vec<Problem>, key: &str, path: &Path) {
    if !path.is_file() {
        p.push(Problem::new(key, format!("no such file: {}", path.display())));
    }
}

/// An environment variable *name*: a secret pasted in its place must not be accepted (or echoed).
fn env_name(p: &mut Vec<Problem>, key: &str, name: &str) {
    let ok = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    if !ok {
        p.push(Problem::new(key, "expected the NAME of an environment variable (A-Z, 0-9, _)"));
    }
}

pub mod units;

#[cfg(test)]
mod tests;
