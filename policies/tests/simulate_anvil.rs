//! `simulate` against a real node: anvil on a loopback port, read over JSON-RPC.

use std::path::Path;
use std::sync::Arc;

use alloy::primitives::{U256, address};
use alloy::providers::{Provider, ProviderBuilder};
use treasury_devnet::Anvil;
use treasury_policies::simulate::{Simulation, simulate};
use treasury_policies::{Book, PoliciesConfig, PolicyEngine, RpcSnapshotSource, Trigger};

#[tokio::test]
async fn simulate_reads_each_block_and_drops_repeated_keys() {
    let node = Anvil::start().unwrap();
    let safe = address!("0x00000000000000000000000000000000000005af");
    let provider = ProviderBuilder::new().connect(node.url()).await.unwrap();
    let twelve_eth = U256::from(12u64) * U256::from(10u64).pow(U256::from(18u64));
    provider.raw_request::<_, ()>("anvil_setBalance".into(), (safe, twelve_eth)).await.unwrap();
    provider.raw_request::<_, ()>("anvil_mine".into(), (U256::from(3u64),)).await.unwrap();
    let last = provider.get_block_number().await.unwrap();

    let cfg: PoliciesConfig = toml::from_str(
        r#"
        tokens.ETH = { address = "0x0000000000000000000000000000000000000000", decimals = 18 }
        addresses.keeper = "0x00000000000000000000000000000000000000d4"
        "#,
    )
    .unwrap();
    let engine = PolicyEngine::new(cfg.limits);
    let book = Arc::new(Book::from_config(&cfg));
    let src = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/gas_topup.rhai"))
        .unwrap();
    let policy = engine
        .compile("gas_topup", Path::new("gas_topup.rhai"), &src, treasury_policies::Period::Week, &book)
        .unwrap();
    let source = RpcSnapshotSource::connect(node.url(), safe, cfg).await.unwrap();
    let trigger = Trigger::Manual;
    let sim =
        Simulation { policy: &policy, trigger: &trigger, only_when_fired: false, from: last - 2, to: last };
    let blocks = simulate(&engine, &book, &source, sim).await.unwrap();

    assert_eq!(blocks.len(), 3);
    assert!(blocks.iter().all(|b| b.error.is_none()), "{blocks:?}");
    assert_eq!(blocks[0].intents.len(), 1, "first block tops the keeper up");
    assert_eq!(
        blocks[0].intents[0].action.to_string(),
        format!("pay 0.5 ETH to keeper ({})", address!("0x00000000000000000000000000000000000000d4"))
    );
    // The payment joins the history, so later blocks of the same week pay nothing more.
    assert!(blocks[1..].iter().all(|b| b.intents.is_empty()), "{blocks:?}");
}
