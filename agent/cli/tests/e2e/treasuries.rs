//! Several treasuries in one `treasury run` (`[[treasury]]`): two Safes on two anvil chains, each
//! with its own quorum, keeper and journal, each paying its own trigger's payments once.

use std::path::{Path, PathBuf};

use alloy::primitives::U256;
use treasury_agent::journal::{IntentFilter, IntentState};

use crate::support::{AgentEnv, PolicySpec, alice, bob};

const PAY_ALICE: PolicySpec<'static> =
    PolicySpec { name: "grants", script: r#"pay("alice", "USDC", 100);"#, trigger: r#"{ kind = "manual" }"# };

const PAY_BOB: PolicySpec<'static> = PolicySpec {
    name: "ops",
    script: r#"pay("bob", "USDC", 7); pay("alice", "USDC", 3);"#,
    trigger: r#"{ kind = "manual" }"#,
};

/// `env`'s single-treasury config as one `[[treasury]]` named `name`, its paths made absolute.
fn as_treasury(env: &AgentEnv, name: &str) -> String {
    let dir = env.dir.path().display().to_string();
    let text = std::fs::read_to_string(&env.config)
        .unwrap()
        .replace("quorum_file = \"", &format!("quorum_file = \"{dir}/"))
        .replace("keystore = \"", &format!("keystore = \"{dir}/"))
        .replace("\nfile = \"", &format!("\nfile = \"{dir}/"));
    let body: String = text
        .lines()
        .map(|line| match (line.strip_prefix("[["), line.strip_prefix('[')) {
            (Some(rest), _) => format!("[[treasury.{rest}\n"),
            (None, Some(rest)) => format!("[treasury.{rest}\n"),
            _ => format!("{line}\n"),
        })
        .collect();
    format!("[[treasury]]\nname = \"{name}\"\n{body}\n")
}

fn write_many(dir: &Path, treasuries: &[(&str, &AgentEnv)]) -> PathBuf {
    let text: String = treasuries.iter().map(|(name, env)| as_treasury(env, name)).collect();
    let path = dir.join("treasuries.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn usdc(whole: u64) -> U256 {
    U256::from(whole * 1_000_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_process_runs_two_treasuries_on_two_chains_each_paying_once() {
    let grants = AgentEnv::start(&[PAY_ALICE]).await.unwrap();
    let ops = AgentEnv::start_on_chain(&[PAY_BOB], &["--chain-id", "10"]).await.unwrap();
    assert_eq!((grants.chain.deployment.chain_id, ops.chain.deployment.chain_id), (31337, 10));
    let dir = tempfile::tempdir().unwrap();
    let config = write_many(dir.path(), &[("grants", &grants), ("ops", &ops)]);
    let config = config.display().to_string();
    let run_once = || {
        let out = grants.command(&["run", "--once", "--config", &config]).output().unwrap();
        assert!(
            out.status.success(),
            "treasury run --once failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    // The file checks against both chains; an endpoint of another chain among grants' is named.
    let check =
        |path: &str| grants.command(&["config", "check", "--online", "--config", path]).output().unwrap();
    let out = check(&config);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let text = std::fs::read_to_string(&config).unwrap();
    let (a, b) = (grants.chain.anvil.url(), ops.chain.anvil.url());
    let mixed = text.replacen(&format!("rpc_http = \"{a}\""), &format!("rpc_http = [\"{a}\", \"{b}\"]"), 1);
    let mixed_path = dir.path().join("mixed.toml");
    std::fs::write(&mixed_path, mixed).unwrap();
    let out = check(&mixed_path.display().to_string());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(78), "{stdout}");
    assert!(
        stdout.contains("treasury[0].chain.rpc_http[1]: the endpoint reports chain id 10, not 31337"),
        "{stdout}"
    );

    // First run: each lane sets its cursor; nothing due.
    let first = run_once();
    assert!(first.contains("grants: running") && first.contains("ops: running"), "{first}");
    grants.trigger("grants").await;
    ops.trigger("ops").await;
    run_once();

    // Each Safe paid its own payments, on its own chain, once.
    assert_eq!(grants.balance("USDC", alice()).await, usdc(100));
    assert_eq!(ops.balance("USDC", bob()).await, usdc(7));
    assert_eq!(ops.balance("USDC", alice()).await, usdc(3));
    for (env, count) in [(&grants, 1), (&ops, 2)] {
        let intents = env.journal().await.list(&IntentFilter::default()).await.unwrap();
        assert_eq!(intents.len(), count, "{intents:?}");
        assert!(intents.iter().all(|i| i.state == IntentState::Confirmed), "{intents:?}");
    }

    // Again: the same keys, nothing paid twice.
    grants.trigger("grants").await;
    ops.trigger("ops").await;
    run_once();
    assert_eq!(grants.balance("USDC", alice()).await, usdc(100));
    assert_eq!(ops.balance("USDC", alice()).await, usdc(3));
}
