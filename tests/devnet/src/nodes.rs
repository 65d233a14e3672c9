//! Signer nodes as processes (`treasury signer serve`), their directories, and `treasury signer
//! bench`: a quorum of node processes on loopback, timed end to end, with the in-process cost of the
//! same signature as the floor.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::primitives::{Address, U256};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use treasury_chain::operation::Operation;

use anyhow::{Context, anyhow};
use treasury_signer::quorum::QuorumError;
use treasury_signer::quorum::coordinator::{Coordinator, CoordinatorOptions, PinnedNode, run_dkg};
use treasury_signer::quorum::guard::{AllowEntry, Budget, GuardConfig};
use treasury_signer::quorum::identity::IdentityKey;
use treasury_signer::quorum::nonces::now;
use treasury_signer::quorum::replay::ReplayConfig;
use treasury_signer::quorum::store::{
    InitReport, NodeConfig, NodeStore, PASSPHRASE_ENV, Passphrase, pin_roster,
};

/// A `treasury signer serve` child process.
#[derive(Debug)]
pub struct NodeProcess {
    child: tokio::process::Child,
    output: tokio::sync::mpsc::UnboundedReceiver<String>,
    /// Its base URL.
    pub url: String,
    /// The node directory.
    pub dir: PathBuf,
}

impl NodeProcess {
    /// Starts `exe signer serve --dir dir --listen 127.0.0.1:0` and waits for its address.
    pub async fn spawn(exe: &Path, dir: &Path, passphrase: &str) -> anyhow::Result<Self> {
        let mut cmd = tokio::process::Command::new(exe);
        cmd.args(["signer", "serve", "--dir"])
            .arg(dir)
            .args(["--listen", "127.0.0.1:0"])
            .env(PASSPHRASE_ENV, passphrase);
        Self::from_command(cmd, dir).await
    }

    /// Starts a prepared `signer serve` command and waits for the address it prints.
    pub async fn from_command(mut cmd: tokio::process::Command, dir: &Path) -> anyhow::Result<Self> {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting the node of {}", dir.display()))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("the node has no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let line = lines
            .next_line()
            .await
            .with_context(|| format!("reading the node of {}", dir.display()))?
            .ok_or_else(|| anyhow!("node in {} exited before listening", dir.display()))?;
        let v: serde_json::Value = serde_json::from_str(&line)
            .with_context(|| format!("the node printed {line}, not its address"))?;
        let addr =
            v["listening"].as_str().ok_or_else(|| anyhow!("the node printed {line}, not its address"))?;
        let (tx, output) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(l)) = lines.next_line().await {
                // Nobody listening any more is fine: keep draining so the node never blocks on stdout.
                let _ = tx.send(l);
            }
        });
        Ok(Self { child, output, url: format!("http://{addr}"), dir: dir.to_path_buf() })
    }

    /// Waits for the next stdout line (after the listening line) that contains `needle`; `None`
    /// once the process has closed its stdout.
    pub async fn wait_for_line(&mut self, needle: &str) -> Option<String> {
        while let Some(l) = self.output.recv().await {
            if l.contains(needle) {
                return Some(l);
            }
        }
        None
    }

    /// Kills the process (SIGKILL) and waits for it.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Sends SIGTERM (as systemd stops a service) and waits for the process to exit.
    pub async fn terminate(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let pid = self.child.id().ok_or_else(|| anyhow!("the node has already exited"))?;
        crate::procs::send_sigterm(pid)?;
        Ok(self.child.wait().await?)
    }
}

/// Latency figures in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

pub(crate) fn latency(v: Vec<Duration>) -> Latency {
    let series: crate::Series = v.into_iter().collect();
    Latency { p50_ms: series.quantile(0.5), p99_ms: series.quantile(0.99), mean_ms: series.mean() }
}

/// What the bench prints.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Nodes (processes).
    pub nodes: usize,
    /// Threshold.
    pub threshold: u16,
    /// Signatures timed one after another.
    pub signatures: usize,
    /// Request → verified aggregate signature, one at a time, commitments preprocessed.
    pub latency: Latency,
    /// Sequential signatures per second.
    pub sequential_per_sec: f64,
    /// In-flight requests in the concurrent run.
    pub concurrency: usize,
    /// Signatures per second with `concurrency` requests in flight.
    pub concurrent_per_sec: f64,
    /// In process, one thread: commit + sign (all t) + aggregate + verify.
    pub in_process_full: Latency,
    /// In process, one thread, commitments preprocessed: sign (all t) + aggregate + verify.
    pub in_process_preprocessed: Latency,
    /// In process, the crypto on the critical path when the t nodes work in parallel: the
    /// coordinator serializes the signing package, one node deserializes it and signs, the
    /// coordinator aggregates and verifies.
    pub in_process_critical_path: Latency,
    /// One HTTP round trip to a node process (`GET /v1/health`, kept-alive connection).
    pub http_round_trip: Latency,
    /// One small append + `fdatasync` in the directory the nodes use (what each signature waits for
    /// once per node, before its share leaves), measured in the same run.
    pub fdatasync: Latency,
    /// DKG wall time across the processes, ms.
    pub dkg_ms: f64,
    /// Build profile of the bench binary.
    pub profile: &'static str,
}

/// Bench settings.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The `treasury` executable to start nodes with.
    pub exe: PathBuf,
    /// Nodes.
    pub nodes: usize,
    /// Threshold.
    pub threshold: u16,
    /// Signatures per measured run.
    pub signatures: usize,
    /// Requests in flight in the concurrent run.
    pub concurrency: usize,
}

/// Passphrase of the bench's throw-away node directories.
pub(crate) const BENCH_PASS: &str = "bench node passphrase";

/// The operation the bench signs: one allow-listed ERC-20 transfer.
pub fn bench_operation(token: Address, nonce: u64) -> Operation {
    crate::ops::erc20_transfer(token, Address::repeat_byte(0xbe), U256::from(1u64), nonce, now() + 3600)
}

/// Initialises `n` node directories under `root` for `coordinator` with `guard`, and pins each
/// to the `threshold`-of-`n` roster of all of them (as their operators would with `signer pin`).
pub fn init_nodes(
    root: &Path,
    n: usize,
    threshold: u16,
    coordinator: &IdentityKey,
    guard: &GuardConfig,
    passphrase: &str,
) -> anyhow::Result<Vec<InitReport>> {
    init_nodes_with(root, n, threshold, coordinator, guard, passphrase, &ReplayConfig::default())
}

/// Like [`init_nodes`], every node with `replay` in its `node.toml`.
pub fn init_nodes_with(
    root: &Path,
    n: usize,
    threshold: u16,
    coordinator: &IdentityKey,
    guard: &GuardConfig,
    passphrase: &str,
    replay: &ReplayConfig,
) -> anyhow::Result<Vec<InitReport>> {
    let pass = Passphrase::new(passphrase);
    let reports = (0..n)
        .map(|i| {
            NodeStore::init_with(
                &root.join(format!("node{i}")),
                &pass,
                NodeConfig {
                    coordinators: vec![coordinator.public().to_hex()],
                    guard: guard.clone(),
                    replay: replay.clone(),
                },
                true,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let all: Vec<String> = reports.iter().map(|r| r.fingerprint.clone()).collect();
    for r in &reports {
        pin_roster(Path::new(&r.dir), &pass, threshold, &all)?;
    }
    Ok(reports)
}

/// Runs the bench.
pub async fn run(opts: BenchOptions) -> anyhow::Result<BenchReport> {
    let tmp = std::env::temp_dir().join(format!("treasury-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let result = run_in(&tmp, &opts).await;
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

/// The token and module the benches sign for.
pub const BENCH_TOKEN: Address = Address::repeat_byte(0x70);
/// See [`BENCH_TOKEN`].
pub const BENCH_MODULE: Address = Address::repeat_byte(0x4d);

/// The nodes' rules in the benches: transfers of [`BENCH_TOKEN`] allowed, under a budget never reached.
pub(crate) fn bench_guard() -> GuardConfig {
    GuardConfig {
        chain_id: 31337,
        module: BENCH_MODULE,
        period_secs: 86_400,
        allow: vec![AllowEntry { target: BENCH_TOKEN, selector: Some("0xa9059cbb".into()) }],
        // a node signs no outflow it does not count: the bench's token has a budget it never reaches
        budgets: vec![Budget { token: BENCH_TOKEN, amount: U256::MAX }],
        ..Default::default()
    }
}

async fn run_in(tmp: &Path, opts: &BenchOptions) -> anyhow::Result<BenchReport> {
    let (token, module, guard) = (BENCH_TOKEN, BENCH_MODULE, bench_guard());
    let coord = IdentityKey::generate();
    let reports = init_nodes(tmp, opts.nodes, opts.threshold, &coord, &guard, BENCH_PASS)?;
    let (mut procs, pinned) = spawn_bench_nodes(&opts.exe, &reports).await?;
    let t0 = Instant::now();
    let dkg = run_dkg(coord.clone(), "coordinator.key", &pinned, opts.threshold, 5).await?;
    let dkg_ms = t0.elapsed().as_secs_f64() * 1e3;
    let coordinator = Arc::new(Coordinator::new(
        dkg.quorum,
        coord,
        CoordinatorOptions { timeout: Duration::from_secs(5), refill: 256, ..Default::default() },
    )?);
    let total = (opts.signatures * 2 + 20) as u32;
    let faults = coordinator.preprocess(total).await;
    if let Some((n, f)) = faults.first() {
        return Err(QuorumError::Node { node: n.clone(), fault: f.clone() }.into());
    }
    for i in 0..10u64 {
        coordinator.sign(&bench_operation(token, i), 31337, module, None).await?;
    }
    let mut lat = Vec::with_capacity(opts.signatures);
    let seq_start = Instant::now();
    for i in 0..opts.signatures as u64 {
        let t = Instant::now();
        coordinator.sign(&bench_operation(token, 1000 + i), 31337, module, None).await?;
        lat.push(t.elapsed());
    }
    let seq = seq_start.elapsed();
    let conc_start = Instant::now();
    let per_task = opts.signatures.div_ceil(opts.concurrency.max(1));
    let mut tasks = Vec::new();
    for w in 0..opts.concurrency.max(1) {
        let c = coordinator.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_task as u64 {
                c.sign(&bench_operation(token, 1_000_000 + (w as u64) * 100_000 + i), 31337, module, None)
                    .await?;
            }
            Ok::<_, QuorumError>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let conc = conc_start.elapsed();
    let http = http_round_trips(&procs[0].url, opts.signatures).await?;
    for p in &mut procs {
        p.kill().await;
    }
    let (full, pre, critical) = in_process(opts.nodes as u16, opts.threshold, opts.signatures)?;
    let sync = fdatasync(tmp, opts.signatures)?;
    Ok(BenchReport {
        nodes: opts.nodes,
        threshold: opts.threshold,
        signatures: opts.signatures,
        latency: latency(lat),
        sequential_per_sec: opts.signatures as f64 / seq.as_secs_f64(),
        concurrency: opts.concurrency,
        concurrent_per_sec: (per_task * opts.concurrency.max(1)) as f64 / conc.as_secs_f64(),
        in_process_full: latency(full),
        in_process_preprocessed: latency(pre),
        in_process_critical_path: latency(critical),
        http_round_trip: latency(http),
        fdatasync: latency(sync),
        dkg_ms,
        profile: if cfg!(debug_assertions) { "debug" } else { "release" },
    })
}

/// Starts a `signer serve` process for each of `reports`' nodes; returns them and their pins for DKG.
pub(crate) async fn spawn_bench_nodes(
    exe: &Path,
    reports: &[InitReport],
) -> anyhow::Result<(Vec<NodeProcess>, Vec<PinnedNode>)> {
    let mut procs = Vec::new();
    for r in reports {
        procs.push(NodeProcess::spawn(exe, Path::new(&r.dir), BENCH_PASS).await?);
    }
    let pinned = procs
        .iter()
        .zip(reports)
        .map(|(p, r)| PinnedNode { url: p.url.clone(), fingerprint: r.fingerprint.clone() })
        .collect();
    Ok((procs, pinned))
}

/// The durability floor: appending one ledger-sized line and `fdatasync`, `count` times, in `dir`.
fn fdatasync(dir: &Path, count: usize) -> anyhow::Result<Vec<Duration>> {
    use std::io::Write;
    let path = dir.join("fdatasync-probe");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let line = [b'x'; 255];
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let t = Instant::now();
        f.write_all(&line)
            .and_then(|()| f.write_all(b"\n"))
            .and_then(|()| f.sync_data())
            .with_context(|| format!("writing {}", path.display()))?;
        out.push(t.elapsed());
    }
    Ok(out)
}

/// The transport floor: `count` `GET /v1/health` round trips to `url` on one kept-alive connection.
async fn http_round_trips(url: &str, count: usize) -> anyhow::Result<Vec<Duration>> {
    let http = reqwest::Client::builder().tcp_nodelay(true).build().context("building the HTTP client")?;
    let health = format!("{url}/v1/health");
    let mut out = Vec::with_capacity(count);
    for _ in 0..count + 10 {
        let t = Instant::now();
        let r = http.get(&health).send().await.and_then(|r| r.error_for_status());
        let body = match r {
            Ok(r) => r.bytes().await,
            Err(e) => Err(e),
        };
        body.with_context(|| health.clone())?;
        out.push(t.elapsed());
    }
    Ok(out.split_off(10))
}

/// The floor: the same t-of-n signature computed in one process, one thread. Returns the timings
/// of commit + sign + aggregate, of sign + aggregate (preprocessed), and of the critical path
/// (package serialized, then deserialized and signed by one node, then aggregated).
#[allow(clippy::type_complexity)]
fn in_process(n: u16, t: u16, count: usize) -> anyhow::Result<(Vec<Duration>, Vec<Duration>, Vec<Duration>)> {
    use frost_secp256k1 as frost;
    let (shares, pkp) =
        frost::keys::generate_with_dealer(n, t, frost::keys::IdentifierList::Default, rand_core::OsRng)?;
    let kps: Vec<frost::keys::KeyPackage> = shares
        .into_values()
        .take(usize::from(t))
        .map(frost::keys::KeyPackage::try_from)
        .collect::<Result<_, _>>()?;
    let mut full = Vec::with_capacity(count);
    let mut pre = Vec::with_capacity(count);
    let mut critical = Vec::with_capacity(count);
    for i in 0..count {
        let msg = alloy::primitives::keccak256(i.to_be_bytes());
        for preprocessed in [false, true] {
            let mut nonces = BTreeMap::new();
            let mut comms = BTreeMap::new();
            let mut commit_all = || {
                for kp in &kps {
                    let (nn, c) = frost::round1::commit(kp.signing_share(), &mut rand_core::OsRng);
                    nonces.insert(*kp.identifier(), nn);
                    comms.insert(*kp.identifier(), c);
                }
            };
            let t0 = if preprocessed {
                commit_all();
                Instant::now()
            } else {
                let t0 = Instant::now();
                commit_all();
                t0
            };
            let pkg = frost::SigningPackage::new(comms, msg.as_slice());
            let mut sig_shares = BTreeMap::new();
            for kp in &kps {
                sig_shares.insert(*kp.identifier(), frost::round2::sign(&pkg, &nonces[kp.identifier()], kp)?);
            }
            let sig = frost::aggregate(&pkg, &sig_shares, &pkp)?;
            pkp.verifying_key().verify(msg.as_slice(), &sig)?;
            if preprocessed {
                pre.push(t0.elapsed())
            } else {
                full.push(t0.elapsed())
            }
            if preprocessed {
                // The other t-1 shares are computed above (in parallel, in the real system).
                let t0 = Instant::now();
                let bytes = pkg.serialize()?;
                let at_node = frost::SigningPackage::deserialize(&bytes)?;
                let kp = &kps[0];
                let mine = frost::round2::sign(&at_node, &nonces[kp.identifier()], kp)?;
                sig_shares.insert(*kp.identifier(), mine);
                frost::aggregate(&pkg, &sig_shares, &pkp)?;
                critical.push(t0.elapsed());
            }
        }
    }
    Ok((full, pre, critical))
}
