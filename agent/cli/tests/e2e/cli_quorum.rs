//! The quorum as an operator builds it — `treasury signer coordinator-key`, `signer init`,
//! `signer serve` and `treasury dkg` — then `treasury trigger` and `treasury run` pay on chain.

use alloy::primitives::U256;

use crate::support::{AgentEnv, PolicySpec, QuorumSetup, numbered};
use treasury_agent::journal::{IntentFilter, IntentState};

const PAY: PolicySpec<'static> =
    PolicySpec { name: "vendor", script: r#"pay("r6", "USDC", 321);"#, trigger: r#"{ kind = "manual" }"# };

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_built_from_the_cli_pays_through_treasury_run() {
    let env = AgentEnv::start_with(&[PAY], None, QuorumSetup::Cli).await.unwrap();
    env.run_once();
    env.trigger("vendor").await;
    env.run_once();
    let intents = env.journal().await.list(&IntentFilter::default()).await.unwrap();
    assert_eq!(intents.len(), 1);
    assert_eq!(intents[0].state, IntentState::Confirmed, "{intents:?}");
    assert_eq!(env.balance("USDC", numbered(6)).await, U256::from(321_000_000u64));
}
