//! `treasury signer …`: set up, run and benchmark a FROST signer node.
use std::net::SocketAddr;
use std::path::PathBuf;

use alloy::primitives::Address;
use anyhow::Context;
use clap::{Args, Subcommand};
use treasury_devnet::nodes::{BenchOptions, run as run_bench};
use treasury_signer::quorum::guard::GuardConfig;
use treasury_signer::quorum::node::{BoundNode, parse_allow, parse_budget};
use treasury_signer::quorum::replay::{
    IntentLedger, PinApproval, ReplayConfig, ReplayMode, approve_policy, pin_policy,
};
use treasury_signer::quorum::store::{
    COORDINATOR_PASSPHRASE_ENV, NodeConfig, NodeStore, PASSPHRASE_ENV, create_coordinator_key,
};

/// `treasury signer` subcommands.
#[derive(Debug, Subcommand)]
pub enum SignerCmd {
    /// Create a node directory: identity key and encrypted store (passphrase from TREASURY_SIGNER_PASSPHRASE).
    Init(InitArgs),
    /// Pin the quorum this node takes part in: the threshold and every peer's fingerprint (signed
    /// with the node's key; DKG and refresh with any other roster are refused).
    Pin(PinArgs),
    /// Pin the policy set this node replays (the agent config's policies, scripts, Safe, module
    /// and venue), signed with the node's key; prints its hash.
    PinPolicy(PinPolicyArgs),
    /// Approve a policy set as this node's operator, for another node that needs several
    /// operators' approvals ([replay] pin_threshold); prints the approval as JSON.
    ApprovePolicy(ApprovePolicyArgs),
    /// Export or import the node's signed-intent ledger (JSON lines, see docs/ARCHITECTURE.md),
    /// to move a node to another host without losing it; run with the node stopped.
    Ledger(LedgerArgs),
    /// Serve a node over HTTP.
    Serve(ServeArgs),
    /// Create the coordinator's key file (passphrase from TREASURY_COORDINATOR_PASSPHRASE).
    CoordinatorKey(CoordinatorKeyArgs),
    /// Benchmark a quorum of node processes on loopback.
    Bench(BenchArgs),
}

/// `treasury signer init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Node directory to create.
    #[arg(long)]
    dir: PathBuf,
    /// Coordinator public key (hex) whose signed requests this node accepts; repeatable.
    #[arg(long = "coordinator", required = true)]
    coordinators: Vec<String>,
    /// Chain id this node signs for.
    #[arg(long)]
    chain_id: u64,
    /// Treasury module address this node signs for.
    #[arg(long)]
    module: Address,
    /// Root signer address (tier 2 needs its signature).
    #[arg(long)]
    root: Option<Address>,
    /// Allow-listed call `TARGET:0xSELECTOR` (or `TARGET` for empty calldata); repeatable.
    #[arg(long = "allow")]
    allow: Vec<String>,
    /// Allow-listed ERC-20 spender; repeatable.
    #[arg(long = "spender")]
    spenders: Vec<Address>,
    /// Per-period budget `TOKEN:AMOUNT` (0x000…0 for the native coin); repeatable.
    #[arg(long = "budget")]
    budgets: Vec<String>,
    /// Budget period in seconds.
    #[arg(long, default_value_t = 86_400)]
    period_secs: u64,
    /// Longest time to an operation's deadline this node signs for, seconds.
    #[arg(long, default_value_t = treasury_signer::quorum::guard::DEFAULT_MAX_DEADLINE_SECS)]
    max_deadline_secs: u64,
    /// `required`: sign a tier-1 operation only after re-deriving it from the pinned policies
    /// through `--rpc`; `off`: the guard's static rules only.
    #[arg(long, default_value = "required", value_parser = ["required", "off"])]
    replay: String,
    /// This node's own JSON-RPC endpoint (HTTP) for replays; never the agent's.
    #[arg(long)]
    rpc: Option<String>,
}

/// `treasury signer ledger`.
#[derive(Debug, Args)]
pub struct LedgerArgs {
    /// Node directory.
    #[arg(long)]
    dir: PathBuf,
    /// Append the records of this file (interchange format) that the node does not hold;
    /// without it, print every record.
    #[arg(long)]
    import: Option<PathBuf>,
}

/// `treasury signer pin-policy`.
#[derive(Debug, Args)]
pub struct PinPolicyArgs {
    /// Node directory.
    #[arg(long)]
    dir: PathBuf,
    /// The agent's config file whose policies (and scripts) the node will enforce.
    #[arg(long)]
    config: PathBuf,
    /// Another operator's approval (the JSON `treasury signer approve-policy` prints); repeatable.
    #[arg(long = "approval")]
    approvals: Vec<PathBuf>,
}

/// `treasury signer approve-policy`.
#[derive(Debug, Args)]
pub struct ApprovePolicyArgs {
    /// This operator's node directory (its identity key signs the approval).
    #[arg(long)]
    dir: PathBuf,
    /// The agent's config file whose policy set is approved.
    #[arg(long)]
    config: PathBuf,
}

/// `treasury signer pin`.
#[derive(Debug, Args)]
pub struct PinArgs {
    /// Node directory.
    #[arg(long)]
    dir: PathBuf,
    /// Threshold t of the quorum.
    #[arg(long)]
    threshold: u16,
    /// Fingerprint of another member, as its operator confirmed it out of band; repeatable
    /// (this node's own may be listed too).
    #[arg(long = "peer", required = true)]
    peers: Vec<String>,
}

/// `treasury signer serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Node directory.
    #[arg(long)]
    dir: PathBuf,
    /// Address to listen on (port 0 picks a free one; the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:7400")]
    listen: SocketAddr,
    /// Also serve Prometheus metrics at GET /metrics on this address (e.g. 127.0.0.1:9400;
    /// unauthenticated, so keep it where only the scraper reaches it).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
}

/// `treasury signer coordinator-key`.
#[derive(Debug, Args)]
pub struct CoordinatorKeyArgs {
    /// Key file to create.
    #[arg(long)]
    out: PathBuf,
}

/// `treasury signer bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Nodes (separate processes).
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// Threshold.
    #[arg(long, default_value_t = 3)]
    threshold: u16,
    /// Signatures per measured run.
    #[arg(long, default_value_t = 500)]
    signatures: usize,
    /// Requests in flight in the concurrent run.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Put each node behind a wide-area link with these round-trip times (ms, one per node, e.g.
    /// `20,60,90,140,200`; overrides --nodes): signatures with all nodes up and with the fastest down.
    #[arg(long, value_delimiter = ',')]
    rtt_ms: Vec<u64>,
    /// Also measure the round with every node replaying a policy decision on anvil (pinned
    /// policy, own snapshot, plan, history), beside the plain round of the same run.
    #[arg(long, conflicts_with = "rtt_ms")]
    replay: bool,
    /// The coordinator's per-request timeout in the wide-area bench, ms.
    #[arg(long, default_value_t = 2000)]
    timeout_ms: u64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

impl SignerCmd {
    /// Runs the subcommand.
    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            SignerCmd::Init(a) => {
                let guard = GuardConfig {
                    chain_id: a.chain_id,
                    module: a.module,
                    root: a.root,
                    period_secs: a.period_secs,
                    allow: a.allow.iter().map(|s| parse_allow(s)).collect::<Result<_, _>>()?,
                    spenders: a.spenders,
                    budgets: a.budgets.iter().map(|s| parse_budget(s)).collect::<Result<_, _>>()?,
                    max_deadline_secs: Some(a.max_deadline_secs),
                };
                let mode = if a.replay == "off" { ReplayMode::Off } else { ReplayMode::Required };
                if mode == ReplayMode::Required && a.rpc.is_none() {
                    anyhow::bail!(
                        "--replay required (the default) needs --rpc, this node's own RPC endpoint"
                    );
                }
                let replay = ReplayConfig { mode, rpc: a.rpc, ..Default::default() };
                let pass = crate::prompt::passphrase(PASSPHRASE_ENV, "node passphrase", true)?;
                let config = NodeConfig { coordinators: a.coordinators, guard, replay };
                let report = NodeStore::init(&a.dir, &pass, config)
                    .with_context(|| format!("initialising {}", a.dir.display()))?;
                println!("{}", serde_json::to_string(&report)?);
                Ok(())
            }
            SignerCmd::Pin(a) => {
                let pass = crate::prompt::passphrase(PASSPHRASE_ENV, "node passphrase", false)?;
                let pin = treasury_signer::quorum::store::pin_roster(&a.dir, &pass, a.threshold, &a.peers)
                    .with_context(|| format!("pinning the roster of {}", a.dir.display()))?;
                println!(
                    "{}",
                    serde_json::json!({ "threshold": pin.threshold, "fingerprints": pin.fingerprints })
                );
                Ok(())
            }
            SignerCmd::PinPolicy(a) => {
                let bundle = bundle_of(&a.config).await?;
                let mut approvals = Vec::new();
                for file in &a.approvals {
                    let text = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
                    let approval: PinApproval = serde_json::from_slice(&text)
                        .with_context(|| format!("{} is not an approval", file.display()))?;
                    approvals.push(approval);
                }
                let pass = crate::prompt::passphrase(PASSPHRASE_ENV, "node passphrase", false)?;
                let store = NodeStore::open(&a.dir, &pass)?;
                let outcome = pin_policy(
                    &a.dir,
                    &store.secrets.identity()?,
                    &store.config.replay,
                    &bundle,
                    &approvals,
                    treasury_signer::quorum::nonces::now(),
                )
                .with_context(|| format!("pinning the policy set of {}", a.dir.display()))?;
                println!("{}", serde_json::to_string(&outcome)?);
                Ok(())
            }
            SignerCmd::ApprovePolicy(a) => {
                let bundle = bundle_of(&a.config).await?;
                let pass = crate::prompt::passphrase(PASSPHRASE_ENV, "node passphrase", false)?;
                let store = NodeStore::open(&a.dir, &pass)?;
                println!("{}", serde_json::to_string(&approve_policy(&store.secrets.identity()?, &bundle))?);
                Ok(())
            }
            SignerCmd::Ledger(a) => {
                let mut ledger = IntentLedger::open(&a.dir)?;
                match a.import {
                    Some(file) => {
                        let text = std::fs::read_to_string(&file)
                            .with_context(|| format!("reading {}", file.display()))?;
                        let added = ledger.import(&text)?;
                        println!("{}", serde_json::json!({ "imported": added }));
                    }
                    None => print!("{}", ledger.export()),
                }
                Ok(())
            }
            SignerCmd::Serve(a) => {
                let pass = crate::prompt::passphrase(PASSPHRASE_ENV, "node passphrase", false)?;
                let node = BoundNode::bind(&a.dir, &pass, a.listen)
                    .await
                    .with_context(|| format!("opening node {}", a.dir.display()))?;
                drop(pass);
                let addr = node.local_addr()?;
                let info = node.info();
                let (stop, stopped) = tokio::sync::watch::channel(false);
                let metrics = match a.metrics_listen {
                    Some(listen) => {
                        let mut stopped = stopped.clone();
                        let until = async move {
                            let _ = stopped.wait_for(|s| *s).await;
                        };
                        let bound = node
                            .serve_metrics(listen, until)
                            .await
                            .with_context(|| format!("binding the metrics listener {listen}"))?;
                        Some(bound.to_string())
                    }
                    None => None,
                };
                println!(
                    "{}",
                    serde_json::json!({ "listening": addr.to_string(), "fingerprint": info.fingerprint, "group_key": info.group_key, "metrics": metrics })
                );
                node.serve_until(async move {
                    let signal = super::shutdown_signal().await;
                    tracing::info!(%signal, "stopping: finishing the requests in flight");
                    let _ = stop.send(true);
                })
                .await
                .context("serving")?;
                tracing::info!("stopped");
                Ok(())
            }
            SignerCmd::CoordinatorKey(a) => {
                let pass = crate::prompt::passphrase(
                    COORDINATOR_PASSPHRASE_ENV,
                    "coordinator key passphrase",
                    true,
                )?;
                let public = create_coordinator_key(&a.out, &pass)
                    .with_context(|| format!("creating {}", a.out.display()))?;
                println!(
                    "{}",
                    serde_json::json!({ "coordinator_key": public.to_hex(), "file": a.out.display().to_string() })
                );
                Ok(())
            }
            SignerCmd::Bench(a) if !a.rtt_ms.is_empty() => wan_bench(a).await,
            SignerCmd::Bench(a) if a.replay => replay_bench(a).await,
            SignerCmd::Bench(a) => {
                let report = run_bench(bench_options(&a)?).await.context("running the bench")?;
                if a.json {
                    println!("{}", serde_json::to_string_pretty(&report)?);
                } else {
                    println!(
                        "{}-of-{} over loopback processes ({} build): p50 {:.3} ms, p99 {:.3} ms, {:.0} sig/s sequential, {:.0} sig/s with {} in flight\n\
                         in-process floor: full {:.3} ms, preprocessed {:.3} ms, critical path {:.3} ms; \
                         fdatasync {:.3} ms; HTTP round trip {:.3} ms (p50); DKG {:.0} ms",
                        report.threshold,
                        report.nodes,
                        report.profile,
                        report.latency.p50_ms,
                        report.latency.p99_ms,
                        report.sequential_per_sec,
                        report.concurrent_per_sec,
                        report.concurrency,
                        report.in_process_full.p50_ms,
                        report.in_process_preprocessed.p50_ms,
                        report.in_process_critical_path.p50_ms,
                        report.fdatasync.p50_ms,
                        report.http_round_trip.p50_ms,
                        report.dkg_ms
                    );
                }
                Ok(())
            }
        }
    }
}

/// The policy bundle the agent running `config` enforces (what a node pins).
pub(crate) async fn bundle_of(
    config: &std::path::Path,
) -> anyhow::Result<treasury_policies::replay::PolicyBundle> {
    let config = treasury_agent::config::Config::load(config)
        .with_context(|| format!("reading {}", config.display()))?;
    let provider = treasury_chain::provider::connect(config.chain.rpc_http.as_str())?;
    let spec = treasury_agent::pipeline::snapshot_spec(&config)?;
    let venue = match &config.dex {
        Some(dex) => Some(treasury_agent::pipeline::venue(&provider, spec.safe, dex.router).await?),
        None => None,
    };
    let policies = treasury_policies::PolicySet::load(&config.policies, &config.base_dir)?;
    let jobs =
        config.keeper.jobs.iter().filter_map(treasury_agent::config::jobs::KeeperJob::pinned).collect();
    Ok(treasury_agent::pipeline::policy_bundle(config.chain.chain_id, &spec, venue, &policies)
        .with_keeper_jobs(jobs))
}

/// The loopback bench's settings from `a`, its nodes started from this executable.
fn bench_options(a: &BenchArgs) -> anyhow::Result<BenchOptions> {
    Ok(BenchOptions {
        exe: std::env::current_exe().context("locating the treasury executable")?,
        nodes: a.nodes,
        threshold: a.threshold,
        signatures: a.signatures,
        concurrency: a.concurrency,
    })
}

/// `treasury signer bench --replay`: the plain round and the round with replay, one run.
async fn replay_bench(a: BenchArgs) -> anyhow::Result<()> {
    let report =
        treasury_devnet::replay_bench::run(bench_options(&a)?).await.context("running the replay bench")?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{}-of-{} over loopback processes ({} build): plain p50 {:.3} ms, p99 {:.3} ms; \
             with replay p50 {:.3} ms, p99 {:.3} ms (one node's replay alone p50 {:.3} ms)",
            report.plain.threshold,
            report.plain.nodes,
            report.plain.profile,
            report.plain.latency.p50_ms,
            report.plain.latency.p99_ms,
            report.replay.p50_ms,
            report.replay.p99_ms,
            report.replay_check.p50_ms
        );
    }
    Ok(())
}

/// `treasury signer bench --rtt-ms …`: the quorum behind wide-area links.
async fn wan_bench(a: BenchArgs) -> anyhow::Result<()> {
    use treasury_devnet::wan_bench::{WanBenchOptions, WanRun, run};
    let exe = std::env::current_exe().context("locating the treasury executable")?;
    let report = run(WanBenchOptions {
        exe,
        threshold: a.threshold,
        rtts: a.rtt_ms.iter().map(|ms| std::time::Duration::from_millis(*ms)).collect(),
        signatures: a.signatures,
        timeout: std::time::Duration::from_millis(a.timeout_ms),
    })
    .await
    .context("running the wide-area bench")?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let line = |name: &str, r: &WanRun| match &r.latency {
        Some(l) => println!(
            "{name}: p50 {:.1} ms, p99 {:.1} ms (floor: t-th smallest RTT {:.0} ms; goal {:.0} ms), {} lost",
            l.p50_ms, l.p99_ms, r.floor_ms, r.goal_ms, r.lost
        ),
        None => println!("{name}: every signature failed ({} lost)", r.lost),
    };
    println!(
        "{}-of-{} with RTTs {:?} ms ({} build, {}), DKG {:.0} ms, refresh {:.0} ms",
        report.threshold,
        report.nodes,
        report.rtt_ms,
        report.profile,
        if report.namespaces { "nodes in network namespaces" } else { "nodes on loopback" },
        report.dkg_ms,
        report.refresh_ms
    );
    line("all up", &report.all_up);
    line("fastest down", &report.fastest_down);
    Ok(())
}
