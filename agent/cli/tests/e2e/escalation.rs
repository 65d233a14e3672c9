//! Tier 2 through `treasury run`: a payment over the module's budget waits for the HSM root's
//! approval — durably, across the root service going down and the agent being killed — and
//! executes once approved.

use std::time::Duration;

use crate::support::root::RootEnv;
use crate::support::{AgentEnv, PolicySpec, numbered};
use alloy::primitives::U256;
use treasury_agent::journal::{IntentFilter, IntentState, Journal};

const GRANT: PolicySpec<'static> = PolicySpec {
    name: "grant",
    // 30,000 GOV: over the module's 20,000 GOV daily tier-1 budget.
    script: r#"pay("r1", "GOV", 30000);"#,
    trigger: r#"{ kind = "manual" }"#,
};

async fn state_of(journal: &Journal, policy: &str) -> Option<IntentState> {
    let filter = IntentFilter { policy: Some(policy.into()), ..Default::default() };
    journal.list(&filter).await.unwrap().first().map(|i| i.state)
}

async fn wait_for(journal: &Journal, policy: &str, state: IntentState) {
    for _ in 0..600 {
        let now = state_of(journal, policy).await;
        if now == Some(state) {
            return;
        }
        if let Some(done) = now.filter(|s| s.is_terminal()) {
            let intent = journal.list(&IntentFilter::default()).await.unwrap()[0].clone();
            let (_, events) = journal.intent(intent.id).await.unwrap().unwrap();
            panic!("{policy} ended {done} instead of reaching {state}: {events:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{policy} never reached {state} (now {:?})", state_of(journal, policy).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tier_two_payment_waits_for_the_root_through_outages_and_executes_after_approval() {
    let root = RootEnv::init();
    let mut env = AgentEnv::start_with_root(&[GRANT], Some(root.address)).await.unwrap();
    let d = env.chain.deployment.clone();
    let gov = d.token("GOV").unwrap().address;
    let (root_config, agent_token, carol_token) = root.config(
        d.chain_id,
        d.module,
        &[(gov, "50000000000000000000000", "100000000000000000000000")],
        &[numbered(1)],
    );
    let service = root.serve(&root_config, "127.0.0.1:0");
    let listen = service.url.trim_start_matches("http://").to_string();
    env.use_root_service(&service.url, &agent_token);
    env.run_once();
    let journal = env.journal().await;

    env.trigger("grant").await;
    let mut agent = env.spawn_run(&[]);
    wait_for(&journal, "grant", IntentState::AwaitingRoot).await;

    // The root service goes down while the intent waits: the agent keeps waiting.
    drop(service);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(agent.try_wait().unwrap().is_none(), "the agent must survive the root service being down");
    assert_eq!(state_of(&journal, "grant").await, Some(IntentState::AwaitingRoot));

    // kill -9 the agent while it waits; the root service comes back and an approver approves
    // from the CLI, through the service's API.
    agent.kill().unwrap();
    agent.wait().unwrap();
    let service = root.serve(&root_config, &listen);
    let carol = [("TREASURY_APPROVER_TOKEN", carol_token.as_str())];
    let pending: serde_json::Value =
        serde_json::from_str(&root.run_with(&["root", "pending", "--url", &service.url, "--json"], &carol))
            .unwrap();
    let id = pending[0]["id"].as_str().expect("the request is still queued at the root").to_string();
    root.run_with(&["root", "approve", &id, "--url", &service.url], &carol);
    assert_eq!(env.balance("GOV", numbered(1)).await, U256::ZERO, "nothing moves before the agent resumes");

    // The agent comes back: it resumes the waiting intent and executes it once.
    env.run_once();
    assert_eq!(state_of(&journal, "grant").await, Some(IntentState::Confirmed));
    let whole = U256::from(10u64).pow(U256::from(18));
    assert_eq!(env.balance("GOV", numbered(1)).await, U256::from(30_000u64) * whole);
    let intent = journal.list(&IntentFilter::default()).await.unwrap()[0].clone();
    let (_, events) = journal.intent(intent.id).await.unwrap().unwrap();
    let states: Vec<IntentState> = events.iter().map(|e| e.to).collect();
    assert!(
        states.contains(&IntentState::AwaitingRoot) && states.ends_with(&[IntentState::Confirmed]),
        "{states:?}"
    );
}
