//! Per-block snapshot of many treasuries on one anvil (issue 16): N Safes × 10 token entries read
//! at one block by `read_snapshots` (one header, as few `aggregate3` calls as fit) against the
//! baseline of one `read_snapshot` per treasury, in the same run; and the process's resident
//! memory once the N snapshots are held.
//!
//! The treasuries share the demo deployment's module, tokens and feeds and differ by holder
//! address: every call a snapshot makes (module nonce, pause, budget per asset, balance per asset,
//! two feed reads per asset) is made for each of them, so the work per treasury is that of a real
//! one; only deploying 1,000 Safes and modules is spared.
//!
//! `cargo run -p treasury-tests --release --bin snapshot-bench [-- --json]`

use std::time::{Duration, Instant};

use alloy::eips::BlockNumberOrTag;
use alloy::primitives::Address;
use alloy::providers::Provider;
use anyhow::Context;
use treasury_chain::snapshot::{AssetSpec, SnapshotSpec, read_snapshot, read_snapshots};
use treasury_devnet::TestChain;

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
        let rss_mib = resident_mib();
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
        rows.push(serde_json::json!({
            "treasuries": n,
            "tokens": TOKENS,
            "batched_ms": ms(b),
            "one_by_one_ms": ms(a),
            "speedup": a.as_secs_f64() / b.as_secs_f64(),
            "rss_mib": rss_mib,
        }));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!(
            "treasuries  batched (median of {RUNS})  one by one (median of {BASELINE_RUNS})  ratio  RSS"
        );
        for r in &rows {
            println!(
                "{:>10}  {:>10.1} ms  {:>10.1} ms  {:>5.1}×  {:.0} MiB",
                r["treasuries"],
                r["batched_ms"].as_f64().unwrap_or_default(),
                r["one_by_one_ms"].as_f64().unwrap_or_default(),
                r["speedup"].as_f64().unwrap_or_default(),
                r["rss_mib"].as_f64().unwrap_or_default()
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

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
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
