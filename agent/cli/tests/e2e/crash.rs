//! kill -9 of the agent at each state of an intent, then a restart on the same journal: every
//! intent reaches exactly one outcome, and no payment is lost or doubled.

use std::path::PathBuf;
use std::process::Command;

use crate::support::{AgentEnv, PolicySpec};
use alloy::primitives::{Address, U256};
use treasury_agent::journal::{IntentFilter, IntentState};

/// The crash helper built from `agent/examples/crash_at.rs` (cargo builds examples for `cargo test`).
fn crash_helper() -> PathBuf {
    let deps = std::env::current_exe().unwrap();
    deps.parent().unwrap().parent().unwrap().join("examples/crash_at")
}

/// The states an intent rests in between two commits. The others are only ever committed together
/// with the next one (proposed with guarded, planned with authorising, signed with submitted), so a
/// crash cannot leave an intent in them; `awaiting_root` is crashed in by `--test escalation`.
const STATES: [&str; 3] = ["guarded", "authorising", "submitted"];

fn recipient(i: usize) -> Address {
    crate::support::numbered(i)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_at_any_state_resumes_to_exactly_one_payment() {
    let scripts: Vec<String> =
        (0..STATES.len()).map(|i| format!(r#"pay("r{i}", "USDC", {});"#, 10 + i)).collect();
    let names: Vec<String> = STATES.iter().map(|s| format!("crash-{s}")).collect();
    let policies: Vec<PolicySpec<'_>> = names
        .iter()
        .zip(&scripts)
        .map(|(name, script)| PolicySpec { name, script, trigger: r#"{ kind = "manual" }"# })
        .collect();
    let env = AgentEnv::start(&policies).await.unwrap();
    env.run_once();
    let helper = crash_helper();
    assert!(
        helper.is_file(),
        "crash helper not built at {} (`cargo test --workspace` builds it; alone: cargo build -p treasury --example crash_at)",
        helper.display()
    );
    let journal = env.journal().await;

    for (i, state) in STATES.iter().enumerate() {
        let nonce_before = env.chain.module_nonce().await.unwrap();
        env.trigger(&names[i]).await;
        let out = Command::new(&helper)
            .arg(&env.config)
            .env("TREASURY_CRASH_AT", state)
            .env("TREASURY_COORDINATOR_PASSPHRASE", "coordinator-pass")
            .env("TREASURY_KEEPER_PASSWORD", "keeper-pass")
            .current_dir(env.dir.path())
            .output()
            .unwrap();
        assert!(
            !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("SIGKILL after entering"),
            "the helper must die at {state}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let policy = names[i].clone();
        let filter = IntentFilter { policy: Some(policy.clone()), ..Default::default() };
        let left = journal.list(&filter).await.unwrap();
        assert_eq!(left.len(), 1, "{state}: one intent journaled before the kill");
        assert_eq!(left[0].state.as_str(), *state, "killed right after entering {state}");

        env.run_once();
        let done = journal.list(&filter).await.unwrap();
        assert_eq!(done.len(), 1, "{state}: still one intent after the restart");
        assert_eq!(done[0].state, IntentState::Confirmed, "{state}: the restart finished it");
        let expected = U256::from(10 + i as u64) * U256::from(1_000_000u64);
        assert_eq!(env.balance("USDC", recipient(i)).await, expected, "{state}: paid exactly once");
        assert_eq!(
            env.chain.module_nonce().await.unwrap(),
            nonce_before + U256::from(1),
            "{state}: exactly one operation executed"
        );
        let op = journal.operation_of(done[0].id).await.unwrap().unwrap();
        assert_eq!(op.module_nonce, u64::try_from(nonce_before).unwrap(), "{state}: planned once");
    }
}
