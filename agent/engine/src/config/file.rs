//! The configuration file as written: TOML sections whose values are still text, checked all at
//! once into the typed [`Config`] so every problem is reported in one run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use alloy::primitives::Address;
use reqwest::Url;
use serde::Deserialize;
use treasury_policies::PoliciesConfig;

use super::{
    ApiConfig, ChainConfig, Config, ConfigError, DEFAULT_NAME, DexConfig, JournalConfig, KEEPER_PIN_ENV,
    KeeperConfig, KeeperKeyConfig, NotifyConfig, PipelineConfig, Problem, RootAccess, SafeConfig,
    SigningConfig, WEBHOOK_EVENTS, units,
};

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    chain: Option<ChainSection>,
    #[serde(default)]
    safe: Option<SafeSection>,
    #[serde(default)]
    dex: Option<DexSection>,
    #[serde(default)]
    signing: Option<SigningSection>,
    #[serde(default)]
    journal: Option<JournalSection>,
    #[serde(default)]
    keeper: Option<KeeperSection>,
    #[serde(default)]
    api: Option<ApiSection>,
    #[serde(default)]
    notify: NotifyConfig,
    #[serde(default)]
    pipeline: PipelineConfig,
    #[serde(default)]
    policies: PoliciesConfig,
    /// `[module]`: the settings `treasury module deploy|batch` deploys and enables the module with
    /// (read there; the agent reads the module's settings from the chain).
    #[serde(default)]
    #[allow(dead_code)]
    module: Option<toml::Value>,
    /// Several treasuries in one file (`[[treasury]]`), instead of the sections above.
    #[serde(default, rename = "treasury")]
    treasuries: Vec<many::TreasurySection>,
}

#[path = "many.rs"]
mod many;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChainSection {
    rpc_http: Endpoints,
    #[serde(default)]
    rpc_ws: Option<String>,
    chain_id: u64,
    #[serde(default = "default_confirmations")]
    confirmations: u64,
    #[serde(default)]
    multicall3: Option<String>,
}

/// `rpc_http`: one URL, or several of the same chain (tried in turn when one fails).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Endpoints {
    One(String),
    Several(Vec<String>),
}

impl Endpoints {
    fn urls(&self) -> &[String] {
        match self {
            Self::One(u) => std::slice::from_ref(u),
            Self::Several(list) => list,
        }
    }
}

fn default_confirmations() -> u64 {
    2
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SafeSection {
    address: String,
    module: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct DexSection {
    router: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SigningSection {
    quorum_file: PathBuf,
    #[serde(default)]
    root_url: Option<String>,
    #[serde(default)]
    root_token_env: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct JournalSection {
    #[serde(default = "default_journal_url")]
    url: String,
    #[serde(default = "default_lease_ttl", with = "humantime_serde")]
    lease_ttl: std::time::Duration,
    #[serde(default)]
    replica: Option<String>,
}

fn default_lease_ttl() -> std::time::Duration {
    std::time::Duration::from_secs(10)
}

fn default_journal_url() -> String {
    crate::journal::DEFAULT_URL.to_string()
}

impl Default for JournalSection {
    fn default() -> Self {
        Self { url: default_journal_url(), lease_ttl: default_lease_ttl(), replica: None }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeeperSection {
    #[serde(default)]
    keystore: Option<PathBuf>,
    #[serde(default)]
    password_env: Option<String>,
    #[serde(default)]
    pkcs11_label: Option<String>,
    #[serde(default)]
    pkcs11_token: Option<String>,
    #[serde(default)]
    pkcs11_module: Option<PathBuf>,
    #[serde(default)]
    pin_env: Option<String>,
    #[serde(rename = "max_fee_gwei", with = "units::gwei", default = "default_max_fee_per_gas")]
    max_fee_per_gas: u128,
    #[serde(rename = "priority_fee_gwei", with = "units::gwei_opt", default)]
    priority_fee_per_gas: Option<u128>,
    #[serde(default = "default_bump_after_blocks")]
    bump_after_blocks: u64,
    #[serde(default, rename = "job")]
    jobs: Vec<super::jobs::JobSection>,
    #[serde(default)]
    automation: super::jobs::AutomationSection,
}

fn default_max_fee_per_gas() -> u128 {
    200_000_000_000
}

fn default_bump_after_blocks() -> u64 {
    3
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiSection {
    listen: String,
    token_env: String,
}

impl ConfigFile {
    /// Parses TOML text (unknown keys and wrong types refused, naming the key and line).
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Reads and parses the file at `path`.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.into(), source })?;
        Self::parse(&text).map_err(|message| ConfigError::Parse { path: path.into(), message })
    }

    /// Checks only the `[api]` section (absent: `None`).
    pub fn check_api(self) -> Result<Option<ApiConfig>, Vec<Problem>> {
        let mut p = Vec::new();
        match self.api.map(|a| a.check(&mut p)) {
            None => Ok(None),
            Some(Some(api)) => Ok(Some(api)),
            Some(None) => Err(p),
        }
    }

    /// Checks every treasury the file declares: the single-treasury form's one, or each
    /// `[[treasury]]`'s; every problem found, each naming its key, when the file cannot be used.
    pub fn check_all(self, base_dir: &Path) -> Result<Vec<Config>, Vec<Problem>> {
        if self.treasuries.is_empty() {
            self.check(base_dir).map(|c| vec![c])
        } else {
            many::check_all(self, base_dir)
        }
    }

    /// Checks every value, relative paths resolved against `base_dir`; every problem found, each
    /// naming its key, when the file cannot be used. A file of several `[[treasury]]` is refused
    /// here (see [`ConfigFile::check_all`]); one `[[treasury]]` is that treasury.
    pub fn check(self, base_dir: &Path) -> Result<Config, Vec<Problem>> {
        if !self.treasuries.is_empty() {
            let mut all = many::check_all(self, base_dir)?;
            if all.len() != 1 {
                let names: Vec<&str> = all.iter().map(|c| c.name.as_str()).collect();
                return Err(vec![Problem::new(
                    "treasury",
                    format!(
                        "the file declares {} treasuries ({}); this command serves one",
                        all.len(),
                        names.join(", ")
                    ),
                )]);
            }
            return Ok(all.remove(0));
        }
        let mut p = Vec::new();
        let resolve = |path: &Path| if path.is_absolute() { path.to_path_buf() } else { base_dir.join(path) };
        for (key, present) in [
            ("chain", self.chain.is_some()),
            ("safe", self.safe.is_some()),
            ("signing", self.signing.is_some()),
            ("keeper", self.keeper.is_some()),
        ] {
            if !present {
                p.push(Problem::new(
                    key,
                    format!("missing section [{key}] (or declare [[treasury]] sections)"),
                ));
            }
        }
        let chain = self.chain.and_then(|c| c.check(&mut p));
        let safe = self.safe.and_then(|s| s.check(&mut p));
        let dex =
            self.dex.map(|d| address(&mut p, "dex.router", &d.router).map(|router| DexConfig { router }));
        let signing = self.signing.and_then(|s| s.check(&mut p, &resolve));
        let journal = self.journal.unwrap_or_default().check(&mut p, base_dir);
        let keeper = self.keeper.and_then(|k| k.check(&mut p, &resolve));
        let api = self.api.map(|a| a.check(&mut p));
        check_notify(&mut p, &self.notify);
        check_pipeline(&mut p, &self.pipeline);
        check_policies(&mut p, &self.policies, &resolve);
        let (Some(chain), Some(safe), Some(signing), Some(journal), Some(keeper)) =
            (chain, safe, signing, journal, keeper)
        else {
            return Err(p);
        };
        let (Some(dex), Some(api)) =
            (dex.map_or(Some(None), |d| d.map(Some)), api.map_or(Some(None), |a| a.map(Some)))
        else {
            return Err(p);
        };
        if !p.is_empty() {
            return Err(p);
        }
        Ok(Config {
            name: DEFAULT_NAME.to_string(),
            chain,
            safe,
            dex,
            signing,
            journal,
            keeper,
            api,
            notify: self.notify,
            pipeline: self.pipeline,
            policies: self.policies,
            base_dir: base_dir.to_path_buf(),
        })
    }
}

impl ChainSection {
    fn check(self, p: &mut Vec<Problem>) -> Option<ChainConfig> {
        let urls = self.rpc_http.urls();
        if urls.is_empty() {
            p.push(Problem::new("chain.rpc_http", "name at least one endpoint"));
        }
        let mut endpoints: Vec<Option<Url>> = urls
            .iter()
            .enumerate()
            .map(|(i, u)| {
                let key = if urls.len() == 1 {
                    "chain.rpc_http".to_string()
                } else {
                    format!("chain.rpc_http[{i}]")
                };
                url(p, &key, u, &["http", "https"])
            })
            .collect();
        let mut seen = std::collections::BTreeSet::new();
        for u in endpoints.iter().flatten() {
            if !seen.insert(u.as_str()) {
                p.push(Problem::new("chain.rpc_http", format!("{} is listed twice", redact(u))));
            }
        }
        let rpc_http = if endpoints.is_empty() { None } else { endpoints.remove(0) };
        let rpc_fallbacks: Option<Vec<Url>> = endpoints.into_iter().collect();
        let rpc_ws = match &self.rpc_ws {
            Some(ws) => url(p, "chain.rpc_ws", ws, &["ws", "wss"]).map(Some),
            None => Some(None),
        };
        if self.chain_id == 0 {
            p.push(Problem::new("chain.chain_id", "must not be 0"));
        }
        let multicall3 = match &self.multicall3 {
            Some(m) => address(p, "chain.multicall3", m),
            None => Some(treasury_chain::contracts::CANONICAL_MULTICALL3),
        };
        if self.confirmations == 0 {
            p.push(Problem::new("chain.confirmations", "must be at least 1"));
        }
        Some(ChainConfig {
            rpc_http: rpc_http?,
            rpc_fallbacks: rpc_fallbacks?,
            rpc_ws: rpc_ws?,
            chain_id: self.chain_id,
            confirmations: self.confirmations,
            multicall3: multicall3?,
        })
    }
}

impl SafeSection {
    fn check(self, p: &mut Vec<Problem>) -> Option<SafeConfig> {
        let address_ = address(p, "safe.address", &self.address);
        let module = address(p, "safe.module", &self.module);
        Some(SafeConfig { address: address_?, module: module? })
    }
}

impl SigningSection {
    fn check(self, p: &mut Vec<Problem>, resolve: &impl Fn(&Path) -> PathBuf) -> Option<SigningConfig> {
        let quorum_file = resolve(&self.quorum_file);
        file(p, "signing.quorum_file", &quorum_file);
        let root = match (&self.root_url, self.root_token_env) {
            (Some(u), token) => {
                let url = url(p, "signing.root_url", u, &["http", "https"]);
                let token_env = match token {
                    Some(t) => env_name(p, "signing.root_token_env", &t).then_some(t),
                    None => {
                        p.push(Problem::new("signing.root_token_env", "required with root_url"));
                        None
                    }
                };
                Some(RootAccess { url: url?, token_env: token_env? })
            }
            (None, Some(_)) => {
                p.push(Problem::new("signing.root_token_env", "set but root_url is not"));
                return None;
            }
            (None, None) => None,
        };
        Some(SigningConfig { quorum_file, root })
    }
}

impl KeeperSection {
    fn check(self, p: &mut Vec<Problem>, resolve: &impl Fn(&Path) -> PathBuf) -> Option<KeeperConfig> {
        let key = match (self.keystore, self.pkcs11_label) {
            (Some(keystore), None) => {
                let path = resolve(&keystore);
                file(p, "keeper.keystore", &path);
                match self.password_env {
                    Some(env) => env_name(p, "keeper.password_env", &env)
                        .then_some(KeeperKeyConfig::Keystore { path, password_env: env }),
                    None => {
                        p.push(Problem::new("keeper.password_env", "required with keystore"));
                        None
                    }
                }
            }
            (None, Some(label)) if label.is_empty() => {
                p.push(Problem::new("keeper.pkcs11_label", "must not be empty"));
                None
            }
            (None, Some(label)) => {
                let token = self.pkcs11_token.filter(|t| !t.is_empty());
                if token.is_none() {
                    p.push(Problem::new("keeper.pkcs11_token", "required with pkcs11_label"));
                }
                let pin_env = self.pin_env.unwrap_or_else(|| KEEPER_PIN_ENV.to_string());
                let pin_ok = env_name(p, "keeper.pin_env", &pin_env);
                let module = match &self.pkcs11_module {
                    Some(m) => resolve(m),
                    None => std::env::var_os("TREASURY_HSM_MODULE")
                        .map_or_else(|| PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"), PathBuf::from),
                };
                match (token, pin_ok) {
                    (Some(token), true) => Some(KeeperKeyConfig::Pkcs11 { label, token, module, pin_env }),
                    _ => None,
                }
            }
            _ => {
                p.push(Problem::new("keeper", "set exactly one of keystore and pkcs11_label"));
                None
            }
        };
        if self.max_fee_per_gas == 0 {
            p.push(Problem::new("keeper.max_fee_gwei", "must be more than 0"));
        }
        if let Some(tip) = self.priority_fee_per_gas
            && tip > self.max_fee_per_gas
        {
            p.push(Problem::new("keeper.priority_fee_gwei", "must be between 0 and max_fee_gwei"));
        }
        if self.bump_after_blocks == 0 {
            p.push(Problem::new("keeper.bump_after_blocks", "must be at least 1"));
        }
        let jobs = super::jobs::check_jobs(p, self.jobs, self.max_fee_per_gas);
        let automation = super::jobs::check_automation(p, self.automation);
        Some(KeeperConfig {
            key: key?,
            max_fee_per_gas: self.max_fee_per_gas,
            priority_fee_per_gas: self.priority_fee_per_gas,
            bump_after_blocks: self.bump_after_blocks,
            jobs,
            automation,
        })
    }
}

impl ApiSection {
    fn check(self, p: &mut Vec<Problem>) -> Option<ApiConfig> {
        let listen = self.listen.parse::<SocketAddr>();
        if listen.is_err() {
            p.push(Problem::new("api.listen", "expected IP:PORT, e.g. 127.0.0.1:8080"));
        }
        let token_ok = env_name(p, "api.token_env", &self.token_env);
        match (listen, token_ok) {
            (Ok(listen), true) => Some(ApiConfig { listen, token_env: self.token_env }),
            _ => None,
        }
    }
}

impl JournalSection {
    fn check(self, p: &mut Vec<Problem>, base_dir: &Path) -> Option<JournalConfig> {
        if self.lease_ttl < std::time::Duration::from_secs(1) {
            p.push(Problem::new(
                "journal.lease_ttl",
                "must be at least 1s (it is renewed every third of it)",
            ));
        }
        if self.replica.as_deref().is_some_and(|r| r.trim().is_empty()) {
            p.push(Problem::new("journal.replica", "must not be empty (leave it out for HOSTNAME:PID)"));
        }
        let url = journal_url(p, &self.url, base_dir)?;
        let replica = self.replica.unwrap_or_else(default_replica_name);
        Some(JournalConfig { url, lease_ttl: self.lease_ttl, replica })
    }
}

/// This process's replica name when the config gives none: `HOSTNAME:PID`.
fn default_replica_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("{host}:{}", std::process::id())
}

/// `sqlite://PATH` with a relative PATH resolved against the config file's folder, or a
/// `postgres://` URL as given.
fn journal_url(p: &mut Vec<Problem>, url: &str, base_dir: &Path) -> Option<String> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Some(url.to_string());
    }
    let Some(path) = url.strip_prefix("sqlite://") else {
        if url.starts_with("sqlite:") {
            return Some(url.to_string());
        }
        p.push(Problem::new("journal.url", "use sqlite://PATH or postgres://USER@HOST:PORT/DATABASE"));
        return None;
    };
    let path = Path::new(path);
    let url = if path.is_absolute() || path.as_os_str().is_empty() || path == Path::new(":memory:") {
        url.to_string()
    } else {
        format!("sqlite://{}", base_dir.join(path).display())
    };
    Some(url)
}

fn check_notify(p: &mut Vec<Problem>, n: &NotifyConfig) {
    let mut names = std::collections::BTreeSet::new();
    for (i, hook) in n.webhooks.iter().enumerate() {
        match (hook.url.is_empty(), &hook.url_env) {
            (false, None) => {
                url(p, &format!("notify.webhook[{i}].url"), &hook.url, &["http", "https"]);
            }
            (true, Some(env)) => {
                env_name(p, &format!("notify.webhook[{i}].url_env"), env);
            }
            _ => p.push(Problem::new(format!("notify.webhook[{i}]"), "set exactly one of url and url_env")),
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
    if n.queue_size == 0 {
        p.push(Problem::new("notify.queue_size", "must be at least 1"));
    }
    if n.max_attempts == 0 {
        p.push(Problem::new("notify.max_attempts", "must be at least 1"));
    }
    if n.timeout.is_zero() {
        p.push(Problem::new("notify.timeout", "must be longer than 0"));
    }
    if n.backoff_max < n.backoff_initial {
        p.push(Problem::new("notify.backoff_max", "must be at least backoff_initial"));
    }
}

fn check_pipeline(p: &mut Vec<Problem>, c: &PipelineConfig) {
    let durations = [
        ("pipeline.poll_interval", c.poll_interval),
        ("pipeline.operation_ttl", c.operation_ttl),
        ("pipeline.escalation_ttl", c.escalation_ttl),
    ];
    for (key, value) in durations {
        if value.as_millis() == 0 {
            p.push(Problem::new(key, "must be at least 1 ms"));
        }
    }
    for (key, value) in
        [("pipeline.operation_ttl", c.operation_ttl), ("pipeline.escalation_ttl", c.escalation_ttl)]
    {
        if value.as_secs() == 0 {
            p.push(Problem::new(key, "must be at least 1 s (on-chain deadlines are in seconds)"));
        }
    }
    let positive = [
        ("pipeline.max_catch_up_blocks", c.max_catch_up_blocks),
        ("pipeline.log_range_blocks", c.log_range_blocks),
        ("pipeline.max_batch", c.max_batch as u64),
    ];
    for (key, value) in positive {
        if value == 0 {
            p.push(Problem::new(key, "must be at least 1"));
        }
    }
}

fn check_policies(p: &mut Vec<Problem>, pol: &PoliciesConfig, resolve: &impl Fn(&Path) -> PathBuf) {
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
        file(p, &format!("{key}.file"), &resolve(&policy.file));
        if let Err(e) = policy.trigger.validate() {
            p.push(Problem::new(format!("{key}.trigger"), e.to_string()));
        }
    }
}

pub(super) fn address(p: &mut Vec<Problem>, key: &str, value: &str) -> Option<Address> {
    match value.parse::<Address>() {
        Ok(a) if a == Address::ZERO => {
            p.push(Problem::new(key, "must not be the zero address"));
            None
        }
        Ok(a) => Some(a),
        Err(e) => {
            p.push(Problem::new(key, format!("not a valid address: {e}")));
            None
        }
    }
}

fn url(p: &mut Vec<Problem>, key: &str, value: &str, schemes: &[&str]) -> Option<Url> {
    match value.parse::<Url>() {
        Ok(u) if schemes.contains(&u.scheme()) => Some(u),
        Ok(u) => {
            p.push(Problem::new(
                key,
                format!("scheme `{}` not allowed (expected {})", u.scheme(), schemes.join(" or ")),
            ));
            None
        }
        Err(e) => {
            p.push(Problem::new(key, format!("not a valid URL: {e}")));
            None
        }
    }
}

/// A URL as it may be shown: an endpoint's path or query can carry an API key.
fn redact(u: &Url) -> String {
    let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
    format!("{}://{}{port}", u.scheme(), u.host_str().unwrap_or("?"))
}

fn file(p: &mut Vec<Problem>, key: &str, path: &Path) {
    if !path.is_file() {
        p.push(Problem::new(key, format!("no such file: {}", path.display())));
    }
}

/// An environment variable *name*: a secret pasted in its place must not be accepted (or echoed).
fn env_name(p: &mut Vec<Problem>, key: &str, name: &str) -> bool {
    let ok = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    if !ok {
        p.push(Problem::new(key, "expected the NAME of an environment variable (A-Z, 0-9, _)"));
    }
    ok
}
