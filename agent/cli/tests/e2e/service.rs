//! `treasury run` as a service (issue 17): SIGTERM stops it cleanly, and `run --once` (as a
//! cron job or a systemd timer runs it) fails when its round failed.

use std::io::{BufRead, BufReader};

use alloy::primitives::Address;
use treasury_agent::journal::{IntentFilter, IntentState};

use crate::support::{AgentEnv, PolicySpec, get_json};

const PAY: PolicySpec<'static> =
    PolicySpec { name: "pay", script: r#"pay("r1", "USDC", 1);"#, trigger: r#"{ kind = "manual" }"# };

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_treasury_run_cleanly_after_its_current_step() {
    let env = AgentEnv::start(&[PAY]).await.unwrap();
    env.run_once();
    env.trigger("pay").await;
    env.serve_api();
    // At the default log level (no RUST_LOG, no -v), as a service runs.
    let config = env.config.display().to_string();
    let mut agent = env
        .command(&["run", "--config", &config])
        .env_remove("RUST_LOG")
        .env("TEST_API_TOKEN", "service-test-token")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(agent.stdout.take().unwrap()).lines();
    let api = stdout.next().unwrap().unwrap().trim_start_matches("api listening on ").to_string();
    let mut stderr = BufReader::new(agent.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    // The payment is confirmed (logged at info), then systemd's stop arrives.
    for line in stderr.by_ref() {
        let line = line.unwrap();
        seen.push(line.clone());
        if line.contains("confirmed") {
            break;
        }
    }
    assert!(seen.iter().any(|l| l.contains("signed by the quorum")), "signing is logged: {seen:#?}");
    assert!(seen.iter().any(|l| l.contains("submitted")), "submission is logged: {seen:#?}");
    // Every configured node is listed (probed), not only the two that signed.
    let status = get_json(&format!("{api}/v1/status"), "service-test-token").await;
    let signers = status["signers"].as_object().expect("signers in the status");
    assert_eq!(signers.len(), env.nodes.len(), "{status}");
    assert!(signers.values().all(|up| up == &serde_json::Value::Bool(true)), "{status}");
    treasury_devnet::procs::send_sigterm(agent.id()).unwrap();
    let rest: Vec<String> = stderr.map(Result::unwrap).collect();
    let status = agent.wait().unwrap();
    assert_eq!(status.code(), Some(0), "SIGTERM ends the agent cleanly: {status:?}\n{rest:#?}");
    assert!(rest.iter().any(|l| l.contains("SIGTERM")), "{rest:#?}");
    let journal = env.journal().await;
    let intents = journal.list(&IntentFilter::default()).await.unwrap();
    assert_eq!(intents[0].state, IntentState::Confirmed);
}

/// Attack on the operator's trust (issue 17): with no Multicall3 at the configured address every
/// round failed with an ABI decoding error, yet `run --once` exited 0, so a cron job never told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_once_fails_when_its_round_failed() {
    let env = AgentEnv::start(&[PAY]).await.unwrap();
    env.run_once();
    let multicall3 = env.chain.deployment.multicall3;
    env.edit_config(
        &format!("multicall3 = \"{multicall3}\""),
        &format!("multicall3 = \"{}\"", Address::repeat_byte(0x42)),
    );
    env.trigger("pay").await;
    let out = env.treasury(&["run", "--once"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a failed round must fail the run: {err}");
    assert_eq!(out.status.code(), Some(1), "a runtime failure exits 1: {err}");
}
