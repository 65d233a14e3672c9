//! Per-block work of many treasuries on one anvil (issue 16): N Safes × 10 token entries read
//! at one block by `read_snapshots` (one header, as few `aggregate3` calls as fit) against the
//! baseline of one `read_snapshot` per treasury, in the same run; the example policies
//! (`policies/examples`, the real Rhai sandbox) evaluated over the N snapshots, as a lane's intake
//! does (snapshot → `SnapshotView` → `PolicySet::evaluate_all`), against the first snapshot
//! evaluated N times, interleaved; and the process's resident memory once the N snapshots and views are held.
//!
//! The treasuries share the demo deployment's module, tokens and feeds and differ by holder
//! address: every call a snapshot makes (module nonce, pause, budget per asset, balance per asset,
//! two feed reads per asset) is made for each of them, so the work per treasury is that of a real
//! one; only deploying 1,000 Safes and modules is spared.
//!
//! `cargo run -p treasury-tests --release --bin snapshot-bench [-- --json]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::eips::BlockNumberOrTag;
use alloy::primitives::Address;
use alloy::providers::Provider;
use anyhow::Context;
use treasury_chain::snapshot::{AssetSpec, Snapshot, SnapshotSpec, read_snapshot, read_snapshots};
use treasury_devnet::TestChain;
use treasury_policies::{PoliciesConfig, PolicySet, SnapshotView, TokenEntry};

const SIZES: [usize; 3] = [10, 100, 1_000];
const TOKENS: usize = 10;
const RUNS: usize = 7;
const BASELINE_RUNS: usize = 3;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let json = std::env::args().any(|a| a == "--json");
    let chain = TestChain::start().await.context("starting anvil and deploying the treasury")?;
    let template = ten_assets(&chain.snapshot_spec());
    let block = BlockNumberOrTag::Number(chain.keeper.get_block_number().await?);
    let policies = example_policies(&template)?;
    let mut rows = Vec::new();
    for n in SIZES {
        let specs: Vec<SnapshotSpec> = (0..n)
            .map(|i| SnapshotSpec { safe: Address::with_last_byte(1).create(i as u64), ..template.clone() })
            .collect();
        let mut batched = Vec::new();
        let mut held = Vec::new();
        for _ in 0..RUNS {
            let start = Instant::now();
            held = read_snapshots(&chain.keeper, &specs, block).await?;
            batched.push(start.elapsed());
        }
        let mut evaluate = Vec::new();
        let mut views = Vec::new();
        let mut intents = 0;
        let mut one = Vec::new();
        // Interleaved, so both see the same load: the N snapshots, then the first one N times.
        let first_n_times = vec![held[0].clone(); n];
        let mut evaluate_cpu = Vec::new();
        for _ in 0..RUNS {
            let (start, cpu) = (Instant::now(), thread_cpu());
            (views, intents) = evaluate_all(&policies, &held)?;
            evaluate.push(start.elapsed());
            evaluate_cpu.push(thread_cpu() - cpu);
            let start = Instant::now();
            evaluate_all(&policies, &first_n_times)?;
            one.push(start.elapsed());
        }
        let rss_mib = resident_mib();
        anyhow::ensure!(views.len() == n, "{} views for {n} treasuries", views.len());
        let mut alone = Vec::new();
        for _ in 0..BASELINE_RUNS {
            let start = Instant::now();
            for spec in &specs {
                read_snapshot(&chain.keeper, spec, block).await?;
            }
            alone.push(start.elapsed());
        }
        anyhow::ensure!(held.len() == n, "{} snapshots for {n} treasuries", held.len());
        let (b, a) = (median(&mut batched), median(&mut alone));
        let (e, one, e_cpu) = (median(&mut evaluate), median(&mut one), median(&mut evaluate_cpu));
        rows.push(serde_json::json!({
            "treasuries": n,
            "tokens": TOKENS,
            "batched_ms": ms(b),
            "one_by_one_ms": ms(a),
            "speedup": a.as_secs_f64() / b.as_secs_f64(),
            "policies_per_treasury": policies.entries().count(),
            "evaluate_ms": ms(e),
            "evaluate_cpu_ms": ms(e_cpu),
            "one_snapshot_n_times_ms": ms(one),
            "intents": intents,
            "rss_mib": rss_mib,
            "load_average": load_average(),
        }));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!(
            "treasuries  snapshots batched (median of {RUNS})  one by one (median of {BASELINE_RUNS})  ratio  \
             policies (median of {RUNS}; its CPU time)  first snapshot N times  intents  RSS  load"
        );
        let f = |r: &serde_json::Value, k: &str| r[k].as_f64().unwrap_or_default();
        for r in &rows {
            println!(
                "{:>10}  {:>10.1} ms  {:>10.1} ms  {:>5.1}×  {:>8.2} ms ({:.2} ms)  {:>8.2} ms  {:>6}  {:.0} MiB  {}",
                r["treasuries"],
                f(r, "batched_ms"),
                f(r, "one_by_one_ms"),
                f(r, "speedup"),
                f(r, "evaluate_ms"),
                f(r, "evaluate_cpu_ms"),
                f(r, "one_snapshot_n_times_ms"),
                r["intents"],
                f(r, "rss_mib"),
                r["load_average"].as_str().unwrap_or_default(),
            );
        }
    }
    Ok(())
}

/// The demo's ETH, USDC and GOV (with feeds), and the two tokens again until there are ten.
fn ten_assets(spec: &SnapshotSpec) -> SnapshotSpec {
    let tokens: Vec<&AssetSpec> = spec.assets.iter().filter(|a| !a.token.is_zero()).collect();
    let mut assets = spec.assets.clone();
    let mut i = 0;
    while assets.len() < TOKENS {
        let mut extra = tokens[i % tokens.len()].clone();
        extra.symbol = format!("T{}", assets.len());
        assets.push(extra);
        i += 1;
    }
    SnapshotSpec { assets, ..spec.clone() }
}

/// The example policies (`policies/examples/treasury.toml`: limits, address book, the six
/// policies) compiled with the real sandbox, their token table made of the snapshot's ten assets.
fn example_policies(spec: &SnapshotSpec) -> anyhow::Result<PolicySet> {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/examples");
    let mut cfg = PoliciesConfig::from_file(&examples.join("treasury.toml"))?;
    cfg.tokens = spec
        .assets
        .iter()
        .map(|a| {
            let entry = TokenEntry {
                address: a.token,
                decimals: a.decimals,
                feed: a.feed,
                max_price_age: a.max_price_age_secs,
            };
            (a.symbol.clone(), entry)
        })
        .collect();
    Ok(PolicySet::load(&cfg, &examples)?)
}

/// What each lane's intake does with its snapshot: the scripts' view of it, then every policy
/// (an empty payment history); the views and the number of intents returned.
fn evaluate_all(
    policies: &PolicySet,
    snapshots: &[Snapshot],
) -> anyhow::Result<(Vec<Arc<SnapshotView>>, usize)> {
    let mut views = Vec::with_capacity(snapshots.len());
    let mut intents = 0;
    for snapshot in snapshots {
        let view = Arc::new(SnapshotView::new(snapshot, policies.book().clone())?);
        for outcome in policies.evaluate_all(&view, &[], |_| true) {
            intents += outcome.result.with_context(|| format!("policy {}", outcome.policy))?.len();
        }
        views.push(view);
    }
    Ok((views, intents))
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// CPU time of this thread so far (the machine is shared: wall time includes waiting for a core).
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// The 1, 5 and 15 minute load averages.
fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// This process's resident memory (VmRSS), MiB.
fn resident_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_default();
    kib / 1024.0
}
