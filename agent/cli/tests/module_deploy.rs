//! `treasury module deploy|batch` onto an existing Safe (real Safe 1.5.0 contracts on anvil): the
//! module is deployed with the config's `[module]` settings and a placeholder group key, the Safe's
//! Transaction Builder batch is executed as Safe{Wallet} executes one (its calls encoded from each
//! `contractMethod`, packed into MultiSendCallOnly and delegatecalled, signed by the Safe's
//! owners), and then a FROST-signed payment goes through the new module. `treasury root admin
//! --safe-batch` writes a change for the owners the same way.
use std::path::Path;
use std::process::Command;

use alloy::primitives::{Address, U256};
use serde_json::Value;
use treasury_chain::contracts::{IERC20, ISafe, TreasuryModule, exec_calls};
use treasury_chain::safe::exec_as_owners;
use treasury_chain::txbuilder::BatchFile;
use treasury_chain::{TIER_QUORUM, operation_digest};
use treasury_devnet::ops::erc20_transfer;
use treasury_devnet::{TestChain, dev_key, write_keystore};

const PASSWORD: &str = "deployer keystore password";
const RECIPIENT: Address = Address::repeat_byte(0x77);

fn treasury(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_treasury"));
    c.args(args).env("TREASURY_DEPLOYER_PASSWORD", PASSWORD).env_remove("TREASURY_CONFIG");
    c
}

/// Runs `treasury ARGS`, panicking with its stderr unless it succeeds; its stdout as JSON.
fn run_json(args: &[&str]) -> Value {
    let out = treasury(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "treasury {args:?} failed: {stderr}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("treasury {args:?}: not JSON ({e})"))
}

/// The agent's config as an operator has it before the module exists (no `safe.module`), with the
/// `[module]` settings: root, timelock, MultiSendCallOnly and a USDC budget.
fn write_config(dir: &Path, chain: &TestChain) -> std::path::PathBuf {
    let d = &chain.deployment;
    let usdc = d.token("USDC").unwrap();
    let text = format!(
        r#"[chain]
rpc_http = "{rpc}"
chain_id = {chain_id}

[safe]
address = "{safe}"

[dex]
router = "{router}"

[policies.tokens.USDC]
address = "{usdc}"
decimals = 6

[module]
root = "{root}"
timelock = "48h"
multisend_call_only = "{multisend}"

[module.budgets.USDC]
limit = "50000"
period = "1day"
"#,
        rpc = chain.anvil.url(),
        chain_id = d.chain_id,
        safe = d.safe,
        router = d.router,
        usdc = usdc.address,
        root = chain.root.address(),
        multisend = d.multisend_call_only,
    );
    let path = dir.join("treasury.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Executes a batch file as Safe{Wallet} does, signed by the Safe's owners.
async fn execute_batch(chain: &TestChain, path: &Path) -> BatchFile {
    let file: BatchFile = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(file.checksum_ok(), "the Transaction Builder would warn that {} was modified", path.display());
    assert_eq!(file.version, "1.0");
    assert_eq!(file.chain_id, chain.deployment.chain_id.to_string());
    let tx = file.safe_tx(chain.deployment.multisend_call_only).unwrap();
    let receipt =
        exec_as_owners(&chain.keeper, chain.deployment.safe, chain.signing_owners(), &tx).await.unwrap();
    assert!(receipt.status());
    let failed = receipt.inner.logs().iter().any(|l| l.topics().first() == Some(&ISafe_exec_failure()));
    assert!(!failed, "the Safe transaction of {} failed inside", path.display());
    file
}

#[allow(non_snake_case)]
fn ISafe_exec_failure() -> alloy::primitives::B256 {
    alloy::primitives::keccak256("ExecutionFailure(bytes32,uint256)")
}

/// Signs a 1,000 USDC payment with the test quorum and executes it through `module`.
async fn pay_through(chain: &TestChain, module: Address) -> anyhow::Result<()> {
    let m = TreasuryModule::new(module, &chain.keeper);
    let nonce: u64 = m.nonce().call().await?.to();
    let usdc = chain.deployment.token("USDC").unwrap().address;
    let op = erc20_transfer(usdc, RECIPIENT, U256::from(1_000_000_000u64), nonce, u64::MAX / 2);
    let digest = operation_digest(&op, TIER_QUORUM, chain.deployment.chain_id, module);
    let sig = chain.quorum.sign(digest);
    let exec = m.exec(exec_calls(&op), op.nonce, op.deadline, sig, Default::default());
    // Simulated first: a refused exec is never sent (the provider's cached nonce stays in step).
    exec.call().await?;
    let receipt = exec.send().await?.get_receipt().await?;
    anyhow::ensure!(receipt.status(), "exec reverted");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_deployed_on_an_existing_safe_is_enabled_by_the_owners_batch_and_pays() {
    let chain = TestChain::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &chain);
    let keystore = write_keystore(dir.path(), "deployer.json", &dev_key(7), PASSWORD).unwrap();
    let config_s = config.to_str().unwrap();

    let deployed = run_json(&[
        "module",
        "deploy",
        "--config",
        config_s,
        "--from-keystore",
        keystore.to_str().unwrap(),
        "--json",
    ]);
    let module: Address = deployed["module"].as_str().unwrap().parse().unwrap();
    assert_eq!(deployed["group_key"]["placeholder"], true, "{deployed}");
    let m = TreasuryModule::new(module, &chain.keeper);
    assert_eq!(m.safe().call().await.unwrap(), chain.deployment.safe);
    assert_eq!(m.root().call().await.unwrap(), chain.root.address());
    let safe = ISafe::new(chain.deployment.safe, &chain.keeper);
    assert!(!safe.isModuleEnabled(module).call().await.unwrap());
    assert!(
        pay_through(&chain, module).await.is_err(),
        "a module not enabled, under a placeholder key, pays nothing"
    );

    let gk = chain.quorum.group_key();
    let batch_path = dir.path().join("enable-module.json");
    let x = format!("{:#x}", gk.x);
    let parity = gk.parity.to_string();
    run_json(&[
        "module",
        "batch",
        "--config",
        config_s,
        "--module-address",
        &module.to_string(),
        "--x",
        &x,
        "--parity",
        &parity,
        "--unattested",
        "--out",
        batch_path.to_str().unwrap(),
        "--json",
    ]);
    let raw: Value = serde_json::from_str(&std::fs::read_to_string(&batch_path).unwrap()).unwrap();
    for field in ["version", "chainId", "createdAt", "meta", "transactions"] {
        assert!(raw.get(field).is_some(), "the batch file lacks {field}: {raw}");
    }
    assert!(raw["meta"]["checksum"].as_str().unwrap().starts_with("0x"));
    let file = execute_batch(&chain, &batch_path).await;
    let methods: Vec<&str> =
        file.transactions.iter().map(|t| t.contract_method.as_ref().unwrap().name.as_str()).collect();
    assert_eq!(methods.last(), Some(&"enableModule"));
    assert!(
        file.transactions.len() > 2,
        "group key, root, budget and allow-list, then enableModule: {methods:?}"
    );

    assert!(safe.isModuleEnabled(module).call().await.unwrap());
    assert_eq!(m.groupKey().call().await.unwrap().x, gk.x);
    let usdc = IERC20::new(chain.deployment.token("USDC").unwrap().address, &chain.keeper);
    let before = usdc.balanceOf(RECIPIENT).call().await.unwrap();
    pay_through(&chain, module).await.expect("a FROST-signed payment through the new module");
    assert_eq!(usdc.balanceOf(RECIPIENT).call().await.unwrap() - before, U256::from(1_000_000_000u64));

    // A root admin action as the owners' batch: pausing at once, without the HSM.
    let pause = dir.path().join("pause.json");
    let url = chain.anvil.url().to_string();
    let written = run_json(&[
        "root",
        "admin",
        "--rpc",
        &url,
        "--module-address",
        &module.to_string(),
        "--safe-batch",
        pause.to_str().unwrap(),
        "--json",
        "pause",
    ]);
    assert_eq!(written["safe"].as_str().unwrap().parse::<Address>().unwrap(), chain.deployment.safe);
    execute_batch(&chain, &pause).await;
    assert!(m.paused().call().await.unwrap());
    assert!(pay_through(&chain, module).await.is_err(), "a paused module pays nothing");
}
