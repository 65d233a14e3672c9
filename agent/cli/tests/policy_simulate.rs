//! `treasury policy simulate --module` replays a policy over past blocks of a real deployment and
//! sees the module's budgets, read through the chain crate's one-call snapshot.

use std::process::Command;

use alloy::providers::Provider;
use treasury_devnet::TestChain;

const EXE: &str = env!("CARGO_BIN_EXE_treasury");

/// The arguments naming the deployment's chain, Safe, module and Multicall3 and the blocks
/// `from..=to`, with JSON output.
fn replay_range(chain: &TestChain, from: u64, to: u64) -> Vec<String> {
    let d = &chain.deployment;
    [
        "--rpc",
        chain.anvil.url(),
        "--safe",
        &d.safe.to_string(),
        "--module",
        &d.module.to_string(),
        "--multicall3",
        &d.multicall3.to_string(),
        "--from",
        &from.to_string(),
        "--to",
        &to.to_string(),
        "--json",
    ]
    .map(str::to_owned)
    .to_vec()
}

#[tokio::test]
async fn simulate_reads_module_budgets_at_each_block() {
    let chain = TestChain::start().await.unwrap();
    let d = &chain.deployment;
    let dir = tempfile::tempdir().unwrap();
    let usdc = d.token("USDC").unwrap();
    let config = format!(
        r#"
[tokens.ETH]
address = "0x0000000000000000000000000000000000000000"
decimals = 18
feed = "{eth_feed}"

[tokens.USDC]
address = "{usdc}"
decimals = 6
feed = "{usdc_feed}"

[addresses]
alice = "0x00000000000000000000000000000000000000a1"
"#,
        eth_feed = d.eth_feed,
        usdc = usdc.address,
        usdc_feed = usdc.feed,
    );
    std::fs::write(dir.path().join("treasury.toml"), config).unwrap();
    std::fs::write(
        dir.path().join("spend.rhai"),
        r#"// Pay alice a tenth of what the module still lets tier 1 move today.
let room = budget_remaining("USDC");
if room > 0 { pay("alice", "USDC", room / 10); }
"#,
    )
    .unwrap();
    let latest = chain.keeper.get_block_number().await.unwrap();
    let output = Command::new(EXE)
        .args(["policy", "simulate"])
        .arg(dir.path().join("spend.rhai"))
        .arg("--config")
        .arg(dir.path().join("treasury.toml"))
        .args(replay_range(&chain, latest - 2, latest))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "simulate failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut lines: Vec<serde_json::Value> =
        stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    // One line per block, then the budget windows.
    let summary = lines.pop().unwrap();
    assert_eq!(lines.len(), 3, "{stdout}");
    // The demo budget is 50,000 USDC a day: a tenth is 5,000, once (the key repeats afterwards).
    assert!(stdout.contains("5000"), "the policy must have seen the module's budget: {stdout}");
    let window = &summary["budget"][0];
    assert_eq!(
        (&window["token"], &window["room"], &window["used"], &window["escalations"]),
        (&"USDC".into(), &"50000".into(), &"5000".into(), &0.into()),
        "{summary}"
    );
}

/// `treasury policy diff --module --json`: two versions over the same past blocks of a real
/// deployment, with the tier-1 budget each would use and what would have needed the root. The demo
/// budget is 50,000 USDC a day: paying 20,000 a block fits twice, 30,000 once.
#[tokio::test]
async fn diff_reports_each_versions_budget_use_and_escalations() {
    let chain = TestChain::start().await.unwrap();
    let d = &chain.deployment;
    let dir = tempfile::tempdir().unwrap();
    let usdc = d.token("USDC").unwrap();
    let config = format!(
        "[tokens.USDC]\naddress = \"{}\"\ndecimals = 6\nfeed = \"{}\"\n\n[addresses]\nalice = \"0x00000000000000000000000000000000000000a1\"\n",
        usdc.address, usdc.feed
    );
    std::fs::write(dir.path().join("treasury.toml"), config).unwrap();
    let script =
        |amount: u64| format!("pay(\"alice\", \"USDC\", {amount}, #{{ key: \"b\" + block_number() }});\n");
    std::fs::write(dir.path().join("old.rhai"), script(20_000)).unwrap();
    std::fs::write(dir.path().join("new.rhai"), script(30_000)).unwrap();
    // Three blocks after the deployment's last settings, all within one day.
    chain
        .keeper
        .raw_request::<_, ()>("anvil_mine".into(), (alloy::primitives::U256::from(3u64),))
        .await
        .unwrap();
    let latest = chain.keeper.get_block_number().await.unwrap();
    let output = Command::new(EXE)
        .args(["policy", "diff"])
        .arg(dir.path().join("old.rhai"))
        .arg(dir.path().join("new.rhai"))
        .args(["--policy", "stipend", "--config"])
        .arg(dir.path().join("treasury.toml"))
        .args(replay_range(&chain, latest - 2, latest))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "diff failed: {}\n{stdout}", String::from_utf8_lossy(&output.stderr));
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["snapshot_reads"], 3);
    let window = |v: &str| json[v].as_array().unwrap().clone();
    let (old, new) = (window("old_budget"), window("new_budget"));
    assert_eq!((old.len(), new.len()), (1, 1), "one daily window each: {json}");
    assert_eq!(old[0]["room"], "50000", "{json}");
    assert_eq!(
        (&old[0]["used"], &old[0]["escalations"], &old[0]["escalated"]),
        (&"40000".into(), &1.into(), &"20000".into())
    );
    assert_eq!(
        (&new[0]["used"], &new[0]["escalations"], &new[0]["escalated"]),
        (&"30000".into(), &2.into(), &"60000".into())
    );
    assert_eq!(
        json["totals"],
        serde_json::json!([{ "token": "USDC", "to": "alice", "old": "60000", "new": "90000" }])
    );
}
