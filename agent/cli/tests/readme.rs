//! The README's "Running against a real chain", run as written: every `sh` block of its steps,
//! extracted from README.md (so the text cannot drift from what works), in one bash shell in a
//! fresh folder, against anvil (an existing Safe 1.5.0 with USDC), SoftHSM2 and signer node
//! processes, to a confirmed payment. The test stands in for the Safe's owners: when the README
//! has written `enable-module.json`, it executes that Transaction Builder batch as Safe{Wallet}
//! does, signed by the owners.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alloy::primitives::{Address, U256};
use treasury_chain::contracts::{IERC20, ISafe};
use treasury_chain::safe::exec_as_owners;
use treasury_chain::txbuilder::BatchFile;
use treasury_devnet::softhsm::SoftHsm;
use treasury_devnet::{TestChain, dev_key, write_keystore};

const README: &str = include_str!("../../../README.md");
const SECTION: &str = "## Running against a real chain";
const ALICE: Address = Address::new([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xa1]);
/// The whole walk-through normally takes well under a minute; past this something hangs.
const LIMIT: Duration = Duration::from_secs(300);

/// The `sh` blocks of the section, from its heading to the next heading, each without the
/// indentation of its fence.
fn walkthrough_blocks(readme: &str) -> Vec<String> {
    let start = readme.find(SECTION).expect("README has the section");
    let body = &readme[start + SECTION.len()..];
    let end = body.lines().position(|l| l.starts_with('#')).expect("a heading follows the section");
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for line in body.lines().take(end) {
        let trimmed = line.trim_start();
        match &mut current {
            None if trimmed == "```sh" => current = Some((line.len() - trimmed.len(), String::new())),
            Some(_) if trimmed == "```" => blocks.push(current.take().unwrap().1),
            Some((indent, text)) => {
                text.push_str(line.get(*indent..).unwrap_or(line.trim_start()));
                text.push('\n');
            }
            None => {}
        }
    }
    blocks
}

/// The script: the blocks in order, each followed by a handshake with the test (`.step-N` written,
/// then wait for `.go-N`), background jobs stopped when the shell exits.
fn script(blocks: &[String]) -> String {
    let mut s = String::from("set -euo pipefail\ntrap 'kill $(jobs -p) 2> /dev/null || true; wait' EXIT\n");
    for (i, b) in blocks.iter().enumerate() {
        s.push_str(&format!("echo '--- README block {}' >&2\n{b}", i + 1));
        s.push_str(&format!("touch .step-{i}\nwhile [ ! -e .go-{i} ]; do sleep 0.1; done\n"));
    }
    s
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// The shell, stopped (SIGTERM: its trap stops the nodes and the agent) when dropped.
struct Shell(Child);

impl Drop for Shell {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = treasury_devnet::procs::send_sigterm(self.0.id());
            let _ = self.0.wait();
        }
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_walkthrough_runs_as_written_to_a_confirmed_payment() {
    let blocks = walkthrough_blocks(README);
    assert!(blocks.len() >= 6, "the walk-through's sh blocks: {blocks:?}");
    let chain = TestChain::start().await.unwrap();
    let d = &chain.deployment;
    let secrets = tempfile::tempdir().unwrap();
    let hsm = SoftHsm::create(secrets.path()).unwrap();
    let deployer = write_keystore(secrets.path(), "deployer.json", &dev_key(7), "deployer password").unwrap();
    let walk = tempfile::tempdir().unwrap();
    let script_path = secrets.path().join("walkthrough.sh");
    std::fs::write(&script_path, script(&blocks)).unwrap();

    let exe = PathBuf::from(env!("CARGO_BIN_EXE_treasury"));
    let cast = treasury_chain::tools::foundry_binary("cast");
    let path = format!(
        "{}:{}:{}",
        exe.parent().unwrap().display(),
        cast.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let node_addrs = [free_addr(), free_addr(), free_addr()].join(" ");
    let log = secrets.path().join("walkthrough.log");
    let mut cmd = Command::new("bash");
    cmd.arg(&script_path)
        .current_dir(walk.path())
        .env("PATH", path)
        .env_remove("TREASURY_CONFIG")
        .env_remove("RUST_LOG")
        .envs(hsm.env(treasury_devnet::softhsm::USER_PIN, treasury_devnet::softhsm::SO_PIN))
        .env("RPC", chain.anvil.url())
        .env("CHAIN_ID", d.chain_id.to_string())
        .env("SAFE", d.safe.to_string())
        .env("USDC", d.token("USDC").unwrap().address.to_string())
        .env("MULTISEND_CALL_ONLY", d.multisend_call_only.to_string())
        .env("MULTICALL3", d.multicall3.to_string())
        .env("DEPLOYER_KEYSTORE", &deployer)
        .env("TREASURY_DEPLOYER_PASSWORD", "deployer password")
        .env("NODE_ADDRS", &node_addrs)
        .env("API_ADDR", free_addr())
        .env("TREASURY_COORDINATOR_PASSPHRASE", "coordinator passphrase 7")
        .env("TREASURY_SIGNER_PASSPHRASE", "signer node passphrase 7")
        .env("TREASURY_KEEPER_PASSWORD", "keeper keystore password")
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
        .stderr(Stdio::from(std::fs::File::options().append(true).open(&log).unwrap()));
    let mut shell = Shell(cmd.spawn().unwrap());

    let started = Instant::now();
    let mut enabled = false;
    let mut step = 0;
    let status = loop {
        if let Some(status) = shell.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < LIMIT,
            "the walk-through did not finish; its output:\n{}\nagent log:\n{}",
            tail(&log),
            tail(&walk.path().join("agent.log"))
        );
        if walk.path().join(format!(".step-{step}")).exists() {
            let batch = walk.path().join("enable-module.json");
            if batch.exists() && !enabled {
                execute_as_owners(&chain, &batch).await;
                enabled = true;
            }
            std::fs::write(walk.path().join(format!(".go-{step}")), "").unwrap();
            step += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        status.success(),
        "the walk-through failed; its output:\n{}\nagent log:\n{}",
        tail(&log),
        tail(&walk.path().join("agent.log"))
    );
    assert!(enabled, "the README never wrote enable-module.json for the Safe's owners");
    assert_eq!(step, blocks.len(), "every block ran");

    let config: toml::Value =
        toml::from_str(&std::fs::read_to_string(walk.path().join("treasury.toml")).unwrap()).unwrap();
    let module: Address = config["safe"]["module"].as_str().unwrap().parse().unwrap();
    assert_ne!(module, d.module, "the README deployed a module of its own");
    assert!(ISafe::new(d.safe, &chain.keeper).isModuleEnabled(module).call().await.unwrap());
    let usdc = IERC20::new(d.token("USDC").unwrap().address, &chain.keeper);
    assert_eq!(
        usdc.balanceOf(ALICE).call().await.unwrap(),
        U256::from(250_000_000u64),
        "alice was paid 250 USDC"
    );
}

/// What the Safe's owners do with the batch in Safe{Wallet}: import it (its checksum checked),
/// and execute it, signed by the threshold of owners.
async fn execute_as_owners(chain: &TestChain, batch: &Path) {
    let file: BatchFile = serde_json::from_str(&std::fs::read_to_string(batch).unwrap()).unwrap();
    assert!(file.checksum_ok(), "the Transaction Builder would warn that the batch was changed");
    let tx = file.safe_tx(chain.deployment.multisend_call_only).unwrap();
    let receipt =
        exec_as_owners(&chain.keeper, chain.deployment.safe, chain.signing_owners(), &tx).await.unwrap();
    assert!(receipt.status(), "the owners' Safe transaction reverted");
}

#[test]
fn the_walkthrough_blocks_are_found_in_order() {
    let blocks = walkthrough_blocks(README);
    let joined = blocks.join("\n");
    let order = [
        "treasury root init",
        "treasury module deploy",
        "treasury dkg",
        "treasury module batch",
        "treasury run",
    ];
    let positions: Vec<usize> =
        order.iter().map(|c| joined.find(c).unwrap_or_else(|| panic!("no `{c}`"))).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{order:?} out of order");
}
