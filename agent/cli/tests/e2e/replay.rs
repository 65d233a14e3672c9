//! Issue 15 end to end: the agent and three signer processes that replay each decision through
//! their own connection to anvil. An RPC endpoint lies (every ERC-20 balance doubled in the
//! snapshot's Multicall3 answer) — the agent's, or one node's.

use std::sync::Arc;

use alloy::eips::BlockNumberOrTag;
use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use alloy::sol_types::SolCall;
use rust_decimal::Decimal;
use treasury_agent::config::Config;
use treasury_chain::contracts::{IERC20, TreasuryModule};
use treasury_chain::operation::Operation;
use treasury_chain::snapshot::read_snapshot;
use treasury_policies::replay::{DecidedFiring, Decision, PastIntent, PinnedBlock, history_window};
use treasury_policies::{Action, Payment, PolicySet, SnapshotView};
use treasury_signer::quorum::{NodeFault, QuorumError};

use crate::support::lying_rpc::LyingRpc;
use crate::support::{AgentEnv, PolicySpec, alice};
use treasury_agent::journal::{IntentFilter, IntentState};
use treasury_agent::pipeline::intake::FiringInput;
use treasury_agent::pipeline::lane::LaneStep;

/// A tithe of the Safe's USDC balance: what it pays depends on what the snapshot says.
const TITHE: PolicySpec<'static> = PolicySpec {
    name: "tithe",
    script: r#"pay("alice", "USDC", balance("USDC") / 1000);"#,
    trigger: r#"{ kind = "manual" }"#,
};

/// Feeds one manual firing of the tithe at the head and steps the lane until it rests.
async fn run_tithe(env: &AgentEnv) -> (IntentState, String) {
    let pipeline = env.pipeline().await.unwrap();
    let block = pipeline.provider().get_block_number().await.unwrap();
    let firing = FiringInput { block, policies: vec!["tithe".into()], trigger: "manual#1".into() };
    pipeline.intake(&firing).await.unwrap();
    for _ in 0..200 {
        match pipeline.step().await.unwrap() {
            LaneStep::Idle => break,
            LaneStep::Waiting(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            _ => {}
        }
    }
    let journal = env.journal().await;
    let filter = IntentFilter { policy: Some("tithe".into()), ..Default::default() };
    let intent = journal.list(&filter).await.unwrap().remove(0);
    let (_, events) = journal.intent(intent.id).await.unwrap().unwrap();
    let detail = events.last().map(|e| e.detail.to_string()).unwrap_or_default();
    (intent.state, detail)
}

/// Attack: the agent's RPC endpoint lies (the Safe's USDC balance doubled), so the agent decides
/// a tithe twice too large; every node reads its own endpoint, derives the honest tithe and
/// refuses, naming the intent. Nothing moves on chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_lying_rpc_gets_its_decision_refused_by_every_node() {
    let env = AgentEnv::start(&[TITHE]).await.unwrap();
    let liar = LyingRpc::start(env.chain.anvil.url()).await;
    env.use_rpc(&liar.url);
    let nonce_before = env.chain.module_nonce().await.unwrap();
    let (state, detail) = run_tithe(&env).await;
    assert_eq!(state, IntentState::Rejected, "{detail}");
    assert!(detail.contains("ReplayMismatch") && detail.contains("tithe:"), "names the intent: {detail}");
    assert_eq!(env.balance("USDC", alice()).await, U256::ZERO, "nothing paid");
    assert_eq!(env.chain.module_nonce().await.unwrap(), nonce_before, "no operation executed");
}

/// The reverse: one node's own endpoint lies. That node refuses the honest decision; the other
/// two sign it and the honest tithe is paid, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_nodes_lying_rpc_costs_only_that_node() {
    let mut env = AgentEnv::start(&[TITHE]).await.unwrap();
    let liar = LyingRpc::start(env.chain.anvil.url()).await;
    env.restart_node_with_rpc(0, &liar.url).await.unwrap();
    let safe_usdc = env.balance("USDC", env.chain.deployment.safe).await;
    let (state, detail) = run_tithe(&env).await;
    assert_eq!(state, IntentState::Confirmed, "{detail}");
    assert_eq!(env.balance("USDC", alice()).await, safe_usdc / U256::from(1000), "the honest tithe, once");
}

/// Pays alice 100 USDC once a day.
const GRANT: PolicySpec<'static> = PolicySpec {
    name: "grant",
    script: r#"if paid("alice", "USDC", "day") == 0 { pay("alice", "USDC", 100); }"#,
    trigger: r#"{ kind = "manual" }"#,
};

/// What an honest agent would ask for the grant at the head, built with the same public
/// functions the agent uses; the attacker below edits it.
async fn grant_decision(
    env: &AgentEnv,
    history: &[Payment],
    presented: Vec<PastIntent>,
) -> (Operation, Decision) {
    let config = Config::load(&env.config).unwrap();
    let provider = &env.chain.keeper;
    let spec = treasury_agent::pipeline::snapshot_spec(&config).unwrap();
    let policies = PolicySet::load(&config.policies, &config.base_dir).unwrap();
    let router = config.dex.as_ref().unwrap().router;
    let venue = treasury_agent::pipeline::venue(provider, spec.safe, router).await.unwrap();
    let bundle =
        treasury_agent::pipeline::policy_bundle(config.chain.chain_id, &spec, Some(venue), &policies);
    let snapshot = read_snapshot(provider, &spec, BlockNumberOrTag::Latest).await.unwrap();
    let view = Arc::new(SnapshotView::new(&snapshot, policies.book().clone()).unwrap());
    let intents = policies.evaluate("grant", &view, history).unwrap();
    let deadline = snapshot.timestamp + 3600;
    let calls = treasury_policies::plan::plan_batch(&intents, &snapshot, &venue, deadline).unwrap();
    let op = Operation { calls, nonce: snapshot.module_nonce, deadline: U256::from(deadline) };
    let block = PinnedBlock { number: snapshot.block_number, hash: snapshot.block_hash };
    let decision = Decision {
        policy_hash: bundle.hash(),
        firings: vec![DecidedFiring { policies: vec!["grant".into()], trigger: "manual".into(), block }],
        intents,
        plan_block: block,
        history_from: Some(history_window(provider, block.number).await.unwrap().from),
        history: presented,
        keeper: None,
    };
    (op, decision)
}

/// Asks the quorum of node processes with the agent's own coordinator key; returns every
/// node's refusal, or panics if it signed.
pub(crate) async fn refusals(env: &AgentEnv, op: &Operation, decision: &Decision) -> Vec<String> {
    let d = &env.chain.deployment;
    let coordinator = env.coordinator().unwrap();
    match coordinator.sign_decided(op, d.chain_id, d.module, None, Some(decision)).await {
        Ok(_) => panic!("the quorum signed a forged decision"),
        Err(QuorumError::NotEnoughSigners { faults, .. }) => faults
            .into_iter()
            .map(|(node, f)| match f {
                NodeFault::Refused(r) => r.to_string(),
                other => panic!("{node} did not refuse but {other}"),
            })
            .collect(),
        Err(e) => panic!("unexpected {e}"),
    }
}

pub(crate) fn every(refusals: &[String], names: &str) {
    // 2-of-3: once two nodes refused, no two remain, so the coordinator stops asking
    assert!(refusals.len() >= 2, "every node asked refuses: {refusals:?}");
    assert!(refusals.iter().all(|r| r.contains(names)), "each names `{names}`: {refusals:?}");
}

/// Attack, with the agent host's coordinator key against the node processes: a payment no policy
/// produced, the amount raised, the call redirected, another policy set, and — after the grant
/// was paid — the grant again with its payment left out of the history. Every node refuses,
/// naming why; only the honest grant moves funds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_decisions_from_the_agents_coordinator_are_refused_by_every_node_process() {
    let env = AgentEnv::start(&[GRANT]).await.unwrap();
    let (op, honest) = grant_decision(&env, &[], Vec::new()).await;
    let pay = honest.intents[0].clone();

    let mut raised = honest.clone();
    if let Action::Pay { amount, .. } = &mut raised.intents[0].action {
        *amount = Decimal::from(100_000);
    }
    every(&refusals(&env, &op, &raised).await, &pay.key);

    let mut redirected = op.clone();
    redirected.calls[0].data =
        IERC20::transferCall { to: Address::repeat_byte(0xee), amount: U256::from(100_000_000u64) }
            .abi_encode()
            .into();
    every(&refusals(&env, &redirected, &honest).await, "call 0");

    let mut invented = honest.clone();
    invented.intents[0].key = "grant:drain".into();
    every(&refusals(&env, &op, &invented).await, "grant:drain");

    let mut other_set = honest.clone();
    other_set.policy_hash = alloy::primitives::B256::repeat_byte(0x11);
    every(&refusals(&env, &op, &other_set).await, "policy set");

    // the honest grant is signed and executed
    let d = &env.chain.deployment;
    let signed = env
        .coordinator()
        .unwrap()
        .sign_decided(&op, d.chain_id, d.module, None, Some(&honest))
        .await
        .unwrap();
    let frost = signed.signature;
    let sig = TreasuryModule::FrostSig { rX: frost.r_x, rY: frost.r_y, z: frost.z };
    env.chain.exec_signed(&op, sig, Default::default()).await.unwrap();
    assert_eq!(env.balance("USDC", alice()).await, U256::from(100_000_000u64));

    // the grant asked again, its payment left out of the history presented
    let (again, omitted) = grant_decision(&env, &[], Vec::new()).await;
    assert_eq!(omitted.intents.len(), 1, "without the payment the policy would pay again");
    let refused = refusals(&env, &again, &omitted).await;
    assert!(
        refused.len() >= 2 && refused.iter().all(|r| r.contains(&pay.key) || r.contains("leaves out")),
        "{refused:?}"
    );
    assert_eq!(env.balance("USDC", alice()).await, U256::from(100_000_000u64), "paid once");
}

/// A payroll that reads history: three payments once a day, decided by one firing.
const PAYROLL: PolicySpec<'static> = PolicySpec {
    name: "payroll",
    script: r#"if paid_total("USDC", "day") == 0 {
    pay("alice", "USDC", 100);
    pay("bob", "USDC", 50);
    pay("r0", "USDC", 25);
}"#,
    trigger: r#"{ kind = "manual" }"#,
};

/// The honest path across operations: one firing of a policy that reads `paid_total` decides
/// three payments; with `max_batch = 2` the planner carries them in two operations (module
/// nonces n and n+1). The second operation's history lists the first's payments (same firing,
/// same block): every replaying node must still derive its payment, and each is paid once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_firing_split_across_two_operations_pays_every_payment_once() {
    let env = AgentEnv::start(&[PAYROLL]).await.unwrap();
    env.edit_config("[pipeline]\n", "[pipeline]\nmax_batch = 2\n");
    let nonce_before = env.chain.module_nonce().await.unwrap();
    let pipeline = env.pipeline().await.unwrap();
    let block = pipeline.provider().get_block_number().await.unwrap();
    let firing = FiringInput { block, policies: vec!["payroll".into()], trigger: "manual#1".into() };
    pipeline.intake(&firing).await.unwrap();
    let journal = env.journal().await;
    let filter = IntentFilter { policy: Some("payroll".into()), ..Default::default() };
    for round in 0.. {
        let intents = journal.list(&filter).await.unwrap();
        if intents.iter().all(|i| i.state.is_terminal()) {
            break;
        }
        assert!(round < 1000, "the lane never settled: {intents:?}");
        if let LaneStep::Waiting(_) | LaneStep::Idle = pipeline.step().await.unwrap() {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    let intents = journal.list(&filter).await.unwrap();
    assert_eq!(intents.len(), 3);
    for intent in &intents {
        let (_, events) = journal.intent(intent.id).await.unwrap().unwrap();
        let detail = events.last().map(|e| e.detail.to_string()).unwrap_or_default();
        assert_eq!(intent.state, IntentState::Confirmed, "{}: {detail}", intent.idempotency_key);
    }
    let usdc = |n: u64| U256::from(n * 1_000_000);
    assert_eq!(env.balance("USDC", alice()).await, usdc(100), "alice paid once");
    assert_eq!(env.balance("USDC", crate::support::bob()).await, usdc(50), "bob paid once");
    assert_eq!(env.balance("USDC", crate::support::numbered(0)).await, usdc(25), "r0 paid once");
    let nonce_after = env.chain.module_nonce().await.unwrap();
    assert_eq!(nonce_after, nonce_before + U256::from(2), "carried by two operations");
}
