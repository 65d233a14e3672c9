//! `treasury dev --ha`: two treasuries on two anvil chains (`[[treasury]]` lanes), served by two
//! replicas of `treasury run` on one private PostgreSQL cluster (`initdb` in the state folder, a
//! free port, removed on exit). Replica A takes both leases, replica B stands by; mid-scenario
//! the leading replica is killed with SIGKILL, B takes the leases over once they expire and
//! finishes the scenario.
//!
//! Each treasury is the plain demo's (its own anvil, HSM root, quorum of three nodes, root service
//! and keeper), set up in its own folder of the state directory; the scenario is the plain one's
//! first day (grant stream at 00:00, payroll and gas top-up at 09:00) on both chains at once.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use alloy::primitives::U256;
use alloy::providers::Provider;
use anyhow::{Context, bail};
use serde::Serialize;
use tokio::process::Command;
use treasury_agent::config::Config;
use treasury_agent::journal::{IntentFilter, Journal, Lease};
use treasury_agent::trigger::CURSOR_SOURCE;
use treasury_devnet::Postgres;
use treasury_devnet::procs::{self, Procs};
use treasury_devnet::world::Deployment;
use treasury_signer::quorum::store::COORDINATOR_PASSPHRASE_ENV;

use super::setup::{self, COORDINATOR_PASS, KEEPER_PASS, Running};
use super::view::Progress;
use super::{DevOptions, IntentSummary, Outcome, scenario};

/// The treasuries of the demo: name and extra anvil arguments (each its own chain id).
const TREASURIES: [(&str, &[&str]); 2] = [("grants", &[]), ("ops", &["--chain-id", "10"])];

/// The leases' time to live: a standby takes over a killed leader's treasuries within about
/// that (plus a quarter of it, its polling interval).
pub const LEASE_TTL: Duration = Duration::from_secs(3);

/// How long one scenario step may take before it is reported as failed.
const STEP_TIMEOUT: Duration = Duration::from_secs(180);

/// A treasury in the summary.
#[derive(Debug, Clone, Serialize)]
pub struct TreasurySummary {
    /// Its name in the config (`[[treasury]] name`).
    pub name: String,
    /// Its chain's RPC endpoint (stopped when the summary is printed).
    pub rpc: String,
    /// Its journal (a database of the private cluster).
    pub journal: String,
    /// Addresses of its deployment.
    pub deployment: Deployment,
}

/// The failover in the summary.
#[derive(Debug, Clone, Serialize)]
pub struct Failover {
    /// The process id of the leading replica, killed with SIGKILL.
    pub killed: u32,
    /// The process id of the replica that took over.
    pub standby: u32,
    /// From the SIGKILL to the standby's first journal write (its new term on the lease) on every
    /// treasury the killed replica led, ms.
    pub taken_over_after_ms: u64,
    /// The leases' time to live, ms.
    pub lease_ttl_ms: u64,
}

/// One treasury: its set-up, its journal (read by the scenario) and its lease's name.
struct Lane {
    name: String,
    running: Running,
    journal: Journal,
    journal_url: String,
    lease: String,
}

/// The two replicas: names in `procs` and process ids.
struct Replicas {
    a: u32,
    b: u32,
}

/// Set-up, replicas, scenario with the failover; fills `outcome` for the summary.
pub(super) async fn main(
    opts: &DevOptions,
    dir: &Path,
    procs: &mut Procs,
    progress: &mut Progress,
    outcome: &mut Outcome,
) -> anyhow::Result<()> {
    let t = progress.start("PostgreSQL cluster (initdb)");
    // Started from the thread polling `treasury dev` (the runtime's `block_on`, the main
    // thread): the server dies with the process (parent-death signal) even on a kill -9.
    let cluster = Postgres::start_in(dir).context("starting a private PostgreSQL cluster")?;
    let detail = format!("127.0.0.1:{} in {}", cluster.port(), cluster.dir().display());
    let cluster = outcome.postgres.insert(cluster);
    progress.done(t, &detail);

    let mut lanes = Vec::new();
    for (name, anvil_args) in TREASURIES {
        lanes.push(set_up_treasury(name, anvil_args, dir, procs, progress, cluster).await?);
    }
    outcome.treasuries = lanes
        .iter()
        .map(|l| TreasurySummary {
            name: l.name.clone(),
            rpc: l.running.config.chain.rpc_http.as_str().to_string(),
            journal: l.journal_url.clone(),
            deployment: l.running.deployment.clone(),
        })
        .collect();

    let t = progress.start("config: [[treasury]] grants and ops on PostgreSQL");
    let config_path = write_config(dir, &lanes)?;
    let configs =
        Config::load_all(&config_path).with_context(|| format!("checking {}", config_path.display()))?;
    for lane in &mut lanes {
        let config =
            configs.iter().find(|c| c.name == lane.name).context("a treasury missing from the config")?;
        lane.lease = treasury_agent::replica::treasury_id(config);
    }
    progress.done(t, &config_path.display().to_string());

    let result = run_scenario(dir, &config_path, &lanes, procs, progress, outcome).await;
    // Whatever happened, the summary reads the journals and the chains while they still run.
    outcome.intents = intents(&lanes).await.unwrap_or_default();
    let mut balances = serde_json::Map::new();
    for lane in &lanes {
        let b = super::balances(&lane.running)
            .await
            .unwrap_or_else(|e| serde_json::json!({ "error": format!("{e:#}") }));
        balances.insert(lane.name.clone(), b);
    }
    outcome.balances = balances.into();
    result?;
    if opts.once {
        return Ok(());
    }
    outcome.scenario_done = true;
    progress.line(&format!(
        "scenario done: the surviving replica keeps running (logs and config in {}); Ctrl-C stops everything",
        dir.display()
    ));
    std::future::pending::<()>().await;
    Ok(())
}

/// The plain demo's set-up in `dir/NAME` (its steps and processes named after the treasury),
/// its clock moved to 23:59 UTC, and its journal: a new database of `cluster`.
async fn set_up_treasury(
    name: &str,
    anvil_args: &[&str],
    dir: &Path,
    procs: &mut Procs,
    progress: &mut Progress,
    cluster: &Postgres,
) -> anyhow::Result<Lane> {
    let sub = dir.join(name);
    std::fs::create_dir_all(&sub).with_context(|| format!("creating {}", sub.display()))?;
    progress.line(&format!("treasury {name}:"));
    let (first_proc, first_step) = (procs.len(), progress.steps.len());
    let running = setup::run_on(&sub, procs, progress, anvil_args).await;
    procs.prefix_names(first_proc, &format!("{name}: "));
    let running = running?;
    let t = progress.start("clock → 23:59 UTC, feeds refreshed");
    let moved = scenario::set_clock_before_midnight(&running).await?;
    progress.done(t, &moved);

    let t = progress.start("journal (PostgreSQL database)");
    let url = cluster.create_database(name)?;
    // Migrated here, before two replicas start on it.
    let journal = Journal::open(&url).await.with_context(|| format!("opening the journal {url}"))?;
    progress.done(t, &url);
    for step in progress.steps.iter_mut().skip(first_step) {
        step.name = format!("{name}: {}", step.name);
    }
    Ok(Lane { name: name.to_string(), running, journal, journal_url: url, lease: String::new() })
}

/// The environment variable holding treasury `name`'s requester token at its root service.
fn root_token_env(name: &str) -> String {
    format!("TREASURY_ROOT_TOKEN_{}", name.to_uppercase())
}

/// Writes `treasury.toml` in `dir`: each treasury's plain dev config as a `[[treasury]]` (paths
/// made absolute, no API), its journal on PostgreSQL with the demo's lease time to live.
fn write_config(dir: &Path, lanes: &[Lane]) -> anyhow::Result<PathBuf> {
    let mut treasuries = Vec::new();
    for lane in lanes {
        let path = &lane.running.config_path;
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut t: toml::Table =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let base = &lane.running.dir;
        t.remove("api");
        let mut journal = toml::Table::new();
        journal.insert("url".into(), lane.journal_url.clone().into());
        journal.insert("lease_ttl".into(), format!("{}s", LEASE_TTL.as_secs()).into());
        t.insert("journal".into(), journal.into());
        absolutise(&mut t, &["signing", "quorum_file"], base);
        absolutise(&mut t, &["keeper", "keystore"], base);
        if let Some(toml::Value::Table(signing)) = t.get_mut("signing") {
            signing.insert("root_token_env".into(), root_token_env(&lane.name).into());
        }
        if let Some(toml::Value::Array(policies)) =
            t.get_mut("policies").and_then(|p| p.as_table_mut()).and_then(|p| p.get_mut("policy"))
        {
            for policy in policies.iter_mut().filter_map(toml::Value::as_table_mut) {
                absolutise(policy, &["file"], base);
            }
        }
        let mut named = toml::Table::new();
        named.insert("name".into(), lane.name.clone().into());
        named.extend(t);
        treasuries.push(toml::Value::Table(named));
    }
    let mut file = toml::Table::new();
    file.insert("treasury".into(), toml::Value::Array(treasuries));
    let text = format!(
        "# treasury dev --ha: two treasuries, one journal database each on the private PostgreSQL\n\
         # cluster; run by two replicas (`treasury run --config` this file), one leading per lease.\n\n{}",
        toml::to_string(&file).context("serialising the --ha config")?
    );
    let path = dir.join("treasury.toml");
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Makes the relative path at `keys` in `t` absolute, from `base`.
fn absolutise(t: &mut toml::Table, keys: &[&str], base: &Path) {
    let Some((last, parents)) = keys.split_last() else { return };
    let mut table = t;
    for key in parents {
        match table.get_mut(*key) {
            Some(toml::Value::Table(inner)) => table = inner,
            _ => return,
        }
    }
    if let Some(toml::Value::String(path)) = table.get_mut(*last)
        && Path::new(path.as_str()).is_relative()
    {
        *path = base.join(path.as_str()).display().to_string();
    }
}

async fn run_scenario(
    dir: &Path,
    config: &Path,
    lanes: &[Lane],
    procs: &mut Procs,
    progress: &mut Progress,
    outcome: &mut Outcome,
) -> anyhow::Result<()> {
    let replicas = start_replicas(dir, config, lanes, procs, progress).await?;
    step(progress, "agents watching both chains", async {
        let mut blocks = Vec::new();
        for lane in lanes {
            blocks.push(format!("{} from block {}", lane.name, wait_for_cursor(lane).await?));
        }
        Ok(blocks.join(", "))
    })
    .await?;
    step(progress, "time → 00:00 UTC: grant_stream (daily) on both chains", async {
        let ts = scenario::latest_timestamp(&lanes[0].running.deployer).await?;
        let midnight = (ts / 86_400 + 1) * 86_400;
        let before = finished(lanes).await?;
        jump_all(lanes, midnight + 30).await?;
        settle_all(lanes).await?;
        Ok(format!("{} intent(s) done", finished(lanes).await? - before))
    })
    .await?;

    let before = finished(lanes).await?;
    let started = count(lanes).await?;
    step(progress, "time → 09:00 UTC: payroll (monthly), gas_topup (weekly) on both chains", async {
        let ts = scenario::latest_timestamp(&lanes[0].running.deployer).await?;
        let nine = (ts / 86_400) * 86_400 + 9 * 3600 + 30;
        jump_all(lanes, nine).await?;
        Ok(String::from("clocks moved, feeds refreshed"))
    })
    .await?;
    let failover = step(progress, "SIGKILL the leading replica mid-step; the standby takes over", async {
        // Mid-step: once the leader has journaled the first of the new intents (if it is slower
        // than that, the kill lands wherever it is).
        let until = Instant::now() + Duration::from_secs(60);
        while count(lanes).await? == started && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let f = kill_leader(lanes, &replicas).await?;
        let text = format!(
            "pid {} killed, pid {} took over after {} ms (lease TTL {} ms)",
            f.killed, f.standby, f.taken_over_after_ms, f.lease_ttl_ms
        );
        Ok((text, f))
    })
    .await?;
    outcome.failover = Some(failover);
    step(progress, "the standby finishes the day on both treasuries", async {
        settle_all(lanes).await?;
        Ok(format!("{} intent(s) done since 09:00", finished(lanes).await? - before))
    })
    .await?;
    Ok(())
}

/// Runs `fut` as a step with a time limit, recorded in `progress`; the step's detail is the
/// text it returns (with a value, as `(text, value)`).
async fn step<T: StepResult>(
    progress: &mut Progress,
    name: &str,
    fut: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T::Value> {
    let t = progress.start(name);
    match tokio::time::timeout(STEP_TIMEOUT, fut).await {
        Ok(Ok(r)) => {
            let (detail, value) = r.split();
            progress.done(t, &detail);
            Ok(value)
        }
        Ok(Err(e)) => Err(e.context(format!("scenario step {name:?}"))),
        Err(_) => bail!("scenario step {name:?} timed out after {} s", STEP_TIMEOUT.as_secs()),
    }
}

/// What a step returns: its detail, and a value for the caller.
trait StepResult {
    type Value;
    fn split(self) -> (String, Self::Value);
}

impl StepResult for String {
    type Value = ();
    fn split(self) -> (String, ()) {
        (self, ())
    }
}

impl<V> StepResult for (String, V) {
    type Value = V;
    fn split(self) -> (String, V) {
        self
    }
}

/// `treasury run` on the `--ha` config, with the secrets of every treasury.
fn replica_command(config: &Path, lanes: &[Lane]) -> anyhow::Result<Command> {
    let exe = std::env::current_exe().context("locating the treasury executable")?;
    let mut cmd = Command::new(&exe);
    cmd.args(["run", "--config"])
        .arg(config)
        .env(COORDINATOR_PASSPHRASE_ENV, COORDINATOR_PASS)
        .env("TREASURY_KEEPER_PASSWORD", KEEPER_PASS)
        .env("RUST_LOG", "info");
    for lane in lanes {
        cmd.env(root_token_env(&lane.name), &lane.running.root_token);
    }
    Ok(cmd)
}

/// Starts replica A and waits until it leads every treasury, then replica B and waits until it
/// stands by on every treasury.
async fn start_replicas(
    dir: &Path,
    config: &Path,
    lanes: &[Lane],
    procs: &mut Procs,
    progress: &mut Progress,
) -> anyhow::Result<Replicas> {
    let t = progress.start("replica A (treasury run)");
    let log = dir.join("replica-a.log");
    let (p, _) =
        procs::spawn("replica A", replica_command(config, lanes)?, &log, Duration::from_secs(120), |l| {
            l.contains("leading term").then(String::new)
        })
        .await?;
    let a = p.pid;
    procs.push(p);
    wait_for(procs, "replica A", &log, "leads every treasury", move || async move {
        let leases = leases(lanes).await?;
        Ok(leases.iter().all(|l| l.as_ref().is_some_and(|l| holder_pid(l) == Some(a))))
    })
    .await?;
    progress.done(t, &format!("pid {a} leads {} (log {})", names(lanes), log.display()));

    let t = progress.start("replica B (treasury run)");
    let log = dir.join("replica-b.log");
    let p = procs::start("replica B", replica_command(config, lanes)?, &log)?;
    let b = p.pid;
    procs.push(p);
    let standing_by = "another replica holds the lease: standing by";
    let log_file = &log;
    wait_for(procs, "replica B", &log, "stands by on every treasury", move || async move {
        let text = std::fs::read_to_string(log_file).unwrap_or_default();
        Ok(text.matches(standing_by).count() >= lanes.len())
    })
    .await?;
    progress.done(t, &format!("pid {b} stands by (log {})", log.display()));
    Ok(Replicas { a, b })
}

/// Polls `ready` until true; fails if the process `name` exits first or after 120 s.
async fn wait_for<F, Fut>(
    procs: &mut Procs,
    name: &str,
    log: &Path,
    what: &str,
    ready: F,
) -> anyhow::Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        if ready().await? {
            return Ok(());
        }
        if let Some(status) = procs.get_mut(name).and_then(|p| p.exited()) {
            bail!("{name} exited ({status}) before it {what} (log {})", log.display());
        }
        if Instant::now() > until {
            bail!("{name} did not show that it {what} within 120 s (log {})", log.display());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The lease of each treasury, in order.
async fn leases(lanes: &[Lane]) -> anyhow::Result<Vec<Option<Lease>>> {
    let mut out = Vec::new();
    for lane in lanes {
        out.push(lane.journal.current_lease(&lane.lease).await.context("reading a lease")?);
    }
    Ok(out)
}

/// The process id in a lease's holder (`HOSTNAME:PID`, the replicas' default name).
fn holder_pid(lease: &Lease) -> Option<u32> {
    lease.holder.rsplit(':').next()?.parse().ok()
}

fn names(lanes: &[Lane]) -> String {
    lanes.iter().map(|l| l.name.as_str()).collect::<Vec<_>>().join(" and ")
}

/// Kills the replica leading the first treasury with SIGKILL and waits until every treasury it
/// led carries a new term held by the other replica: the standby's first journal write.
async fn kill_leader(lanes: &[Lane], replicas: &Replicas) -> anyhow::Result<Failover> {
    let before = leases(lanes).await?;
    let leader =
        before[0].as_ref().and_then(holder_pid).context("nobody holds the first treasury's lease")?;
    let standby = if leader == replicas.a { replicas.b } else { replicas.a };
    let led: Vec<(usize, i64)> = before
        .iter()
        .enumerate()
        .filter_map(|(i, l)| l.as_ref().filter(|l| holder_pid(l) == Some(leader)).map(|l| (i, l.term)))
        .collect();
    procs::send_sigkill(leader).context("killing the leading replica")?;
    let killed_at = Instant::now();
    let limit = LEASE_TTL * 10 + Duration::from_secs(60);
    loop {
        let now = leases(lanes).await?;
        let taken = led.iter().all(|(i, term)| {
            now[*i].as_ref().is_some_and(|l| l.term > *term && holder_pid(l) == Some(standby))
        });
        if taken {
            break;
        }
        if killed_at.elapsed() > limit {
            bail!("the standby (pid {standby}) did not take over within {} s", limit.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(Failover {
        killed: leader,
        standby,
        taken_over_after_ms: killed_at.elapsed().as_millis() as u64,
        lease_ttl_ms: LEASE_TTL.as_millis() as u64,
    })
}

/// Waits for the treasury's trigger cursor (the replica leading it runs); returns its block.
async fn wait_for_cursor(lane: &Lane) -> anyhow::Result<u64> {
    let safe = lane.running.deployment.safe.to_string().to_lowercase();
    loop {
        if let Some(c) = lane.journal.cursor(CURSOR_SOURCE, &safe).await.context("reading the cursor")? {
            return Ok(c.block_number);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Moves every chain's clock to `target` (`evm_increaseTime` + a block) and refreshes its feeds.
async fn jump_all(lanes: &[Lane], target: u64) -> anyhow::Result<()> {
    for lane in lanes {
        let p = &lane.running.deployer;
        let now = scenario::latest_timestamp(p).await?;
        let _: serde_json::Value = p
            .raw_request("evm_increaseTime".into(), (U256::from(target.saturating_sub(now)),))
            .await
            .context("evm_increaseTime")?;
        let _: serde_json::Value =
            p.raw_request("anvil_mine".into(), (U256::from(1),)).await.context("anvil_mine")?;
        scenario::heartbeat(&lane.running).await?;
    }
    Ok(())
}

/// Waits until each treasury's cursor passed its chain's head and none of its intents is unfinished.
async fn settle_all(lanes: &[Lane]) -> anyhow::Result<()> {
    for lane in lanes {
        let head = lane.running.deployer.get_block_number().await.context("eth_blockNumber")?;
        let safe = lane.running.deployment.safe.to_string().to_lowercase();
        loop {
            let cursor = lane.journal.cursor(CURSOR_SOURCE, &safe).await.context("reading the cursor")?;
            let pending = lane.journal.pending().await.context("reading pending intents")?;
            if cursor.is_some_and(|c| c.block_number >= head) && pending.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    Ok(())
}

async fn all_intents(lanes: &[Lane]) -> anyhow::Result<Vec<treasury_agent::journal::Intent>> {
    let mut out = Vec::new();
    for lane in lanes {
        out.extend(lane.journal.list(&IntentFilter { limit: Some(1000), ..Default::default() }).await?);
    }
    Ok(out)
}

async fn count(lanes: &[Lane]) -> anyhow::Result<usize> {
    Ok(all_intents(lanes).await?.len())
}

async fn finished(lanes: &[Lane]) -> anyhow::Result<usize> {
    Ok(all_intents(lanes).await?.iter().filter(|i| i.state.is_terminal()).count())
}

/// Every intent of every treasury, each treasury's oldest first.
async fn intents(lanes: &[Lane]) -> anyhow::Result<Vec<IntentSummary>> {
    let mut out = Vec::new();
    for lane in lanes {
        for mut i in super::intents(&lane.journal).await? {
            i.treasury = Some(lane.name.clone());
            out.push(i);
        }
    }
    Ok(out)
}
