//! Resident memory of one agent process serving N treasuries (issue 16): N lanes started by
//! `fleet::run_all` — what `treasury run` does with N `[[treasury]]` — each with its own SQLite
//! journal, pipeline (keeper keystore, quorum coordinator, policies), trigger watcher and shared
//! per-chain snapshot reader, every lane running a policy on every block; measured at 10, 100 and
//! 1,000 lanes, each size in its own process (this bench re-run with `--lanes N`), so each figure is
//! that process's own high-water mark.
//!
//! The N treasuries are the set-up's one Safe and module under N names (deploying 1,000 Safes and
//! modules is spared; the config check, which refuses two treasuries on one module, is not run):
//! every lane reads, evaluates and journals as its own treasury would. Its policy, run at each
//! block, values the Safe's holdings and pays nothing, so the lanes do not race for the module's
//! nonce.
//!
//! `cargo bench -p treasury --bench fleet [-- --json] [-- --sizes 10,100,1000] [-- --blocks 5]`
//!
//! `FLEET_WRAP=heaptrack` (any command taking the program and its arguments) runs each size's
//! process under it, to profile where a lane's memory goes.

#[path = "../tests/e2e/support/mod.rs"]
mod support;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use alloy::providers::Provider;
use serde_json::json;
use support::{AgentEnv, PolicySpec};
use treasury_agent::config::Config;
use treasury_agent::fleet::{self, LaneEvent};
use treasury_agent::pipeline::runner::RunOptions;

const WATCH: PolicySpec<'static> = PolicySpec {
    name: "watch",
    script: r#"let usd = balance("USDC") * price("USDC") + balance("ETH") * price("ETH");
if usd < 0 { alert("the treasury is worth less than nothing"); }"#,
    trigger: r#"{ kind = "every_blocks", blocks = 1 }"#,
};

/// Between two looks at the chain head, per lane (the default 100 ms times 1,000 lanes would be
/// 10,000 requests a second to one anvil on a 2-core machine).
const POLL: Duration = Duration::from_secs(1);

/// How long the lanes may take to start before the memory of those running is measured.
const START_LIMIT: Duration = Duration::from_secs(240);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).map(|i| args[i + 1].clone());
    let blocks: u64 = arg("--blocks").map_or(Ok(5), |b| b.parse())?;
    if let Some(lanes) = arg("--lanes") {
        treasury_agent::logging::init(0);
        let config = arg("--config").ok_or_else(|| anyhow::anyhow!("--lanes needs --config"))?;
        let report = lanes_process(lanes.parse()?, std::path::Path::new(&config), blocks).await?;
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    let sizes: Vec<usize> = arg("--sizes")
        .unwrap_or_else(|| "10,100,1000".into())
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()?;
    let env = AgentEnv::start(&[WATCH]).await?;
    let exe = std::env::current_exe()?;
    let secrets: Vec<(std::ffi::OsString, std::ffi::OsString)> = env
        .command(&[])
        .get_envs()
        .filter_map(|(k, v)| Some((k.to_os_string(), v?.to_os_string())))
        .collect();
    let mut rows = Vec::new();
    for n in sizes {
        let mut cmd = match std::env::var("FLEET_WRAP") {
            Ok(w) => {
                let mut c = Command::new(w);
                c.arg(&exe);
                c
            }
            Err(_) => Command::new(&exe),
        };
        let out = cmd
            .args(["--lanes", &n.to_string(), "--blocks", &blocks.to_string(), "--config"])
            .arg(&env.config)
            .envs(secrets.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "warn")
            .stderr(std::process::Stdio::inherit())
            .output()?;
        anyhow::ensure!(out.status.success(), "{n} lanes: the bench process failed");
        let row = serde_json::from_slice::<serde_json::Value>(&out.stdout)?;
        eprintln!("{row}");
        rows.push(row);
    }
    if args.iter().any(|a| a == "--json") {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!(
            "lanes  start-up  VmRSS idle  VmRSS after {blocks} blocks  VmHWM  per lane (HWM)  threads  fds  load average"
        );
        for r in &rows {
            let f = |k: &str| r[k].as_f64().unwrap_or_default();
            println!(
                "{:>5} ({} running)  {:>7.0} ms  {:>7.1} MiB  {:>7.1} MiB  {:>7.1} MiB  {:>6.0} KiB  {:>6}  {:>6}  {}",
                r["lanes"],
                r["lanes_running"],
                f("start_ms"),
                f("rss_idle_mib"),
                f("rss_mib"),
                f("hwm_mib"),
                f("hwm_mib") * 1024.0 / f("lanes_running"),
                r["threads"],
                r["open_fds"],
                r["load_average"]
            );
        }
    }
    Ok(())
}

/// This process: `n` lanes of the set-up's treasury, each on its own journal; the memory once all
/// run, and again after `blocks` blocks each lane snapshots, evaluates and journals.
async fn lanes_process(n: usize, config: &std::path::Path, blocks: u64) -> anyhow::Result<serde_json::Value> {
    let base = Config::load(config)?;
    let dir = tempfile::tempdir()?;
    let configs: Vec<Config> = (0..n)
        .map(|i| {
            let mut c = base.clone();
            c.name = format!("t{i}");
            c.journal.url = format!("sqlite://{}", dir.path().join(format!("t{i}.db")).display());
            c.api = None;
            c.pipeline.poll_interval = POLL;
            c
        })
        .collect();
    let provider = treasury_chain::provider::connect(base.chain.rpc_http.as_str())?;
    let running = Arc::new(AtomicUsize::new(0));
    let counter = running.clone();
    let on_event = Arc::new(move |_: &str, e: LaneEvent| {
        if matches!(e, LaneEvent::Running { .. }) {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let start = Instant::now();
    let lanes = tokio::spawn(fleet::run_all(configs, None, RunOptions { once: false }, shutdown, on_event));
    // A lane that cannot start is logged and the others go on: past the limit, what runs is measured.
    while running.load(Ordering::SeqCst) < n && start.elapsed() < START_LIMIT {
        anyhow::ensure!(!lanes.is_finished(), "the lanes stopped before all ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let start_ms = start.elapsed().as_secs_f64() * 1e3;
    let started = running.load(Ordering::SeqCst);
    tokio::time::sleep(2 * POLL).await;
    let rss_idle = status_mib("VmRSS:");
    for _ in 0..blocks {
        provider.raw_request::<_, serde_json::Value>("evm_mine".into(), ()).await?;
        // Every lane sees the block within a poll interval; give them a few to handle it.
        tokio::time::sleep(3 * POLL).await;
    }
    let report = json!({
        "lanes": n,
        "lanes_running": started,
        "start_ms": start_ms,
        "rss_idle_mib": rss_idle,
        "rss_mib": status_mib("VmRSS:"),
        "hwm_mib": status_mib("VmHWM:"),
        "threads": status_line("Threads:").trim().parse::<u64>().unwrap_or_default(),
        "open_fds": std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or_default(),
        "blocks": blocks,
        "load_average": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    });
    let _ = stop.send(true);
    if started == n {
        let outcomes = lanes.await?;
        let failed = outcomes.iter().filter(|o| o.result.is_err()).count();
        anyhow::ensure!(failed == 0, "{failed} of {n} lanes failed");
    }
    Ok(report)
}

/// A line of /proc/self/status (VmRSS, VmHWM), MiB.
fn status_mib(key: &str) -> f64 {
    let kib: f64 = status_line(key).trim().trim_end_matches("kB").trim().parse().unwrap_or_default();
    kib / 1024.0
}

/// The value of a line of /proc/self/status, empty if absent.
fn status_line(key: &str) -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix(key)).unwrap_or_default().to_string()
}
