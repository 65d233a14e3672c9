use crate::{Action, Intent};
use alloy::primitives::{Address, B256, I256, U256};
use alloy::sol_types::SolCall;
use rust_decimal::Decimal;
use treasury_chain::contracts::{IERC20, IUniswapV2Router02};
use treasury_chain::snapshot::{AssetState, PriceReading, Snapshot};

use super::*;

const SAFE: Address = Address::repeat_byte(0x5a);
const USDC: Address = Address::repeat_byte(0x01);
const GOV: Address = Address::repeat_byte(0x02);
const VENUE: Venue =
    Venue { safe: SAFE, router: Address::repeat_byte(0x0f), weth: Address::repeat_byte(0x0e) };

fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn asset(symbol: &str, token: Address, decimals: u8, price_e8: i64, stale: bool) -> AssetState {
    AssetState {
        symbol: symbol.into(),
        token,
        decimals,
        balance: U256::from(10u64).pow(U256::from(30)),
        price: Some(PriceReading {
            feed: Address::repeat_byte(0xfe),
            answer: I256::try_from(price_e8).unwrap(),
            decimals: 8,
            updated_at: 1_000,
            age_secs: 0,
            stale,
        }),
        budget: None,
    }
}

fn snapshot(gov_stale: bool) -> Snapshot {
    Snapshot {
        chain_id: 31337,
        block_number: 10,
        block_hash: B256::ZERO,
        timestamp: 1_000,
        safe: SAFE,
        module: Address::repeat_byte(0x33),
        module_nonce: U256::ZERO,
        paused: false,
        assets: vec![
            asset("ETH", Address::ZERO, 18, 300_000_000_000, false),
            asset("USDC", USDC, 6, 100_000_000, false),
            asset("GOV", GOV, 18, 250_000_000, gov_stale),
        ],
    }
}

fn intent(action: Action) -> Intent {
    Intent { policy: "p".into(), key: "p:k".into(), memo: None, action }
}

fn pay(token: &str, amount: &str) -> Intent {
    intent(Action::Pay {
        to: Address::repeat_byte(0x77),
        recipient: None,
        token: token.into(),
        amount: dec(amount),
    })
}

fn swap(sell: &str, buy: &str, amount: &str, slippage: &str) -> Intent {
    intent(Action::Swap {
        sell: sell.into(),
        buy: buy.into(),
        amount: dec(amount),
        max_slippage: dec(slippage),
    })
}

#[test]
fn erc20_payment_is_a_transfer_in_smallest_units() {
    let calls = plan_intent(&pay("USDC", "1234.56"), &snapshot(false), &VENUE, 2_000).unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].to, USDC);
    assert_eq!(calls[0].value, U256::ZERO);
    let decoded = IERC20::transferCall::abi_decode(&calls[0].data).unwrap();
    assert_eq!(decoded.to, Address::repeat_byte(0x77));
    assert_eq!(decoded.amount, U256::from(1_234_560_000u64));
}

#[test]
fn eth_payment_is_a_plain_value_transfer() {
    let calls = plan_intent(&pay("ETH", "1.5"), &snapshot(false), &VENUE, 2_000).unwrap();
    assert_eq!(calls[0].to, Address::repeat_byte(0x77));
    assert_eq!(calls[0].value, U256::from(1_500_000_000_000_000_000u64));
    assert!(calls[0].data.is_empty());
}

#[test]
fn amounts_finer_than_the_token_or_not_positive_are_refused() {
    for amount in ["0.0000001", "0", "-5"] {
        let err = plan_intent(&pay("USDC", amount), &snapshot(false), &VENUE, 2_000).unwrap_err();
        assert!(matches!(err, PlanError::BadAmount { .. }), "{amount}: {err}");
    }
    let err = plan_intent(&pay("DOGE", "1"), &snapshot(false), &VENUE, 2_000).unwrap_err();
    assert!(matches!(err, PlanError::UnknownToken { .. }));
}

#[test]
fn token_swap_approves_exactly_the_amount_and_bounds_output_by_the_oracle() {
    let calls = plan_intent(&swap("GOV", "USDC", "100", "0.01"), &snapshot(false), &VENUE, 2_000).unwrap();
    assert_eq!(calls.len(), 2);
    let approve = IERC20::approveCall::abi_decode(&calls[0].data).unwrap();
    assert_eq!(calls[0].to, GOV);
    assert_eq!(approve.spender, VENUE.router);
    assert_eq!(approve.amount, U256::from(100u64) * U256::from(10u64).pow(U256::from(18)));
    assert_eq!(calls[1].to, VENUE.router);
    let swap = IUniswapV2Router02::swapExactTokensForTokensCall::abi_decode(&calls[1].data).unwrap();
    // 100 GOV at $2.50 = $250 = 250 USDC; 1% slippage floor = 247.5 USDC.
    assert_eq!(swap.amountOutMin, U256::from(247_500_000u64));
    assert_eq!(swap.path, vec![GOV, VENUE.weth, USDC]);
    assert_eq!(swap.to, SAFE, "swap output must come back to the Safe");
    assert_eq!(swap.deadline, U256::from(2_000u64));
}

#[test]
fn selling_eth_sends_value_and_needs_no_approval() {
    let calls = plan_intent(&swap("ETH", "USDC", "2", "0.005"), &snapshot(false), &VENUE, 2_000).unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].value, U256::from(2_000_000_000_000_000_000u64));
    let swap = IUniswapV2Router02::swapExactETHForTokensCall::abi_decode(&calls[0].data).unwrap();
    assert_eq!(swap.path, vec![VENUE.weth, USDC]);
    assert_eq!(swap.amountOutMin, U256::from(5_970_000_000u64)); // 6000 USDC less 0.5%
}

#[test]
fn swaps_refuse_stale_prices_bad_slippage_and_self_swaps() {
    let err = plan_intent(&swap("GOV", "USDC", "1", "0.01"), &snapshot(true), &VENUE, 2_000).unwrap_err();
    assert!(matches!(err, PlanError::NoFreshPrice { ref symbol, .. } if symbol == "GOV"), "{err}");
    let err = plan_intent(&swap("GOV", "USDC", "1", "1"), &snapshot(false), &VENUE, 2_000).unwrap_err();
    assert!(matches!(err, PlanError::BadSlippage { .. }));
    let err = plan_intent(&swap("GOV", "GOV", "1", "0.01"), &snapshot(false), &VENUE, 2_000).unwrap_err();
    assert!(matches!(err, PlanError::SameAsset { .. }));
}

#[test]
fn a_batch_keeps_intent_order_and_alerts_add_no_calls() {
    let intents = [pay("USDC", "1"), intent(Action::Alert { message: "hi".into() }), pay("ETH", "0.1")];
    let calls = plan_batch(&intents, &snapshot(false), &VENUE, 2_000).unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].to, USDC);
    assert_eq!(calls[1].to, Address::repeat_byte(0x77));
}
