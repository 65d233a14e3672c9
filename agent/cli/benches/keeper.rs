//! Keeper jobs (issue 18) on anvil (automine): 1,000 jobs checked per block in one Multicall3
//! `aggregate3`, and block → perform receipt for a due upkeep among them, each beside its floors
//! measured in the same run.
//!
//! `cargo bench -p treasury --bench keeper [-- --runs N] [-- --json]`
//!
//! - **check round**: one [`JobRunner::round`] with 1,000 idle upkeeps (Chainlink's
//!   `UpkeepCounter`, 100 contracts × 10 `checkData` each, none eligible): the head, the cursor,
//!   what is due, the 1,000 checks in one `aggregate3` at the pinned block, decoding, the cursor
//!   written. Floors: the same `aggregate3` alone (one `eth_call`), and `eth_blockNumber`.
//! - **block → perform receipt**: a block is mined that makes one more upkeep due (an
//!   `UpkeepCounter` with interval 0); from the moment the block exists, one keeper-jobs round over
//!   all 1,001 jobs checks, simulates, journals the claim, signs, journals the transaction,
//!   sends it and reads its receipt; the clock stops when the perform's receipt is journaled (the
//!   runner's `keeper_performed` hook). How the agent learns of the block (`poll_interval`) is not
//!   counted. Floor: a plain keeper transaction to its receipt with the same sender. The upkeep
//!   performs every block, so it is a hot job (performed within 32 blocks: checked first).
//! - **block → first perform receipt**: the same for an upkeep due for the first time (a fresh
//!   `UpkeepCounter` each run, under a new job name), whose check is among the 1,000's.
//! - **block → round end**: the same round until it returns (the other 1,000 checks decoded, the
//!   cursor written) and its sends are done.
//! - **spans of that round** (`spans`): each debug span of the keeper (`keeper.*`) and of its
//!   sender (`send.*`), its start after the block (first of the round) and its length, p50.

#[path = "../tests/e2e/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::providers::Provider;
use alloy::sol_types::{SolCall, SolValue};
use serde_json::json;
use support::AgentEnv;
use treasury_agent::config::jobs::{AutomationConfig, Execute, JobKind, KeeperJob};
use treasury_agent::keeper::JobRunner;
use treasury_chain::contracts::automation::AutomationCompatibleInterface;
use treasury_chain::sender::{Ignore, TxRequest};
use treasury_devnet::Series;
use treasury_devnet::keeper::{self as fixtures, IUpkeepCounter};
use treasury_policies::Trigger;

const CONTRACTS: usize = 100;
const JOBS_PER_CONTRACT: usize = 10;

fn upkeep_job(name: String, target: Address, check_data: Vec<u8>) -> KeeperJob {
    KeeperJob {
        name,
        kind: JobKind::ChainlinkUpkeep { target, check_data: check_data.into() },
        trigger: Trigger::EveryBlocks { blocks: 1 },
        execute: Execute::Keeper,
        gas_limit: 200_000,
        max_fee_per_gas: 100_000_000_000,
        spend_cap_wei: None,
    }
}

fn settings() -> AutomationConfig {
    AutomationConfig {
        spend_cap_wei: None,
        spend_period: Duration::from_secs(86_400),
        low_balance_performs: 0,
        max_catch_up_blocks: 256,
        revert_backoff_blocks: 4,
    }
}

async fn mine(env: &AgentEnv) -> anyhow::Result<()> {
    let _: serde_json::Value = env.chain.keeper.raw_request("evm_mine".into(), ()).await?;
    Ok(())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split(' ')
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let runs: usize = args.iter().position(|a| a == "--runs").map_or(100, |i| args[i + 1].parse().unwrap());
    let as_json = args.iter().any(|a| a == "--json");

    support::spans::install();
    let env = AgentEnv::start(&[]).await?;
    let p = env.chain.keeper.clone();
    let multicall3 = env.chain.deployment.multicall3;
    // 100 upkeeps, each performed once and then not eligible again for 10^6 s.
    let mut idle = Vec::new();
    for c in 0..CONTRACTS {
        let target = fixtures::deploy_counter(&p, 1_000_000_000, 1_000_000).await?;
        let perform = AutomationCompatibleInterface::performUpkeepCall { performData: Bytes::new() };
        let tx =
            alloy::rpc::types::TransactionRequest::default().to(target).input(perform.abi_encode().into());
        p.send_transaction(tx).await?.get_receipt().await?;
        for j in 0..JOBS_PER_CONTRACT {
            idle.push(upkeep_job(format!("idle-{c}-{j}"), target, vec![c as u8, j as u8]));
        }
    }
    let due = fixtures::deploy_counter(&p, 1_000_000_000, 0).await?;
    let due_counter = IUpkeepCounter::new(due, p.clone());
    let pipeline = Arc::new(env.pipeline().await?);
    let (_stop, shutdown) = tokio::sync::watch::channel(false);

    let checks: Vec<(Address, Bytes)> = idle
        .iter()
        .map(|j| match &j.kind {
            JobKind::ChainlinkUpkeep { target, check_data } => (
                *target,
                AutomationCompatibleInterface::checkUpkeepCall { checkData: check_data.clone() }
                    .abi_encode()
                    .into(),
            ),
            _ => unreachable!(),
        })
        .collect();

    let mut idle_runner = JobRunner::new(pipeline.clone(), idle.clone(), settings(), multicall3)?;
    idle_runner.round().await?; // sets the cursor
    let (mut round, mut aggregate, mut block_number) =
        (Series::default(), Series::default(), Series::default());
    let mut with_due = idle.clone();
    with_due.push(upkeep_job("due".into(), due, Vec::new()));
    let (mut perform, mut round_end, mut plain_tx) =
        (Series::default(), Series::default(), Series::default());
    let mut first_perform = Series::default();
    // Per span name: its starts after the block, and its lengths.
    let mut spans: BTreeMap<String, (Series, Series)> = BTreeMap::new();
    let warm_up = 5;
    for i in 0..runs + warm_up {
        let cold = fixtures::deploy_counter(&p, 1_000_000_000, 0).await?;
        let cold_counter = IUpkeepCounter::new(cold, p.clone());
        // Check round: nothing due among the 1,000.
        mine(&env).await?;
        let t = Instant::now();
        idle_runner.round().await?;
        let d_round = t.elapsed();
        let head: B256 = p.get_block_by_number(Default::default()).await?.expect("head").header.hash;
        let t = Instant::now();
        let answers =
            treasury_agent::keeper::check::aggregate(pipeline.provider(), multicall3, head, &checks)
                .await
                .map_err(anyhow::Error::msg)?;
        let d_aggregate = t.elapsed();
        assert!(
            answers
                .iter()
                .all(|a| a.as_ref().is_ok_and(|d| !<(bool, Bytes)>::abi_decode_params(d).unwrap().0))
        );
        let t = Instant::now();
        p.get_block_number().await?;
        let d_block_number = t.elapsed();

        // Block → perform receipt: the block that makes `due` due exists; one round performs it.
        let before = due_counter.counter().call().await?;
        let hot = perform_round(&env, &pipeline, with_due.clone(), multicall3, shutdown.clone()).await?;
        assert_eq!(due_counter.counter().call().await?, before + U256::from(1), "performed once");

        // The same for an upkeep due for the first time: not hot, its check is in the 1,000's.
        let mut with_cold = idle.clone();
        with_cold.push(upkeep_job(format!("cold-{i}"), cold, Vec::new()));
        let first = perform_round(&env, &pipeline, with_cold, multicall3, shutdown.clone()).await?;
        assert_eq!(cold_counter.counter().call().await?, U256::from(1), "performed once");

        let t = Instant::now();
        let request = TxRequest { to: Address::repeat_byte(0xb2), ..TxRequest::default() };
        pipeline.sender().send(&request, &mut Ignore).await?;
        let d_plain = t.elapsed();

        if i >= warm_up {
            round.push(d_round);
            aggregate.push(d_aggregate);
            block_number.push(d_block_number);
            perform.push(hot.to_receipt);
            round_end.push(hot.to_round_end);
            first_perform.push(first.to_receipt);
            let mut seen = std::collections::BTreeSet::new();
            for span in hot.spans.into_iter().filter(|s| seen.insert(s.name.clone())) {
                let (starts, lengths) = spans.entry(span.name).or_default();
                starts.push(span.opened.duration_since(hot.mined));
                lengths.push(span.duration);
            }
            plain_tx.push(d_plain);
        }
    }
    let spans: serde_json::Map<String, serde_json::Value> = spans
        .iter()
        .map(|(name, (starts, lengths))| {
            let p50 = json!({ "start_p50_ms": starts.quantile(0.5), "length_p50_ms": lengths.quantile(0.5) });
            (name.clone(), p50)
        })
        .collect();
    let out = json!({
        "runs": runs,
        "jobs": idle.len(),
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        "load_average_after": load_average(),
        "check_round": round.json(),
        "floor_aggregate3_eth_call": aggregate.json(),
        "floor_eth_block_number": block_number.json(),
        "block_to_perform_receipt": perform.json(),
        "block_to_round_end": round_end.json(),
        "block_to_first_perform_receipt": first_perform.json(),
        "floor_plain_keeper_tx_to_receipt": plain_tx.json(),
        "spans": spans,
    });
    if as_json {
        println!("{out}");
    } else {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(())
}

/// One measured round: when its block was mined, the time to the perform's receipt and to the
/// round's end, and the spans it closed.
struct PerformRound {
    mined: Instant,
    to_receipt: Duration,
    to_round_end: Duration,
    spans: Vec<support::spans::ClosedSpan>,
}

/// Mines a block, then runs one keeper round over `jobs` (exactly one of which is due) from a
/// runner made afresh, timed from the block to the perform's journaled receipt and to the end.
async fn perform_round(
    env: &AgentEnv,
    pipeline: &Arc<treasury_agent::pipeline::Pipeline>,
    jobs: Vec<KeeperJob>,
    multicall3: Address,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<PerformRound> {
    mine(env).await?;
    let performed_at = Arc::new(std::sync::Mutex::new(None));
    let mark = performed_at.clone();
    let hook = Arc::new(move |step: &str| {
        if step == "keeper_performed" {
            *mark.lock().expect("mark") = Some(Instant::now());
        }
    });
    support::spans::take();
    let mined = Instant::now();
    JobRunner::new(pipeline.clone(), jobs, settings(), multicall3)?
        .with_hook(hook)
        .run(true, shutdown)
        .await?;
    let to_round_end = mined.elapsed();
    let performed_at = performed_at.lock().expect("mark").expect("the due upkeep was performed");
    Ok(PerformRound {
        mined,
        to_receipt: performed_at.duration_since(mined),
        to_round_end,
        spans: support::spans::take(),
    })
}
