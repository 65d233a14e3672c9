//! Latency of the whole pipeline on anvil (automine): trigger → intents journaled → planned →
//! signed by the DKG quorum (three node processes, 2-of-3) → submitted by the keeper → receipt,
//! with its breakdown by stage and, measured in the same run, the floors it is made of: an
//! `eth_call`, the quorum's signature alone, and a plain keeper transaction to its receipt.
//!
//! `cargo bench -p treasury --bench pipeline [-- --runs N] [-- --json] [-- --journal sqlite|postgres|both]`
//!
//! The journal is SQLite (the embedded default) and PostgreSQL (a private cluster this bench starts
//! with `initdb` in a temporary folder, as the tests do; the journal fenced by a lease, as a
//! replica's is), one after the other (`--journal both`, the default), each on its own anvil and
//! nodes set up alike (the nodes replay decisions against the history in the agent's journal, so a
//! fresh journal cannot take over a module another journal paid from); the floors are measured on
//! the first.
//!
//! Beside the stages, each journal's `spans` break plan and authorise down (the pipeline's and
//! the keeper sender's debug spans: `plan.*`, `authorise.decision`, `authorise.quorum` (the nodes'
//! replay and the FROST rounds), `authorise.prepare_send` (the gas limit and fees worked out
//! meanwhile), `send.estimate_gas` (only when that did not succeed), `send.fees`, `send.sign`, `send.journal`
//! (the commit of signature, transaction and `submitted`), `send.broadcast`, `send.watch`), each
//! summed per payment.
//!
//! `-- --payments N` measures throughput instead: one trigger whose policy emits N payments (to
//! eight recipients), from the trigger until every payment's receipt, batched by the planner into
//! tier-1 operations of at most `--max-batch` intents (the config's `pipeline.max_batch`, 16 by
//! default). Its `per_operation_spans_ms` is each span's total over the firing divided by the
//! operations.
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
use treasury_agent::config::Config;
use treasury_agent::journal::{Backend, IntentState, Journal};
use treasury_agent::pipeline::Pipeline;
use treasury_agent::pipeline::intake::FiringInput;
use treasury_agent::pipeline::lane::LaneStep;
use treasury_chain::sender::{Ignore, Sender, TxRequest};
use treasury_chain::{Call, Operation};
use treasury_devnet::series::{Series, round};
use treasury_devnet::wan::{LatencyProxy, LinkProfile};
use treasury_devnet::{Postgres, dev_key};
use treasury_signer::quorum::quorum_file::QuorumFile;

const PAY: PolicySpec<'static> = PolicySpec {
    name: "bench",
    // A fresh key per block, so every run is a new payment.
    script: r#"pay("alice", "USDC", 1, #{ key: `bench-${block_number()}` });"#,
    trigger: r#"{ kind = "manual" }"#,
};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    support::spans::install();
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

    let flag = |name: &str| args.iter().position(|a| a == name).map(|i| args[i + 1].parse::<usize>());
    let payments = flag("--payments").transpose()?;
    let max_batch = flag("--max-batch").transpose()?.unwrap_or(16);

    let many_script = payments.map(many_payments_script).unwrap_or_default();
    let many_trigger = payments.map(many_payments_trigger).unwrap_or_default();
    let mut policies = vec![PAY];
    if payments.is_some() {
        policies.push(PolicySpec { name: "many", script: &many_script, trigger: &many_trigger });
    }
    let journals = match args.iter().position(|a| a == "--journal").map(|i| args[i + 1].as_str()) {
        None | Some("both") => vec![Backend::Sqlite, Backend::Postgres],
        Some("sqlite") => vec![Backend::Sqlite],
        Some("postgres") => vec![Backend::Postgres],
        Some(other) => anyhow::bail!("--journal {other}: sqlite, postgres or both"),
    };
    // Started only if asked for; kept alive for the whole bench.
    let cluster = match journals.contains(&Backend::Postgres) {
        true => Some(Postgres::start()?),
        false => None,
    };
    let marks: Marks = Arc::default();
    let wan = wan.then_some((node_rtts.as_slice(), rpc_rtt));

    // Each journal on its own chain and nodes, set up alike: the nodes replay each decision with
    // the history the agent's journal holds, so a second journal on the same module would be
    // refused (it lacks the first one's payments).
    let mut envs = Vec::new();
    let mut by_journal = Vec::new();
    let mut throughputs = Vec::new();
    let mut span_breakdowns = Vec::new();
    let mut round_trip_floor_ms = None;
    for backend in &journals {
        let (env, links, round_trips) = set_up(&policies, wan, max_batch).await?;
        round_trip_floor_ms = round_trips;
        let journal = open_journal(&env, *backend, cluster.as_ref()).await?;
        let pipeline = hooked(env.pipeline_on(journal).await?, &marks);
        match payments {
            Some(n) => {
                let provider = pipeline.provider().clone();
                throughputs.push(throughput(&pipeline, &provider, &marks, n, *backend, max_batch).await?);
            }
            None => {
                let (stages, breakdown) = latency(&pipeline, &marks, runs).await?;
                by_journal.push((*backend, stages));
                span_breakdowns.push((*backend, breakdown));
            }
        }
        pipeline.journal().close().await;
        envs.push((env, links));
    }
    if payments.is_some() {
        println!("{}", serde_json::to_string_pretty(&throughputs)?);
        return Ok(());
    }
    let (env, links) = envs.remove(0);
    let coordinator = env.coordinator()?;
    let provider = treasury_chain::provider::connect(Config::load(&env.config)?.chain.rpc_http.as_str())?;
    let d = env.chain.deployment.clone();

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
    out.insert("load_average".into(), json!(load_average()));
    // The first journal's stages at the top level (as before); each journal's under its name.
    for (name, s) in STAGES.iter().zip(&by_journal[0].1) {
        out.insert((*name).into(), s.json());
    }
    for (backend, stages) in &by_journal {
        let per: serde_json::Map<_, _> =
            STAGES.iter().zip(stages).map(|(n, s)| ((*n).into(), s.json())).collect();
        out.insert(format!("journal_{}", backend_name(*backend)), per.into());
    }
    for (backend, breakdown) in &span_breakdowns {
        let per: serde_json::Map<_, _> = breakdown.iter().map(|(n, s)| (n.clone(), s.json())).collect();
        out.insert(format!("spans_{}", backend_name(*backend)), per.into());
    }
    let stages = &by_journal[0].1;
    out.insert("floor_eth_call".into(), eth_call.json());
    out.insert("floor_keeper_tx_to_receipt".into(), transfer.json());
    if quorum_floor {
        out.insert("floor_quorum_sign".into(), quorum.json());
        let floor = eth_call.quantile(0.5) + quorum.quantile(0.5) + transfer.quantile(0.5);
        out.insert("to_receipt_over_floors_p50".into(), json!(round(stages[8].quantile(0.5) / floor)));
    }
    let two_floors = eth_call.quantile(0.5) + transfer.quantile(0.5);
    for (backend, stages) in &by_journal {
        out.insert(
            format!("to_receipt_over_eth_call_and_keeper_tx_p50_{}", backend_name(*backend)),
            json!(round(stages[8].quantile(0.5) / two_floors)),
        );
    }
    if let Some(rt) = round_trip_floor_ms {
        out.insert("node_rtt_ms".into(), json!(node_rtts));
        out.insert("rpc_rtt_ms".into(), json!(rpc_rtt));
        out.insert("round_trip_floor_ms".into(), json!(rt));
        out.insert("to_receipt_over_round_trip_floor_p50".into(), json!(round(stages[8].quantile(0.5) / rt)));
    }
    drop(links);
    drop(envs);
    if as_json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        match round_trip_floor_ms {
            Some(_) => println!(
                "pipeline on anvil across regions (nodes at {node_rtts:?} ms, RPC at {rpc_rtt} ms round trip), {runs} runs (p50 / p99 ms):"
            ),
            None => println!("pipeline on anvil, {runs} runs (p50 / p99 ms):"),
        }
        for (backend, stages) in &by_journal {
            println!(" journal: {}", backend_name(*backend));
            for (k, v) in STAGES.iter().zip(stages) {
                println!("  {k:<28} {:>9} {:>9}", round(v.quantile(0.5)), round(v.quantile(0.99)));
            }
            for (b, breakdown) in &span_breakdowns {
                for (k, v) in breakdown.iter().filter(|_| b == backend) {
                    println!("    {k:<26} {:>9} {:>9}", round(v.quantile(0.5)), round(v.quantile(0.99)));
                }
            }
        }
        println!(" floors:");
        for (k, v) in &out {
            if let Some(p50) = v.get("p50_ms")
                && k.starts_with("floor_")
            {
                println!("  {k:<28} {p50:>9} {:>9}", v["p99_ms"]);
            }
        }
        println!("  load average: {}", out["load_average"]);
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

/// Anvil with the treasury, the quorum's node processes and the config, with `max_batch`; with
/// `wan` (node and RPC round trips, ms) each behind its latency proxy (kept alive by the links
/// returned) and the round trips the pipeline cannot avoid.
async fn set_up(
    policies: &[PolicySpec<'_>],
    wan: Option<(&[u64], u64)>,
    max_batch: usize,
) -> anyhow::Result<(AgentEnv, Vec<LatencyProxy>, Option<f64>)> {
    let env = AgentEnv::start(policies).await?;
    env.edit_config(
        "poll_interval = \"100ms\"\n",
        &format!("poll_interval = \"100ms\"\nmax_batch = {max_batch}\n"),
    );
    let mut links: Vec<LatencyProxy> = Vec::new();
    let Some((node_rtts, rpc_rtt)) = wan else { return Ok((env, links, None)) };
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
    for (node, ms) in quorum.nodes.iter_mut().zip(node_rtts) {
        let addr = node.url.trim_start_matches("http://").trim_end_matches('/').parse()?;
        let link = LatencyProxy::start(addr, rtt(*ms)).await?;
        node.url = link.url();
        links.push(link);
    }
    quorum.save(&quorum_path)?;
    let mut sorted = node_rtts.to_vec();
    sorted.sort();
    let t_th = sorted[usize::from(quorum.threshold) - 1];
    // Snapshot (one eth_call at a pinned block), signature, send, receipt.
    Ok((env, links, Some((3 * rpc_rtt + t_th) as f64)))
}

/// The stages of one payment, in the order [`latency`] returns them.
const STAGES: [&str; 9] =
    ["snapshot", "policy", "journal", "plan", "authorise", "submit", "confirm", "to_submitted", "to_receipt"];

/// Each committed transition with the time it was seen.
type Marks = Arc<Mutex<Vec<(IntentState, Instant)>>>;

fn hooked(pipeline: Pipeline, marks: &Marks) -> Pipeline {
    let marks = marks.clone();
    pipeline.with_transition_hook(Arc::new(move |state| marks.lock().unwrap().push((state, Instant::now()))))
}

fn backend_name(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    }
}

/// The set-up's SQLite journal, or a fresh database of `cluster` fenced by a lease (as a replica
/// writes: every write checks the term).
async fn open_journal(
    env: &AgentEnv,
    backend: Backend,
    cluster: Option<&Postgres>,
) -> anyhow::Result<Journal> {
    match (backend, cluster) {
        (Backend::Sqlite, _) => Ok(Journal::open(&env.journal_url).await?),
        (Backend::Postgres, Some(cluster)) => {
            let journal = Journal::open(&cluster.create_database("bench")?).await?;
            let ttl = Duration::from_secs(3600);
            let lease = journal
                .try_acquire_lease("bench", "bench", ttl)
                .await?
                .ok_or_else(|| anyhow::anyhow!("the bench's lease is taken"))?;
            Ok(journal.fenced(lease))
        }
        (Backend::Postgres, None) => anyhow::bail!("no PostgreSQL cluster started"),
    }
}

/// One payment per run, `runs` runs after five of warm-up: each stage's series, in [`STAGES`]
/// order, and each span's (summed per payment).
async fn latency(
    pipeline: &Pipeline,
    marks: &Marks,
    runs: usize,
) -> anyhow::Result<(Vec<Series>, std::collections::BTreeMap<String, Series>)> {
    let provider = pipeline.provider().clone();
    let mut stages: Vec<Series> = STAGES.iter().map(|_| Series::default()).collect();
    let mut breakdown: std::collections::BTreeMap<String, Series> = Default::default();
    for i in 0..runs + 5 {
        marks.lock().unwrap().clear();
        support::spans::take();
        let start = Instant::now();
        let block = provider.get_block_number().await?;
        let report = pipeline
            .intake(&FiringInput { block, policies: vec!["bench".into()], trigger: format!("manual#{i}") })
            .await?;
        anyhow::ensure!(report.created.len() == 1, "run {i}: {report:?}");
        let intake_done = Instant::now();
        anyhow::ensure!(pipeline.drain().await? == LaneStep::Idle);
        let m = marks.lock().unwrap().clone();
        let at = |s: IntentState| m.iter().find(|(st, _)| *st == s).map(|(_, t)| *t).expect("state reached");
        let closed = support::spans::take();
        if i < 5 {
            continue; // warm-up
        }
        for (name, d) in summed_spans(&closed) {
            breakdown.entry(name.to_string()).or_default().push(d);
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
    Ok((stages, breakdown))
}

/// A policy paying `n` times 1 USDC to the eight numbered recipients, each payment its own key.
fn many_payments_script(n: usize) -> String {
    format!(
        "for i in 0..{n} {{ pay(`r${{i % 8}}`, \"USDC\", 1, #{{ key: `many-${{block_number()}}-${{i}}` }}); }}"
    )
}

/// Its trigger, followed by the sandbox limits it needs (the config's text goes on after the
/// trigger, so the limits table lands in the file the nodes pin): n intents in one evaluation.
fn many_payments_trigger(n: usize) -> String {
    format!(
        "{{ kind = \"manual\" }}\n\n[policies.limits]\nmax_intents = {n}\nmax_operations = {}\n",
        (n as u64 * 100).max(50_000)
    )
}

/// One firing of the `many` policy: from the trigger until every payment's receipt.
async fn throughput(
    pipeline: &Pipeline,
    provider: &alloy::providers::DynProvider,
    marks: &Marks,
    n: usize,
    backend: Backend,
    max_batch: usize,
) -> anyhow::Result<serde_json::Value> {
    marks.lock().unwrap().clear();
    let first_block = provider.get_block_number().await?;
    support::spans::take();
    let start = Instant::now();
    let report = pipeline
        .intake(&FiringInput { block: first_block, policies: vec!["many".into()], trigger: "many".into() })
        .await?;
    anyhow::ensure!(report.created.len() == n, "{} intents created of {n}", report.created.len());
    let intake = start.elapsed();
    anyhow::ensure!(pipeline.drain().await? == LaneStep::Idle);
    let total = start.elapsed();
    let closed = support::spans::take();
    let m = marks.lock().unwrap().clone();
    let count = |s: IntentState| m.iter().filter(|(st, _)| *st == s).count();
    let operations = count(IntentState::Confirmed);
    let escalated = count(IntentState::AwaitingRoot);
    let journal = pipeline.journal();
    let mut confirmed = 0;
    for id in &report.created {
        let (intent, _) =
            journal.intent(*id).await?.ok_or_else(|| anyhow::anyhow!("intent {id:?} missing"))?;
        if intent.state == IntentState::Confirmed {
            confirmed += 1;
        }
    }
    let first_planned = m.iter().find(|(s, _)| *s == IntentState::Planned).map(|(_, t)| *t - start);
    // Per operation, from the marks in order: planning (from the previous receipt, or from the
    // end of intake), authorising (planned → signed) and sending to the receipt (signed → confirmed).
    let (mut plan, mut authorise, mut send) = (Series::default(), Series::default(), Series::default());
    let mut since = start + intake;
    let mut planned_at = None;
    let mut signed_at = None;
    for (state, at) in &m {
        match state {
            IntentState::Planned => {
                plan.push(at.saturating_duration_since(since));
                planned_at = Some(*at);
            }
            IntentState::Signed => {
                authorise.push(at.saturating_duration_since(planned_at.unwrap_or(since)));
                signed_at = Some(*at);
            }
            IntentState::Confirmed => {
                send.push(at.saturating_duration_since(signed_at.unwrap_or(since)));
                since = *at;
            }
            _ => {}
        }
    }
    Ok(json!({
        "payments": n,
        "journal": backend_name(backend),
        "max_batch": max_batch,
        "confirmed": confirmed,
        "operations": operations,
        "payments_per_operation": n as f64 / operations.max(1) as f64,
        "escalated_to_tier_2": escalated,
        "blocks": provider.get_block_number().await? - first_block,
        "intake_ms": round(intake.as_secs_f64() * 1e3),
        "first_planned_ms": first_planned.map(|d| round(d.as_secs_f64() * 1e3)),
        "trigger_to_all_receipts_ms": round(total.as_secs_f64() * 1e3),
        "per_operation_ms": round(total.saturating_sub(intake).as_secs_f64() * 1e3 / operations.max(1) as f64),
        "per_operation_plan": plan.json(),
        "per_operation_authorise": authorise.json(),
        "per_operation_signed_to_receipt": send.json(),
        "per_operation_spans_ms": per_operation_spans(&closed, operations),
        "load_average": load_average(),
    }))
}

/// Each span's total time over the drain, divided by the operations (spans nest: they are not
/// parts of one sum).
fn per_operation_spans(closed: &[support::spans::ClosedSpan], operations: usize) -> serde_json::Value {
    let per: serde_json::Map<_, _> = summed_spans(closed)
        .into_iter()
        .map(|(name, d)| (name.to_string(), json!(round(d.as_secs_f64() * 1e3 / operations.max(1) as f64))))
        .collect();
    per.into()
}

/// Each span's total time, by name.
fn summed_spans(closed: &[support::spans::ClosedSpan]) -> std::collections::BTreeMap<&str, Duration> {
    let mut summed: std::collections::BTreeMap<&str, Duration> = Default::default();
    for span in closed {
        *summed.entry(span.name.as_str()).or_default() += span.duration;
    }
    summed
}

/// The machine's 1, 5 and 15 minute load averages (the machine is shared).
fn load_average() -> Vec<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .filter_map(|v| v.parse().ok())
        .collect()
}
