//! `treasury run` end to end: a manual trigger's payments go through the journal, the DKG quorum
//! (three node processes) and the keeper onto anvil, exactly once.

mod support;

use alloy::primitives::U256;
use support::{AgentEnv, PolicySpec, alice, bob};
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
    env.trigger("payouts");
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
    env.trigger("payouts");
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
    let out = env.treasury(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["intents_by_state"]["confirmed"], 2);
}
