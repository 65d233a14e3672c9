//! A complete agent set-up for end-to-end tests: anvil with the treasury deployed, three signer
//! nodes as processes with a DKG 2-of-3 quorum registered in the module, an encrypted keeper
//! keystore, policies, and a config file — everything `treasury run --config FILE` needs.
#![allow(dead_code, unreachable_pub)]

pub mod lying_rpc;
pub mod proxy;
pub mod root;
#[path = "../../common/softhsm.rs"]
pub mod softhsm;
pub mod spans;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use alloy::primitives::{Address, U256};
use treasury_agent::config::Config;
use treasury_agent::journal::Journal;
use treasury_agent::pipeline::{Parts, Pipeline};
use treasury_chain::AdminAction;
use treasury_chain::contracts::IERC20;
use treasury_chain::sender::Sender;
use treasury_devnet::Deployment;
use treasury_devnet::nodes::{NodeProcess, init_nodes_with};
use treasury_devnet::world::configure_as_safe;
use treasury_devnet::{TestChain, dev_key, write_keystore};
use treasury_policies::PolicySet;
use treasury_signer::quorum::coordinator::{Coordinator, CoordinatorOptions};
use treasury_signer::quorum::coordinator::{PinnedNode, run_dkg};
use treasury_signer::quorum::guard::{AllowEntry, Budget, GuardConfig};
use treasury_signer::quorum::quorum_file::QuorumFile;
use treasury_signer::quorum::replay::{ReplayConfig, ReplayMode};
use treasury_signer::quorum::store::{Passphrase, create_coordinator_key_with, open_coordinator_key};

/// The `treasury` binary under test.
pub const EXE: &str = env!("CARGO_BIN_EXE_treasury");
const NODE_PASS: &str = "e2e node passphrase";
const COORDINATOR_PASS: &str = "coordinator-pass";
const KEEPER_PASS: &str = "keeper-pass";

/// A policy for the test config: name, Rhai source, trigger as inline TOML.
pub struct PolicySpec<'a> {
    /// Policy name.
    pub name: &'a str,
    /// The script.
    pub script: &'a str,
    /// e.g. `{ kind = "manual" }`.
    pub trigger: &'a str,
}

/// Everything running for one agent test.
pub struct AgentEnv {
    /// The chain (anvil, deployment).
    pub chain: TestChain,
    /// Signer node processes (killed on drop).
    pub nodes: Vec<NodeProcess>,
    /// The test's folder: config, quorum file, keystore, journal, policies.
    pub dir: tempfile::TempDir,
    /// The config file.
    pub config: PathBuf,
    /// The agent's keeper address (dev key 8, distinct from the deployer).
    pub keeper: Address,
    /// The journal URL.
    pub journal_url: String,
    /// The root service's requester token, once [`AgentEnv::use_root_service`] was called.
    pub root_token: Option<String>,
}

impl AgentEnv {
    /// Deploys, runs DKG among three node processes, registers the group key, writes the config.
    pub async fn start(policies: &[PolicySpec<'_>]) -> anyhow::Result<Self> {
        Self::start_with_root(policies, None).await
    }

    /// Like [`AgentEnv::start`]; with `root`, that key is made the module's root and the nodes'.
    pub async fn start_with_root(policies: &[PolicySpec<'_>], root: Option<Address>) -> anyhow::Result<Self> {
        Self::start_with(policies, root, QuorumSetup::Library).await
    }

    /// Like [`AgentEnv::start_with_root`], the quorum set up as `setup` says.
    pub async fn start_with(
        policies: &[PolicySpec<'_>],
        root: Option<Address>,
        setup: QuorumSetup,
    ) -> anyhow::Result<Self> {
        Self::start_on(policies, root, setup, &[]).await
    }

    /// Like [`AgentEnv::start`], on an anvil started with `anvil_args` (e.g. `--chain-id 10`).
    pub async fn start_on_chain(policies: &[PolicySpec<'_>], anvil_args: &[&str]) -> anyhow::Result<Self> {
        Self::start_on(policies, None, QuorumSetup::Library, anvil_args).await
    }

    async fn start_on(
        policies: &[PolicySpec<'_>],
        root: Option<Address>,
        setup: QuorumSetup,
        anvil_args: &[&str],
    ) -> anyhow::Result<Self> {
        let chain = TestChain::start_with(anvil_args).await?;
        let root = match root {
            Some(root) => {
                configure_as_safe(
                    &chain.keeper,
                    &chain.deployment,
                    chain.signing_owners(),
                    &AdminAction::SetRoot { root },
                )
                .await?;
                root
            }
            None => chain.root.address(),
        };
        let d = chain.deployment.clone();
        let dir = tempfile::tempdir()?;

        let coordinator_key_path = dir.path().join("coordinator.key");
        let quorum_path = dir.path().join("quorum.toml");
        // Every node replays tier-1 decisions through its own connection to anvil.
        let rpc = chain.anvil.url().to_string();
        let (nodes, key) = match setup {
            QuorumSetup::Library => {
                let guard = node_guard(&d, root);
                let replay =
                    ReplayConfig { mode: ReplayMode::Required, rpc: Some(rpc), ..Default::default() };
                library_quorum(dir.path(), &coordinator_key_path, &quorum_path, &guard, &replay).await?
            }
            QuorumSetup::Cli => {
                cli_quorum(dir.path(), &coordinator_key_path, &quorum_path, &d, root, &rpc).await?
            }
        };
        configure_as_safe(
            &chain.keeper,
            &d,
            chain.signing_owners(),
            &AdminAction::SetGroupKey { x: key.x, parity: key.parity },
        )
        .await?;

        let keeper = dev_key(8);
        write_keystore(dir.path(), "keeper.json", &keeper, KEEPER_PASS)?;
        for p in policies {
            std::fs::write(dir.path().join(format!("{}.rhai", p.name)), p.script)?;
        }
        let journal_url = format!("sqlite://{}", dir.path().join("journal.db").display());
        let config = dir.path().join("treasury.toml");
        std::fs::write(&config, config_text(&chain, &journal_url, policies))?;
        // Each operator pins the policy set its node replays (the nodes pick it up while serving).
        let config_s = config.display().to_string();
        for node in &nodes {
            let node_dir = node.dir.display().to_string();
            cli_json(
                &["signer", "pin-policy", "--dir", &node_dir, "--config", &config_s],
                &[("TREASURY_SIGNER_PASSPHRASE", NODE_PASS)],
            )?;
        }
        Ok(Self { chain, nodes, dir, config, keeper: keeper.address(), journal_url, root_token: None })
    }

    /// Points the agent's config at a root service, with its requester token.
    pub fn use_root_service(&mut self, url: &str, token: &str) {
        let text = std::fs::read_to_string(&self.config).unwrap().replace(
            "[signing]\nquorum_file = \"quorum.toml\"\n",
            &format!("[signing]\nquorum_file = \"quorum.toml\"\nroot_url = \"{url}\"\nroot_token_env = \"TREASURY_ROOT_TOKEN\"\n"),
        );
        std::fs::write(&self.config, text).unwrap();
        self.root_token = Some(token.to_string());
    }

    /// Replaces `from` with `to` in the agent's config file (which must contain it).
    pub fn edit_config(&self, from: &str, to: &str) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        assert!(text.contains(from), "config has no `{from}`");
        std::fs::write(&self.config, text.replace(from, to)).unwrap();
    }

    /// Turns on the agent's API on a free port, its token read from `TEST_API_TOKEN` (`treasury
    /// run` then prints `api listening on URL` first on stdout).
    pub fn serve_api(&self) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        std::fs::write(
            &self.config,
            format!("{text}\n[api]\nlisten = \"127.0.0.1:0\"\ntoken_env = \"TEST_API_TOKEN\"\n"),
        )
        .unwrap();
    }

    /// Points the agent's config at another RPC endpoint (e.g. a [`proxy::Proxy`] in front of anvil).
    pub fn use_rpc(&self, url: &str) {
        self.edit_config(
            &format!("rpc_http = \"{}\"", self.chain.anvil.url()),
            &format!("rpc_http = \"{url}\""),
        );
    }

    /// Restarts signer node `i` at the same address with its replay reading `rpc` (e.g. a lying
    /// endpoint): its operator's endpoint, not the agent's.
    pub async fn restart_node_with_rpc(&mut self, i: usize, rpc: &str) -> anyhow::Result<()> {
        self.restart_node_with(i, |config| config.replay.rpc = Some(rpc.to_string()), false).await
    }

    /// Pins the agent's config as it now stands (e.g. with keeper jobs executed through the
    /// module) on every node, its guard allowing `allow` (target, selector) besides: each
    /// operator edits the node's guard and approves the widened set, which takes effect at once
    /// (the test nodes wait no widening delay).
    pub async fn repin_with_allowed(&mut self, allow: &[(Address, [u8; 4])]) -> anyhow::Result<()> {
        for i in 0..self.nodes.len() {
            self.restart_node_with(
                i,
                |config| {
                    config.replay.widening_delay_secs = 0;
                    for (target, selector) in allow {
                        config.guard.allow.push(AllowEntry {
                            target: *target,
                            selector: Some(alloy::hex::encode_prefixed(selector)),
                        });
                    }
                },
                true,
            )
            .await?;
        }
        Ok(())
    }

    /// Restarts node `i` after `edit` changed its `node.toml` (and, with `repin`, after its
    /// operator pinned the agent's config again).
    async fn restart_node_with(
        &mut self,
        i: usize,
        edit: impl FnOnce(&mut treasury_signer::quorum::store::NodeConfig),
        repin: bool,
    ) -> anyhow::Result<()> {
        let node = &mut self.nodes[i];
        node.kill().await;
        let path = node.dir.join("node.toml");
        let mut config: treasury_signer::quorum::store::NodeConfig =
            toml::from_str(&std::fs::read_to_string(&path)?)?;
        edit(&mut config);
        std::fs::write(&path, toml::to_string_pretty(&config)?)?;
        if repin {
            let (node_dir, config) = (node.dir.display().to_string(), self.config.display().to_string());
            cli_json(
                &["signer", "pin-policy", "--dir", &node_dir, "--config", &config],
                &[("TREASURY_SIGNER_PASSPHRASE", NODE_PASS)],
            )?;
        }
        let addr = node.url.trim_start_matches("http://").to_string();
        let mut cmd = tokio::process::Command::new(EXE);
        cmd.args(["signer", "serve", "--listen", &addr, "--dir"])
            .arg(&node.dir)
            .env("TREASURY_SIGNER_PASSPHRASE", NODE_PASS);
        let dir = node.dir.clone();
        *node = NodeProcess::from_command(cmd, &dir).await?;
        Ok(())
    }

    /// A quorum coordinator over this set-up's signer nodes, as the agent builds it.
    pub fn coordinator(&self) -> anyhow::Result<Coordinator> {
        let quorum_path = self.dir.path().join("quorum.toml");
        let quorum = QuorumFile::load(&quorum_path)?;
        let pass = Passphrase::new(COORDINATOR_PASS);
        let key = open_coordinator_key(&quorum.coordinator_key_path(&quorum_path), &pass)?;
        Ok(Coordinator::new(quorum, key, CoordinatorOptions::default())?)
    }

    /// The agent's pipeline in this process, built from the same config and secrets as `treasury run`.
    pub async fn pipeline(&self) -> anyhow::Result<Pipeline> {
        let config = Config::load(&self.config)?;
        let journal = Journal::open(&config.journal.url).await?;
        self.pipeline_on(journal).await
    }

    /// Like [`AgentEnv::pipeline`], on an already opened journal (e.g. a fenced one on PostgreSQL).
    pub async fn pipeline_on(&self, journal: Journal) -> anyhow::Result<Pipeline> {
        let config = Config::load(&self.config)?;
        let provider = treasury_chain::provider::connect(config.chain.rpc_http.as_str())?;
        let policies = PolicySet::load(&config.policies, &config.base_dir)?;
        let spec = treasury_agent::pipeline::snapshot_spec(&config)?;
        let router = config.dex.as_ref().expect("test config has a router").router;
        let venue = treasury_agent::pipeline::venue(&provider, spec.safe, router).await?;
        let coordinator = self.coordinator()?;
        let sender =
            Sender::new(provider.clone(), dev_key(8), treasury_agent::pipeline::sender_config(&config))
                .await?;
        Ok(Pipeline::new(Parts {
            journal,
            provider,
            policies,
            spec,
            venue: Some(venue),
            coordinator: std::sync::Arc::new(coordinator),
            root: None,
            sender,
            settings: config.pipeline.clone(),
        })
        .await?)
    }

    /// A `treasury` command with this set-up's secrets in its environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(EXE);
        cmd.args(args)
            .env("TREASURY_COORDINATOR_PASSPHRASE", COORDINATOR_PASS)
            .env("TREASURY_KEEPER_PASSWORD", KEEPER_PASS)
            .env("RUST_LOG", "info,treasury_agent=debug")
            .current_dir(self.dir.path());
        if let Some(token) = &self.root_token {
            cmd.env("TREASURY_ROOT_TOKEN", token);
        }
        cmd
    }

    /// Runs `treasury ARGS --config FILE` to completion.
    pub fn treasury(&self, args: &[&str]) -> Output {
        let config = self.config.display().to_string();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--config", &config]);
        self.command(&all).output().expect("treasury runs")
    }

    /// `treasury run --once` with extra environment variables, asserting it exits cleanly.
    pub fn run_once_with(&self, extra_env: &[(String, String)]) -> Output {
        let config = self.config.display().to_string();
        let mut cmd = self.command(&["run", "--once", "--config", &config]);
        cmd.envs(extra_env.iter().map(|(k, v)| (k, v)));
        let out = cmd.output().expect("treasury runs");
        assert!(
            out.status.success(),
            "treasury run --once failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// `treasury run --once`, asserting it exits cleanly.
    pub fn run_once(&self) -> Output {
        let out = self.treasury(&["run", "--once"]);
        assert!(
            out.status.success(),
            "treasury run --once failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// `treasury run` in the background.
    pub fn spawn_run(&self, extra_env: &[(&str, &str)]) -> Child {
        let config = self.config.display().to_string();
        let mut cmd = self.command(&["run", "--config", &config]);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        // Its log goes to a file: a pipe nobody reads fills up and blocks the agent mid-run.
        let log = std::fs::File::create(self.dir.path().join("agent.log")).expect("creating agent.log");
        cmd.stdout(Stdio::null()).stderr(Stdio::from(log)).spawn().expect("treasury run starts")
    }

    /// Waits until the `treasury run` spawned by [`AgentEnv::spawn_run`] has started (its log says
    /// it is running), so a test's fault hits the running agent, not its start-up; panics with the
    /// log if it exits first or takes more than two minutes (a loaded machine starts slowly).
    pub async fn wait_running(&self, agent: &mut Child) {
        let log = self.dir.path().join("agent.log");
        for _ in 0..1_200 {
            if std::fs::read_to_string(&log).is_ok_and(|text| text.contains("treasury agent running")) {
                return;
            }
            if let Some(status) = agent.try_wait().expect("polling the agent") {
                panic!(
                    "treasury run exited ({status}) before running:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!(
            "treasury run not running after 2 min:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Queues a manual trigger in the journal, as the agent's API does for `treasury trigger`
    /// (which needs a running agent; it is tested against the API in `tests/triggers.rs`): the
    /// next `treasury run` fires it.
    pub async fn trigger(&self, policy: &str) {
        let journal = self.journal().await;
        journal.request_manual_trigger(policy, "test").await.expect("manual trigger queued");
        journal.close().await;
    }

    /// The journal, opened read-write (as the agent opens it).
    pub async fn journal(&self) -> Journal {
        Journal::open(&self.journal_url).await.expect("journal opens")
    }

    /// A token's balance of `who`, in raw units.
    pub async fn balance(&self, symbol: &str, who: Address) -> U256 {
        let token = self.chain.deployment.token(symbol).expect("token deployed").address;
        IERC20::new(token, self.chain.keeper.clone()).balanceOf(who).call().await.expect("balanceOf")
    }
}

fn config_text(chain: &TestChain, journal_url: &str, policies: &[PolicySpec<'_>]) -> String {
    let d = &chain.deployment;
    let mut text = format!(
        r#"[chain]
rpc_http = "{rpc}"
chain_id = {chain_id}
confirmations = 1
multicall3 = "{multicall3}"

[safe]
address = "{safe}"
module = "{module}"

[dex]
router = "{router}"

[signing]
quorum_file = "quorum.toml"

[journal]
url = "{journal_url}"

[keeper]
keystore = "keeper.json"
password_env = "TREASURY_KEEPER_PASSWORD"

[pipeline]
poll_interval = "100ms"

[policies.tokens.ETH]
address = "0x0000000000000000000000000000000000000000"
decimals = 18
feed = "{eth_feed}"

[policies.addresses]
alice = "0x00000000000000000000000000000000000000a1"
bob = "0x00000000000000000000000000000000000000b2"
{numbered}"#,
        rpc = chain.anvil.url(),
        chain_id = d.chain_id,
        multicall3 = d.multicall3,
        safe = d.safe,
        module = d.module,
        router = d.router,
        eth_feed = d.eth_feed,
        numbered = (0..8).map(|i| format!("r{i} = \"{}\"\n", numbered(i))).collect::<String>(),
    );
    for t in &d.tokens {
        text.push_str(&format!(
            "\n[policies.tokens.{}]\naddress = \"{}\"\ndecimals = {}\nfeed = \"{}\"\n",
            t.symbol, t.address, t.decimals, t.feed
        ));
    }
    for p in policies {
        text.push_str(&format!(
            "\n[[policies.policy]]\nname = \"{}\"\nfile = \"{}.rhai\"\ntrigger = {}\n",
            p.name, p.name, p.trigger
        ));
    }
    text
}

/// The address policies know as `alice`.
pub fn alice() -> Address {
    "0x00000000000000000000000000000000000000a1".parse().unwrap()
}

/// The address policies know as `bob`.
pub fn bob() -> Address {
    "0x00000000000000000000000000000000000000b2".parse().unwrap()
}

/// The address policies know as `r{i}` (i < 8).
pub fn numbered(i: usize) -> Address {
    Address::with_last_byte(0x40 + i as u8)
}

/// How the test's quorum is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuorumSetup {
    /// Through the signer crate's functions (fast).
    Library,
    /// With the `treasury signer coordinator-key|init|serve` and `treasury dkg` commands, as an operator would.
    Cli,
}

/// The guard every test node runs: transfers and swaps of the deployed tokens, the router as spender.
fn node_guard(d: &Deployment, root: Address) -> GuardConfig {
    let usdc = d.token("USDC").expect("USDC deployed").address;
    let gov = d.token("GOV").expect("GOV deployed").address;
    let transfer = Some("0xa9059cbb".to_string());
    let approve = Some("0x095ea7b3".to_string());
    GuardConfig {
        chain_id: d.chain_id,
        module: d.module,
        root: Some(root),
        period_secs: 86_400,
        allow: vec![
            AllowEntry { target: usdc, selector: transfer.clone() },
            AllowEntry { target: gov, selector: transfer },
            AllowEntry { target: usdc, selector: approve.clone() },
            AllowEntry { target: gov, selector: approve },
            AllowEntry { target: d.router, selector: Some("0x38ed1739".into()) },
        ],
        spenders: vec![d.router],
        budgets: vec![
            Budget { token: usdc, amount: U256::from(50_000_000_000u64) },
            Budget { token: gov, amount: U256::from(20_000u64) * U256::from(10u64).pow(U256::from(18)) },
        ],
        max_deadline_secs: None,
    }
}

async fn library_quorum(
    dir: &Path,
    coordinator_key_path: &Path,
    quorum_path: &Path,
    guard: &GuardConfig,
    replay: &ReplayConfig,
) -> anyhow::Result<(Vec<NodeProcess>, treasury_signer::quorum::GroupKey)> {
    let pass = Passphrase::new(COORDINATOR_PASS);
    create_coordinator_key_with(coordinator_key_path, &pass, true)?;
    let coordinator_key = open_coordinator_key(coordinator_key_path, &pass)?;
    let reports = init_nodes_with(&dir.join("nodes"), 3, 2, &coordinator_key, guard, NODE_PASS, replay)?;
    let mut nodes = Vec::new();
    for r in &reports {
        nodes.push(NodeProcess::spawn(Path::new(EXE), Path::new(&r.dir), NODE_PASS).await?);
    }
    let pinned: Vec<PinnedNode> = nodes
        .iter()
        .zip(&reports)
        .map(|(p, r)| PinnedNode { url: p.url.clone(), fingerprint: r.fingerprint.clone() })
        .collect();
    let dkg = run_dkg(coordinator_key, &coordinator_key_path.display().to_string(), &pinned, 2, 5).await?;
    dkg.quorum.save(quorum_path)?;
    Ok((nodes, dkg.group_key))
}

/// Runs `treasury ARGS` with `envs`, returning its stdout as JSON.
fn cli_json(args: &[&str], envs: &[(&str, &str)]) -> anyhow::Result<serde_json::Value> {
    let out = Command::new(EXE).args(args).envs(envs.iter().copied()).output()?;
    anyhow::ensure!(out.status.success(), "treasury {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(serde_json::from_slice(&out.stdout)?)
}

async fn cli_quorum(
    dir: &Path,
    coordinator_key_path: &Path,
    quorum_path: &Path,
    d: &Deployment,
    root: Address,
    rpc: &str,
) -> anyhow::Result<(Vec<NodeProcess>, treasury_signer::quorum::GroupKey)> {
    let coordinator_env = [("TREASURY_COORDINATOR_PASSPHRASE", COORDINATOR_PASS)];
    let key_file = coordinator_key_path.to_str().unwrap();
    let coordinator = cli_json(&["signer", "coordinator-key", "--out", key_file], &coordinator_env)?;
    let coordinator_pub = coordinator["coordinator_key"].as_str().unwrap().to_string();
    let guard = node_guard(d, root);
    let mut init: Vec<String> = vec![
        "signer".into(),
        "init".into(),
        "--coordinator".into(),
        coordinator_pub,
        "--chain-id".into(),
        d.chain_id.to_string(),
        "--module".into(),
        d.module.to_string(),
        "--root".into(),
        root.to_string(),
        "--replay".into(),
        "required".into(),
        "--rpc".into(),
        rpc.to_string(),
    ];
    for a in &guard.allow {
        init.extend(["--allow".into(), format!("{}:{}", a.target, a.selector.clone().unwrap_or_default())]);
    }
    for s in &guard.spenders {
        init.extend(["--spender".into(), s.to_string()]);
    }
    for b in &guard.budgets {
        init.extend(["--budget".into(), format!("{}:{}", b.token, b.amount)]);
    }
    let mut nodes = Vec::new();
    let mut signers = Vec::new();
    for i in 0..3 {
        let node_dir = dir.join(format!("nodes/node{i}"));
        let mut args: Vec<&str> = init.iter().map(String::as_str).collect();
        let node_dir_s = node_dir.display().to_string();
        args.extend(["--dir", &node_dir_s]);
        let report = cli_json(&args, &[("TREASURY_SIGNER_PASSPHRASE", NODE_PASS)])?;
        let node = NodeProcess::spawn(Path::new(EXE), &node_dir, NODE_PASS).await?;
        signers.push(format!("{}#{}", node.url, report["fingerprint"].as_str().unwrap()));
        nodes.push(node);
    }
    // Each operator pins the roster out of band: t and the other members' fingerprints.
    let fingerprints: Vec<&str> = signers.iter().map(|s| s.split('#').nth(1).unwrap()).collect();
    for i in 0..3 {
        let node_dir_s = dir.join(format!("nodes/node{i}")).display().to_string();
        let mut args = vec!["signer", "pin", "--dir", node_dir_s.as_str(), "--threshold", "2"];
        for f in &fingerprints {
            args.extend(["--peer", f]);
        }
        cli_json(&args, &[("TREASURY_SIGNER_PASSPHRASE", NODE_PASS)])?;
    }
    let quorum_file = quorum_path.display().to_string();
    let mut args =
        vec!["dkg", "--threshold", "2", "--coordinator-key", key_file, "--out", &quorum_file, "--json"];
    for s in &signers {
        args.extend(["--signer", s.as_str()]);
    }
    cli_json(&args, &coordinator_env)?;
    let quorum = QuorumFile::load(quorum_path)?;
    let key =
        treasury_signer::quorum::GroupKey::from_verifying_key(quorum.public_key_package()?.verifying_key())?;
    Ok((nodes, key))
}

/// The JSON body of `GET url` with `token` as its bearer.
pub async fn get_json(url: &str, token: &str) -> serde_json::Value {
    let response = reqwest::Client::new().get(url).bearer_auth(token).send().await.unwrap();
    response.json().await.unwrap()
}
