//! The keeper's side of `treasury run` on a chain that does not cooperate: a transaction that is
//! not mined until its fees are bumped, and a reorg that drops a mined transaction. Each payment
//! executes exactly once, and the journal records every keeper transaction.

use std::time::Duration;

use crate::support::{AgentEnv, PolicySpec, numbered};
use alloy::primitives::U256;
use alloy::providers::Provider;
use treasury_agent::journal::{IntentFilter, IntentState, Journal, TransactionRecord, TxState};

const FIRST: PolicySpec<'static> =
    PolicySpec { name: "first", script: r#"pay("r3", "USDC", 3);"#, trigger: r#"{ kind = "manual" }"# };
const SECOND: PolicySpec<'static> =
    PolicySpec { name: "second", script: r#"pay("r4", "USDC", 4);"#, trigger: r#"{ kind = "manual" }"# };
const GWEI: u64 = 1_000_000_000;

async fn rpc(env: &AgentEnv, method: &'static str, params: serde_json::Value) {
    let _: serde_json::Value = env.chain.keeper.raw_request(method.into(), params).await.unwrap();
}

async fn intent_state(journal: &Journal, policy: &str) -> Option<IntentState> {
    let filter = IntentFilter { policy: Some(policy.into()), ..Default::default() };
    journal.list(&filter).await.unwrap().first().map(|i| i.state)
}

async fn transactions(journal: &Journal, policy: &str) -> Vec<TransactionRecord> {
    let filter = IntentFilter { policy: Some(policy.into()), ..Default::default() };
    let Some(intent) = journal.list(&filter).await.unwrap().first().cloned() else { return Vec::new() };
    match journal.operation_of(intent.id).await.unwrap() {
        Some(op) => journal.transactions(&op.operation_id).await.unwrap(),
        None => Vec::new(),
    }
}

/// Mines a block every 50 ms (with `base_fee_gwei` forced on each, if given) until `done` holds.
async fn mine_until<F, Fut>(env: &AgentEnv, base_fee_gwei: Option<u64>, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..1200 {
        if done().await {
            return;
        }
        if let Some(fee) = base_fee_gwei {
            rpc(env, "anvil_setNextBlockBaseFeePerGas", serde_json::json!([format!("{:#x}", fee * GWEI)]))
                .await;
        }
        rpc(env, "evm_mine", serde_json::json!([])).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("condition not reached after 1200 blocks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_transaction_is_bumped_and_a_reorged_one_resent_each_paying_once() {
    let env = AgentEnv::start(&[FIRST, SECOND]).await.unwrap();
    env.edit_config("confirmations = 1", "confirmations = 3");
    env.run_once();
    let journal = env.journal().await;
    rpc(&env, "evm_setAutomine", serde_json::json!([false])).await;
    let mut agent = env.spawn_run(&[]);
    env.wait_running(&mut agent).await;

    // Not mined while the base fee is far above what was offered: replaced with bumped fees.
    env.trigger("first").await;
    mine_until(&env, None, || async {
        intent_state(&journal, "first").await == Some(IntentState::Submitted)
    })
    .await;
    mine_until(&env, Some(150), || async { transactions(&journal, "first").await.len() >= 2 }).await;
    mine_until(&env, None, || async {
        intent_state(&journal, "first").await == Some(IntentState::Confirmed)
    })
    .await;
    let txs = transactions(&journal, "first").await;
    assert!(txs.len() >= 2, "a replacement was journaled: {txs:?}");
    assert!(txs.iter().all(|t| t.tx.keeper_nonce == txs[0].tx.keeper_nonce), "same keeper nonce");
    assert!(txs[..txs.len() - 1].iter().all(|t| t.state == TxState::Replaced), "{txs:?}");
    assert_eq!(txs.last().unwrap().state, TxState::Confirmed);
    assert_eq!(env.balance("USDC", numbered(3)).await, U256::from(3_000_000u64), "paid once");

    // Mined, then reorged out before its confirmations: the same signed transaction is sent again.
    env.trigger("second").await;
    mine_until(&env, None, || async {
        transactions(&journal, "second").await.first().is_some_and(|t| t.state == TxState::Included)
    })
    .await;
    let included = transactions(&journal, "second").await[0].clone();
    rpc(&env, "anvil_reorg", serde_json::json!([1, []])).await;
    mine_until(&env, None, || async {
        intent_state(&journal, "second").await == Some(IntentState::Confirmed)
    })
    .await;
    let txs = transactions(&journal, "second").await;
    assert_eq!(txs.len(), 1, "nothing was re-signed: {txs:?}");
    assert_eq!(txs[0].tx.tx_hash, included.tx.tx_hash);
    assert_eq!(txs[0].state, TxState::Confirmed);
    let receipt =
        env.chain.keeper.get_transaction_receipt(included.tx.tx_hash.parse().unwrap()).await.unwrap();
    assert!(receipt.unwrap().block_number.unwrap() > included.block_number.unwrap(), "mined again later");
    assert_eq!(env.balance("USDC", numbered(4)).await, U256::from(4_000_000u64), "paid once");

    agent.kill().unwrap();
    agent.wait().unwrap();
}
