//! Amounts of the native coin in the config, exact: `max_fee_gwei = 1.5` or `"1.5"` is
//! 1,500,000,000 wei, parsed as decimal text with alloy's `parse_units` (a TOML float is read by
//! its shortest decimal form, never multiplied as a binary float).

use alloy::primitives::U256;
use alloy::primitives::utils::{format_units, parse_units};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serializer};

/// An amount in `unit` (`"gwei"`, `"ether"`) written as decimal text, in wei.
fn to_wei(text: &str, unit: &str) -> Result<u128, String> {
    let text = text.trim();
    if text.starts_with('-') {
        return Err(format!("{text} {unit} is negative"));
    }
    let decimals = if unit == "gwei" { 9 } else { 18 };
    if text.split_once('.').is_some_and(|(_, frac)| frac.len() > decimals) {
        return Err(format!("{text} {unit} has more than {decimals} decimals: it is finer than 1 wei"));
    }
    let wei: U256 =
        parse_units(text, unit).map_err(|e| format!("{text:?} is not an amount in {unit}: {e}"))?.into();
    u128::try_from(wei).map_err(|_| format!("{text} {unit} is too large"))
}

/// Accepts a string, an integer or a float, as decimal text.
struct DecimalText;

impl Visitor<'_> for DecimalText {
    type Value = String;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an amount such as 1.5, 200 or \"0.05\"")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        if !v.is_finite() {
            return Err(E::custom(format!("{v} is not an amount")));
        }
        // Rust prints the shortest text that reads back as the same float: what was written.
        Ok(v.to_string())
    }
}

fn decimal_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    d.deserialize_any(DecimalText)
}

/// `(de)serialize_with` for a wei amount written in gwei.
pub mod gwei {
    use super::*;

    /// Reads gwei as wei.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        to_wei(&decimal_text(d)?, "gwei").map_err(de::Error::custom)
    }

    /// Writes wei as gwei text.
    pub fn serialize<S: Serializer>(wei: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format(*wei, "gwei"))
    }
}

/// `(de)serialize_with` for an optional wei amount written in gwei.
pub mod gwei_opt {
    use super::*;

    /// Reads gwei as wei.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u128>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapped(#[serde(with = "super::gwei")] u128);
        Ok(Option::<Wrapped>::deserialize(d)?.map(|Wrapped(wei)| wei))
    }

    /// Writes wei as gwei text.
    pub fn serialize<S: Serializer>(wei: &Option<u128>, s: S) -> Result<S::Ok, S::Error> {
        match wei {
            Some(wei) => s.serialize_str(&super::format(*wei, "gwei")),
            None => s.serialize_none(),
        }
    }
}

/// `(de)serialize_with` for a wei amount written in ether.
pub mod ether {
    use super::*;

    /// Reads ether as wei.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        to_wei(&decimal_text(d)?, "ether").map_err(de::Error::custom)
    }

    /// Writes wei as ether text.
    pub fn serialize<S: Serializer>(wei: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format(*wei, "ether"))
    }
}

/// `wei` in `unit`, without trailing zeros (`1.5`, `200`).
fn format(wei: u128, unit: &str) -> String {
    let text = format_units(U256::from(wei), unit).unwrap_or_else(|_| wei.to_string());
    match text.split_once('.') {
        Some((whole, frac)) => {
            let frac = frac.trim_end_matches('0');
            if frac.is_empty() { whole.to_string() } else { format!("{whole}.{frac}") }
        }
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Deserialize, Serialize, PartialEq)]
    struct Fees {
        #[serde(with = "super::gwei")]
        max: u128,
        #[serde(with = "super::gwei_opt", default)]
        priority: Option<u128>,
        #[serde(with = "super::ether")]
        low: u128,
    }

    fn parse(text: &str) -> Result<Fees, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn amounts_are_exact_whatever_way_they_are_written() {
        let fees = parse("max = 200\npriority = 1.5\nlow = 0.05").unwrap();
        assert_eq!(
            fees,
            Fees { max: 200_000_000_000, priority: Some(1_500_000_000), low: 50_000_000_000_000_000 }
        );
        // 0.1 + 0.2 style binary noise never reaches the wei: 0.3 gwei is 300,000,000 wei.
        assert_eq!(parse("max = \"0.3\"\nlow = \"0.000000000000000001\"").unwrap().max, 300_000_000);
        assert_eq!(parse("max = 0.3\nlow = 1").unwrap().max, 300_000_000);
        assert_eq!(parse("max = 1\nlow = \"0.000000000000000001\"").unwrap().low, 1);
        assert_eq!(parse("max = 1\nlow = 1").unwrap().priority, None);
    }

    #[test]
    fn bad_amounts_name_what_is_wrong() {
        let err = parse("max = -1\nlow = 1").unwrap_err();
        assert!(err.contains("negative"), "{err}");
        let err = parse("max = \"fast\"\nlow = 1").unwrap_err();
        assert!(err.contains("\"fast\" is not an amount in gwei"), "{err}");
        let err = parse("max = 1\nlow = \"0.0000000000000000001\"").unwrap_err();
        assert!(err.contains("ether"), "{err}");
    }

    #[test]
    fn amounts_write_back_as_they_read() {
        let fees = parse("max = 200\npriority = 1.5\nlow = 0.05").unwrap();
        let text = toml::to_string(&fees).unwrap();
        assert_eq!(parse(&text).unwrap(), fees, "{text}");
        assert!(text.contains("max = \"200\"") && text.contains("priority = \"1.5\""), "{text}");
    }
}
