//! `treasury dev`: the whole system on one machine — anvil with a deployed treasury, an HSM root
//! in SoftHSM2, three signer nodes with a DKG 2-of-3 quorum, the root service and the agent with
//! the example policies — then a scenario that makes every kind of policy act, shown live.
//!
//! - [`setup`]: the set-up steps (or the restart of a previous run's processes with `--resume`);
//!   [`config`]: the agent config written from `treasury.toml` beside it.
//! - [`scenario`]: time jumps, a price move, an escalated payment and its approval; after
//!   `--resume`, the next day.
//! - [`view`]: step lines, the live view, the summary's pieces.
//! - [`tools`]: what the demo needs on the machine, installed with `scripts/install.sh dev` when missing.
//! - [`ha`]: `--ha`, two treasuries on two chains served by two replicas on PostgreSQL, the
//!   leading one killed mid-scenario.

pub mod config;
pub mod ha;
pub mod scenario;
pub mod setup;
pub mod tools;
pub mod view;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use anyhow::{Context, bail};
use serde::Serialize;
use tokio::signal::unix::{SignalKind, signal};
use treasury_chain::contracts::IERC20;

use scenario::{Approval, Scenario};
use setup::Running;
use treasury_agent::journal::{IntentFilter, Journal};
use treasury_devnet::procs::Procs;
use view::{Progress, Shared, StepRecord};

/// 10^18 (ETH, GOV).
pub const ETH_E18: U256 = U256::from_limbs([1_000_000_000_000_000_000, 0, 0, 0]);
/// 10^18, GOV's unit.
pub const GOV_E18: U256 = ETH_E18;
/// 10^6, USDC's unit.
pub const USDC_E6: U256 = U256::from_limbs([1_000_000, 0, 0, 0]);

/// A file marking a folder as a `treasury dev` state directory (it may then be wiped).
const MARKER: &str = ".treasury-dev";

/// Options of `treasury dev`.
#[derive(Debug, Clone)]
pub struct DevOptions {
    /// State directory.
    pub state_dir: PathBuf,
    /// Reuse the state directory instead of starting clean.
    pub resume: bool,
    /// Approve the escalated payment without asking.
    pub yes: bool,
    /// Run the scenario to the end, print the summary and exit.
    pub once: bool,
    /// Print the summary as JSON on stdout (step lines go to stderr).
    pub json: bool,
    /// Two treasuries, two replicas on PostgreSQL, the leader killed mid-scenario ([`ha`]).
    pub ha: bool,
}

/// One intent in the summary.
#[derive(Debug, Clone, Serialize)]
pub struct IntentSummary {
    /// The treasury it belongs to (`--ha`, which runs several).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub treasury: Option<String>,
    /// Journal id (in its treasury's journal).
    pub id: i64,
    /// Policy.
    pub policy: String,
    /// `pay`, `swap`.
    pub kind: String,
    /// Final (or current) state.
    pub state: String,
    /// What fired it.
    pub trigger: String,
    /// Amount, token, recipient or pair.
    pub description: String,
    /// The intent as the policy returned it.
    pub intent: serde_json::Value,
    /// Hash of the keeper transaction that carried it, if one was sent.
    pub tx_hash: Option<String>,
    /// Every state it went through, in order (from the journal's events).
    pub states: Vec<String>,
}

/// What `treasury dev --once --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Every step succeeded and no intent ended failed, rejected or expired.
    pub ok: bool,
    /// Why not, when not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The state directory.
    pub state_dir: String,
    /// Addresses of the deployment, once deployed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment: Option<treasury_devnet::world::Deployment>,
    /// Set-up and scenario steps.
    pub steps: Vec<StepRecord>,
    /// Every intent, oldest first.
    pub intents: Vec<IntentSummary>,
    /// Final balances in token units (decimal strings): `safe`, `alice`, `bob`, `grantee`, `keeper`
    /// (with `--ha`, those of each treasury under its name).
    pub balances: serde_json::Value,
    /// Child processes started (all stopped when this is printed).
    pub processes: Vec<ProcessSummary>,
    /// `--ha`: each treasury, its chain and deployment.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub treasuries: Vec<ha::TreasurySummary>,
    /// `--ha`: the leading replica killed mid-scenario and the standby's takeover.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failover: Option<ha::Failover>,
}

/// A child process in the summary.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessSummary {
    /// Name.
    pub name: String,
    /// Process id.
    pub pid: u32,
}

/// Runs `treasury dev`; returns the summary (also for failures and interruptions).
pub async fn run(opts: DevOptions) -> anyhow::Result<Summary> {
    // Signals first: a Ctrl-C at any later point must reach the clean-up below.
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let dir = prepare_dir(&opts.state_dir, opts.resume)?;
    let mut progress = Progress::new(opts.json);
    progress.line(&format!("treasury dev — state in {}", dir.display()));
    let mut procs = Procs::default();
    let mut outcome = Outcome::default();
    let interrupted = tokio::select! {
        r = main(&opts, &dir, &mut procs, &mut progress, &mut outcome) => {
            if let Err(e) = r {
                progress.fail_current(&format!("{e:#}"));
                outcome.error = Some(format!("{e:#}"));
            }
            false
        }
        _ = sigint.recv() => true,
        _ = sigterm.recv() => true,
    };
    if interrupted && !outcome.scenario_done {
        progress.fail_current("interrupted");
        outcome.error = Some("interrupted (Ctrl-C): every child process was stopped".into());
    }
    let processes: Vec<ProcessSummary> =
        procs.pids().into_iter().map(|(name, pid)| ProcessSummary { name, pid }).collect();
    if let Some(stop) = outcome.stop_view.take() {
        let _ = stop.send(true);
    }
    if let Some(view) = outcome.view.take() {
        let _ = view.await;
    }
    procs.stop_all(Duration::from_secs(5)).await;
    // After the replicas: the cluster they wrote to (its folder is removed with it).
    drop(outcome.postgres.take());
    progress.line(&format!("stopped {} child process(es)", processes.len()));
    // Unattended runs must end with every intent executed; an operator who declined the grant at
    // the prompt chose its `rejected`.
    let unattended = opts.once || opts.yes;
    let failed_intent = outcome
        .intents
        .iter()
        .find(|i| matches!(i.state.as_str(), "failed" | "expired") || (unattended && i.state == "rejected"));
    let mut error = outcome.error.take();
    if error.is_none()
        && let Some(i) = failed_intent
    {
        error = Some(format!("intent #{} ({}) ended {}", i.id, i.policy, i.state));
    }
    Ok(Summary {
        ok: error.is_none() && progress.steps.iter().all(|s| s.ok),
        error,
        state_dir: dir.display().to_string(),
        deployment: outcome.deployment,
        steps: progress.steps.clone(),
        intents: outcome.intents,
        balances: outcome.balances,
        processes,
        treasuries: outcome.treasuries,
        failover: outcome.failover,
    })
}

/// What `main` leaves for the summary.
#[derive(Debug, Default)]
struct Outcome {
    error: Option<String>,
    deployment: Option<treasury_devnet::world::Deployment>,
    intents: Vec<IntentSummary>,
    balances: serde_json::Value,
    view: Option<tokio::task::JoinHandle<()>>,
    /// The scenario finished (a Ctrl-C after it is the normal way to stop).
    scenario_done: bool,
    stop_view: Option<tokio::sync::watch::Sender<bool>>,
    /// `--ha`: the private PostgreSQL cluster, stopped after every child process.
    postgres: Option<treasury_devnet::Postgres>,
    treasuries: Vec<ha::TreasurySummary>,
    failover: Option<ha::Failover>,
}

async fn main(
    opts: &DevOptions,
    dir: &Path,
    procs: &mut Procs,
    progress: &mut Progress,
    outcome: &mut Outcome,
) -> anyhow::Result<()> {
    if opts.ha {
        return ha::main(opts, dir, procs, progress, outcome).await;
    }
    let running = if opts.resume {
        setup::resume(dir, procs, progress).await?
    } else {
        setup::run(dir, procs, progress).await?
    };
    outcome.deployment = Some(running.deployment.clone());
    if !opts.resume {
        let t = progress.start("clock → 23:59 UTC, feeds refreshed");
        let moved = scenario::set_clock_before_midnight(&running).await?;
        progress.done(t, &moved);
    }

    let t = progress.start("agent (treasury run)");
    let api = setup::start_agent(&running, procs).await?;
    wait_for_agent_start(&running, procs).await?;
    let journal = Journal::open(&running.config.journal.url).await.context("opening the agent's journal")?;
    progress.done(t, &format!("log {}", running.dir.join("agent.log").display()));
    print_pages(progress, &running, api.base());

    let pids: Vec<String> = procs.pids().iter().map(|(name, pid)| format!("{name} {pid}")).collect();
    let shared = Arc::new(Shared {
        dir: running.dir.display().to_string(),
        procs: pids.join(", "),
        ..Default::default()
    });
    let (stop_view, stop_rx) = tokio::sync::watch::channel(false);
    let spec = treasury_agent::pipeline::snapshot_spec(&running.config)
        .context("snapshot spec of the dev config")?;
    let live_tty = !opts.json && progress.is_tty();
    if !live_tty {
        progress.line("scenario (intent states as they change):");
    }
    outcome.view = Some(tokio::spawn(view::live(
        journal.clone(),
        running.deployer.clone(),
        spec,
        shared.clone(),
        live_tty,
        opts.json,
        stop_rx,
    )));
    outcome.stop_view = Some(stop_view);

    let approval = if opts.yes || opts.once { Approval::Auto } else { Approval::Ask };
    let pace = if opts.once { Duration::ZERO } else { Duration::from_secs(3) };
    let scenario = Scenario::new(&running, api, journal.clone(), shared.clone(), approval, pace);
    let result = if opts.resume { scenario.resume(progress).await } else { scenario.run(progress).await };
    // Whatever happened, the summary reads the journal and the chain while anvil still runs.
    outcome.intents = intents(&journal).await.unwrap_or_default();
    outcome.balances =
        balances(&running).await.unwrap_or_else(|e| serde_json::json!({ "error": format!("{e:#}") }));
    result?;
    if opts.once {
        return Ok(());
    }
    outcome.scenario_done = true;
    shared.event(format!(
        "scenario done: the agent keeps running (logs, config, env.sh in {}); Ctrl-C stops everything",
        running.dir.display()
    ));
    std::future::pending::<()>().await;
    Ok(())
}

/// Prints where the approvals page and the agent's API are, with the demo approvers' sign-ins.
fn print_pages(progress: &Progress, running: &setup::Running, api: &str) {
    progress.line(&format!("approvals page: {}/approvals", running.root_url.trim_end_matches('/')));
    for (name, password) in &running.approvers {
        progress.line(&format!("  approver {name} password {password}"));
    }
    progress.line(&format!(
        "agent API: {api} (bearer token: TREASURY_API_TOKEN in {}/env.sh)",
        running.dir.display()
    ));
    progress.line(&format!("dashboard: {}/dashboard (sign in with that token)", api.trim_end_matches('/')));
}

/// Wipes the state directory (with `--resume`, checks it holds a previous run) and returns its
/// absolute path.
fn prepare_dir(dir: &Path, resume: bool) -> anyhow::Result<PathBuf> {
    if resume {
        if !dir.join(MARKER).exists() {
            bail!("--resume: {} is not a treasury dev state directory (no {MARKER} file)", dir.display());
        }
        return dir.canonicalize().with_context(|| format!("resolving {}", dir.display()));
    }
    if dir.exists() {
        let empty =
            std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?.next().is_none();
        if !empty && !dir.join(MARKER).exists() {
            bail!(
                "{} exists and is not a treasury dev state directory (no {MARKER} file): choose another --state-dir",
                dir.display()
            );
        }
        std::fs::remove_dir_all(dir)
            .with_context(|| format!("wiping the previous state in {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join(MARKER), "treasury dev state directory: wiped by the next `treasury dev`\n")
        .with_context(|| format!("writing {}", dir.join(MARKER).display()))?;
    dir.canonicalize().with_context(|| format!("resolving {}", dir.display()))
}

/// Waits for `treasury run` to log that it runs (its journal is then migrated); fails if it exits.
async fn wait_for_agent_start(r: &Running, procs: &mut Procs) -> anyhow::Result<()> {
    let log = r.dir.join("agent.log");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("treasury agent running") {
            return Ok(());
        }
        if let Some(status) = procs.get_mut("agent").and_then(|p| p.exited()) {
            let tail: Vec<&str> = text.lines().rev().take(5).collect();
            bail!(
                "the agent exited ({status}) while starting: {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            );
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the agent did not start within 90 s (log: {})", log.display());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn intents(journal: &Journal) -> anyhow::Result<Vec<IntentSummary>> {
    let mut list = journal.list(&IntentFilter { limit: Some(1000), ..Default::default() }).await?;
    list.reverse();
    let mut out = Vec::new();
    for i in list {
        let mut tx_hash = None;
        let states = match journal.intent(i.id).await? {
            Some((_, events)) => events.iter().map(|e| e.to.as_str().to_string()).collect(),
            None => Vec::new(),
        };
        if let Some(op) = journal.operation_of(i.id).await? {
            tx_hash = journal.latest_transaction(&op.operation_id).await?.map(|t| t.tx.tx_hash);
        }
        out.push(IntentSummary {
            treasury: None,
            id: i.id.0,
            policy: i.policy.clone(),
            kind: i.kind.clone(),
            state: i.state.as_str().to_string(),
            trigger: i.trigger.clone(),
            description: view::describe(&i.payload),
            intent: i.payload.get("intent").cloned().unwrap_or(serde_json::Value::Null),
            tx_hash,
            states,
        });
    }
    Ok(out)
}

async fn balances(r: &Running) -> anyhow::Result<serde_json::Value> {
    let d = &r.deployment;
    let p = &r.deployer;
    let who: [(&str, Address); 5] = [
        ("safe", d.safe),
        ("alice", setup::ALICE),
        ("bob", setup::BOB),
        ("grantee", setup::GRANTEE),
        ("keeper", r.keeper),
    ];
    let mut out = serde_json::Map::new();
    for (name, addr) in who {
        let mut m = serde_json::Map::new();
        let eth = p.get_balance(addr).await.context("eth_getBalance")?;
        m.insert("ETH".into(), fmt_units(eth, 18).into());
        for t in &d.tokens {
            let b = IERC20::new(t.address, p)
                .balanceOf(addr)
                .call()
                .await
                .with_context(|| format!("{}.balanceOf", t.symbol))?;
            m.insert(t.symbol.clone(), fmt_units(b, t.decimals).into());
        }
        out.insert(name.into(), m.into());
    }
    Ok(out.into())
}

/// `raw` in whole units with every significant decimal (`14500`, `0.5`, `1000.000001`).
pub fn fmt_units(raw: U256, decimals: u8) -> String {
    let unit = U256::from(10u64).pow(U256::from(decimals));
    let whole = raw / unit;
    let frac = raw % unit;
    if frac.is_zero() {
        return whole.to_string();
    }
    let frac = format!("{:0>width$}", frac.to_string(), width = decimals as usize);
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_keep_every_significant_decimal() {
        assert_eq!(fmt_units(U256::from(14_500_000_000u64), 6), "14500");
        assert_eq!(fmt_units(U256::from(500_000_000_000_000_000u64), 18), "0.5");
        assert_eq!(fmt_units(U256::from(1_000_000_001u64), 6), "1000.000001");
        assert_eq!(fmt_units(U256::ZERO, 18), "0");
    }

    #[test]
    fn a_folder_that_is_not_a_dev_state_dir_is_never_wiped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("precious"), "x").unwrap();
        let err = prepare_dir(dir.path(), false).unwrap_err();
        assert!(err.to_string().contains("not a treasury dev state directory"), "{err}");
        assert!(dir.path().join("precious").exists());
        let state = dir.path().join("state");
        prepare_dir(&state, false).unwrap();
        std::fs::write(state.join("old"), "x").unwrap();
        prepare_dir(&state, false).unwrap();
        assert!(!state.join("old").exists() && state.join(MARKER).exists());
    }
}
