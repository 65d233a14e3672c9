//! The keeper's key in a PKCS#11 token (SoftHSM2): `treasury run` signs its transactions in the
//! token, and a wrong PIN is named.

use crate::support::root::RootEnv;
use crate::support::{AgentEnv, PolicySpec, numbered};
use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use alloy::rpc::types::TransactionRequest;
use treasury_agent::journal::{IntentFilter, IntentState};

const PAY: PolicySpec<'static> =
    PolicySpec { name: "pay", script: r#"pay("r5", "USDC", 12);"#, trigger: r#"{ kind = "manual" }"# };

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keeper_signs_in_the_hsm() {
    let hsm = RootEnv::init();
    let out = hsm.run(&["root", "init", "--token", "keeper-token", "--key", "keeper", "--json"]);
    let keeper: Address = serde_json::from_str::<serde_json::Value>(&out).unwrap()["address"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let env = AgentEnv::start(&[PAY]).await.unwrap();
    let fund =
        TransactionRequest::default().with_to(keeper).with_value(U256::from(10u64).pow(U256::from(18)));
    env.chain.keeper.send_transaction(fund).await.unwrap().get_receipt().await.unwrap();
    env.edit_config(
        "keystore = \"keeper.json\"\npassword_env = \"TREASURY_KEEPER_PASSWORD\"",
        "pkcs11_label = \"keeper\"\npkcs11_token = \"keeper-token\"",
    );
    let hsm_env = hsm.env("TREASURY_KEEPER_PIN");

    // A wrong PIN stops the agent with the key named, before anything is signed.
    let mut wrong = hsm_env.clone();
    wrong.last_mut().unwrap().1 = "000000".into();
    let config = env.config.display().to_string();
    let out = env.command(&["run", "--once", "--config", &config]).envs(wrong).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("keeper.pkcs11_label") && err.contains("PIN"), "{err}");

    env.run_once_with(&hsm_env);
    env.trigger("pay").await;
    env.run_once_with(&hsm_env);
    let journal = env.journal().await;
    let intents = journal.list(&IntentFilter::default()).await.unwrap();
    assert_eq!(intents[0].state, IntentState::Confirmed);
    assert_eq!(env.balance("USDC", numbered(5)).await, U256::from(12_000_000u64));
    let op = journal.operation_of(intents[0].id).await.unwrap().unwrap();
    let tx = &journal.transactions(&op.operation_id).await.unwrap()[0];
    let receipt =
        env.chain.keeper.get_transaction_receipt(tx.tx.tx_hash.parse().unwrap()).await.unwrap().unwrap();
    assert_eq!(receipt.from, keeper, "sent from the key in the token");
}
