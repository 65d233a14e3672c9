//! `treasury config check --online` (issue 17): it said `ok` with no Multicall3 at the configured
//! address (then every round of `treasury run` failed), and never looked at the module being
//! enabled on the Safe and serving it, the group key, the root, or the keeper's gas money. Each
//! fact is broken on anvil in turn and must be reported under its key, with exit code 78.

use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use alloy::sol_types::SolCall;
use treasury_chain::AdminAction;
use treasury_chain::safe::{SafeTx, exec_as_owners};
use treasury_devnet::world::configure_as_safe;

use crate::support::AgentEnv;
use crate::support::root::RootEnv;

alloy::sol! {
    function disableModule(address prevModule, address module) external;
    function enableModule(address module) external;
}

/// The Safe's module list sentinel (the module is the only one, so it follows the sentinel).
const SENTINEL: Address = Address::new([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);

/// `config check --online`: whether it passed, and what it printed.
fn check(env: &AgentEnv) -> (Option<i32>, String) {
    let out = env.treasury(&["config", "check", "--online"]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code(), text)
}

/// Asserts the check fails with exit code 78 and a problem at `key` saying `what`.
fn assert_problem(env: &AgentEnv, key: &str, what: &str) {
    let (code, text) = check(env);
    assert_eq!(code, Some(78), "a configuration problem exits 78: {text}");
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} problem: {text}"));
    assert!(line.contains(what), "{key}: expected `{what}`: {text}");
}

async fn safe_call(env: &AgentEnv, data: Vec<u8>) {
    let d = &env.chain.deployment;
    let tx = SafeTx { to: d.safe, value: U256::ZERO, data: data.into(), operation: 0 };
    exec_as_owners(&env.chain.keeper, d.safe, env.chain.signing_owners(), &tx).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_check_online_checks_every_fact_the_agent_relies_on() {
    let root = RootEnv::init();
    let mut env = AgentEnv::start_with_root(&[], Some(root.address)).await.unwrap();
    let d = env.chain.deployment.clone();
    let (root_config, agent_token, _) = root.config(d.chain_id, d.module, &[], &[]);
    let service = root.serve(&root_config, "127.0.0.1:0");
    env.use_root_service(&service.url, &agent_token);
    let (code, text) = check(&env);
    assert_eq!(code, Some(0), "a deployment as configured passes: {text}");
    assert!(text.contains(": ok"), "{text}");

    // No Multicall3 at the configured address.
    let nowhere = Address::repeat_byte(0x42);
    env.edit_config(&format!("multicall3 = \"{}\"", d.multicall3), &format!("multicall3 = \"{nowhere}\""));
    assert_problem(&env, "chain.multicall3", "no contract");
    env.edit_config(&format!("multicall3 = \"{nowhere}\""), &format!("multicall3 = \"{}\"", d.multicall3));

    // The module not enabled on the Safe.
    safe_call(&env, disableModuleCall { prevModule: SENTINEL, module: d.module }.abi_encode()).await;
    assert_problem(&env, "safe.module", "is not enabled on the Safe");
    safe_call(&env, enableModuleCall { module: d.module }.abi_encode()).await;
    assert_eq!(check(&env).0, Some(0), "enabled again");

    // The module serving another Safe (here: the config names the router as the Safe).
    env.edit_config(&format!("address = \"{}\"", d.safe), &format!("address = \"{}\"", d.router));
    assert_problem(&env, "safe.module", &format!("the module serves the Safe {}", d.safe));
    env.edit_config(&format!("address = \"{}\"", d.router), &format!("address = \"{}\"", d.safe));

    // The module's group key is not the quorum file's.
    let quorum =
        treasury_signer::quorum::quorum_file::QuorumFile::load(&env.dir.path().join("quorum.toml")).unwrap();
    let other = env.chain.quorum.group_key();
    let owners = env.chain.signing_owners().to_vec();
    configure_as_safe(
        &env.chain.keeper,
        &d,
        &owners,
        &AdminAction::SetGroupKey { x: other.x, parity: other.parity },
    )
    .await
    .unwrap();
    assert_problem(&env, "signing.quorum_file", "is not the module's");
    let ours = AdminAction::SetGroupKey { x: quorum.group_key_x, parity: quorum.group_key_parity };
    configure_as_safe(&env.chain.keeper, &d, &owners, &ours).await.unwrap();

    // The module's root is not the key the root service signs with.
    let stranger = Address::repeat_byte(0x77);
    configure_as_safe(&env.chain.keeper, &d, &owners, &AdminAction::SetRoot { root: stranger })
        .await
        .unwrap();
    assert_problem(&env, "signing.root_url", &format!("the module's root is {stranger}"));
    configure_as_safe(&env.chain.keeper, &d, &owners, &AdminAction::SetRoot { root: root.address })
        .await
        .unwrap();

    // The keeper without gas money.
    let _: serde_json::Value =
        env.chain.keeper.raw_request("anvil_setBalance".into(), (env.keeper, "0x0")).await.unwrap();
    assert_problem(&env, "keeper", "send it gas money");
    let _: serde_json::Value = env
        .chain
        .keeper
        .raw_request("anvil_setBalance".into(), (env.keeper, "0x56bc75e2d63100000"))
        .await
        .unwrap();
    let (code, text) = check(&env);
    assert_eq!(code, Some(0), "every fact restored: {text}");
    drop(service);
}
