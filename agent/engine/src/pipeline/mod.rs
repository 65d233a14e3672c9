//! The pipeline: from a trigger's firing to a confirmed transaction, resumable after a crash.
//!
//! Two halves, each reading only what the journal holds:
//! - [`intake`]: a firing → a snapshot pinned at its block → the policies it fires → intents
//!   journaled (idempotent by key) → the agent's guard → `guarded` or `rejected`.
//! - [`lane`]: the module's nonces are sequential, so operations go through one lane, one at a
//!   time: guarded intents → one planned operation (batched when the tier allows) → authorised
//!   (FROST; root first for tier 2) → submitted by the keeper → confirmed. After a crash the lane
//!   resumes the operation in flight from its journaled state and never plans a second one for it.
//!
//! [`Pipeline::connect`] builds everything from a [`Config`]; `treasury run` drives it.

pub mod intake;
pub mod lane;
mod observer;
pub mod runner;
pub mod simulate;
pub mod snapshots;
mod stored;

use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::Address;
use alloy::providers::{DynProvider, Provider};
use alloy::signers::local::PrivateKeySigner;
use treasury_chain::contracts::IUniswapV2Router02;
use treasury_chain::sender::{Sender, SenderConfig, SenderError};
use treasury_chain::snapshot::SnapshotSpec;
use treasury_policies::PolicySet;
use treasury_signer::quorum::{Coordinator, QuorumError};
use treasury_signer::root::{HsmConfig, HsmSigner, Pin, RootClient, RootError};

use crate::config::{Config, KeeperKeyConfig, PipelineConfig};
use crate::journal::{IntentId, IntentState, Journal, JournalError};
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::plan::Venue;

/// What can stop a pipeline step; the intents concerned keep their journaled state.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// The journal failed.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// A chain read failed (endpoint down, wrong answer).
    #[error("chain: {0}")]
    Chain(String),
    /// The keeper's sender failed.
    #[error(transparent)]
    Sender(#[from] SenderError),
    /// The quorum could not sign.
    #[error(transparent)]
    Quorum(#[from] QuorumError),
    /// The root service failed.
    #[error(transparent)]
    Root(#[from] RootError),
    /// The policies could not be loaded.
    #[error(transparent)]
    Policies(#[from] treasury_policies::PolicyError),
    /// Something in the configuration cannot work.
    #[error("config: {0}")]
    Config(String),
    /// The journaled signature of an operation cannot be used: nothing is sent for it.
    #[error("{}: operation {operation_id} cannot be sent: {reason}", intent_list(intents))]
    UnusableSignature {
        /// The intents the operation carries.
        intents: Vec<IntentId>,
        /// The operation.
        operation_id: String,
        /// What is wrong with its signature.
        reason: String,
    },
}

/// `intent 4` or `intents 4, 5`.
fn intent_list(ids: &[IntentId]) -> String {
    let list: Vec<String> = ids.iter().map(ToString::to_string).collect();
    let noun = if ids.len() == 1 { "intent" } else { "intents" };
    format!("{noun} {}", list.join(", "))
}

impl PipelineError {
    /// A chain error with context.
    pub(crate) fn chain(what: &str, e: impl std::fmt::Display) -> Self {
        Self::Chain(format!("{what}: {e}"))
    }
}

/// Result alias for the pipeline.
pub type Result<T, E = PipelineError> = std::result::Result<T, E>;

/// Called after every committed transition (tests use it to crash the agent at a chosen state).
pub type TransitionHook = Arc<dyn Fn(IntentState) + Send + Sync>;

/// Everything one Safe's pipeline needs, connected.
pub struct Pipeline {
    journal: Journal,
    provider: DynProvider,
    policies: PolicySet,
    spec: SnapshotSpec,
    venue: Option<Venue>,
    chain_id: u64,
    policy_hash: alloy::primitives::B256,
    coordinator: Arc<Coordinator>,
    root: Option<RootClient>,
    sender: Sender,
    settings: PipelineConfig,
    hook: Option<TransitionHook>,
    metrics: Arc<Metrics>,
    notifier: Notifier,
    /// The history window last found (a month's first block does not move).
    window_cache: std::sync::Mutex<Option<treasury_policies::replay::HistoryWindow>>,
    /// The snapshot intake read last: the planner reuses it while it is the chain's head (a
    /// snapshot is pinned to its block's hash, so it cannot go stale at that block).
    last_snapshot: std::sync::Mutex<Option<treasury_chain::snapshot::Snapshot>>,
    /// The intents' payloads, parsed once.
    stored: stored::StoredIntents,
    /// The gas limit last worked out for a tier-1 `exec` of each shape of operation
    /// ([`lane::GasLimits`]).
    gas_limits: lane::GasLimits,
    /// The chain's shared snapshot reader (lanes of one process on one chain read together).
    snapshots: Option<snapshots::SnapshotReader>,
    /// Held while an operation is planned, and while a keeper job's perform through the module
    /// is signed and sent: the two never take the same module nonce.
    module_nonce_lock: Arc<tokio::sync::Mutex<()>>,
    /// The keeper jobs the nodes pin with the policies (`execute = "module"`).
    keeper_jobs: Vec<treasury_policies::upkeep::PinnedJob>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("chain_id", &self.chain_id)
            .field("safe", &self.spec.safe)
            .field("module", &self.spec.module)
            .finish_non_exhaustive()
    }
}

/// A provider over every endpoint of `chain`, each checked to serve `chain.chain_id` when it
/// answers (one that is down at start is only logged: the others carry the chain meanwhile).
pub async fn connect_chain(chain: &crate::config::ChainConfig) -> Result<DynProvider> {
    let endpoints = chain.endpoints();
    let mut reachable = 0;
    for (i, url) in endpoints.iter().enumerate() {
        let one = treasury_chain::provider::connect_endpoints_with(
            std::slice::from_ref(url),
            treasury_chain::failover::FailoverOptions { rounds: 1, ..Default::default() },
        )
        .map_err(|e| PipelineError::chain("connect", e))?;
        match one.get_chain_id().await {
            Ok(id) if id == chain.chain_id => reachable += 1,
            Ok(id) => {
                return Err(PipelineError::Config(format!(
                    "chain.chain_id is {} but RPC endpoint {i} serves chain {id}",
                    chain.chain_id
                )));
            }
            Err(e) => tracing::warn!(endpoint = i, error = %e, "RPC endpoint unreachable at start"),
        }
    }
    if reachable == 0 {
        return Err(PipelineError::Chain(format!(
            "eth_chainId: none of the {} RPC endpoints answers",
            endpoints.len()
        )));
    }
    treasury_chain::provider::connect_endpoints(&endpoints).map_err(|e| PipelineError::chain("connect", e))
}

/// The parts [`Pipeline::new`] takes, already opened.
pub struct Parts {
    /// The journal.
    pub journal: Journal,
    /// HTTP provider for reads.
    pub provider: DynProvider,
    /// The compiled policies.
    pub policies: PolicySet,
    /// What a snapshot reads.
    pub spec: SnapshotSpec,
    /// Where swaps go; `None` without a `[dex]` section.
    pub venue: Option<Venue>,
    /// The quorum coordinator.
    pub coordinator: Arc<Coordinator>,
    /// The root service, for tier 2.
    pub root: Option<RootClient>,
    /// The keeper's sender.
    pub sender: Sender,
    /// Timing and batching settings.
    pub settings: PipelineConfig,
}

impl Pipeline {
    /// A pipeline over already opened parts; checks the provider's chain id matches the sender's.
    pub async fn new(parts: Parts) -> Result<Self> {
        let chain_id =
            parts.provider.get_chain_id().await.map_err(|e| PipelineError::chain("eth_chainId", e))?;
        if chain_id != parts.sender.chain_id() {
            return Err(PipelineError::Config(format!(
                "the RPC endpoint serves chain {chain_id}, the keeper signs for {}",
                parts.sender.chain_id()
            )));
        }
        let policy_hash = policy_bundle(chain_id, &parts.spec, parts.venue, &parts.policies).hash();
        Ok(Self {
            policy_hash,
            journal: parts.journal,
            provider: parts.provider,
            policies: parts.policies,
            spec: parts.spec,
            venue: parts.venue,
            chain_id,
            coordinator: parts.coordinator,
            root: parts.root,
            sender: parts.sender,
            settings: parts.settings,
            hook: None,
            metrics: Arc::new(Metrics::new()),
            notifier: Notifier::disabled(),
            window_cache: std::sync::Mutex::new(None),
            gas_limits: lane::GasLimits::default(),
            last_snapshot: std::sync::Mutex::new(None),
            stored: stored::StoredIntents::default(),
            snapshots: None,
            module_nonce_lock: Arc::default(),
            keeper_jobs: Vec::new(),
        })
    }

    /// Pins `jobs`' module-executed ones with the policies: they enter the bundle (and its hash)
    /// the signer nodes replay against.
    pub fn with_keeper_jobs(mut self, jobs: &[crate::config::jobs::KeeperJob]) -> Self {
        self.keeper_jobs = jobs.iter().filter_map(crate::config::jobs::KeeperJob::pinned).collect();
        self.policy_hash = policy_bundle(self.chain_id, &self.spec, self.venue, &self.policies)
            .with_keeper_jobs(self.keeper_jobs.clone())
            .hash();
        self
    }

    /// Hash of the policy bundle (policies and module-executed keeper jobs) decisions name.
    pub fn policy_hash(&self) -> alloy::primitives::B256 {
        self.policy_hash
    }

    /// The keeper jobs pinned with the policies (`execute = "module"`).
    pub fn keeper_jobs(&self) -> &[treasury_policies::upkeep::PinnedJob] {
        &self.keeper_jobs
    }

    /// The lock that keeps planned operations and keeper performs through the module apart.
    pub fn module_nonce_lock(&self) -> &Arc<tokio::sync::Mutex<()>> {
        &self.module_nonce_lock
    }

    /// Connects everything `config` names: journal, RPC, policies, quorum, root service, keeper.
    ///
    /// Secrets come from the environment: the keeper keystore password (`keeper.password_env`),
    /// the coordinator passphrase (`TREASURY_COORDINATOR_PASSPHRASE`), the root token.
    pub async fn connect(config: &Config) -> Result<Self> {
        let journal = Journal::open(&config.journal.url).await?;
        Self::connect_with(config, journal).await
    }

    /// Like [`Pipeline::connect`], on an already opened journal (e.g. a replica's
    /// [`Journal::fenced`] handle, so every step it takes checks the lease).
    pub async fn connect_with(config: &Config, journal: Journal) -> Result<Self> {
        Self::connect_shared(config, journal, &crate::shared::Shared::default()).await
    }

    /// Like [`Pipeline::connect_with`], taking the provider, coordinator, root client and keeper
    /// key from `shared` (made there by the first lane that needs each).
    pub async fn connect_shared(
        config: &Config,
        journal: Journal,
        shared: &crate::shared::Shared,
    ) -> Result<Self> {
        let provider = shared
            .provider(config.chain.chain_id, config.chain.endpoints(), || connect_chain(&config.chain))
            .await?;
        let policies = PolicySet::load(&config.policies, &config.base_dir)?;
        let spec = snapshot_spec(config)?;
        let venue = match &config.dex {
            Some(dex) => Some(venue(&provider, spec.safe, dex.router).await?),
            None => None,
        };
        let coordinator = shared
            .coordinator(config.signing.quorum_file.clone(), &coordinator_passphrase_id(), || {
                Coordinator::from_quorum_file(&config.signing.quorum_file)
            })
            .await?;
        let root = match &config.signing.root {
            Some(root) => {
                let env = &root.token_env;
                let token = std::env::var(env).map_err(|_| {
                    PipelineError::Config(format!(
                        "signing.root_token_env: environment variable {env} is not set"
                    ))
                })?;
                Some(shared.root(root.url.to_string(), token).await)
            }
            None => None,
        };
        let key = keeper_key_shared(config, shared).await?;
        let sender = keeper_sender(provider.clone(), key, sender_config(config)).await?;
        let snapshots =
            snapshots::SnapshotReader::for_chain(config.chain.chain_id, config.chain.endpoints(), &provider);
        let mut pipeline = Self::new(Parts {
            journal,
            provider,
            policies,
            spec,
            venue,
            coordinator,
            root,
            sender,
            settings: config.pipeline.clone(),
        })
        .await?;
        pipeline.snapshots = Some(snapshots);
        Ok(pipeline.with_keeper_jobs(&config.keeper.jobs))
    }

    /// Calls `hook` after every transition this pipeline commits.
    pub fn with_transition_hook(mut self, hook: TransitionHook) -> Self {
        self.hook = Some(hook);
        self
    }

    /// Reports stage latencies to `metrics` and events to `notifier`.
    pub fn with_telemetry(mut self, metrics: Arc<Metrics>, notifier: Notifier) -> Self {
        self.metrics = metrics;
        self.notifier = notifier;
        self
    }

    /// The quorum coordinator.
    pub fn coordinator(&self) -> &Arc<Coordinator> {
        &self.coordinator
    }

    /// The metrics this pipeline updates.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The notifier this pipeline reports to.
    pub fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    /// The root service client, when configured.
    pub fn root(&self) -> Option<&RootClient> {
        self.root.as_ref()
    }

    /// The journal this pipeline writes.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// The read provider.
    pub fn provider(&self) -> &DynProvider {
        &self.provider
    }

    /// The compiled policies.
    pub fn policies(&self) -> &PolicySet {
        &self.policies
    }

    /// The Safe.
    pub fn safe(&self) -> Address {
        self.spec.safe
    }

    /// The module.
    pub fn module(&self) -> Address {
        self.spec.module
    }

    /// The chain id.
    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// The keeper's sender (shared with the keeper jobs: one account, one nonce sequence).
    pub fn sender(&self) -> &Sender {
        &self.sender
    }

    /// The keeper's address.
    pub fn keeper(&self) -> Address {
        self.sender.address()
    }

    /// Timing and batching settings.
    pub fn settings(&self) -> &PipelineConfig {
        &self.settings
    }

    fn transitioned(&self, state: IntentState) {
        if let Some(hook) = &self.hook {
            hook(state);
        }
    }
}

/// What a snapshot reads for `config`: the Safe, its module and every configured token.
pub fn snapshot_spec(config: &Config) -> Result<SnapshotSpec> {
    Ok(SnapshotSpec {
        safe: config.safe.address,
        module: config.safe.module,
        multicall3: config.chain.multicall3,
        assets: config.policies.asset_specs(),
    })
}

/// The policy bundle a pipeline decides with, which replaying signer nodes pin (its hash goes
/// into every decision).
pub fn policy_bundle(
    chain_id: u64,
    spec: &SnapshotSpec,
    venue: Option<Venue>,
    policies: &PolicySet,
) -> treasury_policies::replay::PolicyBundle {
    treasury_policies::replay::PolicyBundle::new(
        chain_id,
        spec,
        venue,
        policies.config().clone(),
        policies.sources(),
    )
}

/// The swap venue behind `router` (its WETH read from the router).
pub async fn venue(provider: &DynProvider, safe: Address, router: Address) -> Result<Venue> {
    let weth = IUniswapV2Router02::new(router, provider)
        .WETH()
        .call()
        .await
        .map_err(|e| PipelineError::chain(&format!("WETH() of router {router}"), e))?;
    Ok(Venue { safe, router, weth })
}

/// The sender settings from `[chain]` and `[keeper]`.
pub fn sender_config(config: &Config) -> SenderConfig {
    SenderConfig {
        confirmations: config.chain.confirmations,
        bump_after_blocks: config.keeper.bump_after_blocks,
        max_fee_per_gas: config.keeper.max_fee_per_gas,
        priority_fee_per_gas: config.keeper.priority_fee_per_gas,
        poll_interval: config.pipeline.poll_interval.min(Duration::from_millis(250)),
        ..SenderConfig::default()
    }
}

/// The keeper's key, as the config names it.
#[derive(Debug)]
pub enum KeeperKey {
    /// Decrypted from an encrypted JSON keystore.
    Local(PrivateKeySigner),
    /// A key in a PKCS#11 token; it never leaves the token.
    Hsm(HsmSigner),
}

/// Opens the keeper's key: the keystore decrypted with `keeper.password_env`, or the PKCS#11 key
/// `keeper.pkcs11_label` in token `keeper.pkcs11_token` with the PIN from `keeper.pin_env`.
pub fn keeper_key(config: &Config) -> Result<KeeperKey> {
    let (label, token, module, pin_env) = match &config.keeper.key {
        KeeperKeyConfig::Keystore { path, password_env } => {
            return Ok(KeeperKey::Local(decrypt_keystore(path, &keystore_password(password_env)?)?));
        }
        KeeperKeyConfig::Pkcs11 { label, token, module, pin_env } => (label, token, module, pin_env),
    };
    let pin = Pin::from_env(pin_env).map_err(|e| PipelineError::Config(format!("keeper.pin_env: {e}")))?;
    let hsm = HsmConfig { module: module.clone(), token_label: token.clone(), key_label: label.clone(), pin };
    let signer = HsmSigner::connect(hsm).map_err(|e| {
        PipelineError::Config(format!("keeper.pkcs11_label `{label}` in token `{token}`: {e}"))
    })?;
    Ok(KeeperKey::Hsm(signer))
}

/// Like [`keeper_key`], a keystore decrypted once per process (`shared`).
async fn keeper_key_shared(config: &Config, shared: &crate::shared::Shared) -> Result<KeeperKey> {
    let KeeperKeyConfig::Keystore { path, password_env } = &config.keeper.key else {
        return keeper_key(config);
    };
    let password = keystore_password(password_env)?;
    let key = shared.keystore(path.clone(), &password, || decrypt_keystore(path, &password)).await?;
    Ok(KeeperKey::Local(key))
}

fn keystore_password(password_env: &str) -> Result<String> {
    std::env::var(password_env).map_err(|_| {
        PipelineError::Config(format!("keeper.password_env: environment variable {password_env} is not set"))
    })
}

fn decrypt_keystore(path: &std::path::Path, password: &str) -> Result<PrivateKeySigner> {
    PrivateKeySigner::decrypt_keystore(path, password).map_err(|e| {
        PipelineError::Config(format!("keeper.keystore {}: cannot decrypt: {e}", path.display()))
    })
}

/// What the coordinator passphrase is now (from the environment, or the file it names), to tell
/// coordinators opened with different passphrases apart; never stored as such.
fn coordinator_passphrase_id() -> String {
    let var = treasury_signer::quorum::store::COORDINATOR_PASSPHRASE_ENV;
    format!("{:?}/{:?}", std::env::var_os(var), std::env::var_os(format!("{var}_FILE")))
}

/// A sender signing with `key`.
pub async fn keeper_sender(provider: DynProvider, key: KeeperKey, config: SenderConfig) -> Result<Sender> {
    Ok(match key {
        KeeperKey::Local(k) => Sender::new(provider, k, config).await?,
        KeeperKey::Hsm(h) => Sender::new(provider, h, config).await?,
    })
}
