//! `treasury run` end to end: a manual trigger's payments go through the journal, the DKG quorum
//! (three node processes) and the keeper onto anvil, exactly once.

use crate::support::{AgentEnv, PolicySpec, alice, bob};
use alloy::primitives::U256;
use treasury_agent::journal::{IntentFilter, IntentState};

const PAY_TWO: PolicySpec<'static> = PolicySpec {
    name: "payouts",
    script: r#"pay("alice", "USDC", 100); pay("bob", "USDC", dec("250.5"));"#,
    trigger: r#"{ kind = "manual" }"#,
};

fn usdc(amount: f64) -> U256 {
    U256::from((amount * 1e6) as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_trigger_pays_once_through_quorum_and_keeper() {
    let env = AgentEnv::start(&[PAY_TWO]).await.unwrap();
    // First run: no cursor yet, nothing due.
    env.run_once();
    env.trigger("payouts").await;
    env.run_once();

    assert_eq!(env.balance("USDC", alice()).await, usdc(100.0));
    assert_eq!(env.balance("USDC", bob()).await, usdc(250.5));
    let journal = env.journal().await;
    let intents = journal.list(&IntentFilter::default()).await.unwrap();
    assert_eq!(intents.len(), 2);
    assert!(intents.iter().all(|i| i.state == IntentState::Confirmed), "{intents:?}");
    // Both payments were batched into one operation carried by one keeper transaction.
    let op = journal.operation_of(intents[0].id).await.unwrap().unwrap();
    assert_eq!(op.intents.len(), 2);
    assert_eq!(journal.transactions(&op.operation_id).await.unwrap().len(), 1);

    // The same trigger again the same day: same idempotency keys, nothing paid twice.
    env.trigger("payouts").await;
    env.run_once();
    assert_eq!(env.balance("USDC", alice()).await, usdc(100.0));
    assert_eq!(journal.list(&IntentFilter::default()).await.unwrap().len(), 2);

    // What an operator sees.
    let out = env.treasury(&["intents", "list", "--json"]);
    assert!(out.status.success());
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert_eq!(listed[0]["state"], "confirmed");
    let id = listed[0]["id"].to_string();
    let out = env.treasury(&["intents", "show", &id, "--json"]);
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let states: Vec<&str> =
        shown["events"].as_array().unwrap().iter().map(|e| e["to"].as_str().unwrap()).collect();
    assert_eq!(states, ["proposed", "guarded", "planned", "authorising", "signed", "submitted", "confirmed"]);
    assert!(shown["transactions"][0]["tx"]["tx_hash"].as_str().unwrap().starts_with("0x"));
    // The intent names the version of the script that produced it.
    let version = treasury_policies::loader::version_of(PAY_TWO.script);
    assert_eq!(shown["intent"]["payload"]["policy_version"], version.as_str());
    assert_eq!(shown["intent"]["policy_version"], version.as_str(), "the journal's column");
    let text = env.treasury(&["intents", "show", &id]);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains(&format!("policy   payouts version {version}")), "{text}");
    let out = env.treasury(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["intents_by_state"]["confirmed"], 2);
}

const REBALANCE: PolicySpec<'static> = PolicySpec {
    name: "rebalance",
    // The Safe holds USDC and GOV at 50/50 by value; ask for 51/49 within half a point.
    script: r#"rebalance(#{ USDC: "0.51", GOV: "0.49" }, "0.005", "0.03");"#,
    trigger: r#"{ kind = "every_blocks", blocks = 1 }"#,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_swaps_into_band_through_the_router_once() {
    let env = AgentEnv::start(&[REBALANCE]).await.unwrap();
    let safe = env.chain.deployment.safe;
    let (usdc_before, gov_before) = (env.balance("USDC", safe).await, env.balance("GOV", safe).await);
    env.run_once();
    // Mine a block so the every-block policy fires after the cursor.
    let _: serde_json::Value =
        alloy::providers::Provider::raw_request(&env.chain.keeper, "evm_mine".into(), serde_json::json!([]))
            .await
            .unwrap();
    env.run_once();

    let journal = env.journal().await;
    let intents = journal.list(&IntentFilter::default()).await.unwrap();
    assert_eq!(intents.len(), 1, "one swap: {intents:?}");
    assert_eq!(intents[0].kind, "swap");
    assert_eq!(intents[0].state, IntentState::Confirmed, "{intents:?}");
    let (usdc_after, gov_after) = (env.balance("USDC", safe).await, env.balance("GOV", safe).await);
    assert!(gov_after < gov_before, "GOV sold");
    assert!(usdc_after > usdc_before, "USDC bought");
    // About 1% of $1M moved (≈ $10,000 of GOV at $2.50), within the 3% slippage bound.
    let sold = gov_before - gov_after;
    let whole = U256::from(10u64).pow(U256::from(18));
    assert!(sold > U256::from(3_800u64) * whole && sold < U256::from(4_200u64) * whole, "sold {sold}");
    let bought = usdc_after - usdc_before;
    assert!(bought >= U256::from(9_700_000_000u64), "at least 97% of the oracle value: {bought}");

    // The next blocks find the weights in band: no second swap.
    let _: serde_json::Value =
        alloy::providers::Provider::raw_request(&env.chain.keeper, "evm_mine".into(), serde_json::json!([]))
            .await
            .unwrap();
    env.run_once();
    assert_eq!(journal.list(&IntentFilter::default()).await.unwrap().len(), 1);
}
