//! Decimal money: conversions between token units and on-chain integers, and amounts from scripts.

use alloy::primitives::{I256, U256};
use rhai::Dynamic;
use rust_decimal::{Decimal, RoundingStrategy};

/// Most decimals a token may have (rust_decimal's largest scale).
pub const MAX_DECIMALS: u8 = 28;

/// `raw / 10^decimals` as a decimal, or `None` if it does not fit (balances above ~7.9e28 units).
pub fn from_units(raw: U256, decimals: u8) -> Option<Decimal> {
    let v = i128::try_from(raw).ok()?;
    Decimal::try_from_i128_with_scale(v, decimals.into()).ok()
}

/// A signed feed answer scaled by `10^decimals` as a decimal.
pub fn from_signed_units(raw: I256, decimals: u8) -> Option<Decimal> {
    let v = i128::try_from(raw).ok()?;
    Decimal::try_from_i128_with_scale(v, decimals.into()).ok()
}

/// `amount * 10^decimals` as an on-chain integer, rounding toward zero; `None` if negative.
pub fn to_units(amount: Decimal, decimals: u8) -> Option<U256> {
    if amount.is_sign_negative() {
        return None;
    }
    let mut d = amount.round_dp_with_strategy(decimals.into(), RoundingStrategy::ToZero);
    d.rescale(decimals.into());
    if d.scale() != u32::from(decimals) {
        return None;
    }
    Some(U256::from(u128::try_from(d.mantissa()).ok()?))
}

/// Reads a money value a script passed: an integer, a decimal, or a decimal string.
///
/// Floats are refused: `0.1 + 0.2` is not money.
pub(crate) fn amount_from_script(v: &Dynamic, what: &str) -> Result<Decimal, String> {
    if let Some(d) = v.clone().try_cast::<Decimal>() {
        return Ok(d);
    }
    if let Ok(i) = v.as_int() {
        return Ok(Decimal::from(i));
    }
    if v.is_float() {
        return Err(format!(
            "{what} is a float ({v}); money must be exact: write dec(\"{v}\") or an integer"
        ));
    }
    if let Some(s) = v.clone().try_cast::<rhai::ImmutableString>() {
        return s.trim().parse::<Decimal>().map_err(|_| format!("{what} `{s}` is not a decimal number"));
    }
    Err(format!("{what} must be a decimal, an integer or a decimal string, not {}", v.type_name()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn units_round_trip_and_round_toward_zero() {
        let usdc = U256::from(1_234_567_890u64);
        let d = from_units(usdc, 6).unwrap();
        assert_eq!(d, Decimal::from_str("1234.56789").unwrap());
        assert_eq!(to_units(d, 6), Some(usdc));
        let third = Decimal::from(1) / Decimal::from(3);
        assert_eq!(to_units(third, 6), Some(U256::from(333_333u64)));
        assert_eq!(to_units(Decimal::from(-1), 6), None);
    }

    #[test]
    fn script_floats_are_refused() {
        let err = amount_from_script(&Dynamic::from_float(1.5), "amount").unwrap_err();
        assert!(err.contains("float"), "{err}");
        assert_eq!(
            amount_from_script(&Dynamic::from("2.50"), "amount").unwrap(),
            Decimal::from_str("2.5").unwrap()
        );
        assert_eq!(amount_from_script(&Dynamic::from_int(7), "amount").unwrap(), Decimal::from(7));
    }
}
