//! Issue 15 end to end: the agent and three signer processes that replay each decision through
//! their own connection to anvil. An RPC endpoint lies (every ERC-20 balance doubled in the
//! snapshot's Multicall3 answer) — the agent's, or one node's.

use alloy::primitives::U256;
use alloy::providers::Provider;

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
