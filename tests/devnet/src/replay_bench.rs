//! `treasury signer bench --replay`: the signing round when every node replays the decision
//! (its own snapshot read from anvil, the pinned policy evaluated in the sandbox, the plan
//! compared, the history checked against the module's events), beside the plain round measured
//! in the same run by [`crate::nodes::run`].
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::eips::BlockNumberOrTag;
use alloy::primitives::U256;
use anyhow::Context;
use serde::Serialize;
use treasury_chain::operation::Operation;
use treasury_chain::snapshot::read_snapshot;
use treasury_policies::replay::{DecidedFiring, Decision, PinnedBlock, PolicyBundle, history_window};
use treasury_policies::{PoliciesConfig, PolicySet, SnapshotView};
use treasury_signer::quorum::QuorumError;
use treasury_signer::quorum::coordinator::{Coordinator, CoordinatorOptions, run_dkg};
use treasury_signer::quorum::guard::{AllowEntry, Budget, GuardConfig};
use treasury_signer::quorum::identity::IdentityKey;
use treasury_signer::quorum::nonces::now;
use treasury_signer::quorum::replay::{ReplayConfig, ReplayMode, pin_policy};
use treasury_signer::quorum::store::{NodeStore, Passphrase};

use crate::fixture::TestChain;
use crate::nodes::{
    BENCH_PASS, BenchOptions, BenchReport, Latency, init_nodes_with, latency, spawn_bench_nodes,
};

/// The policy every bench decision replays: a tithe of the Safe's USDC balance to one recipient.
const TITHE: &str = r#"pay("bob", "USDC", balance("USDC") / 1000);"#;

/// Plain and replayed signing rounds of the same quorum size, measured in one run.
#[derive(Debug, Serialize)]
pub struct ReplayBenchReport {
    /// The plain bench (nodes with replay off, no decision).
    pub plain: BenchReport,
    /// Request → verified aggregate signature, every node replaying the decision first.
    pub replay: Latency,
    /// One node's replay alone, in process: snapshot read, policy evaluation, plan, history check.
    pub replay_check: Latency,
}

/// Runs the plain bench, then the same quorum size replaying a decision on anvil.
pub async fn run(opts: BenchOptions) -> anyhow::Result<ReplayBenchReport> {
    let plain = crate::nodes::run(opts.clone()).await?;
    let tmp = tempfile::tempdir().context("creating the bench folder")?;
    let (replay, replay_check) = replay_round(tmp.path(), &opts).await?;
    Ok(ReplayBenchReport { plain, replay, replay_check })
}

async fn replay_round(tmp: &Path, opts: &BenchOptions) -> anyhow::Result<(Latency, Latency)> {
    let chain = TestChain::start().await.context("starting anvil with the contracts")?;
    let d = &chain.deployment;
    let usdc = d.token("USDC").context("the devnet's USDC")?;
    let bundle = tithe_bundle(&chain)?;
    let guard = GuardConfig {
        chain_id: d.chain_id,
        module: d.module,
        allow: vec![AllowEntry { target: usdc.address, selector: Some("0xa9059cbb".into()) }],
        budgets: vec![Budget { token: usdc.address, amount: U256::MAX }],
        ..Default::default()
    };
    let replay = ReplayConfig {
        mode: ReplayMode::Required,
        rpc: Some(chain.anvil.url().to_string()),
        ..Default::default()
    };
    let coord = IdentityKey::generate();
    let reports = init_nodes_with(tmp, opts.nodes, opts.threshold, &coord, &guard, BENCH_PASS, &replay)?;
    for r in &reports {
        let store = NodeStore::open(Path::new(&r.dir), &Passphrase::new(BENCH_PASS))?;
        pin_policy(Path::new(&r.dir), &store.secrets.identity()?, &store.config.replay, &bundle, &[], now())?;
    }
    let (mut procs, pinned) = spawn_bench_nodes(&opts.exe, &reports).await?;
    let dkg = run_dkg(coord.clone(), "coordinator.key", &pinned, opts.threshold, 5).await?;
    let coordinator = Arc::new(Coordinator::new(
        dkg.quorum,
        coord,
        CoordinatorOptions { timeout: Duration::from_secs(5), refill: 256, ..Default::default() },
    )?);
    let faults = coordinator.preprocess((opts.signatures + 20) as u32).await;
    if let Some((n, f)) = faults.first() {
        return Err(QuorumError::Node { node: n.clone(), fault: f.clone() }.into());
    }
    let (op, decision) = tithe_decision(&chain, &bundle).await?;
    let mut lat = Vec::with_capacity(opts.signatures);
    for i in 0..opts.signatures + 10 {
        let t = Instant::now();
        // The same operation each time: a retry of one digest is signed again, fully replayed.
        coordinator.sign_decided(&op, d.chain_id, d.module, None, Some(&decision)).await?;
        if i >= 10 {
            lat.push(t.elapsed());
        }
    }
    for p in &mut procs {
        p.kill().await;
    }
    let check = replay_alone(&chain, &bundle, &op, &decision, opts.signatures).await?;
    Ok((latency(lat), latency(check)))
}

/// The replay's own cost in process, `count` times: what each node adds to a signing round.
async fn replay_alone(
    chain: &TestChain,
    bundle: &PolicyBundle,
    op: &Operation,
    decision: &Decision,
    count: usize,
) -> anyhow::Result<Vec<Duration>> {
    let replayer = treasury_policies::replay::Replayer::new(bundle.clone())?;
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let t = Instant::now();
        replayer.replay(&chain.keeper, decision, op, &decision.history).await?;
        out.push(t.elapsed());
    }
    Ok(out)
}

fn tithe_bundle(chain: &TestChain) -> anyhow::Result<PolicyBundle> {
    let usdc = chain.deployment.token("USDC").context("the devnet's USDC")?;
    let text = format!(
        "[tokens.USDC]\naddress = \"{}\"\ndecimals = {}\nfeed = \"{}\"\n[addresses]\nbob = \"0x00000000000000000000000000000000000000b2\"\n\
         [[policy]]\nname = \"tithe\"\nfile = \"tithe.rhai\"\ntrigger = {{ kind = \"manual\" }}\n",
        usdc.address, usdc.decimals, usdc.feed
    );
    let policies: PoliciesConfig = toml::from_str(&text).context("the bench's policy config")?;
    let mut spec = chain.snapshot_spec();
    spec.assets.retain(|a| a.symbol == "USDC");
    let scripts: BTreeMap<String, String> = [("tithe".to_string(), TITHE.to_string())].into_iter().collect();
    Ok(PolicyBundle::new(chain.deployment.chain_id, &spec, None, policies, scripts))
}

/// What an honest agent asks at the head: the tithe's decision and its operation.
async fn tithe_decision(chain: &TestChain, bundle: &PolicyBundle) -> anyhow::Result<(Operation, Decision)> {
    let snapshot = read_snapshot(&chain.keeper, &bundle.snapshot_spec(), BlockNumberOrTag::Latest).await?;
    let set = PolicySet::from_sources(&bundle.policies, &bundle.scripts)?;
    let view = Arc::new(SnapshotView::new(&snapshot, set.book().clone())?);
    let intents = set.evaluate("tithe", &view, &[])?;
    let block = PinnedBlock { number: snapshot.block_number, hash: snapshot.block_hash };
    let deadline = snapshot.timestamp + 3600;
    let calls = treasury_policies::plan::plan_batch(&intents, &snapshot, &bundle.venue(), deadline)?;
    let op = Operation { calls, nonce: snapshot.module_nonce, deadline: U256::from(deadline) };
    let decision = Decision {
        policy_hash: bundle.hash(),
        firings: vec![DecidedFiring { policies: vec!["tithe".into()], trigger: "manual".into(), block }],
        intents,
        plan_block: block,
        history_from: Some(history_window(&chain.keeper, block.number).await?.from),
        history: Vec::new(),
        keeper: None,
    };
    Ok((op, decision))
}
