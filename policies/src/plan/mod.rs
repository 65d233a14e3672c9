//! Planning: turning intents into the calls the Safe makes.
//!
//! `pay` becomes an ETH transfer or an ERC-20 `transfer`; `swap` becomes, when selling a token, an
//! approval of the router for exactly the amount sold, then a Uniswap V2 router swap whose minimum
//! output is the oracle price less the intent's slippage bound, paid to the Safe itself. Planning is
//! pure: it reads the snapshot it is given and does no I/O.

use crate::{Action, Intent};
use alloy::primitives::{Address, U256};
use alloy::sol_types::SolCall;
use rust_decimal::Decimal;
use treasury_chain::Call;
use treasury_chain::contracts::{IERC20, IUniswapV2Router02};
use treasury_chain::snapshot::{AssetState, Snapshot};

/// Where swaps go and who receives their output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Venue {
    /// The Safe (receives swap output).
    pub safe: Address,
    /// Uniswap V2-compatible router.
    pub router: Address,
    /// Wrapped ether, the hop between two tokens and the stand-in for ETH in router paths.
    pub weth: Address,
}

/// Why an intent cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The intent names a token the snapshot does not hold.
    #[error("intent {key}: unknown token {symbol}")]
    UnknownToken {
        /// Idempotency key of the intent.
        key: String,
        /// The symbol.
        symbol: String,
    },
    /// The amount is zero, negative, or finer than the token's smallest unit.
    #[error(
        "intent {key}: amount {amount} {symbol} is not a positive multiple of the smallest unit (10^-{decimals})"
    )]
    BadAmount {
        /// Idempotency key of the intent.
        key: String,
        /// The amount.
        amount: Decimal,
        /// The token.
        symbol: String,
        /// Its decimals.
        decimals: u8,
    },
    /// A swap needs a fresh oracle price for both sides.
    #[error("intent {key}: no fresh price for {symbol} (stale or missing feed), refusing to swap")]
    NoFreshPrice {
        /// Idempotency key of the intent.
        key: String,
        /// The token without a usable price.
        symbol: String,
    },
    /// The slippage bound is outside [0, 1).
    #[error("intent {key}: max slippage {max_slippage} must be at least 0 and below 1")]
    BadSlippage {
        /// Idempotency key of the intent.
        key: String,
        /// The bound given.
        max_slippage: Decimal,
    },
    /// Selling and buying the same asset.
    #[error("intent {key}: cannot swap {symbol} for itself")]
    SameAsset {
        /// Idempotency key of the intent.
        key: String,
        /// The symbol.
        symbol: String,
    },
}

/// The calls that carry out one intent (empty for an alert).
pub fn plan_intent(
    intent: &Intent,
    snapshot: &Snapshot,
    venue: &Venue,
    deadline: u64,
) -> Result<Vec<Call>, PlanError> {
    match &intent.action {
        Action::Pay { to, token, amount, .. } => {
            let asset = asset(intent, snapshot, token)?;
            let raw = units(intent, asset, *amount)?;
            Ok(vec![transfer(asset, *to, raw)])
        }
        Action::Swap { sell, buy, amount, max_slippage } => plan_swap(
            intent,
            snapshot,
            venue,
            deadline,
            SwapSides { sell, buy, amount: *amount, max_slippage: *max_slippage },
        ),
        Action::Alert { .. } => Ok(Vec::new()),
    }
}

/// The calls of several intents, in order, as one batch.
pub fn plan_batch(
    intents: &[Intent],
    snapshot: &Snapshot,
    venue: &Venue,
    deadline: u64,
) -> Result<Vec<Call>, PlanError> {
    let mut calls = Vec::new();
    for intent in intents {
        calls.extend(plan_intent(intent, snapshot, venue, deadline)?);
    }
    Ok(calls)
}

struct SwapSides<'a> {
    sell: &'a str,
    buy: &'a str,
    amount: Decimal,
    max_slippage: Decimal,
}

fn plan_swap(
    intent: &Intent,
    snapshot: &Snapshot,
    venue: &Venue,
    deadline: u64,
    sides: SwapSides<'_>,
) -> Result<Vec<Call>, PlanError> {
    let key = || intent.key.clone();
    if sides.sell == sides.buy {
        return Err(PlanError::SameAsset { key: key(), symbol: sides.sell.to_string() });
    }
    if sides.max_slippage < Decimal::ZERO || sides.max_slippage >= Decimal::ONE {
        return Err(PlanError::BadSlippage { key: key(), max_slippage: sides.max_slippage });
    }
    let sell = asset(intent, snapshot, sides.sell)?;
    let buy = asset(intent, snapshot, sides.buy)?;
    let amount_in = units(intent, sell, sides.amount)?;
    let min_out = min_out(intent, sell, buy, sides.amount, sides.max_slippage)?;
    let deadline = U256::from(deadline);
    let router = venue.router;
    let hop = |token: Address| if token.is_zero() { venue.weth } else { token };
    let path: Vec<Address> = if sell.token.is_zero() || buy.token.is_zero() {
        vec![hop(sell.token), hop(buy.token)]
    } else {
        vec![sell.token, venue.weth, buy.token]
    };
    let calls = if sell.token.is_zero() {
        let swap = IUniswapV2Router02::swapExactETHForTokensCall {
            amountOutMin: min_out,
            path,
            to: venue.safe,
            deadline,
        };
        vec![Call::new(router, amount_in, swap.abi_encode())]
    } else {
        let approve = IERC20::approveCall { spender: router, amount: amount_in };
        let swap = if buy.token.is_zero() {
            IUniswapV2Router02::swapExactTokensForETHCall {
                amountIn: amount_in,
                amountOutMin: min_out,
                path,
                to: venue.safe,
                deadline,
            }
            .abi_encode()
        } else {
            IUniswapV2Router02::swapExactTokensForTokensCall {
                amountIn: amount_in,
                amountOutMin: min_out,
                path,
                to: venue.safe,
                deadline,
            }
            .abi_encode()
        };
        vec![Call::new(sell.token, U256::ZERO, approve.abi_encode()), Call::new(router, U256::ZERO, swap)]
    };
    Ok(calls)
}

/// The least output accepted: `amount · price(sell) / price(buy) · (1 − slippage)`, in `buy`'s smallest unit.
fn min_out(
    intent: &Intent,
    sell: &AssetState,
    buy: &AssetState,
    amount: Decimal,
    slippage: Decimal,
) -> Result<U256, PlanError> {
    let sell_price = fresh_price(intent, sell)?;
    let buy_price = fresh_price(intent, buy)?;
    let expected = amount * sell_price / buy_price;
    let floor = expected * (Decimal::ONE - slippage);
    // Rounding toward zero only lowers the minimum by less than one unit.
    Ok(crate::money::to_units(floor, buy.decimals).unwrap_or(U256::ZERO))
}

fn fresh_price(intent: &Intent, asset: &AssetState) -> Result<Decimal, PlanError> {
    let no_price = || PlanError::NoFreshPrice { key: intent.key.clone(), symbol: asset.symbol.clone() };
    let reading = asset.price.as_ref().filter(|p| !p.stale).ok_or_else(no_price)?;
    crate::money::from_signed_units(reading.answer, reading.decimals)
        .filter(|p| *p > Decimal::ZERO)
        .ok_or_else(no_price)
}

fn asset<'a>(intent: &Intent, snapshot: &'a Snapshot, symbol: &str) -> Result<&'a AssetState, PlanError> {
    snapshot
        .asset(symbol)
        .ok_or_else(|| PlanError::UnknownToken { key: intent.key.clone(), symbol: symbol.to_string() })
}

fn units(intent: &Intent, asset: &AssetState, amount: Decimal) -> Result<U256, PlanError> {
    let bad = || PlanError::BadAmount {
        key: intent.key.clone(),
        amount,
        symbol: asset.symbol.clone(),
        decimals: asset.decimals,
    };
    let raw = crate::money::to_units(amount, asset.decimals).ok_or_else(bad)?;
    let exact = crate::money::from_units(raw, asset.decimals) == Some(amount.normalize());
    if raw.is_zero() || !exact {
        return Err(bad());
    }
    Ok(raw)
}

fn transfer(asset: &AssetState, to: Address, raw: U256) -> Call {
    if asset.token.is_zero() {
        Call::new(to, raw, Vec::new())
    } else {
        Call::new(asset.token, U256::ZERO, IERC20::transferCall { to, amount: raw }.abi_encode())
    }
}

#[cfg(test)]
mod tests;
