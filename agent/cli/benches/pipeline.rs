//! Latency of the whole pipeline on anvil (automine): trigger → intents journaled → planned →
//! signed by the DKG quorum (three node processes, 2-of-3) → submitted by the keeper → receipt,
//! with its breakdown by stage and, measured in the same run, the floors it is made of: an
//! `eth_call`, the quorum's signature alone, and a plain keeper transaction to its receipt.
//!
//! `cargo bench -p treasury --bench pipeline [-- --runs N] [-- --json]`
//!
//! `-- --wan` puts the parts "in other regions": each node behind its own latency proxy
//! (`--node-rtt-ms 20,60,90` by default: 2-of-3 signs at the second smallest, 60 ms) and the agent's
//! RPC endpoint behind one (`--rpc-rtt-ms 30`); each node replays through its own RPC, which sits
//! beside it (no delay). The root is not on this path (a tier-1 payment). Beside the measured floors
//! it prints the round trips the pipeline cannot avoid: reading the state, the signature (one round
//! trip to the t-th nearest node), sending the transaction and reading its receipt.

#[path = "../tests/e2e/support/mod.rs"]
mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy::primitives::U256;
use alloy::providers::Provider;
use serde_json::json;
use support::{AgentEnv, PolicySpec};
use treasury_agent::journal::IntentState;
use treasury_agent::pipeline::intake::FiringInput;
use treasury_agent::pipeline::lane::LaneStep;
use treasury_chain::sender::{Ignore, Sender, TxRequest};
use treasury_chain::{Call, Operation};
use treasury_devnet::dev_key;
use treasury_devnet::wan::{LatencyProxy, LinkProfile};
use treasury_signer::quorum::quorum_file::QuorumFile;

const PAY: PolicySpec<'static> = PolicySpec {
    name: "bench",
    // A fresh key per block, so every run is a new payment.
    script: r#"pay("alice", "USDC", 1, #{ key: `bench-${block_number()}` });"#,
    trigger: r#"{ kind = "manual" }"#,
};

/// Milliseconds, sorted.
#[derive(Default)]
struct Series(Vec<f64>);

impl Series {
    fn push(&mut self, d: Duration) {
        self.0.push(d.as_secs_f64() * 1000.0);
    }

    fn quantile(&self, q: f64) -> f64 {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        v[((v.len() - 1) as f64 * q).round() as usize]
    }

    fn json(&self) -> serde_json::Value {
        json!({ "p50_ms": round(self.quantile(0.5)), "p99_ms": round(self.quantile(0.99)) })
    }
}

fn round(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let runs: usize = args.iter().position(|a| a == "--runs").map_or(200, |i| args[i + 1].parse().unwrap());
    let as_json = args.iter().any(|a| a == "--json");
    let wan = args.iter().any(|a| a == "--wan");
    let ms_list = |flag: &str, default: &str| -> Vec<u64> {
        let v = args.iter().position(|a| a == flag).map_or(default.to_string(), |i| args[i + 1].clone());
        v.split(',').map(|x| x.trim().parse().expect("milliseconds")).collect()
    };
    let node_rtts = ms_list("--node-rtt-ms", "20,60,90");
    let rpc_rtt = ms_list("--rpc-rtt-ms", "30")[0];

    let env = AgentEnv::start(&[PAY]).await?;
    // Kept alive for the whole bench.
    let mut links: Vec<LatencyProxy> = Vec::new();
    let mut round_trip_floor_ms = None;
    if wan {
        let rtt = |ms: u64| LinkProfile::rtt(Duration::from_millis(ms));
        let rpc_addr = env.chain.anvil.url().trim_start_matches("http://").trim_end_matches('/').parse()?;
        let rpc = LatencyProxy::start(rpc_addr, rtt(rpc_rtt)).await?;
        env.use_rpc(&rpc.url());
        links.push(rpc);
        let quorum_path = env.dir.path().join("quorum.toml");
        let mut quorum = QuorumFile::load(&quorum_path)?;
        anyhow::ensure!(
            quorum.nodes.len() == node_rtts.len(),
            "one --node-rtt-ms per node ({})",
            quorum.nodes.len()
        );
        for (node, ms) in quorum.nodes.iter_mut().zip(&node_rtts) {
            let addr = node.url.trim_start_matches("http://").trim_end_matches('/').parse()?;
            let link = LatencyProxy::start(addr, rtt(*ms)).await?;
            node.url = link.url();
            links.push(link);
        }
        quorum.save(&quorum_path)?;
        let mut sorted = node_rtts.clone();
        sorted.sort();
        let t_th = sorted[usize::from(quorum.threshold) - 1];
        // Snapshot (one eth_call at a pinned block), signature, send, receipt.
        round_trip_floor_ms = Some((3 * rpc_rtt + t_th) as f64);
    }
    let marks: Arc<Mutex<Vec<(IntentState, Instant)>>> = Arc::default();
    let hook_marks = marks.clone();
    let pipeline = env.pipeline().await?.with_transition_hook(Arc::new(move |state| {
        hook_marks.lock().unwrap().push((state, Instant::now()));
    }));
    let coordinator = env.coordinator()?;
    let provider = pipeline.provider().clone();
    let d = env.chain.deployment.clone();

    let names = [
        "snapshot",
        "policy",
        "journal",
        "plan",
        "authorise",
        "submit",
        "confirm",
        "to_submitted",
        "to_receipt",
    ];
    let mut stages: Vec<Series> = names.iter().map(|_| Series::default()).collect();
    for i in 0..runs + 5 {
        marks.lock().unwrap().clear();
        let start = Instant::now();
        let block = provider.get_block_number().await?;
        let report = pipeline
            .intake(&FiringInput { block, policies: vec!["bench".into()], trigger: "bench".into() })
            .await?;
        anyhow::ensure!(report.created.len() == 1, "run {i}: {report:?}");
        let intake_done = Instant::now();
        anyhow::ensure!(pipeline.drain().await? == LaneStep::Idle);
        let m = marks.lock().unwrap().clone();
        let at = |s: IntentState| m.iter().find(|(st, _)| *st == s).map(|(_, t)| *t).expect("state reached");
        if i < 5 {
            continue; // warm-up
        }
        let us = |v: u64| Duration::from_micros(v);
        stages[0].push(us(report.snapshot_us));
        stages[1].push(us(report.policy_us));
        stages[2].push(us(report.journal_us));
        stages[3].push(at(IntentState::Planned) - intake_done);
        stages[4].push(at(IntentState::Signed) - at(IntentState::Planned));
        stages[5].push(at(IntentState::Submitted) - at(IntentState::Signed));
        stages[6].push(at(IntentState::Confirmed) - at(IntentState::Submitted));
        stages[7].push(at(IntentState::Submitted) - start);
        stages[8].push(at(IntentState::Confirmed) - start);
    }

    // Floors, same run: an eth_call, the quorum alone, a plain keeper transaction to its receipt.
    let mut eth_call = Series::default();
    let mut quorum = Series::default();
    let mut quorum_floor = true;
    let mut transfer = Series::default();
    let sender = Sender::new(provider.clone(), dev_key(9), Default::default()).await?;
    let usdc = d.token("USDC").unwrap().address;
    for i in 0..runs {
        let t = Instant::now();
        provider.get_block_number().await?;
        eth_call.push(t.elapsed());
        let op = Operation {
            calls: vec![Call::new(usdc, U256::ZERO, vec![0xa9, 0x05, 0x9c, 0xbb])],
            nonce: U256::from(1_000_000 + i),
            deadline: U256::MAX,
        };
        // The nodes replay tier-1 decisions: a bare operation (no decision) is refused, so this
        // floor is only measured against nodes that do not require replay.
        let t = Instant::now();
        if quorum_floor && coordinator.sign(&op, d.chain_id, d.module, None).await.is_ok() {
            quorum.push(t.elapsed());
        } else {
            quorum_floor = false;
        }
        let t = Instant::now();
        let to = alloy::primitives::Address::with_last_byte(0x99);
        sender
            .send(
                &TxRequest { to, value: U256::from(1), gas_limit: Some(21_000), ..Default::default() },
                &mut Ignore,
            )
            .await?;
        transfer.push(t.elapsed());
    }

    let mut out = serde_json::Map::new();
    out.insert("runs".into(), json!(runs));
    for (name, s) in names.iter().zip(&stages) {
        out.insert((*name).into(), s.json());
    }
    out.insert("floor_eth_call".into(), eth_call.json());
    out.insert("floor_keeper_tx_to_receipt".into(), transfer.json());
    if quorum_floor {
        out.insert("floor_quorum_sign".into(), quorum.json());
        let floor = eth_call.quantile(0.5) + quorum.quantile(0.5) + transfer.quantile(0.5);
        out.insert("to_receipt_over_floors_p50".into(), json!(round(stages[8].quantile(0.5) / floor)));
    }
    if let Some(rt) = round_trip_floor_ms {
        out.insert("node_rtt_ms".into(), json!(node_rtts));
        out.insert("rpc_rtt_ms".into(), json!(rpc_rtt));
        out.insert("round_trip_floor_ms".into(), json!(rt));
        out.insert("to_receipt_over_round_trip_floor_p50".into(), json!(round(stages[8].quantile(0.5) / rt)));
    }
    drop(links);
    if as_json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        match round_trip_floor_ms {
            Some(_) => println!(
                "pipeline on anvil across regions (nodes at {node_rtts:?} ms, RPC at {rpc_rtt} ms round trip), {runs} runs (p50 / p99 ms):"
            ),
            None => println!("pipeline on anvil, {runs} runs (p50 / p99 ms):"),
        }
        for (k, v) in &out {
            if let Some(p50) = v.get("p50_ms") {
                println!("  {k:<28} {p50:>9} {:>9}", v["p99_ms"]);
            }
        }
        match out.get("to_receipt_over_floors_p50") {
            Some(ratio) => println!("  to_receipt / (eth_call + quorum + keeper tx) at p50: {ratio}"),
            None => println!("  (no quorum floor: the nodes refuse a bare operation, they replay decisions)"),
        }
        if let Some(rt) = round_trip_floor_ms {
            println!(
                "  round trips it cannot avoid (3 x RPC + t-th node): {rt} ms; to_receipt / that at p50: {}",
                out["to_receipt_over_round_trip_floor_p50"]
            );
        }
    }
    Ok(())
}
