//! `treasury signer bench --rtt-ms …`: a quorum of node processes, each behind a [`LatencyProxy`]
//! with its own round-trip time, timed end to end — with every node up, then with the fastest
//! down — beside the floor a signature cannot beat (the t-th smallest round trip).
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use treasury_signer::quorum::coordinator::{
    Coordinator, CoordinatorOptions, PinnedNode, run_dkg, run_refresh,
};
use treasury_signer::quorum::identity::IdentityKey;
use treasury_signer::quorum::quorum_file::QuorumFile;

use crate::netns::NetNamespace;
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
    /// The goal for this run, ms (p50 for all up, p99 with the fastest down).
    pub goal_ms: f64,
    /// Signatures that failed.
    pub lost: usize,
    /// The slowest signatures (at most [`SLOWEST`]), slowest first: where the tail comes from.
    pub slowest: Vec<SlowSignature>,
}

/// How many of the slowest signatures a run reports.
pub const SLOWEST: usize = 5;

/// One of a run's slowest signatures.
#[derive(Debug, Clone, Serialize)]
pub struct SlowSignature {
    /// Its place in the run (0 = first).
    pub index: usize,
    /// Request → verified signature, ms.
    pub ms: f64,
    /// The round-trip times (ms) of the nodes whose shares made it.
    pub signers_rtt_ms: Vec<f64>,
    /// The nodes excluded on the way (their round-trip time, ms, and why).
    pub excluded: Vec<(f64, String)>,
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
    /// Refresh (new shares, same group key, two-phase commit) wall time through the links, ms.
    pub refresh_ms: f64,
    /// Whether every node ran in its own network namespace (else on the host's loopback).
    pub namespaces: bool,
    /// Build profile of the bench binary.
    pub profile: &'static str,
}

/// The `t`-th smallest of `rtts`, ms.
fn floor_ms(rtts: &[Duration], t: usize) -> f64 {
    let mut v: Vec<Duration> = rtts.to_vec();
    v.sort();
    v.get(t.saturating_sub(1)).map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
}

/// A quorum of node processes, each behind its own [`LatencyProxy`], and a coordinator over them.
pub struct WanQuorum {
    /// The coordinator (its pools preprocessed).
    pub coordinator: Arc<Coordinator>,
    /// The link in front of each node, in node order.
    pub links: Vec<LatencyProxy>,
    /// Each node's base URL as the coordinator reaches it (through its link).
    pub urls: Vec<String>,
    /// DKG wall time through the links, ms.
    pub dkg_ms: f64,
    /// The coordinator key and the quorum file the DKG wrote (for a refresh).
    pub key: IdentityKey,
    /// See [`WanQuorum::key`].
    pub quorum: QuorumFile,
    /// The node processes, in node order.
    pub procs: Vec<NodeProcess>,
    /// Each node's network namespace, in node order; empty when namespaces could not be made and
    /// the nodes run on the host's loopback (a message on stderr says why).
    pub namespaces: Vec<NetNamespace>,
    _dir: tempfile::TempDir,
}

impl WanQuorum {
    /// Starts one node process per link profile (the bench's guard), runs DKG through the links,
    /// and preprocesses `commitments` per node.
    pub async fn start(
        exe: &Path,
        threshold: u16,
        links: &[LinkProfile],
        timeout: Duration,
        commitments: u32,
    ) -> anyhow::Result<Self> {
        let n = links.len();
        anyhow::ensure!(n >= usize::from(threshold) && threshold >= 2, "need at least t ≥ 2 nodes");
        let dir = tempfile::tempdir().context("creating the quorum folder")?;
        let coord = IdentityKey::generate();
        let reports = init_nodes(dir.path(), n, threshold, &coord, &bench_guard(), BENCH_PASS)?;
        let namespaces = namespaces_or_loopback(n);
        let (mut procs, mut proxies) = (Vec::new(), Vec::new());
        for (i, (r, link)) in reports.iter().zip(links).enumerate() {
            let node = spawn_node(exe, Path::new(&r.dir), namespaces.get(i)).await?;
            let upstream = node.url.trim_start_matches("http://").parse().context("node address")?;
            proxies.push(LatencyProxy::start(upstream, *link).await?);
            procs.push(node);
        }
        let pinned: Vec<PinnedNode> = proxies
            .iter()
            .zip(&reports)
            .map(|(p, r)| PinnedNode { url: p.url(), fingerprint: r.fingerprint.clone() })
            .collect();
        let t0 = Instant::now();
        let dkg = run_dkg(coord.clone(), "coordinator.key", &pinned, threshold, 5).await?;
        let dkg_ms = t0.elapsed().as_secs_f64() * 1e3;
        let quorum = dkg.quorum;
        let coordinator = Arc::new(Coordinator::new(
            quorum.clone(),
            coord.clone(),
            CoordinatorOptions { timeout, refill: 64, ..Default::default() },
        )?);
        let faults = coordinator.preprocess(commitments).await;
        anyhow::ensure!(faults.is_empty(), "preprocessing failed: {faults:?}");
        let urls = pinned.into_iter().map(|p| p.url).collect();
        Ok(Self {
            coordinator,
            links: proxies,
            urls,
            dkg_ms,
            key: coord,
            quorum,
            procs,
            namespaces,
            _dir: dir,
        })
    }

    /// Refreshes every node's share through the links; returns the wall time, ms.
    pub async fn refresh(&self) -> anyhow::Result<f64> {
        let t0 = Instant::now();
        run_refresh(self.key.clone(), &self.quorum).await.context("refresh through the links")?;
        Ok(t0.elapsed().as_secs_f64() * 1e3)
    }

    /// Stops the node processes.
    pub async fn stop(mut self) {
        for p in &mut self.procs {
            p.kill().await;
        }
    }
}

/// One namespace per node, or none (with the reason on stderr) when this process cannot make them.
fn namespaces_or_loopback(n: usize) -> Vec<NetNamespace> {
    let made: Result<Vec<NetNamespace>, _> = (0..n).map(|_| NetNamespace::create()).collect();
    match made {
        Ok(v) => v,
        Err(e) => {
            eprintln!(
                "wide-area harness: cannot make network namespaces ({}); the nodes run on the host's \
                 loopback, still behind their latency proxies (namespaces need root and iproute2)",
                treasury_signer::error_chain(&e)
            );
            Vec::new()
        }
    }
}

/// Starts a node listening in `ns` (at its namespace address), or on loopback without one.
async fn spawn_node(exe: &Path, dir: &Path, ns: Option<&NetNamespace>) -> anyhow::Result<NodeProcess> {
    let Some(ns) = ns else { return NodeProcess::spawn(exe, dir, BENCH_PASS).await };
    let mut cmd = ns.command(exe);
    cmd.args(["signer", "serve", "--dir"])
        .arg(dir)
        .args(["--listen", &format!("{}:0", ns.addr())])
        .env(treasury_signer::quorum::store::PASSPHRASE_ENV, BENCH_PASS);
    NodeProcess::from_command(cmd, dir).await
}

/// Runs the bench.
pub async fn run(opts: WanBenchOptions) -> anyhow::Result<WanBenchReport> {
    let links: Vec<LinkProfile> = opts.rtts.iter().map(|rtt| LinkProfile::rtt(*rtt)).collect();
    // One refill batch ahead; the coordinator tops the pools up in the background as they run
    // down, as it does in service, so the figures include that.
    let q = WanQuorum::start(&opts.exe, opts.threshold, &links, opts.timeout, 64).await?;
    for i in 0..3u64 {
        q.coordinator.sign(&bench_operation(BENCH_TOKEN, i), 31337, BENCH_MODULE, None).await?;
    }
    let n = opts.rtts.len();
    let t = usize::from(opts.threshold);
    let floor = floor_ms(&opts.rtts, t);
    let links = (q.urls.as_slice(), opts.rtts.as_slice());
    let all_up = measure(&q.coordinator, links, 1_000, opts.signatures, floor, 1.1 * floor + 3.0).await;
    let fastest = (0..n).min_by_key(|i| opts.rtts[*i]).expect("nodes");
    q.links[fastest].set_profile(LinkProfile { down: true, ..q.links[fastest].profile() });
    let rest: Vec<Duration> = (0..n).filter(|i| *i != fastest).map(|i| opts.rtts[i]).collect();
    // The goal with one of the t fastest down: p99 ≤ 2.2 × the t-th smallest RTT + 5 ms.
    let fastest_down =
        measure(&q.coordinator, links, 100_000, opts.signatures, floor_ms(&rest, t), 2.2 * floor + 5.0).await;
    q.links[fastest].set_profile(LinkProfile { down: false, ..q.links[fastest].profile() });
    let refresh_ms = q.refresh().await?;
    let dkg_ms = q.dkg_ms;
    let namespaces = !q.namespaces.is_empty();
    q.stop().await;
    Ok(WanBenchReport {
        nodes: n,
        threshold: opts.threshold,
        rtt_ms: opts.rtts.iter().map(|d| d.as_secs_f64() * 1e3).collect(),
        all_up,
        fastest_down,
        dkg_ms,
        refresh_ms,
        namespaces,
        profile: if cfg!(debug_assertions) { "debug" } else { "release" },
    })
}

/// Signs `count` operations one after another (module nonces from `first`); `rtts` are the nodes'
/// round-trip times, in the order of `urls`.
async fn measure(
    coordinator: &Coordinator,
    (urls, rtts): (&[String], &[Duration]),
    first: u64,
    count: usize,
    floor_ms: f64,
    goal_ms: f64,
) -> WanRun {
    let rtt_of =
        |url: &String| urls.iter().position(|u| u == url).map_or(f64::NAN, |i| rtts[i].as_secs_f64() * 1e3);
    let mut lat = Vec::with_capacity(count);
    let mut slow: Vec<SlowSignature> = Vec::new();
    let mut lost = 0;
    for i in 0..count as u64 {
        let op = bench_operation(BENCH_TOKEN, first + i);
        let start = Instant::now();
        match coordinator.sign_detailed(&op, 31337, BENCH_MODULE, None).await {
            Ok(outcome) => {
                let took = start.elapsed();
                lat.push(took);
                slow.push(SlowSignature {
                    index: i as usize,
                    ms: took.as_secs_f64() * 1e3,
                    signers_rtt_ms: outcome.signers.iter().map(rtt_of).collect(),
                    excluded: outcome.excluded.iter().map(|(u, f)| (rtt_of(u), f.to_string())).collect(),
                });
                slow.sort_by(|a, b| b.ms.total_cmp(&a.ms));
                slow.truncate(SLOWEST);
            }
            Err(_) => lost += 1,
        }
    }
    WanRun { latency: (!lat.is_empty()).then(|| latency(lat)), floor_ms, goal_ms, lost, slowest: slow }
}
