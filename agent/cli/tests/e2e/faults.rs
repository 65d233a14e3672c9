//! Faults around the pipeline: a policy that errors, the same tick delivered twice, a signer node
//! down, an intent that would revert, and the RPC endpoint down for a while.

use std::time::Duration;

use crate::support::proxy::Proxy;
use crate::support::{AgentEnv, PolicySpec, alice, bob, numbered};
use alloy::primitives::U256;
use treasury_agent::journal::{IntentFilter, IntentState};
use treasury_agent::pipeline::intake::FiringInput;
use treasury_agent::pipeline::lane::LaneStep;

const PAYOUT: PolicySpec<'static> =
    PolicySpec { name: "payout", script: r#"pay("alice", "USDC", 42);"#, trigger: r#"{ kind = "manual" }"# };
const BROKEN: PolicySpec<'static> = PolicySpec {
    name: "broken",
    // Never ends: the sandbox's operation limit stops it.
    script: r#"let n = 0; while true { n += 1; }"#,
    trigger: r#"{ kind = "manual" }"#,
};
const GREEDY_SWAP: PolicySpec<'static> = PolicySpec {
    name: "greedy-swap",
    // 0.01% slippage allowed: the pool's 0.3% fee alone puts the output under the bound.
    script: r#"swap("USDC", "GOV", 1000, dec("0.0001"));"#,
    trigger: r#"{ kind = "manual" }"#,
};
const LATER: PolicySpec<'static> =
    PolicySpec { name: "later", script: r#"pay("bob", "USDC", 7);"#, trigger: r#"{ kind = "manual" }"# };

fn firing(block: u64, policies: &[&str], trigger: &str) -> FiringInput {
    FiringInput { block, policies: policies.iter().map(|p| p.to_string()).collect(), trigger: trigger.into() }
}

async fn state_of(env: &AgentEnv, policy: &str) -> Vec<IntentState> {
    let filter = IntentFilter { policy: Some(policy.into()), ..Default::default() };
    env.journal().await.list(&filter).await.unwrap().iter().map(|i| i.state).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_policy_a_repeated_tick_a_dead_node_and_a_reverting_swap() {
    let mut env = AgentEnv::start(&[PAYOUT, BROKEN, GREEDY_SWAP, LATER]).await.unwrap();
    let pipeline = env.pipeline().await.unwrap();
    let block = alloy::providers::Provider::get_block_number(pipeline.provider()).await.unwrap();

    // One firing runs two policies; the broken one fails alone, with an alert naming it.
    let tick = firing(block, &["broken", "payout"], "schedule@1");
    let report = pipeline.intake(&tick).await.unwrap();
    assert_eq!(report.created.len(), 1);
    assert_eq!(report.policy_errors.len(), 1);
    assert_eq!(report.policy_errors[0].0, "broken");
    assert!(report.policy_errors[0].1.contains("operations"), "{:?}", report.policy_errors);
    let alerts = pipeline.journal().alerts(10).await.unwrap();
    assert!(alerts.iter().any(|a| a.policy == "broken" && a.message.contains("policy failed")), "{alerts:?}");

    // The same tick delivered again: nothing new.
    let again = pipeline.intake(&tick).await.unwrap();
    assert_eq!((again.created.len(), again.duplicates), (0, 1));
    assert_eq!(pipeline.drain().await.unwrap(), LaneStep::Idle);
    assert_eq!(env.balance("USDC", alice()).await, U256::from(42_000_000u64));
    assert_eq!(state_of(&env, "payout").await, [IntentState::Confirmed]);

    // A swap that would revert fails with the router's reason and is not retried.
    let report = pipeline.intake(&firing(block, &["greedy-swap"], "manual#swap")).await.unwrap();
    assert_eq!(report.created.len(), 1, "{report:?}");
    assert_eq!(pipeline.drain().await.unwrap(), LaneStep::Idle);
    assert_eq!(state_of(&env, "greedy-swap").await, [IntentState::Failed]);
    let filter = IntentFilter { policy: Some("greedy-swap".into()), ..Default::default() };
    let failed = pipeline.journal().list(&filter).await.unwrap();
    let (_, events) = pipeline.journal().intent(failed[0].id).await.unwrap().unwrap();
    let reason = events.last().unwrap().detail["reason"].as_str().unwrap().to_string();
    assert!(reason.contains("INSUFFICIENT_OUTPUT_AMOUNT"), "{reason}");
    assert_eq!(pipeline.drain().await.unwrap(), LaneStep::Idle);
    assert_eq!(state_of(&env, "greedy-swap").await, [IntentState::Failed], "a revert is final");

    // One of three signer nodes killed: 2-of-3 still signs.
    env.nodes[0].kill().await;
    pipeline.intake(&firing(block, &["later"], "manual#later")).await.unwrap();
    assert_eq!(pipeline.drain().await.unwrap(), LaneStep::Idle);
    assert_eq!(state_of(&env, "later").await, [IntentState::Confirmed]);
    assert_eq!(env.balance("USDC", bob()).await, U256::from(7_000_000u64));
    // The metrics show the two live nodes up: they made the signature.
    let signers = pipeline.metrics().gauges().signers;
    for node in &env.nodes[1..] {
        assert_eq!(signers.get(&node.url), Some(&true), "{signers:?}");
    }
}

const TOPUP: PolicySpec<'static> =
    PolicySpec { name: "topup", script: r#"pay("r2", "USDC", 5);"#, trigger: r#"{ kind = "manual" }"# };

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_rides_out_an_rpc_outage() {
    let env = AgentEnv::start(&[TOPUP]).await.unwrap();
    let proxy = Proxy::start(env.chain.anvil.url()).await;
    env.use_rpc(&proxy.url);
    env.run_once();
    let mut agent = env.spawn_run(&[]);
    env.wait_running(&mut agent).await;

    proxy.set_up(false);
    env.trigger("topup").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(agent.try_wait().unwrap().is_none(), "the agent must keep running while the RPC is down");
    assert_eq!(env.balance("USDC", numbered(2)).await, U256::ZERO);

    proxy.set_up(true);
    let mut paid = false;
    for _ in 0..300 {
        if state_of(&env, "topup").await == [IntentState::Confirmed] {
            paid = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    agent.kill().unwrap();
    assert!(paid, "the payment must go through once the RPC is back: {:?}", state_of(&env, "topup").await);
    assert_eq!(env.balance("USDC", numbered(2)).await, U256::from(5_000_000u64));
}

const MENDED: PolicySpec<'static> =
    PolicySpec { name: "mended", script: r#"pay("alice", "USDC", 3);"#, trigger: r#"{ kind = "manual" }"# };

/// The quorum's signature rests in the journal alone when sending fails (RPC down right after
/// signing); its `root_signature` is then corrupted in the file. The resume stops with an error
/// naming the intent and what is wrong, and sends nothing (it once sent `exec` with an empty root
/// signature in its place).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_journaled_signature_stops_the_resume_naming_the_intent() {
    let env = AgentEnv::start(&[MENDED]).await.unwrap();
    let proxy = std::sync::Arc::new(Proxy::start(env.chain.anvil.url()).await);
    env.use_rpc(&proxy.url);
    let cut = proxy.clone();
    let pipeline = env.pipeline().await.unwrap().with_transition_hook(std::sync::Arc::new(move |to| {
        if to == IntentState::Authorising {
            cut.set_up(false);
        }
    }));
    let block = alloy::providers::Provider::get_block_number(pipeline.provider()).await.unwrap();
    let report = pipeline.intake(&firing(block, &["mended"], "manual#mended")).await.unwrap();
    let id = report.created[0];
    // One step plans and asks the quorum; the RPC goes down in between, so sending fails.
    let down = pipeline.step().await.unwrap_err().to_string();
    assert_eq!(state_of(&env, "mended").await, [IntentState::Signed], "signed, not sent: {down}");
    proxy.set_up(true);

    let nonce_before = env.chain.module_nonce().await.unwrap();
    let pool = sqlx::SqlitePool::connect(&env.journal_url).await.unwrap();
    let changed = sqlx::query(
        "UPDATE signing_requests SET response = json_set(response, '$.root_signature', '0xnot-hex')
         WHERE signer = 'quorum' AND state = 'signed'",
    )
    .execute(&pool)
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(changed, 1);
    pool.close().await;

    for _ in 0..2 {
        let err = pipeline.step().await.unwrap_err().to_string();
        assert!(err.starts_with(&format!("intent {id}: operation 0x")), "{err}");
        assert!(err.contains("the journaled quorum answer is unreadable"), "{err}");
        assert!(err.contains("invalid") || err.contains("Invalid"), "says what does not parse: {err}");
    }
    assert_eq!(state_of(&env, "mended").await, [IntentState::Signed]);
    let operation = pipeline.journal().operation_of(id).await.unwrap().unwrap();
    assert!(
        pipeline.journal().transactions(&operation.operation_id).await.unwrap().is_empty(),
        "nothing sent"
    );
    assert_eq!(env.chain.module_nonce().await.unwrap(), nonce_before, "nothing executed");
    assert_eq!(env.balance("USDC", alice()).await, U256::ZERO);
}
