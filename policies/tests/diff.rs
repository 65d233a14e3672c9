//! `policy diff`: two versions of a policy replayed over the same anvil blocks, and over fixtures.

use std::path::Path;
use std::sync::Arc;

use alloy::primitives::{U256, address};
use alloy::providers::{Provider, ProviderBuilder};
use alloy::rpc::types::TransactionRequest;
use rust_decimal::Decimal;
use treasury_devnet::Anvil;
use treasury_policies::diff::{Change, RangeDiff, diff_fixtures, diff_range};
use treasury_policies::simulate::Simulation;
use treasury_policies::{Book, PoliciesConfig, PolicyEngine, RpcSnapshotSource, Trigger};

const CONFIG: &str = r#"
    tokens.ETH = { address = "0x0000000000000000000000000000000000000000", decimals = 18 }
    addresses.alice = "0x00000000000000000000000000000000000a11ce"
"#;

/// Pays a tenth of the balance every block.
const OLD: &str = r#"pay("alice", "ETH", balance("ETH") / 10, #{ key: "b" + block_number() });"#;

/// Pays a fifth from 20 ETH up, a twentieth from 40 ETH up, nothing below 20 ETH.
const NEW: &str = r#"
let b = balance("ETH");
if b >= 40 { pay("alice", "ETH", b / 20, #{ key: "b" + block_number() }); }
else if b >= 20 { pay("alice", "ETH", b / 5, #{ key: "b" + block_number() }); }
"#;

fn eth(n: u64) -> U256 {
    U256::from(n) * U256::from(10u64).pow(U256::from(18u64))
}

fn setup() -> (PoliciesConfig, PolicyEngine, Arc<Book>) {
    let cfg: PoliciesConfig = toml::from_str(CONFIG).unwrap();
    let engine = PolicyEngine::new(cfg.limits);
    let book = Arc::new(Book::from_config(&cfg));
    (cfg, engine, book)
}

#[tokio::test]
async fn a_diff_over_anvil_blocks_shows_more_on_some_blocks_and_less_on_others_with_exact_totals() {
    let node = Anvil::start().unwrap();
    let safe = address!("0x00000000000000000000000000000000000005af");
    let provider = ProviderBuilder::new().connect(node.url()).await.unwrap();
    // Four blocks holding 10, 20, 30 and 40 ETH: a transfer of 10 ETH mined in each.
    let funder = provider.get_accounts().await.unwrap()[0];
    let mut blocks = Vec::new();
    for _ in 0..4 {
        let tx = TransactionRequest::default().from(funder).to(safe).value(eth(10));
        let receipt = provider.send_transaction(tx).await.unwrap().get_receipt().await.unwrap();
        blocks.push(receipt.block_number.unwrap());
    }
    assert_eq!(blocks[3] - blocks[0], 3, "one block each");

    let (cfg, engine, book) = setup();
    let compile = |src: &str| {
        engine
            .compile("stipend", Path::new("stipend.rhai"), src, treasury_policies::Period::Block, &book)
            .unwrap()
    };
    let (old, new) = (compile(OLD), compile(NEW));
    let source = RpcSnapshotSource::connect(node.url(), safe, cfg).await.unwrap();
    let trigger = Trigger::Manual;
    let sim = Simulation {
        policy: &new,
        trigger: &trigger,
        only_when_fired: false,
        from: blocks[0],
        to: blocks[3],
    };
    let diff =
        diff_range(&engine, &book, &source, RangeDiff { old: &old, new: &new, sim: &sim }).await.unwrap();

    assert_eq!(diff.evaluated, 4);
    assert_eq!(diff.snapshot_reads, 4, "one snapshot read per block, shared by both versions");
    let at: Vec<Option<u64>> = diff.points.iter().map(|p| p.block).collect();
    assert_eq!(at, blocks.iter().map(|b| Some(*b)).collect::<Vec<_>>(), "every block differs");
    let amount = |c: &Change| match c {
        Change::Removed { old } => (Some(old.action.to_string()), None),
        Change::Added { new } => (None, Some(new.action.to_string())),
        Change::Changed { old, new } => (Some(old.action.to_string()), Some(new.action.to_string())),
    };
    let alice = "alice (0x00000000000000000000000000000000000A11cE)";
    let pay = |n: &str| Some(format!("pay {n} ETH to {alice}"));
    let got: Vec<_> = diff.points.iter().map(|p| amount(&p.changes[0])).collect();
    assert_eq!(
        got,
        [(pay("1"), None), (pay("2"), pay("4")), (pay("3"), pay("6")), (pay("4"), pay("2"))],
        "{diff}"
    );
    assert!(matches!(diff.points[0].changes[0], Change::Removed { .. }));
    assert_eq!(diff.totals.len(), 1);
    let total = &diff.totals[0];
    assert_eq!((total.token.as_str(), total.to.as_str()), ("ETH", "alice"));
    assert_eq!((total.old, total.new), (Decimal::from(10), Decimal::from(12)), "1+2+3+4 against 0+4+6+2");
}

#[test]
fn a_diff_over_fixtures_needs_no_chain() {
    let (_, engine, book) = setup();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("treasury.toml"), CONFIG).unwrap();
    let mut fixtures = Vec::new();
    for (i, balance) in ["10", "30", "50"].iter().enumerate() {
        let path = dir.path().join(format!("f{i}.toml"));
        let text = format!(
            "config = \"treasury.toml\"\npolicy = \"stipend\"\nexpect = []\n[block]\nnumber = {}\ntime = \"2026-01-0{}T00:00:00Z\"\n[assets.ETH]\nbalance = \"{balance}\"\n",
            100 + i,
            i + 1
        );
        std::fs::write(&path, text).unwrap();
        fixtures.push(path);
    }
    let compile = |src: &str| {
        engine
            .compile("stipend", Path::new("stipend.rhai"), src, treasury_policies::Period::Block, &book)
            .unwrap()
    };
    let paths: Vec<&Path> = fixtures.iter().map(|p| p.as_path()).collect();
    let diff = diff_fixtures(&engine, &book, &compile(OLD), &compile(NEW), "manual", &paths).unwrap();
    assert_eq!(diff.evaluated, 3);
    assert_eq!(diff.points.len(), 3, "{diff}");
    // old 1 + 3 + 5 = 9; new 0 + 6 + 2.5 = 8.5
    assert_eq!((diff.totals[0].old, diff.totals[0].new), (Decimal::from(9), Decimal::new(85, 1)), "{diff}");
}
