//! Turning target weights into swaps, from the snapshot's balances and prices.

use rust_decimal::Decimal;

use crate::view::SnapshotView;

/// One swap of a rebalance: sell `amount` of `sell` (in its units) for `buy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Leg {
    pub(crate) sell: String,
    pub(crate) buy: String,
    pub(crate) amount: Decimal,
}

/// Largest gap allowed between the sum of the targets and 1.
const SUM_TOLERANCE: Decimal = Decimal::from_parts(1, 0, 0, false, 4);

/// The swaps that bring the target assets to their weights, or none when every weight is within
/// `band` of its target.
///
/// Weights are measured over the target assets only. Refuses stale or missing prices, since a
/// stale price turns a rebalance into a donation to arbitrageurs.
pub(crate) fn plan(
    view: &SnapshotView,
    targets: &[(String, Decimal)],
    band: Decimal,
) -> Result<Vec<Leg>, String> {
    check_targets(targets, band)?;
    let mut values = Vec::with_capacity(targets.len());
    for (sym, _) in targets {
        let asset = view.asset(sym)?;
        let price = asset.price.ok_or_else(|| format!("rebalance: {sym} has no price feed"))?;
        if price.stale {
            return Err(format!(
                "rebalance refuses the stale price of {sym} (updated {} s before the block)",
                price.age_secs
            ));
        }
        let value = asset.value().ok_or_else(|| format!("rebalance: value of {sym} overflows"))?;
        values.push((price.price, value));
    }
    let total: Decimal = values.iter().map(|(_, v)| *v).sum();
    if total.is_zero() {
        return Ok(Vec::new());
    }
    let within_band =
        targets.iter().zip(&values).all(|((_, target), (_, value))| (value / total - target).abs() <= band);
    if within_band {
        return Ok(Vec::new());
    }
    let mut sellers = Vec::new();
    let mut buyers = Vec::new();
    for ((sym, target), (price, value)) in targets.iter().zip(&values) {
        let delta = target * total - value;
        if delta.is_sign_negative() {
            sellers.push((sym.clone(), *price, -delta));
        } else if !delta.is_zero() {
            buyers.push((sym.clone(), delta));
        }
    }
    Ok(match_legs(sellers, buyers))
}

/// Checks targets are positive weights summing to 1 and the band is a fraction.
fn check_targets(targets: &[(String, Decimal)], band: Decimal) -> Result<(), String> {
    if targets.is_empty() {
        return Err("rebalance needs at least one target weight".into());
    }
    if let Some((sym, w)) = targets.iter().find(|(_, w)| w.is_sign_negative() || *w > Decimal::ONE) {
        return Err(format!("rebalance: weight of {sym} is {w}, not between 0 and 1"));
    }
    let sum: Decimal = targets.iter().map(|(_, w)| *w).sum();
    if (sum - Decimal::ONE).abs() > SUM_TOLERANCE {
        return Err(format!("rebalance: target weights sum to {sum}, not 1"));
    }
    if band.is_sign_negative() || band >= Decimal::ONE {
        return Err(format!("rebalance: band {band} must be a fraction between 0 and 1"));
    }
    Ok(())
}

/// Pairs sellers' excess value with buyers' shortfall, in target order, into swap legs.
fn match_legs(sellers: Vec<(String, Decimal, Decimal)>, buyers: Vec<(String, Decimal)>) -> Vec<Leg> {
    let mut legs = Vec::new();
    let mut buyers = buyers.into_iter().peekable();
    let mut need = buyers.peek().map_or(Decimal::ZERO, |b| b.1);
    for (sell, price, mut excess) in sellers {
        while excess > Decimal::ZERO {
            let Some((buy, _)) = buyers.peek() else { break };
            let moved = excess.min(need);
            legs.push(Leg { sell: sell.clone(), buy: buy.clone(), amount: moved / price });
            excess -= moved;
            need -= moved;
            if need.is_zero() {
                buyers.next();
                need = buyers.peek().map_or(Decimal::ZERO, |b| b.1);
            }
        }
    }
    legs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::{AssetView, Book, PriceView};
    use std::collections::BTreeMap;
    use std::sync::Arc;

    fn view(eth: i64, eth_price: i64, usdc: i64, stale: bool) -> SnapshotView {
        let cfg: crate::config::PoliciesConfig = toml::from_str(
            r#"
            tokens.ETH = { address = "0x0000000000000000000000000000000000000000", decimals = 18 }
            tokens.USDC = { address = "0x0000000000000000000000000000000000000001", decimals = 6 }
            "#,
        )
        .unwrap();
        let asset = |bal: i64, price: i64, stale| AssetView {
            balance: bal.into(),
            price: Some(PriceView { price: price.into(), age_secs: 60, stale }),
            budget_remaining: None,
        };
        let assets = BTreeMap::from([
            ("ETH".to_string(), asset(eth, eth_price, stale)),
            ("USDC".to_string(), asset(usdc, 1, false)),
        ]);
        SnapshotView {
            chain_id: 1,
            block_number: 1,
            timestamp: 0,
            assets,
            book: Arc::new(Book::from_config(&cfg)),
        }
    }

    fn targets() -> Vec<(String, Decimal)> {
        vec![("ETH".into(), Decimal::new(6, 1)), ("USDC".into(), Decimal::new(4, 1))]
    }

    #[test]
    fn out_of_band_sells_the_overweight_asset() {
        // 40 ETH at 2000 = 80k, 20k USDC: 80/20 against 60/40 → sell 20k of ETH = 10 ETH.
        let legs = plan(&view(40, 2000, 20_000, false), &targets(), Decimal::new(5, 2)).unwrap();
        assert_eq!(legs, vec![Leg { sell: "ETH".into(), buy: "USDC".into(), amount: Decimal::from(10) }]);
    }

    #[test]
    fn within_band_does_nothing() {
        // 62/38 is within 5% of 60/40.
        let legs = plan(&view(31, 2000, 38_000, false), &targets(), Decimal::new(5, 2)).unwrap();
        assert!(legs.is_empty());
    }

    #[test]
    fn stale_price_is_refused() {
        let err = plan(&view(40, 2000, 20_000, true), &targets(), Decimal::new(5, 2)).unwrap_err();
        assert!(err.contains("stale"), "{err}");
    }

    #[test]
    fn targets_must_sum_to_one() {
        let t = vec![("ETH".into(), Decimal::new(6, 1)), ("USDC".into(), Decimal::new(6, 1))];
        assert!(plan(&view(1, 1, 1, false), &t, Decimal::new(5, 2)).is_err());
    }
}
