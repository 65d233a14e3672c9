//! Planned intents executed through the real module, Safe and Uniswap V2 on anvil.

use alloy::eips::BlockNumberOrTag;
use alloy::primitives::{Address, U256};
use rust_decimal::Decimal;
use treasury_chain::Operation;
use treasury_chain::snapshot::read_snapshot;
use treasury_devnet::TestChain;
use treasury_policies::plan::{Venue, plan_batch};
use treasury_policies::{Action, Intent};

fn intent(key: &str, action: Action) -> Intent {
    Intent { policy: "test".into(), key: key.into(), memo: None, action }
}

#[tokio::test]
async fn planned_payment_and_swap_execute_in_tier_one() {
    let chain = TestChain::start().await.unwrap();
    let d = chain.deployment.clone();
    let spec = chain.snapshot_spec();
    let before = read_snapshot(&chain.keeper, &spec, BlockNumberOrTag::Latest).await.unwrap();
    let venue = Venue { safe: d.safe, router: d.router, weth: d.weth };
    let recipient = Address::repeat_byte(0x99);
    let intents = [
        intent(
            "pay",
            Action::Pay {
                to: recipient,
                recipient: None,
                token: "USDC".into(),
                amount: "150.25".parse().unwrap(),
            },
        ),
        intent(
            "swap",
            Action::Swap {
                sell: "GOV".into(),
                buy: "USDC".into(),
                amount: Decimal::from(1_000),
                max_slippage: "0.02".parse().unwrap(),
            },
        ),
    ];
    let deadline = before.timestamp + 600;
    let calls = plan_batch(&intents, &before, &venue, deadline).unwrap();
    let op = Operation { calls, nonce: chain.module_nonce().await.unwrap(), deadline: U256::from(deadline) };
    chain.exec(&op, false).await.unwrap();

    let after = read_snapshot(&chain.keeper, &spec, BlockNumberOrTag::Latest).await.unwrap();
    let gov_sold = before.asset("GOV").unwrap().balance - after.asset("GOV").unwrap().balance;
    assert_eq!(gov_sold, U256::from(1_000u64) * U256::from(10u64).pow(U256::from(18)));
    let usdc = |s: &treasury_chain::Snapshot| s.asset("USDC").unwrap().balance;
    let paid = U256::from(150_250_000u64);
    let received = usdc(&after) + paid - usdc(&before);
    // 1000 GOV at $2.50 through two deep pools: close to 2500 USDC and above the 2% floor.
    assert!(received >= U256::from(2_450_000_000u64), "swap returned only {received} USDC units");
    assert!(received <= U256::from(2_500_000_000u64), "swap returned more than the oracle value: {received}");
}

#[tokio::test]
async fn a_swap_whose_pool_price_moved_beyond_the_bound_reverts() {
    let chain = TestChain::start().await.unwrap();
    let d = chain.deployment.clone();
    let mut snapshot =
        read_snapshot(&chain.keeper, &chain.snapshot_spec(), BlockNumberOrTag::Latest).await.unwrap();
    // The oracle says GOV is worth twice the pool price: the minimum output cannot be met.
    let gov = snapshot.assets.iter_mut().find(|a| a.symbol == "GOV").unwrap();
    gov.price.as_mut().unwrap().answer *= alloy::primitives::I256::try_from(2).unwrap();
    let venue = Venue { safe: d.safe, router: d.router, weth: d.weth };
    let swap = intent(
        "swap",
        Action::Swap {
            sell: "GOV".into(),
            buy: "USDC".into(),
            amount: Decimal::from(100),
            max_slippage: "0.05".parse().unwrap(),
        },
    );
    let deadline = snapshot.timestamp + 600;
    let calls = plan_batch(&[swap], &snapshot, &venue, deadline).unwrap();
    let op = Operation { calls, nonce: chain.module_nonce().await.unwrap(), deadline: U256::from(deadline) };
    assert!(chain.exec(&op, false).await.is_err(), "the router must refuse an output below the oracle bound");
}
