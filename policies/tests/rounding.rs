//! The policy API's rounding rule for amounts: `pay` rounds to the token's own decimals, towards
//! zero, so a script can never pay more than the exact quotient it computed.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use rust_decimal::Decimal;
use treasury_policies::view::AssetView;
use treasury_policies::{Action, Book, Limits, PoliciesConfig, PolicyEngine, PolicyError, Run, SnapshotView};

const CONFIG: &str = r#"
    tokens.ETH = { address = "0x0000000000000000000000000000000000000000", decimals = 18 }
    tokens.USDC = { address = "0x0000000000000000000000000000000000000001", decimals = 6 }
    tokens.WBTC = { address = "0x0000000000000000000000000000000000000002", decimals = 8 }
    addresses.grantee = "0x00000000000000000000000000000000000000c3"
"#;

fn run(src: &str) -> Result<Vec<treasury_policies::Intent>, PolicyError> {
    let config: PoliciesConfig = toml::from_str(CONFIG).unwrap();
    let book = Arc::new(Book::from_config(&config));
    let asset = |balance: i64| AssetView { balance: balance.into(), price: None, budget_remaining: None };
    let assets = BTreeMap::from([
        ("ETH".to_string(), asset(100)),
        ("USDC".to_string(), asset(1_000_000)),
        ("WBTC".to_string(), asset(10)),
    ]);
    let view =
        Arc::new(SnapshotView { chain_id: 1, block_number: 1, timestamp: 1_735_603_200, assets, book });
    let engine = PolicyEngine::new(Limits::default());
    let policy =
        engine.compile("p", Path::new("p.rhai"), src, Default::default(), &Book::from_config(&config))?;
    engine.evaluate(&policy, &view, Run { trigger: "manual", history: &[] })
}

fn paid_amount(src: &str) -> Decimal {
    let intents = run(src).unwrap_or_else(|e| panic!("{e}"));
    match &intents[..] {
        [i] => match &i.action {
            Action::Pay { amount, .. } => *amount,
            other => panic!("not a payment: {other}"),
        },
        other => panic!("expected one intent, got {other:?}"),
    }
}

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

#[test]
fn pay_rounds_to_the_tokens_decimals_towards_zero() {
    // 30,000 / 31 = 967.741935483…: USDC has 6 decimals, so 967.741935 (not …936).
    assert_eq!(paid_amount(r#"pay("grantee", "USDC", dec(30000) / 31);"#), d("967.741935"));
    // 2 / 3 = 0.666…: towards zero at 6, 8 and 18 decimals, never up.
    assert_eq!(paid_amount(r#"pay("grantee", "USDC", dec(2) / 3);"#), d("0.666666"));
    assert_eq!(paid_amount(r#"pay("grantee", "WBTC", dec(2) / 3);"#), d("0.66666666"));
    assert_eq!(paid_amount(r#"pay("grantee", "ETH", dec(2) / 3);"#), d("0.666666666666666666"));
    // An amount already at the token's precision is paid as it is.
    assert_eq!(paid_amount(r#"pay("grantee", "USDC", dec("1071.428571"));"#), d("1071.428571"));
}

#[test]
fn an_amount_that_rounds_to_zero_is_refused_with_the_rule_named() {
    let err = run(r#"pay("grantee", "USDC", dec("0.0000009"));"#).unwrap_err().to_string();
    assert!(err.contains("rounds to 0") && err.contains("6 decimals"), "{err}");
    let err = run(r#"pay("grantee", "USDC", dec("-1"));"#).unwrap_err().to_string();
    assert!(err.contains("must be positive"), "{err}");
}
