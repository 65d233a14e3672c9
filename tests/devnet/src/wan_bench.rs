//! `treasury signer bench --rtt-ms …`: a quorum of node processes, each behind a [`LatencyProxy`]
//! with its own round-trip time, timed end to end — with every node up, then with the fastest
//! down — beside the floor a signature cannot beat (the t-th smallest round trip).
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use treasury_signer::quorum::coordinator::{Coordinator, CoordinatorOptions, PinnedNode, run_dkg};
use treasury_signer::quorum::identity::IdentityKey;

use crate::nodes::{
    BENCH_MODULE, BENCH_PASS, BENCH_TOKEN, Latency, NodeProcess, bench_guard, bench_operation, init_nodes,
    latency,
};
use crate::wan::{LatencyProxy, LinkProfile};

/// Settings of the wide-area bench.
#[derive(Debug, Clone)]
pub struct WanBenchOptions {
    /// The `treasury` executable to start nodes with.
    pub exe: std::path::PathBuf,
    /// Threshold.
    pub threshold: u16,
    /// Round-trip time of each node's link (one node per entry).
    pub rtts: Vec<Duration>,
    /// Signatures per measured run.
    pub signatures: usize,
    /// The coordinator's per-request timeout.
    pub timeout: Duration,
}

/// One measured run.
#[derive(Debug, Clone, Serialize)]
pub struct WanRun {
    /// Request → verified aggregate signature, one at a time (none when every signature failed).
    pub latency: Option<Latency>,
    /// The t-th smallest round-trip time of the nodes up: no signature can be faster.
    pub floor_ms: f64,
    /// Signatures that failed.
    pub lost: usize,
}

/// What the wide-area bench prints.
#[derive(Debug, Clone, Serialize)]
pub struct WanBenchReport {
    /// Nodes.
    pub nodes: usize,
    /// Threshold.
    pub threshold: u16,
    /// Each node's round-trip time, ms.
    pub rtt_ms: Vec<f64>,
    /// Every node up.
    pub all_up: WanRun,
    /// The fastest node's link down.
    pub fastest_down: WanRun,
    /// DKG wall time through the links, ms.
    pub dkg_ms: f64,
    /// Build profile of the bench binary.
    pub profile: &'static str,
}

/// The `t`-th smallest of `rtts`, ms.
fn floor_ms(rtts: &[Duration], t: usize) -> f64 {
    let mut v: Vec<Duration> = rtts.to_vec();
    v.sort();
    v.get(t.saturating_sub(1)).map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
}

/// Runs the bench in a temporary folder.
pub async fn run(opts: WanBenchOptions) -> anyhow::Result<WanBenchReport> {
    let tmp = tempfile::tempdir().context("creating the bench folder")?;
    run_in(tmp.path(), &opts).await
}

async fn run_in(tmp: &Path, opts: &WanBenchOptions) -> anyhow::Result<WanBenchReport> {
    let n = opts.rtts.len();
    anyhow::ensure!(n >= usize::from(opts.threshold) && opts.threshold >= 2, "need at least t ≥ 2 nodes");
    let coord = IdentityKey::generate();
    let reports = init_nodes(tmp, n, opts.threshold, &coord, &bench_guard(), BENCH_PASS)?;
    let mut procs = Vec::new();
    let mut proxies = Vec::new();
    for (r, rtt) in reports.iter().zip(&opts.rtts) {
        let node = NodeProcess::spawn(&opts.exe, Path::new(&r.dir), BENCH_PASS).await?;
        let upstream = node.url.trim_start_matches("http://").parse().context("node address")?;
        proxies.push(LatencyProxy::start(upstream, LinkProfile::rtt(*rtt)).await?);
        procs.push(node);
    }
    let pinned: Vec<PinnedNode> = proxies
        .iter()
        .zip(&reports)
        .map(|(p, r)| PinnedNode { url: p.url(), fingerprint: r.fingerprint.clone() })
        .collect();
    let t0 = Instant::now();
    let dkg = run_dkg(coord.clone(), "coordinator.key", &pinned, opts.threshold, 5).await?;
    let dkg_ms = t0.elapsed().as_secs_f64() * 1e3;
    let coordinator = Arc::new(Coordinator::new(
        dkg.quorum,
        coord,
        CoordinatorOptions { timeout: opts.timeout, refill: 256 },
    )?);
    let faults = coordinator.preprocess((opts.signatures * 2 + 10) as u32).await;
    anyhow::ensure!(faults.is_empty(), "preprocessing failed: {faults:?}");
    for i in 0..3u64 {
        coordinator.sign(&bench_operation(BENCH_TOKEN, i), 31337, BENCH_MODULE, None).await?;
    }
    let t = usize::from(opts.threshold);
    let all_up = measure(&coordinator, 1_000, opts.signatures, floor_ms(&opts.rtts, t)).await;
    let fastest = (0..n).min_by_key(|i| opts.rtts[*i]).expect("nodes");
    proxies[fastest].set_profile(LinkProfile { down: true, ..proxies[fastest].profile() });
    let rest: Vec<Duration> = (0..n).filter(|i| *i != fastest).map(|i| opts.rtts[i]).collect();
    let fastest_down = measure(&coordinator, 100_000, opts.signatures, floor_ms(&rest, t)).await;
    for p in &mut procs {
        p.kill().await;
    }
    Ok(WanBenchReport {
        nodes: n,
        threshold: opts.threshold,
        rtt_ms: opts.rtts.iter().map(|d| d.as_secs_f64() * 1e3).collect(),
        all_up,
        fastest_down,
        dkg_ms,
        profile: if cfg!(debug_assertions) { "debug" } else { "release" },
    })
}

/// Signs `count` operations one after another (module nonces from `first`).
async fn measure(coordinator: &Coordinator, first: u64, count: usize, floor_ms: f64) -> WanRun {
    let mut lat = Vec::with_capacity(count);
    let mut lost = 0;
    for i in 0..count as u64 {
        let start = Instant::now();
        match coordinator.sign(&bench_operation(BENCH_TOKEN, first + i), 31337, BENCH_MODULE, None).await {
            Ok(_) => lat.push(start.elapsed()),
            Err(_) => lost += 1,
        }
    }
    WanRun { latency: (!lat.is_empty()).then(|| latency(lat)), floor_ms, lost }
}
