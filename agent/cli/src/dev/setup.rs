//! The set-up of `treasury dev`: anvil, the HSM root, the deployment, the signer quorum, the
//! root service, the keeper, the config and the agent — each step reported with its duration.

use std::path::{Path, PathBuf};
use std::time::Duration;

use alloy::primitives::{Address, U256, address};
use alloy::providers::DynProvider;
use alloy::signers::local::PrivateKeySigner;
use anyhow::{Context, bail};
use tokio::process::Command;
use treasury_chain::AdminAction;
use treasury_devnet::nodes::init_nodes_with;
use treasury_devnet::world::{
    DeployConfig, Deployment, GroupKey, configure_as_safe, default_allow_list, deploy,
};
use treasury_signer::quorum::coordinator::{PinnedNode, run_dkg};
use treasury_signer::quorum::guard::{AllowEntry, Budget, GuardConfig};
use treasury_signer::quorum::quorum_file::QuorumFile;
use treasury_signer::quorum::replay::{ReplayConfig, ReplayMode, pin_policy};
use treasury_signer::quorum::store::{
    COORDINATOR_PASSPHRASE_ENV, NodeConfig, NodeStore, PASSPHRASE_ENV, Passphrase,
    create_coordinator_key_with, open_coordinator_key,
};
use treasury_signer::root::config::new_token;

use super::view::Progress;
use super::{ETH_E18, GOV_E18, USDC_E6};
use treasury_agent::config::Config;
use treasury_devnet::procs::{self, Procs};

use crate::cmd::trigger::AgentApi;
use treasury_devnet::softhsm::{self, SoftHsm};

/// Dev-only secrets: they protect nothing but files in the state directory of a local demo.
pub const NODE_PASS: &str = "treasury-dev-node";
/// The coordinator key's passphrase (dev only).
pub const COORDINATOR_PASS: &str = "treasury-dev-coordinator";
/// The keeper keystore's password (dev only).
pub const KEEPER_PASS: &str = "treasury-dev-keeper";
const HSM_PIN: &str = "1234";
const HSM_SO_PIN: &str = "12345678";
const HSM_TOKEN: &str = "treasury-dev-root";

/// The named payees of the example policies.
pub const ALICE: Address = address!("0x00000000000000000000000000000000000000a1");
/// Bob (payroll).
pub const BOB: Address = address!("0x00000000000000000000000000000000000000b2");
/// The grantee (grant stream, the escalated GOV grant).
pub const GRANTEE: Address = address!("0x00000000000000000000000000000000000000c3");

/// The secp256k1 generator as a stand-in group key until DKG has run (the module refuses an
/// invalid key at deployment); replaced by the quorum's key before the agent starts.
const PLACEHOLDER_GROUP_KEY_X: U256 = U256::from_be_bytes(alloy::primitives::hex!(
    "79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"
));

/// Everything the set-up started and wrote.
#[derive(Debug)]
pub struct Running {
    /// The state directory (absolute).
    pub dir: PathBuf,
    /// Addresses of the deployment.
    pub deployment: Deployment,
    /// Sends from anvil's first dev account (deployer, owner of feeds and tokens).
    pub deployer: DynProvider,
    /// Its address.
    pub deployer_address: Address,
    /// The agent's config file.
    pub config_path: PathBuf,
    /// The agent's config.
    pub config: Config,
    /// The keeper's address.
    pub keeper: Address,
    /// The agent's requester token at the root service.
    pub root_token: String,
    /// The root service's URL.
    pub root_url: String,
    /// The demo operator's approver token at the root service.
    pub approver_token: String,
    /// The demo approvers' names and passwords for the approvals page.
    pub approvers: Vec<(String, String)>,
}

/// Runs every set-up step, registering each child in `procs` as soon as it starts.
pub async fn run(dir: &Path, procs: &mut Procs, progress: &mut Progress) -> anyhow::Result<Running> {
    run_on(dir, procs, progress, &[]).await
}

/// As [`run`], anvil started with `anvil_args` too (`--chain-id 10` for a second chain).
pub async fn run_on(
    dir: &Path,
    procs: &mut Procs,
    progress: &mut Progress,
    anvil_args: &[&str],
) -> anyhow::Result<Running> {
    let t = progress.start("anvil");
    let rpc = start_anvil(dir, procs, anvil_args).await?;
    progress.done(t, &rpc);

    let t = progress.start("dev accounts");
    let (deployer_key, owners, keeper_key) = accounts(dir)?;
    let deployer = treasury_chain::provider::connect_with_signer(&rpc, deployer_key.clone())
        .context("connecting to anvil")?;
    progress.done(
        t,
        &format!("deployer {}, Safe owners 2-of-3, keeper {}", deployer_key.address(), keeper_key.address()),
    );

    let t = progress.start("HSM root key (SoftHSM2)");
    let hsm = Hsm::new(dir)?;
    let root = hsm.init().await?;
    progress.done(t, &format!("root {root}"));

    let t = progress.start("deploy Safe, module, Uniswap V2, USDC, GOV, feeds");
    let mut deploy_config =
        DeployConfig::demo(owners.clone(), 2, GroupKey { x: PLACEHOLDER_GROUP_KEY_X, parity: 0 }, root);
    tune_balances(&mut deploy_config);
    let mut deployment =
        deploy(&deployer, deployer_key.address(), &deploy_config).await.context("deploying the treasury")?;
    deployment.write(&dir.join("deployment.json")).context("writing deployment.json")?;
    progress.done(t, &format!("Safe {} module {}", deployment.safe, deployment.module));

    let t = progress.start("signer nodes (3 processes)");
    let coordinator_key_path = dir.join("coordinator.key");
    let pass = Passphrase::new(COORDINATOR_PASS);
    create_coordinator_key_with(&coordinator_key_path, &pass, true)
        .context("creating the coordinator key")?;
    let coordinator_key =
        open_coordinator_key(&coordinator_key_path, &pass).context("opening the coordinator key")?;
    let guard = node_guard(&deployment, root, keeper_key.address());
    // Each node replays tier-1 decisions through its own connection to the chain.
    let replay = ReplayConfig { mode: ReplayMode::Required, rpc: Some(rpc.clone()), ..Default::default() };
    let reports = init_nodes_with(&dir.join("nodes"), 3, 2, &coordinator_key, &guard, NODE_PASS, &replay)
        .context("initialising the signer node directories")?;
    let mut pinned = Vec::new();
    for (i, r) in reports.iter().enumerate() {
        let url = start_node(dir, i, procs).await?;
        pinned.push(PinnedNode { url, fingerprint: r.fingerprint.clone() });
    }
    let fingerprints: Vec<String> = reports.iter().map(|r| r.fingerprint.clone()).collect();
    progress.done(t, &pinned.iter().map(|p| p.url.as_str()).collect::<Vec<_>>().join(" "));

    let t = progress.start("DKG 2-of-3");
    let dkg = run_dkg(coordinator_key, &coordinator_key_path.display().to_string(), &pinned, 2, 5)
        .await
        .context("running DKG across the signer nodes")?;
    dkg.quorum.save(&dir.join("quorum.toml")).context("writing quorum.toml")?;
    progress.done(t, &format!("group key x {:#x}…", dkg.group_key.x >> 192));

    let t = progress.start("register the group key in the module (Safe owners)");
    configure_as_safe(
        &deployer,
        &deployment,
        &owners[..2],
        &AdminAction::SetGroupKey { x: dkg.group_key.x, parity: dkg.group_key.parity },
    )
    .await
    .context("setting the group key through the Safe")?;
    // What the summary reports is the key the module registered (its GroupKeyChanged event), not
    // the placeholder it was deployed with.
    deployment.group_key = registered_group_key(&deployer, deployment.module).await?;
    if deployment.group_key != (GroupKey { x: dkg.group_key.x, parity: dkg.group_key.parity }) {
        bail!("the module registered another group key than the DKG's");
    }
    deployment.write(&dir.join("deployment.json")).context("writing deployment.json")?;
    configure_as_safe(&deployer, &deployment, &owners[..2], &AdminAction::SetRoot { root })
        .await
        .context("setting the root through the Safe")?;
    progress.done(t, "group key and HSM root set");

    let t = progress.start("root service");
    let (root_config, _root_db, RootTokens { requester: root_token, approver: approver_token, approvers }) =
        hsm.write_service_config(&deployment, root, &[GRANTEE, ALICE, BOB, keeper_key.address()])?;
    let root_url = start_root(&hsm, &root_config, procs).await?;
    progress.done(t, &root_url);

    let t = progress.start("keeper keystore and config");
    let mut rng = rand::thread_rng();
    PrivateKeySigner::encrypt_keystore(
        dir,
        &mut rng,
        keeper_key.to_bytes(),
        KEEPER_PASS,
        Some("keeper.json"),
    )
    .context("writing the keeper keystore")?;
    super::config::write_policies(dir)?;
    let config_path = dir.join("treasury.toml");
    let mut text = super::config::render(dir, &rpc, &deployment, &root_url, keeper_key.address())?;
    text.push_str(&super::config::demo_upkeep(&deployer).await?);
    std::fs::write(&config_path, text).with_context(|| format!("writing {}", config_path.display()))?;
    pin_policies(dir, &config_path, reports.len()).await?;
    let saved = Saved {
        root_token: root_token.clone(),
        approver_token: approver_token.clone(),
        fingerprints,
        approvers,
    };
    let path = dir.join(SAVED);
    std::fs::write(&path, serde_json::to_string_pretty(&saved)?)
        .with_context(|| format!("writing {}", path.display()))?;
    let running = Running::assemble(dir, deployment, deployer, &deployer_key, &keeper_key, root_url, saved)?;
    progress.done(t, &running.config_path.display().to_string());
    Ok(running)
}

impl Running {
    /// Loads the config written in `dir` and writes `env.sh` for the CLI.
    fn assemble(
        dir: &Path,
        deployment: Deployment,
        deployer: DynProvider,
        deployer_key: &PrivateKeySigner,
        keeper_key: &PrivateKeySigner,
        root_url: String,
        saved: Saved,
    ) -> anyhow::Result<Self> {
        let config_path = dir.join("treasury.toml");
        let config =
            Config::load(&config_path).with_context(|| format!("checking {}", config_path.display()))?;
        write_env_file(dir, &saved.root_token, &saved.approver_token)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            deployment,
            deployer,
            deployer_address: deployer_key.address(),
            config_path,
            config,
            keeper: keeper_key.address(),
            root_token: saved.root_token,
            root_url,
            approver_token: saved.approver_token,
            approvers: saved.approvers,
        })
    }
}

/// Starts `treasury run` on the written config (its log goes to `agent.log`); its API, with a
/// token new at each start.
pub async fn start_agent(r: &Running, procs: &mut Procs) -> anyhow::Result<AgentApi> {
    let exe = std::env::current_exe().context("locating the treasury executable")?;
    let token = hex::encode(rand::random::<[u8; 32]>());
    let mut cmd = Command::new(&exe);
    cmd.args(["run", "--config"])
        .arg(&r.config_path)
        .env(COORDINATOR_PASSPHRASE_ENV, COORDINATOR_PASS)
        .env("TREASURY_KEEPER_PASSWORD", KEEPER_PASS)
        .env("TREASURY_ROOT_TOKEN", &r.root_token)
        .env(API_TOKEN_ENV, &token)
        .env("RUST_LOG", "info");
    let log = r.dir.join("agent.log");
    let (p, url) = procs::spawn("agent", cmd, &log, Duration::from_secs(120), |l| {
        l.strip_prefix("api listening on ").map(|u| u.trim().to_string())
    })
    .await?;
    procs.push(p);
    append_api_env(&r.dir, &url, &token)?;
    AgentApi::new(&url, token)
}

/// The environment variable the dev config names for the agent API's token.
const API_TOKEN_ENV: &str = "TREASURY_API_TOKEN";

/// Adds the agent API's URL and token to `env.sh`, for `treasury trigger`.
fn append_api_env(dir: &Path, url: &str, token: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let path = dir.join("env.sh");
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(file, "export TREASURY_API_URL={url}\nexport {API_TOKEN_ENV}={token}")
        .with_context(|| format!("writing {}", path.display()))
}

/// What a resumed run needs that no other file holds.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Saved {
    /// The agent's requester token at the root service (only its hash is in `root.toml`).
    root_token: String,
    /// The demo operator's approver token at the root service (only its hash is in `root.toml`).
    approver_token: String,
    /// Fingerprints of node0, node1, node2, to find each in the quorum file.
    fingerprints: Vec<String>,
    /// The demo approvers' names and passwords for the approvals page (only their Argon2id
    /// hashes are in `root.toml`); none in a state directory made before the page.
    #[serde(default)]
    approvers: Vec<(String, String)>,
}

const SAVED: &str = "dev.json";
/// anvil's state file: loaded at start, written every 2 s and on exit.
const ANVIL_STATE: &str = "anvil-state.json";

async fn start_anvil(dir: &Path, procs: &mut Procs, extra: &[&str]) -> anyhow::Result<String> {
    let state = dir.join(ANVIL_STATE).display().to_string();
    let mut args = vec!["--state".into(), state, "--state-interval".into(), "2".into()];
    args.extend(extra.iter().map(|a| a.to_string()));
    let (anvil, rpc) = procs::anvil(dir, &args).await?;
    procs.push(anvil);
    Ok(rpc)
}

/// anvil's dev keys: deployer (0), Safe owners (1–3), keeper (8).
fn accounts(dir: &Path) -> anyhow::Result<(PrivateKeySigner, Vec<PrivateKeySigner>, PrivateKeySigner)> {
    let keys = dev_keys(&dir.join("anvil-accounts.json"))?;
    if keys.len() < 9 {
        bail!("anvil lists {} dev accounts; treasury dev needs 9", keys.len());
    }
    Ok((keys[0].clone(), keys[1..4].to_vec(), keys[8].clone()))
}

/// Pins the policy set of the config at `config_path` in every node, as each operator would with
/// `treasury signer pin-policy` (the running nodes pick it up at their first request).
async fn pin_policies(dir: &Path, config_path: &Path, nodes: usize) -> anyhow::Result<()> {
    let bundle = crate::cmd::signer::bundle_of(config_path).await?;
    for i in 0..nodes {
        let node_dir = dir.join("nodes").join(format!("node{i}"));
        let store = NodeStore::open(&node_dir, &Passphrase::new(NODE_PASS))
            .with_context(|| format!("opening {}", node_dir.display()))?;
        pin_policy(
            &node_dir,
            &store.secrets.identity()?,
            &store.config.replay,
            &bundle,
            &[],
            treasury_signer::quorum::nonces::now(),
        )
        .with_context(|| format!("pinning the policy set of {}", node_dir.display()))?;
    }
    Ok(())
}

/// Points `nodes/node{i}`'s replay at `rpc` (anvil's port changes when a run is resumed).
fn set_node_rpc(dir: &Path, i: usize, rpc: &str) -> anyhow::Result<()> {
    let path = dir.join("nodes").join(format!("node{i}")).join("node.toml");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut config: NodeConfig =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    config.replay.rpc = Some(rpc.to_string());
    std::fs::write(&path, toml::to_string_pretty(&config)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// Starts `treasury signer serve` for `nodes/node{i}`; returns its URL.
async fn start_node(dir: &Path, i: usize, procs: &mut Procs) -> anyhow::Result<String> {
    let exe = std::env::current_exe().context("locating the treasury executable")?;
    let mut cmd = Command::new(&exe);
    cmd.args(["signer", "serve", "--listen", "127.0.0.1:0", "--dir"])
        .arg(dir.join("nodes").join(format!("node{i}")))
        .env(PASSPHRASE_ENV, NODE_PASS);
    let log = dir.join(format!("node{i}.log"));
    let (p, addr) = procs::spawn(&format!("signer node{i}"), cmd, &log, Duration::from_secs(60), |l| {
        serde_json::from_str::<serde_json::Value>(l).ok()?["listening"].as_str().map(str::to_string)
    })
    .await?;
    procs.push(p);
    Ok(format!("http://{addr}"))
}

/// Starts `treasury root serve`; returns its URL.
async fn start_root(hsm: &Hsm, config: &Path, procs: &mut Procs) -> anyhow::Result<String> {
    let exe = std::env::current_exe().context("locating the treasury executable")?;
    let mut cmd = hsm.command(&exe);
    cmd.args(["root", "serve", "--listen", "127.0.0.1:0", "--config"]).arg(config);
    let log = hsm.dir.parent().unwrap_or(&hsm.dir).join("root.log");
    let (p, url) = procs::spawn("root service", cmd, &log, Duration::from_secs(30), |l| {
        l.strip_prefix("listening on ").map(|u| u.trim().to_string())
    })
    .await?;
    procs.push(p);
    Ok(url)
}

/// Restarts everything from a previous run's state directory: anvil from its dumped state (its
/// clock moved past the last block, which anvil does not keep), the nodes and the root service
/// from their files (the quorum file and the config get their new URLs). The agent then resumes
/// from its journal.
pub async fn resume(dir: &Path, procs: &mut Procs, progress: &mut Progress) -> anyhow::Result<Running> {
    let saved_path = dir.join(SAVED);
    let saved: Saved = serde_json::from_str(&std::fs::read_to_string(&saved_path).with_context(|| {
        format!(
            "{}: the previous run did not finish its set-up, so there is nothing to resume",
            saved_path.display()
        )
    })?)
    .with_context(|| format!("parsing {}", saved_path.display()))?;
    if !dir.join(ANVIL_STATE).exists() {
        bail!(
            "{} is missing: anvil never dumped its state, so there is no chain to resume",
            dir.join(ANVIL_STATE).display()
        );
    }
    let t = progress.start("anvil (from its dumped state)");
    let rpc = start_anvil(dir, procs, &[]).await?;
    let (deployer_key, _, keeper_key) = accounts(dir)?;
    let deployer = treasury_chain::provider::connect_with_signer(&rpc, deployer_key.clone())
        .context("connecting to anvil")?;
    let deployment = Deployment::read(&dir.join("deployment.json")).context("reading deployment.json")?;
    use alloy::providers::Provider;
    let code = deployer.get_code_at(deployment.module).await.context("eth_getCode")?;
    if code.is_empty() {
        bail!("the reloaded chain has no module at {}: anvil's state dump is not usable", deployment.module);
    }
    let head = deployer
        .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
        .await
        .context("eth_getBlockByNumber")?
        .context("no latest block")?;
    let wall =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    if head.header.timestamp >= wall {
        let _: serde_json::Value = deployer
            .raw_request("evm_increaseTime".into(), (U256::from(head.header.timestamp + 1 - wall),))
            .await
            .context("evm_increaseTime")?;
    }
    progress.done(t, &format!("{rpc}, block {}", head.header.number));

    let t = progress.start("signer nodes (3 processes)");
    let quorum_path = dir.join("quorum.toml");
    let mut quorum = QuorumFile::load(&quorum_path).context("reading quorum.toml")?;
    let mut urls = Vec::new();
    for (i, fingerprint) in saved.fingerprints.iter().enumerate() {
        set_node_rpc(dir, i, &rpc)?;
        let url = start_node(dir, i, procs).await?;
        let node = quorum
            .nodes
            .iter_mut()
            .find(|n| &n.fingerprint == fingerprint)
            .with_context(|| format!("node{i} ({fingerprint}) is not in quorum.toml"))?;
        node.url = url.clone();
        urls.push(url);
    }
    quorum.save(&quorum_path).context("writing quorum.toml")?;
    progress.done(t, &urls.join(" "));

    let t = progress.start("root service");
    let hsm = Hsm::new(dir)?;
    let root_config = hsm.dir.join("root.toml");
    let root_url = start_root(&hsm, &root_config, procs).await?;
    progress.done(t, &root_url);

    let t = progress.start("config (new URLs)");
    let config_path = dir.join("treasury.toml");
    let text = std::fs::read_to_string(&config_path)
        .with_context(|| format!("reading {}", config_path.display()))?;
    let mut table: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", config_path.display()))?;
    if let Some(toml::Value::Table(chain)) = table.get_mut("chain") {
        chain.insert("rpc_http".into(), toml::Value::String(rpc.clone()));
    }
    if let Some(toml::Value::Table(signing)) = table.get_mut("signing") {
        signing.insert("root_url".into(), toml::Value::String(root_url.clone()));
    }
    std::fs::write(&config_path, toml::to_string(&table)?)
        .with_context(|| format!("writing {}", config_path.display()))?;
    let running = Running::assemble(dir, deployment, deployer, &deployer_key, &keeper_key, root_url, saved)?;
    progress.done(t, &running.config_path.display().to_string());
    Ok(running)
}

/// The dev accounts anvil wrote with `--config-out`.
fn dev_keys(path: &Path) -> anyhow::Result<Vec<PrivateKeySigner>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let keys =
        v["private_keys"].as_array().with_context(|| format!("{}: no private_keys", path.display()))?;
    keys.iter()
        .map(|k| {
            k.as_str()
                .context("a private key is not a string")?
                .parse::<PrivateKeySigner>()
                .context("an anvil dev key does not parse")
        })
        .collect()
}

/// Balances chosen so the example rebalance (ETH/USDC 60/40, band 5 points) is inside its band at
/// the start and after the day's payments, and leaves it when ETH moves to the scenario's price.
fn tune_balances(c: &mut DeployConfig) {
    c.safe_eth = U256::from(40u64) * ETH_E18;
    for t in &mut c.tokens {
        match t.symbol.as_str() {
            "USDC" => t.safe_balance = U256::from(95_000u64) * USDC_E6,
            "GOV" => t.safe_balance = U256::from(200_000u64) * GOV_E18,
            _ => {}
        }
    }
}

/// The signer nodes' guard: the module's tier-1 allow-list and its budgets, plus plain ETH to the keeper.
fn node_guard(d: &Deployment, root: Address, keeper: Address) -> GuardConfig {
    let mut allow = Vec::new();
    let mut spenders = Vec::new();
    for a in default_allow_list(d) {
        match a {
            AdminAction::SetCallAllowed { target, selector, allowed: true } => {
                allow.push(AllowEntry { target, selector: Some(format!("0x{}", hex::encode(selector))) })
            }
            AdminAction::SetSpenderAllowed { spender, allowed: true } => spenders.push(spender),
            _ => {}
        }
    }
    allow.push(AllowEntry { target: keeper, selector: None });
    let mut budgets = vec![Budget { token: Address::ZERO, amount: U256::from(5u64) * ETH_E18 }];
    if let Some(t) = d.token("USDC") {
        budgets.push(Budget { token: t.address, amount: U256::from(50_000u64) * USDC_E6 });
    }
    if let Some(t) = d.token("GOV") {
        budgets.push(Budget { token: t.address, amount: U256::from(20_000u64) * GOV_E18 });
    }
    GuardConfig {
        chain_id: d.chain_id,
        module: d.module,
        root: Some(root),
        period_secs: 86_400,
        allow,
        spenders,
        budgets,
        max_deadline_secs: None,
    }
}

/// A private SoftHSM2 token directory for the root key.
#[derive(Debug)]
struct Hsm {
    dir: PathBuf,
    softhsm: SoftHsm,
}

impl Hsm {
    fn new(state: &Path) -> anyhow::Result<Self> {
        let module = softhsm::module();
        if !module.exists() {
            bail!(
                "SoftHSM2 not found at {}: run scripts/install.sh (it installs softhsm2), or set {}",
                module.display(),
                softhsm::MODULE_ENV
            );
        }
        let dir = state.join("root");
        let softhsm = SoftHsm::create(&dir)
            .with_context(|| format!("writing a SoftHSM2 configuration in {}", dir.display()))?;
        Ok(Self { dir, softhsm })
    }

    /// A `treasury` command with this token's environment (SoftHSM reads its config once per process).
    fn command(&self, exe: &Path) -> Command {
        let mut c = Command::new(exe);
        c.envs(self.softhsm.env(HSM_PIN, HSM_SO_PIN));
        c
    }

    /// `treasury root init`: creates the token and the key; returns the root address.
    async fn init(&self) -> anyhow::Result<Address> {
        let exe = std::env::current_exe().context("locating the treasury executable")?;
        let mut cmd = self.command(&exe);
        cmd.args(["root", "init", "--token", HSM_TOKEN, "--key", "root", "--json"]).kill_on_drop(true);
        let out = cmd.output().await.context("running treasury root init")?;
        if !out.status.success() {
            bail!("treasury root init failed: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("treasury root init printed no JSON")?;
        v["address"]
            .as_str()
            .context("treasury root init printed no address")?
            .parse()
            .context("root address")
    }

    /// Writes the root service's config; returns (config, queue db, the clients' tokens).
    fn write_service_config(
        &self,
        d: &Deployment,
        root: Address,
        recipients: &[Address],
    ) -> anyhow::Result<(PathBuf, PathBuf, RootTokens)> {
        let (agent_token, agent_hash) = new_token();
        let (approver_token, approver_hash) = new_token();
        let db = self.dir.join("queue.sqlite");
        let mut text = format!(
            "db = {db:?}\napproval_ttl_secs = 3600\nretry_interval_ms = 100\n\n[hsm]\nmodule = {module:?}\ntoken = {HSM_TOKEN:?}\nkey = \"root\"\naddress = \"{root}\"\n\n[guard]\nrecipients = [{recipients}]\n\n[[guard.modules]]\nchain_id = {chain_id}\nmodule = \"{m}\"\n",
            db = db.display().to_string(),
            module = self.softhsm.module.display().to_string(),
            recipients = recipients.iter().map(|r| format!("\"{r}\"")).collect::<Vec<_>>().join(", "),
            chain_id = d.chain_id,
            m = d.module,
        );
        let mut assets = vec![(Address::ZERO, U256::from(10u64) * ETH_E18, U256::from(20u64) * ETH_E18)];
        if let Some(t) = d.token("USDC") {
            assets.push((t.address, U256::from(100_000u64) * USDC_E6, U256::from(200_000u64) * USDC_E6));
        }
        if let Some(t) = d.token("GOV") {
            assets.push((t.address, U256::from(50_000u64) * GOV_E18, U256::from(100_000u64) * GOV_E18));
        }
        for (token, max_single, cap) in assets {
            text.push_str(&format!(
                "\n[[guard.assets]]\ntoken = \"{token}\"\nmax_single = \"{max_single}\"\nperiod_cap = \"{cap}\"\nperiod_secs = 86400\n"
            ));
        }
        let approvers: Vec<(String, String)> = ["dev-operator", "dev-approver-2"]
            .iter()
            .map(|name| (name.to_string(), format!("dev-{}", hex::encode(rand::random::<[u8; 8]>()))))
            .collect();
        let hash = |password: &str| {
            treasury_signer::root::page::hash_password(password)
                .map_err(|e| anyhow::anyhow!("hashing a demo approver's password: {e}"))
        };
        text.push_str(&format!(
            "\n[[clients]]\nname = \"agent\"\nrole = \"requester\"\ntoken_sha256 = \"{agent_hash}\"\n\n[[clients]]\nname = \"dev-operator\"\nrole = \"approver\"\ntoken_sha256 = \"{approver_hash}\"\npassword_hash = {:?}\n\n[[clients]]\nname = \"dev-approver-2\"\nrole = \"approver\"\npassword_hash = {:?}\n",
            hash(&approvers[0].1)?,
            hash(&approvers[1].1)?,
        ));
        text.push_str(&book(d, recipients));
        let path = self.dir.join("root.toml");
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        let tokens = RootTokens {
            requester: agent_token.to_string(),
            approver: approver_token.to_string(),
            approvers,
        };
        Ok((path, db, tokens))
    }
}

/// The group key the module at `module` registered last (its newest `GroupKeyChanged` event).
async fn registered_group_key(provider: &DynProvider, module: Address) -> anyhow::Result<GroupKey> {
    use alloy::providers::Provider;
    use alloy::rpc::types::Filter;
    use alloy::sol_types::SolEvent;
    use treasury_chain::contracts::TreasuryModule::GroupKeyChanged;
    let filter =
        Filter::new().address(module).event_signature(GroupKeyChanged::SIGNATURE_HASH).from_block(0u64);
    let logs = provider.get_logs(&filter).await.context("reading the module's GroupKeyChanged events")?;
    let last = logs.last().context("the module logged no GroupKeyChanged event")?;
    let event = GroupKeyChanged::decode_log_data(last.data()).context("decoding GroupKeyChanged")?;
    Ok(GroupKey { x: event.x, parity: event.parity })
}

/// The bearer tokens of the root service's two dev clients.
struct RootTokens {
    /// The agent's (role requester).
    requester: String,
    /// The demo operator's (role approver).
    approver: String,
    /// The demo approvers' page names and passwords.
    approvers: Vec<(String, String)>,
}

/// The root's `[book]`: the demo's tokens and named recipients, for the approvals page.
fn book(d: &Deployment, recipients: &[Address]) -> String {
    let mut text = String::from(
        "\n[book.tokens.ETH]\naddress = \"0x0000000000000000000000000000000000000000\"\ndecimals = 18\n",
    );
    for (symbol, decimals) in [("USDC", 6), ("GOV", 18)] {
        if let Some(t) = d.token(symbol) {
            text.push_str(&format!(
                "\n[book.tokens.{symbol}]\naddress = \"{}\"\ndecimals = {decimals}\n",
                t.address
            ));
        }
    }
    text.push_str("\n[book.names]\n");
    for (name, address) in ["grantee", "alice", "bob", "keeper"].iter().zip(recipients) {
        text.push_str(&format!("{name} = \"{address}\"\n"));
    }
    text.push_str(&format!("safe = \"{}\"\nrouter = \"{}\"\n", d.safe, d.router));
    text
}

/// `env.sh` in the state directory: the variables the CLI needs to inspect this demo.
fn write_env_file(dir: &Path, root_token: &str, approver_token: &str) -> anyhow::Result<()> {
    let text = format!(
        "# Dev-only secrets of this treasury dev run: `. {dir}/env.sh`, then e.g.\n# treasury status --config {dir}/treasury.toml\nexport {COORDINATOR_PASSPHRASE_ENV}={COORDINATOR_PASS}\nexport TREASURY_KEEPER_PASSWORD={KEEPER_PASS}\nexport TREASURY_ROOT_TOKEN={root_token}\nexport TREASURY_APPROVER_TOKEN={approver_token}\nexport SOFTHSM2_CONF={dir}/root/softhsm2.conf\nexport TREASURY_HSM_PIN={HSM_PIN}\n",
        dir = dir.display()
    );
    let path = dir.join("env.sh");
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}
